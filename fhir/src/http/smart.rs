//! SMART on FHIR's HTTP face: `/.well-known/smart-configuration` (how a
//! client finds the token endpoint and what it supports) and the built-in
//! token endpoint `POST /auth/token` (client credentials with a signed
//! client assertion; [`super::tokens`] holds the rules).
//!
//! Both are the same on every node of a cluster when the nodes share
//! `base_url` and the `[auth]` configuration (the signing key included):
//! a follower answers them itself, as it answers `/metadata`.

use std::sync::Arc;

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::tokens::{OAuthError, TOKEN_PATH, TokenRequest};
use crate::app::App;
use crate::http::outcome::FhirError;

/// The scopes this server understands (published; a client's grant is
/// what its registration allows).
const SCOPES_SUPPORTED: &[&str] = &[
    "system/*.read",
    "system/*.rs",
    "system/*.cruds",
    "system/*.write",
    "system/*.*",
    "user/*.read",
    "user/*.rs",
    "patient/*.read",
    "patient/*.rs",
];

/// The token endpoint clients are told about: the built-in one, else the
/// external server's, else none.
pub fn token_endpoint(app: &App) -> Option<String> {
    let auth = app.auth.as_ref()?;
    if auth.issuer().is_some() {
        return Some(format!("{}{TOKEN_PATH}", app.base));
    }
    auth.external_token_endpoint().map(str::to_owned)
}

/// The SMART configuration document, `None` when no token endpoint is
/// known.
pub fn configuration(app: &App) -> Option<Value> {
    let token_endpoint = token_endpoint(app)?;
    Some(json!({
        "issuer": app.base,
        "token_endpoint": token_endpoint,
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES384", "RS384"],
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": SCOPES_SUPPORTED,
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
    }))
}

/// `GET /.well-known/smart-configuration`.
pub async fn well_known(State(app): State<Arc<App>>) -> Response {
    match configuration(&app) {
        Some(doc) => {
            let mut r = (StatusCode::OK, doc.to_string()).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        None => FhirError::not_found(
            "this server has no token endpoint: set [auth] token_signing_key (built in) or token_endpoint (an external authorization server)",
        )
        .into_response(),
    }
}

/// `POST /auth/token`: an access token, or an OAuth 2.0 error.
pub async fn token(
    State(app): State<Arc<App>>,
    form: Result<Form<TokenRequest>, FormRejection>,
) -> Response {
    let r = async {
        let issuer = app
            .auth
            .as_ref()
            .and_then(|a| a.issuer())
            .ok_or_else(|| OAuthError {
                error: "invalid_request",
                description: "this server issues no tokens ([auth] token_signing_key is not set)"
                    .into(),
            })?;
        let Form(req) = form.map_err(|e| OAuthError {
            error: "invalid_request",
            description: format!(
                "the request must be a form (application/x-www-form-urlencoded): {e}"
            ),
        })?;
        let url = format!("{}{TOKEN_PATH}", app.base);
        issuer
            .grant(&req, &url, crate::instant::now_us_u64() / 1_000_000)
            .await
    }
    .await;
    let (status, body) = match r {
        Ok(t) => (StatusCode::OK, serde_json::to_value(&t).unwrap_or_default()),
        Err(e) => {
            tracing::info!(error = e.error, "token request refused: {}", e.description);
            let status = match e.error {
                "invalid_client" => StatusCode::UNAUTHORIZED,
                "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
                "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            (
                status,
                json!({"error": e.error, "error_description": e.description}),
            )
        }
    };
    let mut resp = (status, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}
