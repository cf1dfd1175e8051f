//! Optional bearer-token authorisation: static tokens from the config;
//! JWTs signed HS256 (shared secret) or RS256 (public key file); JWTs of
//! an external authorization server, checked with its JWKS (fetched from
//! `jwks_url`, cached, refreshed on key rotation); and access tokens of the
//! built-in token endpoint (SMART Backend Services, [`super::tokens`]).
//!
//! No token or a bad one: 401 with `WWW-Authenticate: Bearer`. A valid JWT
//! whose `scope` claim grants nothing for the request: 403. Scopes are
//! SMART's, v1 (`system/Patient.read`) and v2 (`system/Patient.rs`), per
//! resource type and interaction ([`super::scopes`]); a JWT without a
//! `scope` claim, and a static token, may do anything. What was granted
//! goes with the request ([`Granted`]) for handlers that narrow further
//! (`$export` keeps to the types the token may read). The operator's
//! endpoints (`/admin/…`) take only a token without scopes. `/metadata`, the
//! health endpoints, `/.well-known/smart-configuration` and the token
//! endpoint stay open.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::jwks::RemoteJwks;
use super::scopes::Scopes;
use super::tokens::Issuer;
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
    /// The JWKS client or the token endpoint could not be set up.
    #[error("auth: {0}")]
    Smart(String),
}

/// What a request's token grants, passed on to handlers.
#[derive(Debug, Clone, Default)]
pub struct Granted {
    /// The scopes (`None`: anything — a static token, a JWT without
    /// `scope`).
    pub scopes: Option<Scopes>,
    /// The client the token was issued to (`client_id`, else `sub`).
    pub client: Option<String>,
}

/// Checks requests against the configured tokens and keys.
pub struct Authenticator {
    tokens: HashSet<String>,
    jwt: Option<(DecodingKey, Validation)>,
    jwks: Option<(RemoteJwks, Option<String>, Option<String>)>,
    issuer: Option<Issuer>,
    token_endpoint: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    sub: Option<String>,
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
        let http =
            super::jwks::https_client(c.jwks_ca.as_deref()).map_err(AuthSetupError::Smart)?;
        let remote = match (&c.jwks_url, c.jwks_discovery, &c.jwt_issuer) {
            (Some(url), _, _) => Some(RemoteJwks::new(url.clone(), http.clone())),
            (None, true, Some(issuer)) => Some(RemoteJwks::discover(issuer.clone(), http.clone())),
            (None, true, None) => {
                return Err(AuthSetupError::Smart(
                    "jwks_discovery needs jwt_issuer (the issuer whose metadata names its keys)"
                        .into(),
                ));
            }
            (None, false, _) => None,
        };
        let jwks = remote.map(|r| (r, c.jwt_issuer.clone(), c.jwt_audience.clone()));
        let issuer = Issuer::from_config(c, &http).map_err(AuthSetupError::Smart)?;
        Ok(Some(Self {
            tokens: c.tokens.iter().cloned().collect(),
            jwt,
            jwks,
            issuer,
            token_endpoint: c.token_endpoint.clone(),
        }))
    }

    /// The built-in token endpoint, if configured.
    pub fn issuer(&self) -> Option<&Issuer> {
        self.issuer.as_ref()
    }

    /// The external authorization server's token endpoint, if configured.
    pub fn external_token_endpoint(&self) -> Option<&str> {
        self.token_endpoint.as_deref()
    }

    /// Checks one request's `Authorization` header: what it grants, or
    /// 401/403.
    pub async fn check(
        &self,
        authorization: Option<&str>,
        method: &Method,
        path: &str,
    ) -> Result<Granted, FhirError> {
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
            return Ok(Granted::default());
        }
        let claims = self
            .claims(token)
            .await
            .map_err(|e| unauthorised(&format!("the bearer token is not accepted: {e}")))?;
        let granted = Granted {
            scopes: claims.scope.as_deref().map(Scopes::parse),
            client: claims.client_id.or(claims.sub),
        };
        match &granted.scopes {
            None => Ok(granted),
            Some(s) if s.allows(method, path) => Ok(granted),
            Some(s) => Err(FhirError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "the token's scopes ({}) do not allow {method} {path}",
                    s.text()
                ),
            )),
        }
    }

    /// A JWT's claims, checked by whichever key is its: the built-in
    /// issuer's, the external issuer's JWKS, the static key.
    async fn claims(&self, token: &str) -> Result<Claims, String> {
        if let Some(issued) = self.issuer.as_ref().and_then(|i| i.verify(token)) {
            let c = issued?;
            return Ok(Claims {
                scope: Some(c.scope),
                client_id: Some(c.sub),
                sub: None,
            });
        }
        if let Some((jwks, iss, aud)) = &self.jwks {
            let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
            if header.kid.is_some() || self.jwt.is_none() {
                let jwk = jwks.key(header.kid.as_deref()).await?;
                let key = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
                if !matches!(
                    header.alg,
                    Algorithm::RS256
                        | Algorithm::RS384
                        | Algorithm::RS512
                        | Algorithm::ES256
                        | Algorithm::ES384
                        | Algorithm::PS256
                        | Algorithm::PS384
                        | Algorithm::PS512
                        | Algorithm::EdDSA
                ) {
                    return Err(format!("{:?} is not an asymmetric signature", header.alg));
                }
                let mut v = Validation::new(header.alg);
                if let Some(iss) = iss {
                    v.set_issuer(&[iss]);
                }
                match aud {
                    Some(aud) => v.set_audience(&[aud]),
                    None => v.validate_aud = false,
                }
                return jsonwebtoken::decode::<Claims>(token, &key, &v)
                    .map(|d| d.claims)
                    .map_err(|e| e.to_string());
            }
        }
        let Some((key, validation)) = &self.jwt else {
            return Err("not a token this server knows".into());
        };
        jsonwebtoken::decode::<Claims>(token, key, validation)
            .map(|d| d.claims)
            .map_err(|e| e.to_string())
    }
}

/// Paths that never need a token.
fn open_path(path: &str) -> bool {
    path == "/metadata"
        || path.starts_with("/health/")
        || path == "/.well-known/smart-configuration"
        || path == super::tokens::TOKEN_PATH
}

/// The middleware: passes requests the authenticator accepts.
pub async fn layer(
    State(auth): State<Arc<Authenticator>>,
    mut req: Request,
    next: Next,
) -> Response {
    if !open_path(req.uri().path()) {
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match auth.check(header, req.method(), req.uri().path()).await {
            Ok(granted) => {
                req.extensions_mut().insert(granted);
            }
            Err(e) => {
                let unauthorised = e.status == StatusCode::UNAUTHORIZED;
                let mut resp = e.into_response();
                if unauthorised {
                    resp.headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                }
                return resp;
            }
        }
    }
    next.run(req).await
}
