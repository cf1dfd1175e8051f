//! SMART Backend Services end to end, over HTTP: discovery
//! (`/.well-known/smart-configuration`, the CapabilityStatement's
//! security), the built-in token endpoint (a client's ES384 assertion for
//! a short-lived token; expired, replayed, misaddressed, wrongly signed
//! assertions and scopes never allowed refused with OAuth errors), scopes
//! enforced per type and interaction, `$export` kept to what the token may
//! read and its files behind the same token, a token issued by one node
//! accepted by another with the same key, and an external issuer's keys
//! fetched from its JWKS URL, cached, and fetched again when it rotates.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::{Resp, TestServer};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use vigil_fhir::config::{AuthConfig, ClientConfig};

const TOKEN_URL: &str = "http://vigil.test/auth/token";
const ADMIN: &str = "admin-token";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs()
}

/// A fresh EC P-384 key: its PKCS#8 PEM and its public JWK named `kid`.
fn es384(kid: &str) -> (String, Jwk) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key");
    let pem = key.serialize_pem();
    let enc = EncodingKey::from_ec_pem(pem.as_bytes()).expect("PKCS#8");
    let mut jwk = Jwk::from_encoding_key(&enc, Algorithm::ES384).expect("jwk");
    jwk.common.key_id = Some(kid.to_owned());
    (pem, jwk)
}

/// The RSA test key (fixtures/test-rs256-private.pem) as a client's key.
fn rsa_key() -> EncodingKey {
    let pem = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/test-rs256-private.pem"),
    )
    .expect("fixture");
    EncodingKey::from_rsa_pem(&pem).expect("RSA key")
}

fn rsa_jwk() -> Jwk {
    let mut jwk = Jwk::from_encoding_key(&rsa_key(), Algorithm::RS384).expect("jwk");
    jwk.common.key_id = Some("r1".into());
    jwk
}

fn sign(pem: &str, kid: &str, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::ES384);
    h.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &h,
        claims,
        &EncodingKey::from_ec_pem(pem.as_bytes()).expect("key"),
    )
    .expect("sign")
}

/// A client's assertion for the token endpoint.
fn assertion(pem: &str, kid: &str, client: &str, exp_in: i64, jti: &str) -> String {
    let exp = (now() as i64 + exp_in) as u64;
    sign(
        pem,
        kid,
        &json!({"iss": client, "sub": client, "aud": TOKEN_URL, "exp": exp, "jti": jti}),
    )
}

fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

async fn token_request(s: &TestServer, scope: &str, assertion: &str) -> Resp {
    s.call(
        Method::POST,
        "/auth/token",
        &[("content-type", "application/x-www-form-urlencoded")],
        form(&[
            ("grant_type", "client_credentials"),
            ("scope", scope),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
        ]),
    )
    .await
}

async fn with_token(s: &TestServer, method: Method, uri: &str, token: &str) -> Resp {
    let auth = format!("Bearer {token}");
    let body = if method == Method::PUT {
        br#"{"resourceType":"Patient","id":"x"}"#.to_vec()
    } else {
        Vec::new()
    };
    s.call(
        method,
        uri,
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/fhir+json"),
            ("accept", "application/fhir+json"),
            ("prefer", "respond-async"),
        ],
        body,
    )
    .await
}

/// Kicks off `uri` with `token` and polls to the manifest; answers the
/// status URL's path and the manifest.
async fn export_with(s: &TestServer, uri: &str, token: &str) -> (String, Value) {
    let r = with_token(s, Method::GET, uri, token).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let status = r
        .header("content-location")
        .and_then(|l| l.strip_prefix("http://vigil.test"))
        .expect("status URL")
        .to_owned();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(550)).await;
        let r = with_token(s, Method::GET, &status, token).await;
        if r.status == StatusCode::OK {
            return (status, r.body);
        }
        assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    }
    panic!("the export did not finish");
}

struct Cluster {
    _keys: tempfile::TempDir,
    config: AuthConfig,
    client_pem: String,
    other_pem: String,
}

/// The `[auth]` both nodes share: the signing key, a static admin token,
/// and two registered clients.
fn cluster() -> Cluster {
    let keys = tempfile::tempdir().expect("dir");
    let (server_pem, _) = es384("server");
    let signing = keys.path().join("token-signing.key");
    std::fs::write(&signing, server_pem).expect("write key");
    let (client_pem, client_jwk) = es384("c1");
    let (other_pem, other_jwk) = es384("o1");
    let config = AuthConfig {
        tokens: vec![ADMIN.into()],
        token_signing_key: Some(signing),
        clients: vec![
            ClientConfig {
                id: "bulk".into(),
                jwks: Some(json!({"keys": [client_jwk]}).to_string()),
                scopes: "system/Patient.rs system/Observation.read".into(),
                ..ClientConfig::default()
            },
            ClientConfig {
                id: "rsa".into(),
                jwks: Some(json!({"keys": [rsa_jwk()]}).to_string()),
                scopes: "system/Patient.read".into(),
                ..ClientConfig::default()
            },
            ClientConfig {
                id: "other".into(),
                jwks: Some(json!({"keys": [other_jwk]}).to_string()),
                scopes: "system/*.rs".into(),
                ..ClientConfig::default()
            },
        ],
        ..AuthConfig::default()
    };
    Cluster {
        _keys: keys,
        config,
        client_pem,
        other_pem,
    }
}

async fn load(s: &TestServer) {
    for (ty, id, extra) in [
        ("Patient", "p1", json!({})),
        ("Patient", "p2", json!({})),
        (
            "Observation",
            "o1",
            json!({"status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/p1"}}),
        ),
        (
            "Condition",
            "c1",
            json!({"subject": {"reference": "Patient/p1"}}),
        ),
    ] {
        let mut body = json!({"resourceType": ty, "id": id});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        let r = s
            .call(
                Method::PUT,
                &format!("/{ty}/{id}"),
                &[
                    ("authorization", &format!("Bearer {ADMIN}")),
                    ("content-type", "application/fhir+json"),
                ],
                body.to_string(),
            )
            .await;
        assert!(r.status.is_success(), "{:?}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gets_a_token_and_uses_it_within_its_scopes() {
    let c = cluster();
    let s = TestServer::with(|cfg| cfg.auth = c.config.clone());
    tokio::spawn(vigil_fhir::export::worker(s.app.clone()));
    load(&s).await;

    // Discovery.
    let r = s.get("/.well-known/smart-configuration").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["token_endpoint"], TOKEN_URL);
    assert!(
        r.body["token_endpoint_auth_signing_alg_values_supported"]
            .as_array()
            .expect("algs")
            .contains(&json!("ES384"))
    );
    let scopes = r.body["scopes_supported"].as_array().expect("scopes");
    assert!(scopes.contains(&json!("system/*.read")) && scopes.contains(&json!("system/*.rs")));
    assert_eq!(
        r.body["grant_types_supported"],
        json!(["client_credentials"])
    );
    let m = s.get("/metadata").await;
    assert_eq!(
        m.body["rest"][0]["security"]["extension"][0]["extension"][0]["valueUri"],
        TOKEN_URL
    );

    // The token: what was asked for, narrowed to what the client may have.
    let r = token_request(
        &s,
        "system/Patient.rs system/Observation.rs system/Condition.rs",
        &assertion(&c.client_pem, "c1", "bulk", 240, "jti-1"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.body["token_type"], "bearer");
    assert_eq!(r.body["expires_in"], 300);
    assert_eq!(r.body["scope"], "system/Patient.rs system/Observation.rs");
    let token = r.body["access_token"].as_str().expect("token").to_owned();

    // Enforced per type and interaction.
    for (method, uri, bearer, expected) in [
        (Method::GET, "/Patient/p1", token.as_str(), StatusCode::OK),
        (
            Method::GET,
            "/Observation?subject=Patient/p1",
            &token,
            StatusCode::OK,
        ),
        (Method::PUT, "/Patient/x", &token, StatusCode::FORBIDDEN),
        (Method::GET, "/Condition/c1", &token, StatusCode::FORBIDDEN),
        (
            Method::GET,
            "/Patient/p1",
            "not-a-token",
            StatusCode::UNAUTHORIZED,
        ),
    ] {
        let r = with_token(&s, method.clone(), uri, bearer).await;
        assert_eq!(r.status, expected, "{method} {uri}: {:?}", r.body);
    }

    // $export: a type the token may not read is refused; without _type the
    // export holds what it may read, and says so in its error file.
    let r = with_token(&s, Method::GET, "/$export?_type=Condition", &token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    let (status, manifest) = export_with(&s, "/$export", &token).await;
    assert_eq!(manifest["requiresAccessToken"], true, "{manifest}");
    let types: BTreeSet<&str> = manifest["output"]
        .as_array()
        .expect("output")
        .iter()
        .filter_map(|o| o["type"].as_str())
        .collect();
    assert_eq!(types, ["Observation", "Patient"].into());
    let file = manifest["output"][0]["url"]
        .as_str()
        .and_then(|u| u.strip_prefix("http://vigil.test"))
        .expect("file")
        .to_owned();
    assert_eq!(
        with_token(&s, Method::GET, &file, &token).await.status,
        StatusCode::OK
    );
    assert_eq!(
        s.get(&file).await.status,
        StatusCode::UNAUTHORIZED,
        "files need the token"
    );
    let errors = manifest["error"].as_array().expect("error files");
    assert_eq!(errors.len(), 1, "{manifest}");
    // Another client may not see this client's job.
    let r = token_request(
        &s,
        "system/*.rs",
        &assertion(&c.other_pem, "o1", "other", 120, "jti-o"),
    )
    .await;
    let other = r.body["access_token"].as_str().expect("token").to_owned();
    assert_eq!(
        with_token(&s, Method::GET, &file, &other).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        with_token(&s, Method::DELETE, &status, &other).await.status,
        StatusCode::FORBIDDEN
    );

    // The other node, with the same [auth]: the same discovery, and the
    // token is valid there.
    let s2 = TestServer::with(|cfg| cfg.auth = c.config.clone());
    assert_eq!(
        s2.get("/.well-known/smart-configuration").await.body,
        s.get("/.well-known/smart-configuration").await.body
    );
    load(&s2).await;
    assert_eq!(
        with_token(&s2, Method::GET, "/Patient/p1", &token)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn bad_token_requests_get_oauth_errors() {
    let c = cluster();
    let s = TestServer::with(|cfg| cfg.auth = c.config.clone());
    let scope = "system/Patient.rs";
    let oauth = |r: &Resp| r.body["error"].as_str().unwrap_or("").to_owned();
    // Replay.
    let a = assertion(&c.client_pem, "c1", "bulk", 240, "once");
    assert_eq!(token_request(&s, scope, &a).await.status, StatusCode::OK);
    let r = token_request(&s, scope, &a).await;
    assert_eq!(
        (r.status, oauth(&r).as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_client")
    );
    assert!(
        r.body["error_description"]
            .as_str()
            .unwrap_or("")
            .contains("used before")
    );
    // An RS384 assertion from a client with an RSA key: accepted, and
    // narrowed to that client's v1 scope (read = r and s).
    let mut h = Header::new(Algorithm::RS384);
    h.kid = Some("r1".into());
    let rs = jsonwebtoken::encode(
        &h,
        &json!({"iss": "rsa", "sub": "rsa", "aud": TOKEN_URL, "exp": now() + 60, "jti": "r-1"}),
        &rsa_key(),
    )
    .expect("sign");
    let r = token_request(&s, "system/Patient.rs system/Patient.c", &rs).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["scope"], "system/Patient.rs");
    // Expired; living too long; no jti.
    for (exp_in, jti, words) in [(-300, "e1", "xpired"), (3_600, "e2", "at most")] {
        let r = token_request(
            &s,
            scope,
            &assertion(&c.client_pem, "c1", "bulk", exp_in, jti),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
        let d = r.body["error_description"].as_str().unwrap_or("");
        assert!(d.contains(words), "{d}");
    }
    let no_jti = sign(
        &c.client_pem,
        "c1",
        &json!({"iss": "bulk", "sub": "bulk", "aud": TOKEN_URL, "exp": now() + 60}),
    );
    assert_eq!(
        token_request(&s, scope, &no_jti).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Wrong audience; unknown client; signed by a key not the client's.
    let wrong_aud = sign(
        &c.client_pem,
        "c1",
        &json!({"iss": "bulk", "sub": "bulk", "aud": "http://elsewhere/token", "exp": now() + 60, "jti": "a1"}),
    );
    let r = token_request(&s, scope, &wrong_aud).await;
    assert_eq!(
        (r.status, oauth(&r).as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_client")
    );
    let r = token_request(
        &s,
        scope,
        &assertion(&c.client_pem, "c1", "nobody", 60, "a2"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = token_request(&s, scope, &assertion(&c.other_pem, "c1", "bulk", 60, "a3")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "forged: {:?}", r.body);
    // An HS256 assertion.
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"iss": "bulk", "sub": "bulk", "aud": TOKEN_URL, "exp": now() + 60, "jti": "a4"}),
        &EncodingKey::from_secret(b"guess"),
    )
    .expect("sign");
    assert_eq!(
        token_request(&s, scope, &hs).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A scope never allowed; another grant type; not a form.
    let r = token_request(
        &s,
        "system/Condition.rs",
        &assertion(&c.client_pem, "c1", "bulk", 60, "a5"),
    )
    .await;
    assert_eq!(
        (r.status, oauth(&r).as_str()),
        (StatusCode::BAD_REQUEST, "invalid_scope")
    );
    for (content_type, body, error) in [
        (
            "application/x-www-form-urlencoded",
            form(&[("grant_type", "password"), ("scope", scope)]),
            "unsupported_grant_type",
        ),
        ("application/json", b"{}".to_vec(), "invalid_request"),
    ] {
        let r = s
            .call(
                Method::POST,
                "/auth/token",
                &[("content-type", content_type)],
                body,
            )
            .await;
        assert_eq!(
            (r.status, oauth(&r).as_str()),
            (StatusCode::BAD_REQUEST, error)
        );
    }
    // A token issued elsewhere (another signing key) is not accepted.
    let other_cluster = cluster();
    let s3 = TestServer::with(|cfg| cfg.auth = other_cluster.config.clone());
    let r = token_request(
        &s3,
        scope,
        &assertion(&other_cluster.client_pem, "c1", "bulk", 60, "x"),
    )
    .await;
    let foreign = r.body["access_token"].as_str().expect("token").to_owned();
    assert_eq!(
        with_token(&s, Method::GET, "/Patient", &foreign)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

/// A JWKS served on loopback at `/jwks`, whose keys the test can change
/// and whose fetches it counts, and the issuer's metadata naming it at
/// `/.well-known/openid-configuration`. Answers the JWKS URL.
async fn jwks_server(keys: Arc<Mutex<Vec<Jwk>>>, fetches: Arc<AtomicUsize>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let metadata =
        json!({"issuer": format!("http://{addr}"), "jwks_uri": format!("http://{addr}/jwks")});
    let app = axum::Router::new()
        .route(
            "/jwks",
            axum::routing::get(move || {
                let keys = keys.clone();
                let fetches = fetches.clone();
                async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let k = keys.lock().expect("lock").clone();
                    json!({"keys": k}).to_string()
                }
            }),
        )
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                let m = metadata.to_string();
                async move { m }
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/jwks")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuers_keys_are_found_from_its_metadata() {
    let (pem, jwk) = es384("k1");
    let fetches = Arc::new(AtomicUsize::new(0));
    let url = jwks_server(Arc::new(Mutex::new(vec![jwk])), fetches.clone()).await;
    let issuer = url.trim_end_matches("/jwks").to_owned();
    let s = TestServer::with(|cfg| {
        cfg.auth = AuthConfig {
            jwt_issuer: Some(issuer.clone()),
            jwks_discovery: true,
            ..AuthConfig::default()
        }
    });
    let token = sign(
        &pem,
        "k1",
        &json!({"iss": issuer, "exp": now() + 300, "scope": "system/Patient.rs"}),
    );
    let r = with_token(&s, Method::GET, "/Patient", &token).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    // An issuer that publishes no metadata: a 401 that says why.
    let lost = TestServer::with(|cfg| {
        cfg.auth = AuthConfig {
            jwt_issuer: Some("http://127.0.0.1:9".into()),
            jwks_discovery: true,
            ..AuthConfig::default()
        }
    });
    let r = with_token(&lost, Method::GET, "/Patient", &token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.diagnostics().contains("openid-configuration"),
        "{}",
        r.diagnostics()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_issuers_keys_are_fetched_cached_and_rotated() {
    let (pem1, jwk1) = es384("k1");
    let (pem2, jwk2) = es384("k2");
    let keys = Arc::new(Mutex::new(vec![jwk1]));
    let fetches = Arc::new(AtomicUsize::new(0));
    let url = jwks_server(keys.clone(), fetches.clone()).await;
    let s = TestServer::with(|cfg| {
        cfg.auth = AuthConfig {
            jwks_url: Some(url),
            jwt_issuer: Some("https://idp.test".into()),
            jwt_audience: Some("http://vigil.test".into()),
            token_endpoint: Some("https://idp.test/token".into()),
            ..AuthConfig::default()
        }
    });
    let token = |pem: &str, kid: &str, iss: &str| {
        sign(
            pem,
            kid,
            &json!({"iss": iss, "aud": "http://vigil.test", "exp": now() + 300, "scope": "system/Patient.rs", "client_id": "ext"}),
        )
    };
    let t1 = token(&pem1, "k1", "https://idp.test");
    for _ in 0..3 {
        let r = with_token(&s, Method::GET, "/Patient", &t1).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "the keys are cached");
    assert_eq!(
        with_token(&s, Method::GET, "/Observation", &t1)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        with_token(
            &s,
            Method::GET,
            "/Patient",
            &token(&pem1, "k1", "https://evil.test")
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED,
        "another issuer"
    );
    // The issuer rotates to k2: a token naming k2 makes one new fetch (once
    // the least interval between fetches has passed).
    *keys.lock().expect("lock") = vec![jwk2];
    tokio::time::sleep(vigil_fhir::http::jwks::REFETCH_MIN).await;
    let t2 = token(&pem2, "k2", "https://idp.test");
    let r = with_token(&s, Method::GET, "/Patient", &t2).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    // An unknown kid right after: no fetch storm, a 401.
    let r = with_token(
        &s,
        Method::GET,
        "/Patient",
        &token(&pem2, "k9", "https://idp.test"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "within REFETCH_MIN: no fetch"
    );
    // Discovery names the external token endpoint.
    let r = s.get("/.well-known/smart-configuration").await;
    assert_eq!(r.body["token_endpoint"], "https://idp.test/token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_that_needs_a_token_keeps_needing_it_on_another_node() {
    let c = cluster();
    let shared = tempfile::tempdir().expect("dir");
    let place = |cfg: &mut vigil_fhir::config::Config| {
        cfg.data = shared.path().join("data");
        cfg.export_dir = Some(shared.path().join("exports"));
    };
    let a = TestServer::with(|cfg| {
        place(cfg);
        cfg.auth = c.config.clone();
    });
    let worker = tokio::spawn(vigil_fhir::export::worker(a.app.clone()));
    load(&a).await;
    let (status, manifest) = export_with(&a, "/$export?_type=Patient", ADMIN).await;
    assert_eq!(manifest["requiresAccessToken"], true, "{manifest}");
    worker.abort();
    let _ = worker.await;
    drop(a);
    // The same store and exports served by a node without authorization
    // (a misconfigured new leader): the files stay closed.
    let b = TestServer::with(place);
    let file = manifest["output"][0]["url"]
        .as_str()
        .and_then(|u| u.strip_prefix("http://vigil.test"))
        .expect("file")
        .to_owned();
    let r = b.get(&file).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert!(r.diagnostics().contains("requires an access token"));
    let r = b.get(&status).await;
    assert_eq!(
        r.body["requiresAccessToken"], true,
        "the manifest still says so"
    );
}
