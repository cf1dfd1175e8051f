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
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::http::outcome::FhirError;

/// Methods a preflight may ask for.
const METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
/// Request headers a browser may send.
const ALLOW_HEADERS: &str = "Authorization, Content-Type, Accept, If-Match, If-None-Match, If-None-Exist, If-Modified-Since, Prefer, X-Request-Id";
/// Response headers a browser may read.
const EXPOSE_HEADERS: &str = "Location, Content-Location, ETag, Last-Modified, Preference-Applied, Retry-After, X-Request-Id, X-Vigil-Lag-Ms";

/// What CORS makes of a request: nothing (no `Origin`), a preflight's
/// whole answer, or the origin whose response gets the CORS headers.
pub enum Cors {
    /// No `Origin` header, or one not allowed: the response is untouched.
    None,
    /// A preflight: answered here, the handler never runs.
    Answer(Response),
    /// An allowed origin: [`decorate`] its response.
    Allowed(String),
}

/// CORS for a request, before it runs (the outermost middleware,
/// `http::context`, calls it).
pub fn check(app: &App, req: &Request) -> Cors {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return Cors::None;
    };
    let cors = &app.config.cors;
    let allowed = cors.allows(origin);
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if !preflight {
        return match allowed {
            true => Cors::Allowed(origin.to_owned()),
            false => Cors::None,
        };
    }
    if !allowed {
        return Cors::Answer(
            FhirError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "cross-origin requests from {origin} are not allowed ([cors] allowed_origins)"
                ),
            )
            .into_response(),
        );
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    allow_origin(h, origin);
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
    Cors::Answer(resp)
}

/// The CORS headers of an allowed origin's response.
pub fn decorate(origin: &str, resp: &mut Response) {
    let h = resp.headers_mut();
    allow_origin(h, origin);
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
}

/// `Access-Control-Allow-Origin: <origin>` (the origin itself, never `*`,
/// so credentials may be sent) and `Vary: Origin` for caches.
fn allow_origin(h: &mut axum::http::HeaderMap, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}
