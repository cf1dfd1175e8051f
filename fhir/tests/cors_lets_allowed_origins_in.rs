//! Guards CORS: a browser app on an allowed origin gets its preflight
//! answered (before authorisation: a preflight carries no credentials) and
//! can read responses and the headers FHIR clients need; an origin not
//! allowed gets a 403 OperationOutcome to its preflight and no CORS
//! headers; with no `[cors]` origins (the default) nothing is allowed; a
//! bad origin in the configuration is refused with a clear message.

mod common;

use axum::http::{Method, StatusCode};
use common::TestServer;
use serde_json::json;
use vigil_fhir::config::{AuthConfig, Config, CorsConfig};

const APP: &str = "https://smart-app.example";

fn preflight(origin: &str) -> [(&str, &str); 3] {
    [
        ("origin", origin),
        ("access-control-request-method", "PUT"),
        (
            "access-control-request-headers",
            "authorization, content-type, if-match",
        ),
    ]
}

#[tokio::test]
async fn an_allowed_origin_is_answered_and_others_are_refused() {
    let s = TestServer::with(|c| {
        c.cors = CorsConfig {
            allowed_origins: vec![APP.into()],
            max_age_s: 300,
        };
        c.auth = AuthConfig {
            tokens: vec!["secret".into()],
            ..AuthConfig::default()
        };
    });
    let ok = s
        .call(Method::OPTIONS, "/Patient/p1", &preflight(APP), Vec::new())
        .await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT, "no token needed");
    assert_eq!(ok.header("access-control-allow-origin"), Some(APP));
    assert_eq!(ok.header("vary"), Some("Origin"));
    let methods = ok.header("access-control-allow-methods").expect("methods");
    assert!(
        methods.contains("PUT") && methods.contains("PATCH"),
        "{methods}"
    );
    let headers = ok.header("access-control-allow-headers").expect("headers");
    for h in ["Authorization", "Content-Type", "If-Match", "Prefer"] {
        assert!(headers.contains(h), "{h} in {headers}");
    }
    assert_eq!(ok.header("access-control-max-age"), Some("300"));

    let body = serde_json::to_vec(&json!({"resourceType": "Patient", "id": "p1"})).expect("json");
    let put = s
        .call(
            Method::PUT,
            "/Patient/p1",
            &[
                ("origin", APP),
                ("authorization", "Bearer secret"),
                ("content-type", "application/fhir+json"),
            ],
            body,
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED);
    assert_eq!(put.header("access-control-allow-origin"), Some(APP));
    let exposed = put
        .header("access-control-expose-headers")
        .expect("exposed");
    for h in ["Location", "ETag", "Content-Location", "Last-Modified"] {
        assert!(exposed.contains(h), "{h} in {exposed}");
    }
    // Without a token the request itself is still refused (401), and the
    // browser may read why.
    let unauth = s
        .call(Method::GET, "/Patient/p1", &[("origin", APP)], Vec::new())
        .await;
    assert_eq!(unauth.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unauth.header("access-control-allow-origin"), Some(APP));

    let other = "https://evil.example";
    let refused = s
        .call(
            Method::OPTIONS,
            "/Patient/p1",
            &preflight(other),
            Vec::new(),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.body["resourceType"], "OperationOutcome");
    assert!(
        refused.diagnostics().contains(other),
        "{}",
        refused.diagnostics()
    );
    assert_eq!(refused.header("access-control-allow-origin"), None);
    let read = s
        .call(
            Method::GET,
            "/Patient/p1",
            &[("origin", other), ("authorization", "Bearer secret")],
            Vec::new(),
        )
        .await;
    assert_eq!(
        read.status,
        StatusCode::OK,
        "the server answers; the browser blocks"
    );
    assert_eq!(read.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn no_origin_is_allowed_by_default_and_bad_origins_are_refused_at_start() {
    let s = TestServer::new();
    let r = s
        .call(Method::OPTIONS, "/Patient", &preflight(APP), Vec::new())
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["resourceType"], "OperationOutcome");

    for bad in ["app.example", "https://app.example/path", "ftp://x"] {
        let c = Config {
            cors: CorsConfig {
                allowed_origins: vec![bad.into()],
                ..CorsConfig::default()
            },
            ..Config::default()
        };
        let e = c.validate().expect_err(bad);
        assert!(e.to_string().contains("not an origin"), "{bad}: {e}");
    }
}
