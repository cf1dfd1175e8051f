//! The built-in token endpoint's logic (SMART Backend Services): a
//! registered client presents a JWT it signed (`private_key_jwt`, ES384 or
//! RS384) and gets a short-lived access token this server signs with the
//! cluster's key (ES384), which every node that has the same key accepts.
//!
//! A client assertion is accepted only when: its `alg` is ES384 or RS384;
//! `iss` and `sub` are one registered client's id; a key of that client
//! (by `kid`) verifies it; `aud` is this server's token endpoint; `exp` is
//! in the future and at most [`ASSERTION_LIFETIME_MAX`] ahead; its `jti`
//! was not seen before from that client while unexpired (replay). The
//! granted scopes are those requested that the client is allowed; none →
//! `invalid_scope`. Errors are OAuth 2.0 error codes (RFC 6749 §5.2).
//!
//! Replays are refused per node: an assertion replayed to the other node
//! of a cluster within its (at most five-minute) lifetime is not seen
//! there; the access tokens it could obtain carry no more rights than the
//! first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::jwks::{self, HttpsClient, RemoteJwks};
use super::scopes::Scopes;
use crate::config::AuthConfig;

/// The longest a client assertion may live (`exp` − now), per SMART.
pub const ASSERTION_LIFETIME_MAX: Duration = Duration::from_secs(300);
/// Issued access tokens' lifetime unless configured.
pub const TOKEN_LIFETIME_DEFAULT: Duration = Duration::from_secs(300);
/// Most unexpired `jti`s remembered; beyond it the endpoint refuses new
/// assertions until some expire (it never forgets one early).
pub const REPLAY_MAX: usize = 100_000;
/// Most registered clients.
pub const CLIENTS_MAX: usize = 1_000;
/// The `aud` of the access tokens issued here.
pub const AUDIENCE: &str = "vigil-fhir";
/// Clock skew allowed on `exp`, seconds.
const LEEWAY_S: u64 = 30;

/// Where the built-in token endpoint is, below the base.
pub const TOKEN_PATH: &str = "/auth/token";

/// `client_assertion_type` of `private_key_jwt`.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An OAuth 2.0 error of the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// `invalid_client` → 401; the others → 400 (503 for
    /// `temporarily_unavailable`).
    pub error: &'static str,
    /// What exactly was wrong.
    pub description: String,
}

impl OAuthError {
    fn new(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            error,
            description: description.into(),
        }
    }
}

/// A token request's form fields.
#[derive(Debug, Default, Deserialize)]
pub struct TokenRequest {
    /// Must be `client_credentials`.
    pub grant_type: Option<String>,
    /// Space-separated scopes asked for.
    pub scope: Option<String>,
    /// Must be [`ASSERTION_TYPE`].
    pub client_assertion_type: Option<String>,
    /// The client's signed JWT.
    pub client_assertion: Option<String>,
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    /// The JWT.
    pub access_token: String,
    /// `bearer`.
    pub token_type: &'static str,
    /// Seconds it is valid.
    pub expires_in: u64,
    /// What it grants.
    pub scope: String,
}

/// The claims of an access token issued here.
#[derive(Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Who issued it (the token endpoint's URL).
    pub iss: String,
    /// The client.
    pub sub: String,
    /// [`AUDIENCE`].
    pub aud: String,
    /// What it grants.
    pub scope: String,
    /// Issued at, seconds.
    pub iat: u64,
    /// Expires at, seconds.
    pub exp: u64,
    /// Its id.
    pub jti: String,
}

#[derive(Debug, Deserialize)]
struct AssertionClaims {
    iss: Option<String>,
    sub: Option<String>,
    exp: Option<u64>,
    jti: Option<String>,
}

enum ClientKeys {
    Inline(Vec<Jwk>),
    Remote(Box<RemoteJwks>),
}

struct Client {
    keys: ClientKeys,
    allowed: Scopes,
}

/// The token endpoint: the cluster's signing key, the registered
/// clients, the `jti`s seen.
pub struct Issuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    lifetime: Duration,
    clients: HashMap<String, Client>,
    seen: Mutex<HashMap<(String, String), u64>>,
}

impl Issuer {
    /// The issuer the config describes (`None` without a signing key).
    pub fn from_config(c: &AuthConfig, http: &HttpsClient) -> Result<Option<Self>, String> {
        let Some(path) = &c.token_signing_key else {
            if !c.clients.is_empty() {
                return Err("auth: clients are registered but token_signing_key is not set".into());
            }
            return Ok(None);
        };
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let encoding = EncodingKey::from_ec_pem(&pem).map_err(|e| {
            format!(
                "{}: not a PKCS#8 EC P-384 private key ({e}); `vigil certs` writes one",
                path.display()
            )
        })?;
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES384)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        jwk.common.key_id = Some(kid.clone());
        let decoding =
            DecodingKey::from_jwk(&jwk).map_err(|e| format!("{}: {e}", path.display()))?;
        if c.clients.len() > CLIENTS_MAX {
            return Err(format!("auth: at most {CLIENTS_MAX} clients"));
        }
        let mut clients = HashMap::new();
        for cl in &c.clients {
            let keys = match (&cl.jwks, &cl.jwks_url) {
                (Some(doc), None) => ClientKeys::Inline(
                    jwks::parse(doc.as_bytes())
                        .map_err(|e| format!("client {}: jwks: {e}", cl.id))?,
                ),
                (None, Some(url)) => {
                    ClientKeys::Remote(Box::new(RemoteJwks::new(url.clone(), http.clone())))
                }
                _ => {
                    return Err(format!(
                        "client {}: give its keys as jwks or jwks_url (one of them)",
                        cl.id
                    ));
                }
            };
            let allowed = Scopes::parse(&cl.scopes);
            if allowed.grants_nothing() {
                return Err(format!(
                    "client {}: scopes {:?} grant no resource access",
                    cl.id, cl.scopes
                ));
            }
            if clients
                .insert(cl.id.clone(), Client { keys, allowed })
                .is_some()
            {
                return Err(format!("client {} is registered twice", cl.id));
            }
        }
        Ok(Some(Self {
            encoding,
            decoding,
            kid,
            lifetime: c
                .token_lifetime_s
                .map_or(TOKEN_LIFETIME_DEFAULT, Duration::from_secs),
            clients,
            seen: Mutex::new(HashMap::new()),
        }))
    }

    /// The `kid` of the tokens this issuer signs.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Answers a token request made to `token_url` at `now_s`.
    pub async fn grant(
        &self,
        req: &TokenRequest,
        token_url: &str,
        now_s: u64,
    ) -> Result<TokenResponse, OAuthError> {
        match req.grant_type.as_deref() {
            Some("client_credentials") => {}
            Some(other) => {
                return Err(OAuthError::new(
                    "unsupported_grant_type",
                    format!("grant_type {other:?}: this endpoint grants client_credentials"),
                ));
            }
            None => return Err(OAuthError::new("invalid_request", "grant_type is missing")),
        }
        if req.client_assertion_type.as_deref() != Some(ASSERTION_TYPE) {
            return Err(OAuthError::new(
                "invalid_request",
                format!("client_assertion_type must be {ASSERTION_TYPE}"),
            ));
        }
        let assertion = req
            .client_assertion
            .as_deref()
            .ok_or_else(|| OAuthError::new("invalid_request", "client_assertion is missing"))?;
        let scope = req
            .scope
            .as_deref()
            .ok_or_else(|| OAuthError::new("invalid_request", "scope is missing"))?;
        let (client_id, claims) = self.check_assertion(assertion, token_url, now_s).await?;
        let client = self
            .clients
            .get(&client_id)
            .ok_or_else(|| OAuthError::new("invalid_client", "unknown client"))?;
        let granted = Scopes::within(&Scopes::parse(scope), &client.allowed);
        if granted.grants_nothing() {
            return Err(OAuthError::new(
                "invalid_scope",
                format!(
                    "none of the scopes asked for ({scope}) is allowed to this client ({})",
                    client.allowed.text()
                ),
            ));
        }
        self.remember(&client_id, &claims, now_s)?;
        let lifetime = self.lifetime.as_secs();
        let access = AccessClaims {
            iss: token_url.to_owned(),
            sub: client_id,
            aud: AUDIENCE.to_owned(),
            scope: granted.text(),
            iat: now_s,
            exp: now_s + lifetime,
            jti: crate::ids::new_id(),
        };
        let mut header = Header::new(Algorithm::ES384);
        header.kid = Some(self.kid.clone());
        let access_token = jsonwebtoken::encode(&header, &access, &self.encoding)
            .map_err(|e| OAuthError::new("server_error", e.to_string()))?;
        Ok(TokenResponse {
            access_token,
            token_type: "bearer",
            expires_in: lifetime,
            scope: access.scope,
        })
    }

    async fn check_assertion(
        &self,
        assertion: &str,
        token_url: &str,
        now_s: u64,
    ) -> Result<(String, AssertionClaims), OAuthError> {
        let bad = |m: String| OAuthError::new("invalid_client", m);
        let header = jsonwebtoken::decode_header(assertion)
            .map_err(|e| bad(format!("client_assertion is not a JWT: {e}")))?;
        if !matches!(header.alg, Algorithm::ES384 | Algorithm::RS384) {
            return Err(bad(format!(
                "client_assertion is signed {:?}; ES384 and RS384 are accepted",
                header.alg
            )));
        }
        // Who it claims to be decides which keys check it.
        let unverified: AssertionClaims =
            jsonwebtoken::dangerous::insecure_decode_claims(assertion)
                .map_err(|e| bad(format!("client_assertion's claims cannot be read: {e}")))?;
        let client_id = match (&unverified.iss, &unverified.sub) {
            (Some(i), Some(s)) if i == s => i.clone(),
            _ => {
                return Err(bad(
                    "client_assertion's iss and sub must both be the client id".into(),
                ));
            }
        };
        let client = self
            .clients
            .get(&client_id)
            .ok_or_else(|| bad(format!("no client {client_id:?} is registered")))?;
        let jwk = match &client.keys {
            ClientKeys::Inline(keys) => jwks::find(keys, header.kid.as_deref())
                .cloned()
                .ok_or_else(|| bad(format!("client {client_id}: no key {:?}", header.kid)))?,
            ClientKeys::Remote(r) => r
                .key(header.kid.as_deref())
                .await
                .map_err(|e| bad(format!("client {client_id}: {e}")))?,
        };
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| bad(format!("client {client_id}: its key cannot be used: {e}")))?;
        let mut v = Validation::new(header.alg);
        v.set_audience(&[token_url]);
        v.set_issuer(&[client_id.as_str()]);
        v.sub = Some(client_id.clone());
        v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        v.leeway = LEEWAY_S;
        let claims = jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &v)
            .map_err(|e| bad(format!("client_assertion is not accepted: {e}")))?
            .claims;
        let exp = claims.exp.unwrap_or(0);
        if exp > now_s + ASSERTION_LIFETIME_MAX.as_secs() + LEEWAY_S {
            return Err(bad(format!(
                "client_assertion expires {}s from now; at most {}s is accepted",
                exp.saturating_sub(now_s),
                ASSERTION_LIFETIME_MAX.as_secs()
            )));
        }
        if claims.jti.as_deref().is_none_or(str::is_empty) {
            return Err(bad("client_assertion has no jti".into()));
        }
        Ok((client_id, claims))
    }

    /// Records the assertion's `jti`; refuses one seen before.
    fn remember(
        &self,
        client: &str,
        claims: &AssertionClaims,
        now_s: u64,
    ) -> Result<(), OAuthError> {
        let jti = claims.jti.clone().unwrap_or_default();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let key = (client.to_owned(), jti);
        if seen.get(&key).is_some_and(|exp| *exp + LEEWAY_S >= now_s) {
            return Err(OAuthError::new(
                "invalid_client",
                format!("client_assertion jti {:?} was used before", key.1),
            ));
        }
        if seen.len() >= REPLAY_MAX {
            seen.retain(|_, exp| *exp + LEEWAY_S >= now_s);
            if seen.len() >= REPLAY_MAX {
                return Err(OAuthError::new(
                    "temporarily_unavailable",
                    "too many client assertions in flight; retry in a minute",
                ));
            }
        }
        seen.insert(key, claims.exp.unwrap_or(now_s));
        Ok(())
    }

    /// Checks an access token this issuer signed: its claims, or why not.
    /// `None` when the token is not this issuer's (another `kid`).
    pub fn verify(&self, token: &str) -> Option<Result<AccessClaims, String>> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.kid.as_deref() != Some(self.kid.as_str()) {
            return None;
        }
        let mut v = Validation::new(Algorithm::ES384);
        v.set_audience(&[AUDIENCE]);
        v.leeway = LEEWAY_S;
        Some(
            jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &v)
                .map(|d| d.claims)
                .map_err(|e| e.to_string()),
        )
    }
}
