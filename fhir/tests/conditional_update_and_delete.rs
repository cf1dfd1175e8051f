//! Conditional update (`PUT [type]?criteria`) and conditional delete
//! (`DELETE [type]?criteria`), single-match mode, as the R4 http page
//! describes them.

mod common;

use axum::http::StatusCode;
use common::TestServer;
use serde_json::json;

fn patient(mrn: &str, family: &str) -> serde_json::Value {
    json!({"resourceType": "Patient",
           "identifier": [{"system": "urn:mrn", "value": mrn}],
           "name": [{"family": family}]})
}

#[tokio::test]
async fn conditional_update_creates_updates_or_refuses_by_match_count() {
    let s = TestServer::new();
    // No match: created, with a server id.
    let r = s
        .put("/Patient?identifier=urn:mrn|7", &patient("7", "One"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.diagnostics());
    let id = r.body["id"].as_str().expect("id").to_owned();
    assert_eq!(r.body["meta"]["versionId"], "1");
    // One match: that resource gets a new version.
    let r = s
        .put("/Patient?identifier=urn:mrn|7", &patient("7", "Two"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.diagnostics());
    assert_eq!(r.body["id"], id.as_str());
    assert_eq!(r.body["meta"]["versionId"], "2");
    let read = s.get(&format!("/Patient/{id}")).await;
    assert_eq!(read.body["name"][0]["family"], "Two");
    // A body id other than the match's: 400, nothing written.
    let mut other = patient("7", "Three");
    other["id"] = json!("someone-else");
    let r = s.put("/Patient?identifier=urn:mrn|7", &other).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        s.get(&format!("/Patient/{id}")).await.body["meta"]["versionId"],
        "2"
    );
    // Several matches: 412, nothing written.
    s.post("/Patient", &patient("7", "Twin")).await;
    let r = s
        .put("/Patient?identifier=urn:mrn|7", &patient("7", "Four"))
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert!(r.diagnostics().contains("match 2"), "{}", r.diagnostics());
    // No criteria at all is refused rather than matching everything.
    let r = s.put("/Patient", &patient("8", "Five")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = s.put("/Patient?_format=json", &patient("8", "Five")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn conditional_update_without_a_match_keeps_the_body_id_but_never_overwrites() {
    let s = TestServer::new();
    let mut p = patient("9", "Chosen");
    p["id"] = json!("chosen-id");
    let r = s.put("/Patient?identifier=urn:mrn|9", &p).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.diagnostics());
    assert_eq!(r.body["id"], "chosen-id");
    // The criteria no longer match (another MRN), but the id exists: 409.
    let mut q = patient("10", "Other");
    q["id"] = json!("chosen-id");
    let r = s.put("/Patient?identifier=urn:mrn|10", &q).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.diagnostics());
    assert_eq!(
        s.get("/Patient/chosen-id").await.body["name"][0]["family"],
        "Chosen"
    );
}

#[tokio::test]
async fn conditional_delete_deletes_one_match_and_refuses_several() {
    let s = TestServer::new();
    let r = s.delete("/Patient?identifier=urn:mrn|1").await;
    assert_eq!(r.status, StatusCode::OK, "no match is not an error");
    let created = s.post("/Patient", &patient("1", "Gone")).await;
    let id = created.body["id"].as_str().expect("id").to_owned();
    let r = s.delete("/Patient?identifier=urn:mrn|1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("etag"), Some("W/\"2\""));
    assert_eq!(
        s.get(&format!("/Patient/{id}")).await.status,
        StatusCode::GONE
    );
    s.post("/Patient", &patient("2", "A")).await;
    s.post("/Patient", &patient("2", "B")).await;
    let r = s.delete("/Patient?identifier=urn:mrn|2").await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    let left = s.get("/Patient?identifier=urn:mrn|2").await;
    assert_eq!(left.body["total"], 2, "nothing deleted");
}

#[tokio::test]
async fn the_capability_statement_says_so() {
    let s = TestServer::new();
    let m = s.get("/metadata").await;
    let patient = m.body["rest"][0]["resource"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["type"] == "Patient")
        .expect("Patient")
        .clone();
    assert_eq!(patient["conditionalUpdate"], true);
    assert_eq!(patient["conditionalDelete"], "single");
}

fn transaction(entries: Vec<serde_json::Value>) -> serde_json::Value {
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

#[tokio::test]
async fn conditional_urls_work_inside_a_transaction_and_refusals_undo_it() {
    let s = TestServer::new();
    let existing = s.post("/Patient", &patient("5", "Before")).await;
    let id = existing.body["id"].as_str().expect("id").to_owned();
    s.post("/Patient", &patient("6", "Doomed")).await;
    let r = s
        .post(
            "/",
            &transaction(vec![
                json!({"request": {"method": "PUT", "url": "Patient?identifier=urn:mrn|5"},
                       "resource": patient("5", "After")}),
                json!({"fullUrl": "urn:uuid:0f3c5d2e-8f8a-4f35-9d7c-1c6b7b7c1111",
                       "request": {"method": "PUT", "url": "Patient?identifier=urn:mrn|11"},
                       "resource": patient("11", "New")}),
                json!({"request": {"method": "DELETE", "url": "Patient?identifier=urn:mrn|6"}}),
            ]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.diagnostics());
    let statuses: Vec<&str> = r.body["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap_or(""))
        .collect();
    assert!(statuses[0].starts_with("200"), "{statuses:?}");
    assert!(statuses[1].starts_with("201"), "{statuses:?}");
    assert_eq!(
        s.get(&format!("/Patient/{id}")).await.body["name"][0]["family"],
        "After"
    );
    assert_eq!(
        s.get("/Patient?identifier=urn:mrn|11").await.body["total"],
        1
    );
    assert_eq!(
        s.get("/Patient?identifier=urn:mrn|6").await.body["total"],
        0
    );
    // Several matches anywhere: the whole transaction is refused.
    s.post("/Patient", &patient("5", "Twin")).await;
    let r = s
        .post(
            "/",
            &transaction(vec![
                json!({"request": {"method": "PUT", "url": "Patient?identifier=urn:mrn|5"},
                       "resource": patient("5", "Never")}),
                json!({"request": {"method": "POST", "url": "Patient"},
                       "resource": patient("12", "Never")}),
            ]),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        r.diagnostics()
    );
    assert_eq!(
        s.get("/Patient?identifier=urn:mrn|12").await.body["total"],
        0
    );
}
