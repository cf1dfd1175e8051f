//! What every request gets, around its handler: an `X-Request-Id` (the
//! client's, when it sent a usable one, else a new UUIDv7), echoed in the
//! response and carried by every log line written for the request; and
//! `Preference-Applied` on a successful write that honoured
//! `Prefer: return=…`.

use axum::extract::Request;
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

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

/// The `return=` preference of a request, as sent.
fn prefer_return(req: &Request) -> Option<&'static str> {
    req.headers()
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| match p.strip_prefix("return=")? {
            "minimal" => Some("return=minimal"),
            "representation" => Some("return=representation"),
            "OperationOutcome" => Some("return=OperationOutcome"),
            _ => None,
        })
}

/// The middleware: request id in, out and on the logs; `Preference-Applied`.
pub async fn layer(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(usable)
        .unwrap_or_else(crate::ids::new_id);
    let value = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    req.headers_mut().insert(REQUEST_ID, value.clone());
    let applied = match *req.method() {
        Method::POST | Method::PUT | Method::PATCH => prefer_return(&req),
        _ => None,
    };
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let mut resp = next.run(req).instrument(span).await;
    resp.headers_mut().insert(REQUEST_ID, value);
    if let Some(p) = applied
        && resp.status().is_success()
        && !resp.headers().contains_key("preference-applied")
    {
        resp.headers_mut()
            .insert("preference-applied", HeaderValue::from_static(p));
    }
    resp
}
