//! SMART Backend Services on a real two-region cluster: both nodes share
//! the `[auth]` configuration (the token-signing key `vigil certs` wrote, a
//! registered client), so the follower publishes the same discovery, a
//! token issued by the leader is accepted by the follower, and an export
//! started with a client's token on the leader and finished by the new
//! leader after a kill -9 keeps its files behind a token.

use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use vigil_fhir::config::{ClientConfig, Config};
use vigil_testkit::http::{Reply, request_with};
use vigil_testkit::until;
use vigil_tests::dr::{Bins, Dr, leads};

const BINS: Bins = Bins {
    node: env!("CARGO_BIN_EXE_vigil_node"),
    witness: env!("CARGO_BIN_EXE_vigil_witness"),
};
const LEASE_MS: u64 = 1_000;
const ADMIN: &str = "Bearer admin-token";
/// Where the test leaves the client's public keys for the nodes' configs.
const CLIENT_JWKS: &str = "client-jwks.json";

/// Both nodes' `[auth]`: a static admin token, the cluster's signing key,
/// one registered client (its keys from the certificates directory).
fn with_auth(c: &mut Config) {
    let certs = c
        .replication
        .as_ref()
        .map(|r| r.certs.clone())
        .expect("a cluster node");
    c.auth.tokens = vec!["admin-token".into()];
    c.auth.token_signing_key = Some(certs.join(vigil_net::runtime::tls::TOKEN_SIGNING_KEY));
    c.auth.clients = vec![ClientConfig {
        id: "bulk".into(),
        jwks: std::fs::read_to_string(certs.join(CLIENT_JWKS)).ok(),
        scopes: "system/*.rs".into(),
        ..ClientConfig::default()
    }];
}

fn call(addr: std::net::SocketAddr, method: &str, path: &str, auth: Option<&str>) -> Reply {
    let mut headers = vec![
        ("Accept", "application/fhir+json"),
        ("Content-Type", "application/fhir+json"),
        ("Prefer", "respond-async"),
    ];
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    request_with(addr, method, path, None, &headers).expect("request")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs()
}

#[test]
fn tokens_and_a_protected_export_survive_a_failover() {
    // The client's key: public half where the nodes' configs read it.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key");
    let signing = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).expect("pkcs8");
    let mut jwk = Jwk::from_encoding_key(&signing, Algorithm::ES384).expect("jwk");
    jwk.common.key_id = Some("c1".into());
    let mut dr = Dr::new(BINS, 0, LEASE_MS);
    std::fs::write(
        dr.certs().join(CLIENT_JWKS),
        json!({"keys": [jwk]}).to_string(),
    )
    .expect("jwks");
    dr.configure("a", with_auth);
    dr.configure("b", with_auth);
    let _w = dr.witness();
    let a = dr.start("a");
    let b = dr.start("b");
    until("a leads", Duration::from_secs(60), || leads(a.http));

    // Data, through the admin token: enough that the export (3-resource
    // chunks, each recorded in the replicated log) is caught mid-way.
    let mut rng = vigil_fhir::synth::Rng::new(7);
    let mut total = 0;
    for _ in 0..60 {
        let bundle = vigil_fhir::synth::transaction_bundle(&mut rng, 40).to_string();
        let r = request_with(
            a.http,
            "POST",
            "/",
            Some(&bundle),
            &[
                ("Authorization", ADMIN),
                ("Content-Type", "application/fhir+json"),
            ],
        )
        .expect("bundle");
        assert_eq!(r.status, 200, "{}", r.body);
        let resp: Value = serde_json::from_str(&r.body).expect("json");
        total += resp["entry"].as_array().map_or(0, Vec::len);
    }

    // The follower's discovery is the leader's (but for its own address).
    let doc = |addr| -> Value {
        let r = call(addr, "GET", "/.well-known/smart-configuration", None);
        assert_eq!(r.status, 200, "{}", r.body);
        serde_json::from_str(&r.body).expect("json")
    };
    let (da, db) = (doc(a.http), doc(b.http));
    for field in [
        "grant_types_supported",
        "token_endpoint_auth_signing_alg_values_supported",
        "scopes_supported",
        "capabilities",
    ] {
        assert_eq!(da[field], db[field], "{field}");
    }
    let security = |addr| -> Value {
        let r = call(addr, "GET", "/metadata", None);
        let m: Value = serde_json::from_str(&r.body).expect("json");
        m["rest"][0]["security"]["service"].clone()
    };
    assert_eq!(security(a.http), security(b.http));
    assert!(security(a.http).is_array());

    // A token from the leader's endpoint.
    let token_url = da["token_endpoint"].as_str().expect("endpoint").to_owned();
    let mut h = Header::new(Algorithm::ES384);
    h.kid = Some("c1".into());
    let assertion = jsonwebtoken::encode(
        &h,
        &json!({"iss": "bulk", "sub": "bulk", "aud": token_url, "exp": now() + 240, "jti": "one"}),
        &signing,
    )
    .expect("sign");
    let form = format!(
        "grant_type=client_credentials&scope=system%2F*.rs&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={assertion}"
    );
    let r = request_with(
        a.http,
        "POST",
        "/auth/token",
        Some(&form),
        &[("Content-Type", "application/x-www-form-urlencoded")],
    )
    .expect("token");
    assert_eq!(r.status, 200, "{}", r.body);
    let t: Value = serde_json::from_str(&r.body).expect("json");
    let bearer = format!("Bearer {}", t["access_token"].as_str().expect("token"));
    // Valid on the follower too.
    until("the follower has the data", Duration::from_secs(30), || {
        call(b.http, "GET", "/Patient?_summary=count", Some(&bearer)).status == 200
    });
    assert_eq!(
        call(b.http, "GET", "/Patient?_summary=count", None).status,
        401
    );
    let r = call(
        a.http,
        "GET",
        "/Patient?_summary=count",
        Some("Bearer forged"),
    );
    assert_eq!(r.status, 401);

    // An export with the client's token, caught mid-way by a kill -9.
    let r = call(a.http, "GET", "/$export", Some(&bearer));
    assert_eq!(r.status, 202, "{}", r.body);
    let status = r
        .header("content-location")
        .and_then(|l| l.split_once("/$export-status/"))
        .map(|(_, id)| format!("/$export-status/{id}"))
        .expect("status URL");
    until("the export is under way", Duration::from_secs(30), || {
        let r = call(a.http, "GET", &status, Some(&bearer));
        r.status == 202
            && r.header("x-progress")
                .is_some_and(|p| p.contains(" of ") && !p.starts_with("0 of"))
    });
    let _ = a.child.kill9();
    let mut manifest = Value::Null;
    until(
        "the new leader finishes the export",
        Duration::from_secs(60),
        || {
            let r = call(b.http, "GET", &status, Some(&bearer));
            if r.status == 200 {
                manifest = serde_json::from_str(&r.body).expect("manifest");
            }
            r.status == 200
        },
    );
    assert_eq!(manifest["requiresAccessToken"], true, "{manifest}");
    let mut lines = 0;
    for o in manifest["output"].as_array().expect("output") {
        let file = o["url"]
            .as_str()
            .and_then(|u| u.split_once("/$export-file/"))
            .map(|(_, f)| format!("/$export-file/{f}"))
            .expect("file URL");
        assert_eq!(call(b.http, "GET", &file, None).status, 401, "{file}");
        let r = call(b.http, "GET", &file, Some(&bearer));
        assert_eq!(r.status, 200, "{}", r.body);
        lines += r.body.lines().count();
    }
    assert_eq!(lines, total, "every resource once");
}
