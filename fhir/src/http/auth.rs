//! Optional bearer-token authorisation: static tokens from the config, or
//! JWTs signed HS256 (shared secret) or RS256 (public key file).
//!
//! No token or a bad one: 401 with `WWW-Authenticate: Bearer`. A valid JWT
//! whose `scope` claim grants nothing for the request: 403. Scopes follow
//! SMART's shape, `<context>/<Type or *>.<read|write|*>`; a JWT without a
//! `scope` claim, and a static token, may do anything. `/metadata` and the
//! health endpoints stay open.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::AuthConfig;
use crate::http::outcome::FhirError;

/// Why authorisation could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthSetupError {
    /// Both kinds of JWT key were given.
    #[error("auth: set jwt_hs256_secret or jwt_rs256_public_key, not both")]
    TwoKeys,
    /// The key file could not be read or parsed.
    #[error("auth: RS256 public key {path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Checks requests against the configured tokens and keys.
pub struct Authenticator {
    tokens: HashSet<String>,
    jwt: Option<(DecodingKey, Validation)>,
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    scope: Option<String>,
}

impl Authenticator {
    /// `None` when auth is not configured.
    pub fn from_config(c: &AuthConfig) -> Result<Option<Self>, AuthSetupError> {
        if !c.enabled() {
            return Ok(None);
        }
        let jwt = match (&c.jwt_hs256_secret, &c.jwt_rs256_public_key) {
            (Some(_), Some(_)) => return Err(AuthSetupError::TwoKeys),
            (Some(secret), None) => Some((
                DecodingKey::from_secret(secret.as_bytes()),
                Validation::new(Algorithm::HS256),
            )),
            (None, Some(path)) => {
                let pem = std::fs::read(path).map_err(|e| AuthSetupError::Key {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                let key = DecodingKey::from_rsa_pem(&pem).map_err(|e| AuthSetupError::Key {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                Some((key, Validation::new(Algorithm::RS256)))
            }
            (None, None) => None,
        };
        let jwt = jwt.map(|(key, mut v)| {
            if let Some(iss) = &c.jwt_issuer {
                v.set_issuer(&[iss]);
            }
            match &c.jwt_audience {
                Some(aud) => v.set_audience(&[aud]),
                None => v.validate_aud = false,
            }
            (key, v)
        });
        Ok(Some(Self {
            tokens: c.tokens.iter().cloned().collect(),
            jwt,
        }))
    }

    /// Checks one request's `Authorization` header.
    pub fn check(
        &self,
        authorization: Option<&str>,
        method: &Method,
        path: &str,
    ) -> Result<(), FhirError> {
        let unauthorised = |msg: &str| FhirError::new(StatusCode::UNAUTHORIZED, "login", msg);
        let token = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                unauthorised("this server needs a bearer token (Authorization: Bearer …)")
            })?;
        if self.tokens.contains(token) {
            return Ok(());
        }
        let Some((key, validation)) = &self.jwt else {
            return Err(unauthorised("the bearer token is not accepted"));
        };
        let data = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|e| unauthorised(&format!("the bearer token is not accepted: {e}")))?;
        match data.claims.scope {
            None => Ok(()),
            Some(scopes) if allows(&scopes, method, path) => Ok(()),
            Some(scopes) => Err(FhirError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("the token's scopes ({scopes}) do not allow {method} {path}"),
            )),
        }
    }
}

/// Whether SMART-style `scopes` allow `method` on `path`.
fn allows(scopes: &str, method: &Method, path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let (ty, write) = match (method, first) {
        (_, "" | "_history") => ("*", method != Method::GET),
        // Every type of the compartment, and what it refers to.
        (&Method::GET | &Method::HEAD | &Method::POST, _) if path.ends_with("/$everything") => {
            ("*", false)
        }
        (&Method::POST, _) if path.ends_with("/_search") => (first, false),
        (&Method::GET | &Method::HEAD, t) => (t, false),
        (_, t) => (t, true),
    };
    scopes.split_whitespace().any(|s| {
        let Some((_, rest)) = s.split_once('/') else {
            return false;
        };
        let Some((sty, access)) = rest.split_once('.') else {
            return false;
        };
        let type_ok = sty == "*" || (sty == ty && ty != "*");
        let access_ok =
            access == "*" || (access == "write" && write) || (access == "read" && !write);
        type_ok && access_ok
    })
}

/// Paths that never need a token.
fn open_path(path: &str) -> bool {
    path == "/metadata" || path.starts_with("/health/")
}

/// The middleware: passes requests the authenticator accepts.
pub async fn layer(State(auth): State<Arc<Authenticator>>, req: Request, next: Next) -> Response {
    if !open_path(req.uri().path()) {
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Err(e) = auth.check(header, req.method(), req.uri().path()) {
            let unauthorised = e.status == StatusCode::UNAUTHORIZED;
            let mut resp = e.into_response();
            if unauthorised {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            return resp;
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_grant_read_and_write_per_type() {
        assert!(allows("user/Patient.read", &Method::GET, "/Patient/1"));
        assert!(!allows("user/Patient.read", &Method::PUT, "/Patient/1"));
        assert!(!allows("user/Patient.read", &Method::GET, "/Observation/1"));
        assert!(allows("system/*.write", &Method::POST, "/Observation"));
        assert!(allows(
            "user/Observation.read",
            &Method::POST,
            "/Observation/_search"
        ));
        assert!(
            !allows("user/Patient.*", &Method::POST, "/"),
            "a transaction needs a * scope"
        );
        assert!(allows("system/*.*", &Method::POST, "/"));
        // $everything reads every type of the compartment.
        assert!(!allows(
            "user/Patient.read",
            &Method::GET,
            "/Patient/1/$everything"
        ));
        assert!(allows(
            "user/*.read",
            &Method::POST,
            "/Patient/1/$everything"
        ));
        assert!(!allows("garbage", &Method::GET, "/Patient"));
    }
}
