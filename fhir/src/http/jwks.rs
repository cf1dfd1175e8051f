//! A JSON Web Key Set fetched from a URL and cached: an authorization
//! server's keys (SMART), or a registered client's. An issuer's keys may
//! also be found from the issuer alone: its metadata document names its
//! `jwks_uri`.
//!
//! Keys are fetched on first use and kept for [`KEYS_TTL`]; a `kid` not
//! among them makes one new fetch (the issuer rotated its keys), at most
//! once per [`REFETCH_MIN`], so unknown `kid`s cannot make this server
//! hammer the issuer. A failed fetch keeps the keys already known. Every
//! fetch is bounded in time ([`FETCH_TIMEOUT`]) and size
//! ([`JWKS_BYTES_MAX`], [`KEYS_MAX`]).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use rustls::pki_types::pem::PemObject;
use tokio::sync::Mutex;

/// How long fetched keys are used before they are fetched again.
pub const KEYS_TTL: Duration = Duration::from_secs(600);
/// The least time between two fetches of one set.
pub const REFETCH_MIN: Duration = Duration::from_secs(5);
/// How long one fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JWKS document read.
pub const JWKS_BYTES_MAX: usize = 256 * 1024;
/// Most keys kept of one set.
pub const KEYS_MAX: usize = 100;

/// The HTTP(S) client JWKS are fetched with.
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A client for `https://` (trusting the CA file if given, else the web's
/// roots) and `http://` URLs.
pub fn https_client(ca: Option<&Path>) -> Result<HttpsClient, String> {
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match ca {
        None => builder.with_webpki_roots(),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("{}: no certificate in it", path.display()));
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            builder.with_tls_config(tls)
        }
    };
    let connector = builder.https_or_http().enable_http1().build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

struct Cached {
    keys: Vec<Jwk>,
    fetched: Option<Instant>,
    tried: Option<Instant>,
    /// The JWKS URL, once known (given, or read from the issuer's
    /// metadata).
    jwks_url: Option<String>,
}

/// The metadata documents an issuer's `jwks_uri` is read from, in order.
pub const METADATA_PATHS: [&str; 2] = [
    "/.well-known/openid-configuration",
    "/.well-known/smart-configuration",
];

/// One key set, cached: at a URL, or at the `jwks_uri` an issuer
/// publishes.
pub struct RemoteJwks {
    url: String,
    client: HttpsClient,
    cached: Mutex<Cached>,
}

impl RemoteJwks {
    /// Keys of `url`, fetched on first use.
    pub fn new(url: String, client: HttpsClient) -> Self {
        Self::with(url.clone(), Some(url), client)
    }

    /// Keys of the issuer `issuer`: its `jwks_uri` read from its metadata
    /// ([`METADATA_PATHS`]) on first use (and again when a fetch of the
    /// keys fails, in case it moved).
    pub fn discover(issuer: String, client: HttpsClient) -> Self {
        Self::with(issuer, None, client)
    }

    fn with(url: String, jwks_url: Option<String>, client: HttpsClient) -> Self {
        Self {
            url,
            client,
            cached: Mutex::new(Cached {
                keys: Vec::new(),
                fetched: None,
                tried: None,
                jwks_url,
            }),
        }
    }

    /// The URL (or the issuer) the keys come from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key named `kid` (without a `kid`: the set's only key), fetching
    /// the set when it is stale or lacks that `kid`.
    pub async fn key(&self, kid: Option<&str>) -> Result<Jwk, String> {
        let mut c = self.cached.lock().await;
        let stale = c.fetched.is_none_or(|t| t.elapsed() >= KEYS_TTL);
        let missing = find(&c.keys, kid).is_none();
        let may_fetch = c.tried.is_none_or(|t| t.elapsed() >= REFETCH_MIN);
        if (stale || missing) && may_fetch {
            c.tried = Some(Instant::now());
            let fetched = match c.jwks_url.clone() {
                Some(url) => self.fetch(&url).await,
                None => match self.jwks_uri().await {
                    Ok(url) => {
                        let keys = self.fetch(&url).await;
                        if keys.is_ok() {
                            c.jwks_url = Some(url);
                        }
                        keys
                    }
                    Err(e) => Err(e),
                },
            };
            match fetched {
                Ok(keys) => {
                    c.keys = keys;
                    c.fetched = Some(Instant::now());
                }
                Err(e) => {
                    tracing::warn!(url = %self.url, "JWKS fetch failed: {e}");
                    if c.keys.is_empty() {
                        return Err(format!("the keys of {} cannot be fetched: {e}", self.url));
                    }
                }
            }
        }
        find(&c.keys, kid).cloned().ok_or_else(|| match kid {
            Some(k) => format!("no key {k:?} in the JWKS at {}", self.url),
            None => format!(
                "the token names no key (kid) and the JWKS at {} holds more than one",
                self.url
            ),
        })
    }

    /// The issuer's `jwks_uri`, from the first of its metadata documents
    /// that names one.
    async fn jwks_uri(&self) -> Result<String, String> {
        let base = self.url.trim_end_matches('/');
        let mut why = Vec::new();
        for path in METADATA_PATHS {
            let url = format!("{base}{path}");
            match self.get(&url).await {
                Ok(body) => {
                    let doc: serde_json::Value = serde_json::from_slice(&body)
                        .map_err(|e| format!("{url}: not JSON: {e}"))?;
                    match doc.get("jwks_uri").and_then(serde_json::Value::as_str) {
                        Some(u) => return Ok(u.to_owned()),
                        None => why.push(format!("{url} names no jwks_uri")),
                    }
                }
                Err(e) => why.push(format!("{url}: {e}")),
            }
        }
        Err(why.join("; "))
    }

    async fn fetch(&self, url: &str) -> Result<Vec<Jwk>, String> {
        parse(&self.get(url).await?)
    }

    /// One bounded GET.
    async fn get(&self, url: &str) -> Result<Bytes, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
        let work = async {
            let resp = self
                .client
                .get(uri)
                .await
                .map_err(|e| format!("request failed: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("answered {}", resp.status()));
            }
            let body = Limited::new(resp.into_body(), JWKS_BYTES_MAX)
                .collect()
                .await
                .map_err(|e| format!("reading the body: {e}"))?
                .to_bytes();
            Ok(body)
        };
        tokio::time::timeout(FETCH_TIMEOUT, work)
            .await
            .map_err(|_| format!("no answer within {FETCH_TIMEOUT:?}"))?
    }
}

/// A JWKS document's keys (at most [`KEYS_MAX`]).
pub fn parse(body: &[u8]) -> Result<Vec<Jwk>, String> {
    let set: JwkSet =
        serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    if set.keys.len() > KEYS_MAX {
        return Err(format!(
            "{} keys; at most {KEYS_MAX} are read",
            set.keys.len()
        ));
    }
    Ok(set.keys)
}

/// The key named `kid`, or without a `kid` the only key.
pub fn find<'k>(keys: &'k [Jwk], kid: Option<&str>) -> Option<&'k Jwk> {
    match kid {
        Some(kid) => keys
            .iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid)),
        None if keys.len() == 1 => keys.first(),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_by_kid_or_as_the_only_one() {
        let doc = br#"{"keys":[{"kty":"EC","crv":"P-384","kid":"a","x":"AA","y":"AA"}]}"#;
        let keys = parse(doc).expect("a JWKS");
        assert!(find(&keys, Some("a")).is_some());
        assert!(find(&keys, Some("b")).is_none());
        assert!(find(&keys, None).is_some());
        assert!(parse(b"{}").is_err());
        assert!(parse(b"not json").is_err());
    }
}
