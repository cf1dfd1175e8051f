//! What every request gets, around its handler: an `X-Request-Id` (the
//! client's, when it sent a usable one, else a new UUIDv7), echoed in the
//! response and carried by every log line written for the request; and
//! `Preference-Applied` on a successful write that honoured
//! `Prefer: return=…`; JSON indented under `_pretty=true`; and JSON
//! labelled `application/json` for a client that accepts only that (R4
//! allows both media types).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, header};
use axum::response::Response;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;

use crate::app::App;
use crate::http::cors::Cors;

/// The request-id header.
pub const REQUEST_ID: &str = "x-request-id";
/// Longest request id taken from a client; a longer one is replaced.
pub const REQUEST_ID_BYTES_MAX: usize = 200;

/// The client's request id if usable: 1 to [`REQUEST_ID_BYTES_MAX`]
/// bytes of letters, digits and `-._:`.
fn usable(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= REQUEST_ID_BYTES_MAX
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'));
    ok.then(|| s.to_owned())
}

/// Whether the query asks for `_pretty=true`.
fn wants_pretty(req: &Request) -> bool {
    req.uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "_pretty=true"))
}

/// Whether the client accepts `application/json` and not the FHIR type.
fn wants_plain_json(req: &Request) -> bool {
    let accept: Vec<&str> = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|m| m.split(';').next().unwrap_or("").trim())
        .collect();
    accept.contains(&"application/json") && !accept.contains(&"application/fhir+json")
}

/// The outermost middleware as a tower layer: request id in, out and on
/// the logs; CORS (`http::cors`); `Preference-Applied`; `_pretty`; the
/// `application/json` label. A hand-written service rather than
/// `axum::middleware::from_fn`, which clones the router's service and
/// boxes a future for every request: this one calls the inner service
/// directly (the router is always ready) and boxes one future
/// (docs/BENCHMARKS.md, reads).
#[derive(Clone)]
pub struct EdgeLayer {
    app: Arc<App>,
}

impl EdgeLayer {
    /// The layer for `app`'s router.
    pub fn new(app: Arc<App>) -> Self {
        EdgeLayer { app }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            app: self.app.clone(),
        }
    }
}

/// The service [`EdgeLayer`] wraps a router's routes in.
#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    app: Arc<App>,
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let id = req
            .headers()
            .get(REQUEST_ID)
            .and_then(usable)
            .unwrap_or_else(crate::ids::new_id);
        let value =
            HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        req.headers_mut().insert(REQUEST_ID, value.clone());
        let applied = match *req.method() {
            Method::POST | Method::PUT | Method::PATCH => {
                crate::http::prefer_return_asked(req.headers()).map(crate::http::Return::preference)
            }
            _ => None,
        };
        let pretty = wants_pretty(&req);
        let plain = wants_plain_json(&req);
        let origin = match crate::http::cors::check(&self.app, &req) {
            Cors::Answer(mut resp) => {
                resp.headers_mut().insert(REQUEST_ID, value);
                return Box::pin(std::future::ready(Ok(resp)));
            }
            Cors::Allowed(origin) => Some(origin),
            Cors::None => None,
        };
        let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
        let fut = self.inner.call(req).instrument(span);
        Box::pin(async move {
            let Ok(mut resp) = fut.await;
            if let Some(origin) = origin {
                crate::http::cors::decorate(&origin, &mut resp);
            }
            resp.headers_mut().insert(REQUEST_ID, value);
            let is_json = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|c| c.starts_with(crate::http::outcome::FHIR_JSON_TYPE));
            if is_json && plain {
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json; charset=utf-8"),
                );
            }
            if is_json && pretty {
                resp = indent(resp).await;
            }
            if let Some(p) = applied
                && resp.status().is_success()
                && !resp.headers().contains_key("preference-applied")
            {
                resp.headers_mut()
                    .insert("preference-applied", HeaderValue::from_static(p));
            }
            Ok(resp)
        })
    }
}

/// The response's JSON body, indented; unchanged if it is not JSON. The
/// body is already whole in memory (handlers build it), so reading it
/// back costs a copy, and only for requests that ask.
async fn indent(resp: Response) -> Response {
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let pretty = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| serde_json::to_vec_pretty(&v).ok());
    let mut parts = parts;
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(pretty.unwrap_or_else(|| bytes.to_vec())))
}
