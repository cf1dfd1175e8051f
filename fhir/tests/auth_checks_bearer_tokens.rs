//! Guards optional authorisation: static tokens, HS256 and RS256 JWTs,
//! 401 with `WWW-Authenticate` for a missing, wrong, expired or forged
//! token, 403 when the token's scopes do not cover the request, and open
//! `/metadata` and health endpoints.

mod common;

use axum::http::{Method, StatusCode};
use common::TestServer;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use vigil_fhir::config::AuthConfig;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs()
}

fn hs256(secret: &str, claims: serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

async fn status_with(s: &TestServer, method: Method, uri: &str, token: Option<&str>) -> StatusCode {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/fhir+json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let body = if method == Method::PUT {
        br#"{"resourceType":"Patient","id":"p"}"#.to_vec()
    } else {
        Vec::new()
    };
    s.call(method, uri, &headers, body).await.status
}

#[tokio::test]
async fn static_tokens_and_hs256_jwts() {
    let s = TestServer::with(|c| {
        c.auth = AuthConfig {
            tokens: vec!["static-secret".into()],
            jwt_hs256_secret: Some("shared".into()),
            jwt_issuer: Some("https://idp.test".into()),
            ..AuthConfig::default()
        }
    });
    let r = s.get("/Patient/p").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(r.body["resourceType"], "OperationOutcome");
    assert_eq!(
        s.get("/metadata").await.status,
        StatusCode::OK,
        "metadata stays open"
    );
    assert_eq!(s.get("/health/live").await.status, StatusCode::OK);

    assert_eq!(
        status_with(&s, Method::PUT, "/Patient/p", Some("static-secret")).await,
        StatusCode::CREATED
    );
    assert_eq!(
        status_with(&s, Method::GET, "/Patient/p", Some("wrong")).await,
        StatusCode::UNAUTHORIZED
    );

    let good = hs256(
        "shared",
        json!({"iss": "https://idp.test", "exp": now() + 600}),
    );
    assert_eq!(
        status_with(&s, Method::GET, "/Patient/p", Some(&good)).await,
        StatusCode::OK
    );
    let expired = hs256(
        "shared",
        json!({"iss": "https://idp.test", "exp": now() - 600}),
    );
    assert_eq!(
        status_with(&s, Method::GET, "/Patient/p", Some(&expired)).await,
        StatusCode::UNAUTHORIZED
    );
    let forged = hs256(
        "not-the-secret",
        json!({"iss": "https://idp.test", "exp": now() + 600}),
    );
    assert_eq!(
        status_with(&s, Method::GET, "/Patient/p", Some(&forged)).await,
        StatusCode::UNAUTHORIZED
    );
    let other_issuer = hs256(
        "shared",
        json!({"iss": "https://evil.test", "exp": now() + 600}),
    );
    assert_eq!(
        status_with(&s, Method::GET, "/Patient/p", Some(&other_issuer)).await,
        StatusCode::UNAUTHORIZED
    );

    let reader = hs256(
        "shared",
        json!({"iss": "https://idp.test", "exp": now() + 600, "scope": "user/Patient.read"}),
    );
    assert_eq!(
        status_with(&s, Method::GET, "/Patient/p", Some(&reader)).await,
        StatusCode::OK
    );
    let denied = s
        .call(
            Method::PUT,
            "/Patient/p",
            &[
                ("content-type", "application/fhir+json"),
                ("authorization", &format!("Bearer {reader}")),
            ],
            br#"{"resourceType":"Patient","id":"p"}"#.to_vec(),
        )
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert!(denied.diagnostics().contains("user/Patient.read"));
    assert_eq!(
        status_with(&s, Method::GET, "/Observation/x", Some(&reader)).await,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn rs256_jwts_from_a_key_file() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let s = TestServer::with(|c| {
        c.auth = AuthConfig {
            jwt_rs256_public_key: Some(fixtures.join("test-rs256-public.pem")),
            jwt_audience: Some("vigil".into()),
            ..AuthConfig::default()
        }
    });
    let private = std::fs::read(fixtures.join("test-rs256-private.pem")).expect("key");
    let key = EncodingKey::from_rsa_pem(&private).expect("pem");
    let token = encode(
        &Header::new(Algorithm::RS256),
        &json!({"aud": "vigil", "exp": now() + 600}),
        &key,
    )
    .expect("sign");
    assert_eq!(
        status_with(&s, Method::PUT, "/Patient/p", Some(&token)).await,
        StatusCode::CREATED
    );
    let wrong_aud = encode(
        &Header::new(Algorithm::RS256),
        &json!({"aud": "other", "exp": now() + 600}),
        &key,
    )
    .expect("sign");
    assert_eq!(
        status_with(&s, Method::GET, "/Patient/p", Some(&wrong_aud)).await,
        StatusCode::UNAUTHORIZED
    );
    let hs = hs256("whatever", json!({"aud": "vigil", "exp": now() + 600}));
    assert_eq!(
        status_with(&s, Method::GET, "/Patient/p", Some(&hs)).await,
        StatusCode::UNAUTHORIZED,
        "an HS256 token is refused"
    );
}
