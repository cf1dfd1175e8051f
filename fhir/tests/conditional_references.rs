//! Conditional references (`"reference": "Type?criteria"`) are resolved to
//! the one resource they match, in transactions, batches and single
//! writes, and stored as `Type/id`; when one matches nothing, several, or
//! is malformed, the write fails naming it and nothing is written.

mod common;

use std::collections::BTreeSet;

use axum::http::StatusCode;
use common::{TestServer, found};
use serde_json::{Value, json};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/synthea-conditional"
);

fn read_bundle(path: &std::path::Path) -> Value {
    let packed = std::fs::read(path).expect("fixture");
    let json = zstd::decode_all(packed.as_slice()).expect("zstd");
    serde_json::from_slice(&json).expect("a Bundle")
}

/// Every `reference` string in `v`.
fn references(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                match x {
                    Value::String(s) if k == "reference" => out.push(s.clone()),
                    _ => references(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| references(x, out)),
        _ => {}
    }
}

/// Every stored resource, read through the system history.
async fn everything(s: &TestServer) -> Vec<Value> {
    s.pages("/_history?_count=1000")
        .await
        .iter()
        .flat_map(|page| page["entry"].as_array().cloned().unwrap_or_default())
        .map(|e| e["resource"].clone())
        .collect()
}

fn org(identifier: &str) -> Value {
    json!({"resourceType": "Organization", "identifier": [{"system": "http://example.org/org", "value": identifier}], "name": identifier})
}

fn patient_of(reference: &str) -> Value {
    json!({"resourceType": "Patient", "managingOrganization": {"reference": reference}})
}

fn transaction(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

fn post(resource: Value) -> Value {
    let ty = resource["resourceType"].as_str().expect("type").to_owned();
    json!({"resource": resource, "request": {"method": "POST", "url": ty}})
}

#[tokio::test]
async fn synthea_conditional_bundles_load_and_every_reference_resolves() {
    let s = TestServer::new();
    let mut files: Vec<_> = std::fs::read_dir(FIXTURES)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".json.zst"))
        .collect();
    // Synthea's convention: the shared resources (`0-…`) first.
    files.sort();
    assert_eq!(files.len(), 6);
    let mut written = 0;
    let mut conditional = 0;
    for f in &files {
        let bundle = read_bundle(f);
        let mut refs = Vec::new();
        references(&bundle, &mut refs);
        conditional += refs.iter().filter(|r| r.contains('?')).count();
        let r = s.post("/", &bundle).await;
        assert_eq!(r.status, StatusCode::OK, "{f:?}: {:?}", r.body);
        for e in r.body["entry"].as_array().expect("entries") {
            let status = e["response"]["status"].as_str().unwrap_or("");
            assert!(status.starts_with("201"), "{f:?}: {e}");
            written += 1;
        }
    }
    assert!(
        conditional > 500,
        "the fixtures hold {conditional} conditional references"
    );
    let stored = everything(&s).await;
    assert_eq!(stored.len(), written);
    let ids: BTreeSet<String> = common::type_ids(&stored);
    let mut literal = 0;
    for res in &stored {
        let mut refs = Vec::new();
        references(res, &mut refs);
        for r in &refs {
            assert!(
                !r.contains('?'),
                "a conditional reference was stored as written: {r}"
            );
            match r.strip_prefix('#') {
                // A contained resource: it is in this one.
                Some(local) => assert!(
                    res["contained"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|x| x["id"] == local)),
                    "{r} is not contained"
                ),
                None => {
                    assert!(ids.contains(r), "{r} points at nothing stored");
                    literal += 1;
                }
            }
        }
    }
    assert!(literal > conditional, "{literal} literal references");
    // The resolved references are searchable: every Encounter has its
    // practitioner, found through the reference parameter.
    let encounter = stored
        .iter()
        .find(|r| r["resourceType"] == "Encounter")
        .expect("an Encounter");
    let practitioner = encounter["participant"][0]["individual"]["reference"]
        .as_str()
        .expect("a practitioner");
    assert!(practitioner.starts_with("Practitioner/"));
    let hits = found(&s, &format!("/Encounter?participant={practitioner}")).await;
    assert!(hits.contains(&encounter["id"].as_str().expect("id").to_owned()));
}

#[tokio::test]
async fn a_reference_that_matches_none_or_several_or_is_malformed_fails_the_transaction() {
    let s = TestServer::new();
    for o in [org("one"), org("two"), org("two")] {
        assert_eq!(
            s.post("/Organization", &o).await.status,
            StatusCode::CREATED
        );
    }
    let before = s.versions();
    let cases = [
        (
            "Organization?identifier=http://example.org/org|none",
            StatusCode::BAD_REQUEST,
            "matches no Organization",
        ),
        (
            "Organization?identifier=http://example.org/org|two",
            StatusCode::PRECONDITION_FAILED,
            "matches 2 resources",
        ),
        ("Organization?nope=1", StatusCode::BAD_REQUEST, "nope"),
        (
            "Organization?",
            StatusCode::BAD_REQUEST,
            "no search criteria",
        ),
        (
            "Nope?identifier=x",
            StatusCode::BAD_REQUEST,
            "R4 resource type",
        ),
        (
            "Organization?_lastUpdated=notadate",
            StatusCode::BAD_REQUEST,
            "_lastUpdated",
        ),
    ];
    for (reference, status, says) in cases {
        let bundle = transaction(vec![
            post(json!({"resourceType": "Patient", "name": [{"family": "Fine"}]})),
            post(patient_of(reference)),
        ]);
        let r = s.post("/", &bundle).await;
        assert_eq!(r.status, status, "{reference}: {:?}", r.body);
        assert_eq!(r.body["resourceType"], "OperationOutcome");
        let d = r.diagnostics();
        assert!(d.contains("Bundle.entry[1].resource"), "{d}");
        assert!(
            d.contains(reference) || d.contains(&format!("{reference:?}")),
            "{d}"
        );
        assert!(d.contains(says), "{reference}: {d}");
        assert_eq!(s.versions(), before, "{reference}: something was written");
    }
    // The same in a batch fails that entry alone.
    let mut bundle = transaction(vec![
        post(patient_of(
            "Organization?identifier=http://example.org/org|none",
        )),
        post(patient_of(
            "Organization?identifier=http://example.org/org|one",
        )),
    ]);
    bundle["type"] = json!("batch");
    let r = s.post("/", &bundle).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body["entry"][0]["response"]["status"]
            .as_str()
            .unwrap_or("")
            .starts_with("400")
    );
    assert!(
        r.body["entry"][1]["response"]["status"]
            .as_str()
            .unwrap_or("")
            .starts_with("201")
    );
    assert_eq!(s.versions(), before + 1);
}

#[tokio::test]
async fn the_bundles_own_conditional_creates_updates_and_deletes_count() {
    let s = TestServer::new();
    let old = s.post("/Organization", &org("old")).await;
    let old_id = old.body["id"].as_str().expect("id").to_owned();
    let gone = s.post("/Organization", &org("gone")).await;
    let gone_id = gone.body["id"].as_str().expect("id").to_owned();
    // A conditional create of an Organization that does not exist yet, a
    // conditional update of one that does, and references to both by the
    // same criteria; the reference to the one being deleted fails.
    let bundle = transaction(vec![
        json!({"fullUrl": "urn:uuid:11111111-1111-1111-1111-111111111111", "resource": org("new"),
               "request": {"method": "POST", "url": "Organization", "ifNoneExist": "identifier=http://example.org/org|new"}}),
        json!({"resource": org("old"),
               "request": {"method": "PUT", "url": "Organization?identifier=http://example.org/org|old"}}),
        post(patient_of(
            "Organization?identifier=http://example.org/org|new",
        )),
        post(patient_of(
            "Organization?identifier=http://example.org/org|old",
        )),
    ]);
    let r = s.post("/", &bundle).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let new_loc = r.body["entry"][0]["response"]["location"]
        .as_str()
        .expect("location");
    let new_ref = new_loc.split("/_history").next().expect("ref").to_owned();
    let mut managed = Vec::new();
    for k in [2, 3] {
        let loc = r.body["entry"][k]["response"]["location"]
            .as_str()
            .expect("location");
        let p = s
            .get(&format!("/{}", loc.split("/_history").next().expect("ref")))
            .await;
        managed.push(
            p.body["managingOrganization"]["reference"]
                .as_str()
                .expect("ref")
                .to_owned(),
        );
    }
    assert_eq!(managed, [new_ref, format!("Organization/{old_id}")]);
    let before = s.versions();
    let bundle = transaction(vec![
        json!({"request": {"method": "DELETE", "url": format!("Organization/{gone_id}")}}),
        post(patient_of(
            "Organization?identifier=http://example.org/org|gone",
        )),
    ]);
    let r = s.post("/", &bundle).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_eq!(s.versions(), before);
}

#[tokio::test]
async fn single_creates_updates_and_patches_resolve_them_too() {
    let s = TestServer::new();
    let o = s.post("/Organization", &org("solo")).await;
    let org_ref = format!("Organization/{}", o.body["id"].as_str().expect("id"));
    let reference = "Organization?identifier=http://example.org/org|solo";
    let r = s.post("/Patient", &patient_of(reference)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(
        r.body["managingOrganization"]["reference"],
        org_ref.as_str()
    );
    let id = r.body["id"].as_str().expect("id").to_owned();
    let mut p = patient_of(reference);
    p["id"] = json!(id);
    p["gender"] = json!("other");
    let r = s.put(&format!("/Patient/{id}"), &p).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        r.body["managingOrganization"]["reference"],
        org_ref.as_str()
    );
    let ops =
        json!([{"op": "replace", "path": "/managingOrganization/reference", "value": reference}]);
    let r = s
        .call(
            axum::http::Method::PATCH,
            &format!("/Patient/{id}"),
            &[("content-type", "application/json-patch+json")],
            serde_json::to_vec(&ops).expect("json"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let read = s.get(&format!("/Patient/{id}")).await;
    assert_eq!(
        read.body["managingOrganization"]["reference"],
        org_ref.as_str()
    );
    let before = s.versions();
    let r = s
        .post(
            "/Patient",
            &patient_of("Organization?identifier=http://example.org/org|other"),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.diagnostics().contains("matches no Organization"),
        "{}",
        r.diagnostics()
    );
    assert_eq!(s.versions(), before);
}
