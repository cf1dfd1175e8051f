//! CORS, so that a browser app on another origin (a SMART app) can call
//! the server, also through a follower: a preflight `OPTIONS` from an
//! allowed origin is answered here, before authorisation (a preflight
//! carries no credentials); an actual request from one gets the
//! `Access-Control-*` headers that let the browser read the response and
//! the headers FHIR clients need. Origins come from `[cors]`; none by
//! default, when a preflight gets 403 with an OperationOutcome and other
//! responses carry no CORS headers (the browser then blocks them).

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::http::outcome::FhirError;

/// Methods a preflight may ask for.
const METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
/// Request headers a browser may send.
const ALLOW_HEADERS: &str = "Authorization, Content-Type, Accept, If-Match, If-None-Match, If-None-Exist, If-Modified-Since, Prefer, X-Request-Id";
/// Response headers a browser may read.
const EXPOSE_HEADERS: &str = "Location, Content-Location, ETag, Last-Modified, Preference-Applied, Retry-After, X-Request-Id, X-Vigil-Lag-Ms";

/// CORS around the rest of the request's handling (called by the one
/// outermost middleware, `http::context::layer`: every `from_fn` layer
/// clones the router's service and boxes a future per request).
pub async fn around(app: &App, req: Request, next: Next) -> Response {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return next.run(req).await;
    };
    let cors = &app.config.cors;
    let allowed = cors.allows(&origin);
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        if !allowed {
            return FhirError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "cross-origin requests from {origin} are not allowed ([cors] allowed_origins)"
                ),
            )
            .into_response();
        }
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        allow_origin(h, &origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(METHODS),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(cors.max_age_s),
        );
        return resp;
    }
    let mut resp = next.run(req).await;
    if allowed {
        let h = resp.headers_mut();
        allow_origin(h, &origin);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
    resp
}

/// `Access-Control-Allow-Origin: <origin>` (the origin itself, never `*`,
/// so credentials may be sent) and `Vary: Origin` for caches.
fn allow_origin(h: &mut axum::http::HeaderMap, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}
