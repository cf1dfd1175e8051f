//! Guards the error contract: every mistake a client can make gets the
//! right status and an OperationOutcome that says what is wrong, and
//! nothing is written.

mod common;

use axum::http::{Method, StatusCode};
use common::TestServer;

/// method, URI, headers, body, expected status, text the diagnostics must hold.
type Case<'a> = (
    Method,
    &'a str,
    Vec<(&'a str, &'a str)>,
    Vec<u8>,
    StatusCode,
    &'a str,
);

#[tokio::test]
async fn each_mistake_has_its_status_and_message() {
    let s = TestServer::with(|c| c.max_body_bytes = 4096);
    let ct = [("content-type", "application/fhir+json")];
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            "/Patient",
            ct.to_vec(),
            b"{\n \"resourceType\": \"Patient\",\n oops }".to_vec(),
            StatusCode::BAD_REQUEST,
            "line 3 column 2",
        ),
        (
            Method::POST,
            "/Patient",
            ct.to_vec(),
            br#"{"resourceType":"Patientt"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "not an R4 resource type",
        ),
        (
            Method::POST,
            "/Patient",
            ct.to_vec(),
            br#"{"resourceType":"Observation"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "URL names Patient",
        ),
        (
            Method::POST,
            "/Patientt",
            ct.to_vec(),
            br#"{"resourceType":"Patient"}"#.to_vec(),
            StatusCode::NOT_FOUND,
            "not an R4 resource type",
        ),
        (
            Method::GET,
            "/Patient/bad_id!",
            vec![],
            vec![],
            StatusCode::BAD_REQUEST,
            "not a valid id",
        ),
        (
            Method::PUT,
            "/Patient/a",
            ct.to_vec(),
            br#"{"resourceType":"Patient","id":"a","x":"y"}"#.repeat(200),
            StatusCode::PAYLOAD_TOO_LARGE,
            "exceeds the limit of 4096",
        ),
        (
            Method::POST,
            "/Patient",
            vec![("content-type", "application/fhir+xml")],
            b"<Patient/>".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not supported",
        ),
        (
            Method::GET,
            "/Patient/a",
            vec![("accept", "application/fhir+xml")],
            vec![],
            StatusCode::NOT_ACCEPTABLE,
            "application/fhir+json",
        ),
        (
            Method::GET,
            "/Patient/a?_format=xml",
            vec![],
            vec![],
            StatusCode::NOT_ACCEPTABLE,
            "_format=xml",
        ),
        (
            Method::DELETE,
            "/metadata",
            vec![],
            vec![],
            StatusCode::METHOD_NOT_ALLOWED,
            "DELETE is not supported",
        ),
        (
            Method::GET,
            "/Patient/a/b/c/d",
            vec![],
            vec![],
            StatusCode::NOT_FOUND,
            "no FHIR interaction",
        ),
        // FHIR JSON as a patch is a FHIRPath Patch: a Parameters resource.
        (
            Method::PATCH,
            "/Patient/a",
            ct.to_vec(),
            b"[]".to_vec(),
            StatusCode::BAD_REQUEST,
            "a FHIRPath Patch is a Parameters resource",
        ),
        (
            Method::PATCH,
            "/Patient/a",
            vec![("content-type", "text/plain")],
            b"[]".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "json-patch+json",
        ),
    ];
    for (method, uri, headers, body, status, needle) in cases {
        let r = s.call(method.clone(), uri, &headers, body).await;
        assert_eq!(
            r.status,
            status,
            "{method} {uri}: {}",
            String::from_utf8_lossy(&r.raw)
        );
        assert_eq!(r.body["resourceType"], "OperationOutcome", "{method} {uri}");
        assert_eq!(r.body["issue"][0]["severity"], "error");
        assert!(r.body["issue"][0]["code"].is_string());
        assert!(
            r.diagnostics().contains(needle),
            "{method} {uri}: {:?} lacks {needle:?}",
            r.diagnostics()
        );
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("application/fhir+json"))
        );
    }
    assert_eq!(
        s.app
            .store()
            .expect("store")
            .stats()
            .expect("stats")
            .versions,
        0,
        "nothing was written"
    );
}
