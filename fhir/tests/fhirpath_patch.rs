//! FHIRPath Patch over HTTP: `PATCH` with a `Parameters` body on an
//! instance, as a conditional patch and in Bundles, with If-Match; bad
//! patches get an OperationOutcome and write nothing.

mod common;

use axum::http::{Method, StatusCode};
use common::{Resp, TestServer};
use serde_json::{Value, json};

fn op(kind: &str, path: &str, rest: Value) -> Value {
    let mut part = vec![
        json!({"name": "type", "valueCode": kind}),
        json!({"name": "path", "valueString": path}),
    ];
    if let Value::Array(more) = rest {
        part.extend(more);
    }
    json!({"name": "operation", "part": part})
}

fn params(ops: Vec<Value>) -> Value {
    json!({"resourceType": "Parameters", "parameter": ops})
}

async fn patch(s: &TestServer, uri: &str, body: &Value, extra: &[(&str, &str)]) -> Resp {
    let mut h = vec![("content-type", "application/fhir+json")];
    h.extend_from_slice(extra);
    s.call(
        Method::PATCH,
        uri,
        &h,
        serde_json::to_vec(body).expect("json"),
    )
    .await
}

fn patient() -> Value {
    json!({"resourceType": "Patient", "id": "p1", "birthDate": "1920-01-01",
           "identifier": [{"system": "http://example.org", "value": "one"},
                          {"system": "http://example.org", "value": "two"}]})
}

#[tokio::test]
async fn every_operation_applies_on_an_instance_with_if_match() {
    let s = TestServer::new();
    s.put_resource(patient()).await;
    let body = params(vec![
        op(
            "replace",
            "Patient.birthDate",
            json!([{"name": "value", "valueDate": "1930-01-01"}]),
        ),
        op(
            "add",
            "Patient",
            json!([{"name": "name", "valueString": "gender"}, {"name": "value", "valueCode": "female"}]),
        ),
        op(
            "add",
            "Patient",
            json!([{"name": "name", "valueString": "contact"},
            {"name": "value", "part": [{"name": "name", "valueHumanName": {"text": "a name"}}]}]),
        ),
        op(
            "insert",
            "Patient.identifier",
            json!([{"name": "index", "valueInteger": 0},
            {"name": "value", "valueIdentifier": {"system": "http://example.org", "value": "zero"}}]),
        ),
        op(
            "move",
            "Patient.identifier",
            json!([{"name": "source", "valueInteger": 2}, {"name": "destination", "valueInteger": 0}]),
        ),
        op(
            "delete",
            "Patient.identifier.where(value = 'one')",
            json!([]),
        ),
    ]);
    let r = patch(&s, "/Patient/p1", &body, &[("if-match", "W/\"1\"")]).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["meta"]["versionId"], "2");
    assert_eq!(r.body["birthDate"], "1930-01-01");
    assert_eq!(r.body["gender"], "female");
    assert_eq!(r.body["contact"], json!([{"name": {"text": "a name"}}]));
    let values: Vec<&str> = r.body["identifier"]
        .as_array()
        .expect("identifiers")
        .iter()
        .map(|i| i["value"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(values, ["two", "zero"]);
    // The same If-Match again is stale now: 412, nothing written.
    let before = s.versions();
    let r = patch(&s, "/Patient/p1", &body, &[("if-match", "W/\"1\"")]).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(s.versions(), before);
    // JSON Patch keeps working beside it.
    let r = s
        .call(
            Method::PATCH,
            "/Patient/p1",
            &[("content-type", "application/json-patch+json")],
            serde_json::to_vec(&json!([{"op": "replace", "path": "/gender", "value": "male"}]))
                .expect("json"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["gender"], "male");
}

#[tokio::test]
async fn a_conditional_patch_takes_the_one_match() {
    let s = TestServer::new();
    s.put_resource(patient()).await;
    let mut twin = patient();
    twin["id"] = json!("p2");
    twin["identifier"] = json!([{"system": "http://example.org", "value": "two"}]);
    s.put_resource(twin).await;
    let body = params(vec![op(
        "replace",
        "Patient.birthDate",
        json!([{"name": "value", "valueDate": "2000-02-02"}]),
    )]);
    let r = patch(&s, "/Patient?identifier=http://example.org|one", &body, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["id"], "p1");
    assert_eq!(r.body["birthDate"], "2000-02-02");
    let before = s.versions();
    let r = patch(&s, "/Patient?identifier=http://example.org|two", &body, &[]).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{:?}", r.body);
    let r = patch(
        &s,
        "/Patient?identifier=http://example.org|none",
        &body,
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    let r = patch(&s, "/Patient?", &body, &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_eq!(s.versions(), before);
}

#[tokio::test]
async fn bad_patches_get_an_outcome_and_write_nothing() {
    let s = TestServer::new();
    s.put_resource(patient()).await;
    let before = s.versions();
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            params(vec![op(
                "replace",
                "Patient.deceasedBoolean",
                json!([{"name": "value", "valueBoolean": true}]),
            )]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no content found",
        ),
        (
            params(vec![op(
                "replace",
                "Patient.id",
                json!([{"name": "value", "valueId": "other"}]),
            )]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "resourceType or id",
        ),
        (
            params(vec![op("delete", "Patient.resourceType", json!([]))]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "",
        ),
        (
            params(vec![op("delete", "Patient.identifier", json!([]))]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "finds 2 elements",
        ),
        (
            params(vec![op(
                "add",
                "Patient",
                json!([{"name": "name", "valueString": "nope"}, {"name": "value", "valueString": "x"}]),
            )]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no element \"nope\"",
        ),
        (
            params(vec![op(
                "add",
                "Patient",
                json!([{"name": "name", "valueString": "birthDate"}, {"name": "value", "valueDate": "2001"}]),
            )]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "already has a value",
        ),
        (
            params(vec![op(
                "move",
                "Patient.identifier",
                json!([{"name": "source", "valueInteger": 5}, {"name": "destination", "valueInteger": 0}]),
            )]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "outside",
        ),
        (
            params(vec![op(
                "insert",
                "Patient.birthDate",
                json!([{"name": "index", "valueInteger": 0}, {"name": "value", "valueDate": "2001"}]),
            )]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "not a list",
        ),
        (
            params(vec![op("replace", "Patient.birthDate", json!([]))]),
            StatusCode::BAD_REQUEST,
            "needs value",
        ),
        (
            params(vec![op("frobnicate", "Patient", json!([]))]),
            StatusCode::BAD_REQUEST,
            "not add, insert",
        ),
        (
            params(vec![op("delete", "Patient.(((", json!([]))]),
            StatusCode::BAD_REQUEST,
            "path",
        ),
        (
            params(vec![json!({"name": "operation"})]),
            StatusCode::BAD_REQUEST,
            "no parts",
        ),
        (
            params(vec![json!({"name": "other", "part": []})]),
            StatusCode::BAD_REQUEST,
            "operation",
        ),
        (
            json!({"resourceType": "Parameters", "parameter": {}}),
            StatusCode::BAD_REQUEST,
            "not an array",
        ),
        (
            json!({"resourceType": "Patient"}),
            StatusCode::BAD_REQUEST,
            "Parameters",
        ),
        (json!([1, 2]), StatusCode::BAD_REQUEST, "Parameters"),
    ];
    for (body, status, says) in cases {
        let r = patch(&s, "/Patient/p1", &body, &[]).await;
        assert_eq!(r.status, status, "{body}: {:?}", r.body);
        assert_eq!(r.body["resourceType"], "OperationOutcome", "{body}");
        assert!(
            r.diagnostics().contains(says),
            "{body}: {}",
            r.diagnostics()
        );
    }
    let r = s
        .call(
            Method::PATCH,
            "/Patient/p1",
            &[("content-type", "text/plain")],
            b"x".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(s.versions(), before, "a bad patch wrote something");
}

#[tokio::test]
async fn bundles_patch_with_parameters_and_by_criteria() {
    let s = TestServer::new();
    s.put_resource(patient()).await;
    let body = params(vec![op(
        "replace",
        "Patient.birthDate",
        json!([{"name": "value", "valueDate": "1950-05-05"}]),
    )]);
    let gender = params(vec![op(
        "add",
        "Patient",
        json!([{"name": "name", "valueString": "gender"}, {"name": "value", "valueCode": "other"}]),
    )]);
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": body, "request": {"method": "PATCH", "url": "Patient/p1"}},
        {"resource": gender, "request": {"method": "PATCH", "url": "Patient?identifier=http://example.org|two"}},
    ]});
    let r = s.post("/", &bundle).await;
    // Two patches of one resource in one transaction: each reads the
    // version before the Bundle, so the second fails the transaction.
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{:?}", r.body);
    let mut one = bundle.clone();
    one["entry"].as_array_mut().expect("entries").truncate(1);
    let r = s.post("/", &one).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let mut by_criteria = bundle.clone();
    by_criteria["entry"]
        .as_array_mut()
        .expect("entries")
        .remove(0);
    by_criteria["type"] = json!("batch");
    let r = s.post("/", &by_criteria).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(
        r.body["entry"][0]["response"]["status"]
            .as_str()
            .unwrap_or("")
            .starts_with("200"),
        "{:?}",
        r.body
    );
    let read = s.get("/Patient/p1").await;
    assert_eq!(read.body["birthDate"], "1950-05-05");
    assert_eq!(read.body["gender"], "other");
    assert_eq!(read.body["meta"]["versionId"], "3");
}
