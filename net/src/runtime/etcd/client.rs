//! A small etcd v3 client over etcd's JSON gateway (`/v3/...`, HTTP/1.1,
//! TLS with a client certificate when the endpoints are `https://`): the
//! five calls the coordinator needs — a transaction, lease grant,
//! keepalive and revoke, and authentication.
//!
//! Endpoints are tried in turn, from the last one that answered. A request
//! that never reached a member (the connection failed) moves on to the next
//! endpoint; a request that may have reached one and got no answer moves on
//! only when it is safe to repeat ([`Call::Repeatable`]). A transaction
//! that writes is never repeated: its caller re-reads instead.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

/// Longest answer read from etcd (the coordinator's keys are small).
const ANSWER_MAX: usize = 1 << 20;
/// Most endpoints configured.
pub const ENDPOINTS_MAX: usize = 16;

/// How to reach etcd. Its `Debug` shows no password.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs of the members, `http://` or `https://`.
    pub endpoints: Vec<String>,
    /// The prefix of this cluster's keys (`/vigil/<cluster>`).
    pub prefix: String,
    /// The CA that signed the members' certificates (https).
    pub ca: Option<PathBuf>,
    /// This node's client certificate and key (etcd's `--client-cert-auth`).
    pub cert: Option<PathBuf>,
    /// See `cert`.
    pub key: Option<PathBuf>,
    /// A user and password, when etcd has authentication on.
    pub user: Option<String>,
    /// See `user`.
    pub password: Option<String>,
    /// Longest wait for one member's answer before the next is tried.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// Why an etcd call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    /// The settings cannot work (a certificate that does not load, a bad
    /// URL).
    #[error("etcd settings: {0}")]
    Config(String),
    /// No member answered; nothing was done.
    #[error("no etcd member answered: {0}")]
    Unreachable(String),
    /// A write was sent and no answer came: it may or may not have been
    /// made.
    #[error("etcd did not answer a write in time ({0}); whether it was made is unknown")]
    Ambiguous(String),
    /// etcd answered with an error.
    #[error("etcd refused: {0}")]
    Refused(String),
}

/// Whether a call may be sent again after it may have reached a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Reads, keepalives, revokes: the same effect however often.
    Repeatable,
    /// A write: sent once.
    Once,
}

/// One key as etcd returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// The value, as text.
    pub value: String,
    /// The revision that last changed it.
    pub mod_revision: i64,
    /// The lease it is attached to (0: none).
    pub lease: i64,
}

/// One comparison of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's modification revision equals this (0: the key is absent).
    ModRevision(String, i64),
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Reads a key.
    Get(String),
    /// Writes a key, attached to a lease (0: none).
    Put(String, String, i64),
    /// Deletes a key.
    Delete(String),
}

type Https = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client of one etcd cluster.
pub struct EtcdClient {
    cfg: EtcdConfig,
    http: Https,
    /// The endpoint tried first (the last that answered).
    next: usize,
    token: Option<String>,
}

impl std::fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClient")
            .field("endpoints", &self.cfg.endpoints)
            .finish_non_exhaustive()
    }
}

fn read_pem(path: &Path) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|e| EtcdError::Config(format!("{}: {e}", path.display())))
}

fn tls_config(cfg: &EtcdConfig) -> Result<rustls::ClientConfig, EtcdError> {
    let bad =
        |p: &Path, e: &dyn std::fmt::Display| EtcdError::Config(format!("{}: {e}", p.display()));
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &cfg.ca {
        for cert in CertificateDer::pem_slice_iter(&read_pem(ca)?) {
            let cert = cert.map_err(|e| bad(ca, &e))?;
            roots.add(cert).map_err(|e| bad(ca, &e))?;
        }
        if roots.is_empty() {
            return Err(bad(ca, &"no certificate in it"));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| EtcdError::Config(e.to_string()))?
        .with_root_certificates(roots);
    match (&cfg.cert, &cfg.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(&read_pem(cert)?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(cert, &e))?;
            if chain.is_empty() {
                return Err(bad(cert, &"no certificate in it"));
            }
            let k = PrivateKeyDer::from_pem_slice(&read_pem(key)?).map_err(|e| bad(key, &e))?;
            builder
                .with_client_auth_cert(chain, k)
                .map_err(|e| EtcdError::Config(format!("etcd client certificate: {e}")))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(EtcdError::Config(
            "an etcd client certificate needs both the certificate and its key".into(),
        )),
    }
}

/// etcd's JSON numbers are int64 written as strings; absent means 0.
fn num(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn b64(s: &str) -> String {
    B64.encode(s.as_bytes())
}

impl EtcdClient {
    /// A client of the members at `cfg.endpoints` (nothing is sent yet).
    pub fn new(cfg: EtcdConfig) -> Result<Self, EtcdError> {
        if cfg.endpoints.is_empty() || cfg.endpoints.len() > ENDPOINTS_MAX {
            return Err(EtcdError::Config(format!(
                "1 to {ENDPOINTS_MAX} etcd endpoints are needed, not {}",
                cfg.endpoints.len()
            )));
        }
        for e in &cfg.endpoints {
            let uri: hyper::Uri = e
                .parse()
                .map_err(|err| EtcdError::Config(format!("etcd endpoint {e:?}: {err}")))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(EtcdError::Config(format!(
                    "etcd endpoint {e:?} must be http://HOST:PORT or https://HOST:PORT"
                )));
            }
        }
        if cfg.ca.is_none() && cfg.endpoints.iter().any(|e| e.starts_with("https:")) {
            return Err(EtcdError::Config(
                "https etcd endpoints need the CA that signed the members' certificates (etcd_ca)"
                    .into(),
            ));
        }
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(&cfg)?)
            .https_or_http()
            .enable_http1()
            .build();
        let http = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            cfg,
            http,
            next: 0,
            token: None,
        })
    }

    /// The full key of `name` under the cluster's prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.cfg.prefix.trim_end_matches('/'))
    }

    /// Sends `body` to `path` on one member after another until one
    /// answers, as `call` allows.
    async fn call(&mut self, path: &str, body: &Value, call: Call) -> Result<Value, EtcdError> {
        let n = self.cfg.endpoints.len();
        let mut last = String::new();
        for i in 0..n {
            let at = (self.next + i) % n;
            let url = format!("{}{path}", self.cfg.endpoints[at].trim_end_matches('/'));
            match self.send(&url, body).await {
                Ok(v) => {
                    self.next = at;
                    return Ok(v);
                }
                Err(Sent::Answered(e)) => {
                    self.next = at;
                    return Err(e);
                }
                Err(Sent::NotDelivered(e)) => last = format!("{url}: {e}"),
                Err(Sent::Unknown(e)) if call == Call::Repeatable => last = format!("{url}: {e}"),
                Err(Sent::Unknown(e)) => {
                    // The next attempt starts elsewhere: this member may be
                    // cut off.
                    self.next = (at + 1) % n;
                    return Err(EtcdError::Ambiguous(format!("{url}: {e}")));
                }
            }
        }
        self.next = (self.next + 1) % n;
        Err(EtcdError::Unreachable(last))
    }

    async fn send(&self, url: &str, body: &Value) -> Result<Value, Sent> {
        let mut req = hyper::Request::post(url).header("content-type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("authorization", t.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| Sent::NotDelivered(e.to_string()))?;
        let timeout = self.cfg.request_timeout;
        let answer = async {
            let resp = self.http.request(req).await.map_err(|e| {
                if e.is_connect() {
                    Sent::NotDelivered(e.to_string())
                } else {
                    Sent::Unknown(e.to_string())
                }
            })?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), ANSWER_MAX)
                .collect()
                .await
                .map_err(|e| Sent::Unknown(e.to_string()))?
                .to_bytes();
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|e| Sent::Unknown(format!("an answer that is not JSON: {e}")))?;
            if !status.is_success() || v.get("error").is_some() {
                let msg = v
                    .get("message")
                    .or_else(|| v.get("error"))
                    .and_then(Value::as_str)
                    .unwrap_or("no message")
                    .to_owned();
                return Err(Sent::Answered(EtcdError::Refused(format!(
                    "{status}: {msg}"
                ))));
            }
            Ok(v)
        };
        match tokio::time::timeout(timeout, answer).await {
            Ok(r) => r,
            Err(_) => Err(Sent::Unknown(format!(
                "no answer within {} ms",
                timeout.as_millis()
            ))),
        }
    }

    /// Calls `path`, authenticating first when a user is configured (and
    /// once more when etcd says the token expired).
    async fn authed(&mut self, path: &str, body: &Value, call: Call) -> Result<Value, EtcdError> {
        if self.cfg.user.is_some() && self.token.is_none() {
            self.authenticate().await?;
        }
        match self.call(path, body, call).await {
            Err(EtcdError::Refused(m)) if self.cfg.user.is_some() && m.contains("token") => {
                self.authenticate().await?;
                self.call(path, body, call).await
            }
            r => r,
        }
    }

    async fn authenticate(&mut self) -> Result<(), EtcdError> {
        self.token = None;
        let body = json!({
            "name": self.cfg.user.clone().unwrap_or_default(),
            "password": self.cfg.password.clone().unwrap_or_default(),
        });
        let v = self
            .call("/v3/auth/authenticate", &body, Call::Repeatable)
            .await?;
        let token = v
            .get("token")
            .and_then(Value::as_str)
            .ok_or_else(|| EtcdError::Refused("authentication gave no token".into()))?;
        self.token = Some(token.to_owned());
        Ok(())
    }

    /// A transaction: `ops` run when every comparison holds. Returns
    /// whether they held and, per `Get` among the ops run, the key read.
    pub async fn txn(
        &mut self,
        compare: &[Compare],
        ops: &[Op],
        call: Call,
    ) -> Result<(bool, Vec<Option<Kv>>), EtcdError> {
        let compare: Vec<Value> = compare
            .iter()
            .map(|c| match c {
                Compare::ModRevision(k, rev) => json!({
                    "target": "MOD", "key": b64(k), "result": "EQUAL",
                    "mod_revision": rev.to_string(),
                }),
            })
            .collect();
        let ops: Vec<Value> = ops
            .iter()
            .map(|o| match o {
                Op::Get(k) => json!({"request_range": {"key": b64(k)}}),
                Op::Put(k, v, 0) => json!({"request_put": {"key": b64(k), "value": b64(v)}}),
                Op::Put(k, v, lease) => json!({"request_put": {
                    "key": b64(k), "value": b64(v), "lease": lease.to_string(),
                }}),
                Op::Delete(k) => json!({"request_delete_range": {"key": b64(k)}}),
            })
            .collect();
        let body = json!({"compare": compare, "success": ops});
        let v = self.authed("/v3/kv/txn", &body, call).await?;
        let succeeded = v.get("succeeded").and_then(Value::as_bool).unwrap_or(false);
        let mut reads = Vec::new();
        for r in v
            .get("responses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(range) = r.get("response_range") {
                let kv = match range.get("kvs").and_then(Value::as_array) {
                    Some(kvs) if !kvs.is_empty() => Some(parse_kv(&kvs[0])?),
                    _ => None,
                };
                reads.push(kv);
            }
        }
        Ok((succeeded, reads))
    }

    /// A new lease of `ttl_s` seconds; returns its id and the TTL etcd
    /// granted (at least `ttl_s`: etcd raises TTLs below its minimum).
    pub async fn lease_grant(&mut self, ttl_s: u64) -> Result<(i64, u64), EtcdError> {
        let v = self
            .authed(
                "/v3/lease/grant",
                &json!({"TTL": ttl_s.to_string()}),
                Call::Once,
            )
            .await?;
        let id = num(&v["ID"]);
        if id == 0 {
            return Err(EtcdError::Refused(
                "a lease grant answered without a lease id".into(),
            ));
        }
        Ok((id, num(&v["TTL"]).max(0) as u64))
    }

    /// Keeps lease `id` alive; returns the TTL it has now (0: it had
    /// already expired, or does not exist).
    pub async fn keepalive(&mut self, id: i64) -> Result<u64, EtcdError> {
        let v = self
            .authed(
                "/v3/lease/keepalive",
                &json!({"ID": id.to_string()}),
                Call::Repeatable,
            )
            .await?;
        Ok(num(&v["result"]["TTL"]).max(0) as u64)
    }

    /// Revokes lease `id` (deleting its keys); a lease already gone is not
    /// an error.
    pub async fn revoke(&mut self, id: i64) -> Result<(), EtcdError> {
        match self
            .authed(
                "/v3/lease/revoke",
                &json!({"ID": id.to_string()}),
                Call::Repeatable,
            )
            .await
        {
            Err(EtcdError::Refused(m)) if m.contains("not found") => Ok(()),
            r => r.map(|_| ()),
        }
    }
}

fn parse_kv(kv: &Value) -> Result<Kv, EtcdError> {
    let raw = kv.get("value").and_then(Value::as_str).unwrap_or("");
    let bytes = B64
        .decode(raw)
        .map_err(|e| EtcdError::Refused(format!("a value that is not base64: {e}")))?;
    let value = String::from_utf8(bytes)
        .map_err(|_| EtcdError::Refused("a value that is not UTF-8".into()))?;
    Ok(Kv {
        value,
        mod_revision: num(&kv["mod_revision"]),
        lease: num(&kv["lease"]),
    })
}

/// How far a request got.
enum Sent {
    /// The member answered (with an error).
    Answered(EtcdError),
    /// It never reached a member.
    NotDelivered(String),
    /// It may have reached one; no answer came.
    Unknown(String),
}
