//! Guards transaction and batch processing: a transaction is all or
//! nothing, processed in the spec's order, with `urn:uuid:` references
//! rewritten to the assigned ids; a batch reports each entry on its own.
//! Realistic bundles come from the project's generator, and one Synthea
//! bundle kept in `tests/fixtures/synthea-r4/` (see the README there).

mod common;

use std::collections::HashMap;

use axum::http::StatusCode;
use common::TestServer;
use serde_json::{Value, json};
use vigil_fhir::synth::{Rng, transaction_bundle};

/// Loads a transaction bundle and checks every resource reads back equal,
/// with references between entries rewritten. Returns the number loaded.
async fn load_and_check(s: &TestServer, bundle: &Value) -> usize {
    let r = s.post("/", bundle).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.raw[..r.raw.len().min(500)])
    );
    assert_eq!(r.body["type"], "transaction-response");
    let sent = bundle["entry"].as_array().expect("entries");
    let got = r.body["entry"].as_array().expect("response entries");
    assert_eq!(sent.len(), got.len());
    // fullUrl -> Type/newid, from the response's locations.
    let mut map = HashMap::new();
    for (e, resp) in sent.iter().zip(got) {
        assert!(
            resp["response"]["status"]
                .as_str()
                .expect("status")
                .starts_with("201"),
            "{resp}"
        );
        let loc = resp["response"]["location"].as_str().expect("location");
        let mut parts = loc.split('/');
        let target = format!(
            "{}/{}",
            parts.next().expect("type"),
            parts.next().expect("id")
        );
        map.insert(e["fullUrl"].as_str().expect("fullUrl").to_owned(), target);
    }
    for (e, target) in sent
        .iter()
        .map(|e| (e, &map[e["fullUrl"].as_str().expect("fullUrl")]))
    {
        let read = s.get(&format!("/{target}")).await;
        assert_eq!(read.status, StatusCode::OK);
        let mut expected = e["resource"].clone();
        rewrite(&mut expected, &map);
        // A POST's client id (Synthea sends one) is replaced by the server's.
        expected.as_object_mut().expect("object").shift_remove("id");
        let mut actual = read.body.clone();
        let obj = actual.as_object_mut().expect("object");
        assert_eq!(
            obj.shift_remove("id").expect("id").as_str(),
            target.split('/').nth(1)
        );
        let meta = obj
            .get_mut("meta")
            .and_then(Value::as_object_mut)
            .expect("meta");
        meta.shift_remove("versionId");
        meta.shift_remove("lastUpdated");
        if meta.is_empty() {
            obj.shift_remove("meta");
        }
        assert_eq!(actual, expected, "{target}");
        // Key order is the client's too.
        assert_eq!(
            actual
                .as_object()
                .expect("object")
                .keys()
                .collect::<Vec<_>>(),
            expected
                .as_object()
                .expect("object")
                .keys()
                .collect::<Vec<_>>(),
            "{target}"
        );
    }
    sent.len()
}

fn rewrite(v: &mut Value, map: &HashMap<String, String>) {
    match v {
        Value::String(s) => {
            if let Some(t) = map.get(s.as_str()) {
                *s = t.clone();
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite(x, map)),
        Value::Object(o) => o.values_mut().for_each(|x| rewrite(x, map)),
        _ => {}
    }
}

#[tokio::test]
async fn generated_patient_bundles_load_with_references_rewritten() {
    let s = TestServer::new();
    let mut rng = Rng::new(11);
    let mut total = 0;
    for _ in 0..3 {
        total += load_and_check(&s, &transaction_bundle(&mut rng, 40)).await;
    }
    assert_eq!(s.versions() as usize, total);
}

#[tokio::test]
async fn a_synthea_bundle_loads_with_its_references_rewritten() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/synthea-r4/Dwain_McGlynn_7515d14b-843b-4210-8b6b-a33ab253d560.json");
    let bundle: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read the fixture")).expect("json");
    let s = TestServer::new();
    let loaded = load_and_check(&s, &bundle).await;
    assert_eq!(
        loaded,
        bundle["entry"].as_array().map_or(0, Vec::len),
        "every entry loaded"
    );
}

#[tokio::test]
async fn a_failing_entry_fails_the_whole_transaction() {
    let s = TestServer::new();
    s.put(
        "/Patient/p1",
        &json!({"resourceType": "Patient", "id": "p1"}),
    )
    .await;
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:a", "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "t"}, "subject": {"reference": "urn:uuid:b"}}, "request": {"method": "POST", "url": "Observation"}},
        {"fullUrl": "urn:uuid:b", "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "id": "p1", "active": true}, "request": {"method": "PUT", "url": "Patient/p1", "ifMatch": "W/\"7\""}},
    ]});
    let r = s.post("/", &bundle).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(r.body["resourceType"], "OperationOutcome");
    let stats = s.app.store().expect("store").stats().expect("stats");
    assert_eq!(stats.versions, 1, "nothing of the transaction was written");
}

#[tokio::test]
async fn transactions_run_in_spec_order_and_batches_report_each_entry() {
    let s = TestServer::new();
    s.put(
        "/Patient/old",
        &json!({"resourceType": "Patient", "id": "old"}),
    )
    .await;
    // GET listed first still sees the transaction's writes; DELETE runs first.
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": "Patient/new"}},
        {"resource": {"resourceType": "Patient", "id": "new"}, "request": {"method": "PUT", "url": "Patient/new"}},
        {"request": {"method": "DELETE", "url": "Patient/old"}},
    ]});
    let r = s.post("/", &bundle).await;
    assert_eq!(r.status, StatusCode::OK);
    let e = r.body["entry"].as_array().expect("entries");
    assert!(
        e[0]["response"]["status"]
            .as_str()
            .expect("s")
            .starts_with("200")
    );
    assert_eq!(e[0]["resource"]["id"], "new");
    assert!(
        e[1]["response"]["status"]
            .as_str()
            .expect("s")
            .starts_with("201")
    );
    assert!(
        e[2]["response"]["status"]
            .as_str()
            .expect("s")
            .starts_with("204")
    );
    assert_eq!(s.get("/Patient/old").await.status, StatusCode::GONE);

    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "id": "x"}, "request": {"method": "PUT", "url": "Patient/y"}},
        {"request": {"method": "GET", "url": "Patient/missing"}},
    ]});
    let r = s.post("/", &batch).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["type"], "batch-response");
    let e = r.body["entry"].as_array().expect("entries");
    assert!(
        e[0]["response"]["status"]
            .as_str()
            .expect("s")
            .starts_with("201")
    );
    assert!(
        e[1]["response"]["status"]
            .as_str()
            .expect("s")
            .starts_with("400")
    );
    assert_eq!(
        e[1]["response"]["outcome"]["resourceType"],
        "OperationOutcome"
    );
    assert!(
        e[2]["response"]["status"]
            .as_str()
            .expect("s")
            .starts_with("404")
    );
    let not_bundle = s.post("/", &json!({"resourceType": "Patient"})).await;
    assert_eq!(not_bundle.status, StatusCode::BAD_REQUEST);
    let wrong_type = s
        .post(
            "/",
            &json!({"resourceType": "Bundle", "type": "collection"}),
        )
        .await;
    assert_eq!(wrong_type.status, StatusCode::BAD_REQUEST);
}

/// A transaction replaces `urn:uuid` references in narrative too (`href`
/// and `src` attributes of `text.div`), as R4 requires; text that merely
/// mentions the uuid is left alone. An `ifMatch` naming no version fails
/// the transaction with 412 and writes nothing.
#[tokio::test]
async fn narrative_references_are_rewritten_and_bad_if_match_is_412() {
    let s = TestServer::new();
    let pat = "urn:uuid:3f0a3c6e-0b7a-4c34-9d52-5b1f2e8a9c10";
    let div = format!(
        "<div xmlns=\"http://www.w3.org/1999/xhtml\"><a href=\"{pat}\">the patient</a> <img src='{pat}'/> id {pat}</div>"
    );
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:obs-1", "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "t"},
            "text": {"status": "generated", "div": div}, "subject": {"reference": pat}},
         "request": {"method": "POST", "url": "Observation"}},
        {"fullUrl": pat, "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
    ]});
    let r = s.post("/", &bundle).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let obs_loc = r.body["entry"][0]["response"]["location"]
        .as_str()
        .expect("location");
    let pat_loc = r.body["entry"][1]["response"]["location"]
        .as_str()
        .expect("location");
    let pat_ref = pat_loc.split("/_history").next().expect("path");
    let pat_ref = pat_ref.trim_start_matches("http://vigil.test/");
    let obs_path = obs_loc.split("/_history").next().expect("path");
    let obs_path = obs_path.trim_start_matches("http://vigil.test/");
    let obs = s.get(&format!("/{obs_path}")).await;
    let stored = obs.body["text"]["div"].as_str().expect("div");
    assert!(stored.contains(&format!("href=\"{pat_ref}\"")), "{stored}");
    assert!(stored.contains(&format!("src='{pat_ref}'")), "{stored}");
    assert!(
        stored.contains(&format!("id {pat}")),
        "plain text stays: {stored}"
    );
    assert_eq!(obs.body["subject"]["reference"], pat_ref);

    let versions = s.versions();
    let bad = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "id": "x1"}, "request": {"method": "PUT", "url": "Patient/x1", "ifMatch": "W/\"outdated-version\""}},
    ]});
    let r = s.post("/", &bad).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(r.body["resourceType"], "OperationOutcome");
    assert!(
        r.diagnostics().contains("Bundle.entry[0]"),
        "{}",
        r.diagnostics()
    );
    assert_eq!(s.versions(), versions, "nothing written");
}

/// Batch and transaction entries may read and search (GET and HEAD): a
/// search's Bundle goes in the entry's `resource` (none for HEAD), a vread
/// reads one version, a transaction's reads see its own writes, and a bad
/// read fails only its entry in a batch.
#[tokio::test]
async fn bundle_entries_read_and_search() {
    let s = TestServer::new();
    let p = json!({"resourceType": "Patient", "id": "r1", "gender": "female", "identifier": [{"system": "urn:mrn", "value": "r1"}]});
    assert_eq!(s.put("/Patient/r1", &p).await.status, StatusCode::CREATED);
    let mut p2 = p.clone();
    p2["gender"] = json!("male");
    assert_eq!(s.put("/Patient/r1", &p2).await.status, StatusCode::OK);

    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient?name=NonExistent"}},
        {"request": {"method": "GET", "url": "Patient?identifier=urn:mrn|r1"}},
        {"request": {"method": "GET", "url": "Patient/r1/_history/1"}},
        {"request": {"method": "HEAD", "url": "Patient/r1"}},
        {"request": {"method": "GET", "url": "Patient/r1/_history/9"}},
        {"request": {"method": "GET", "url": "Patient/r1/extra/parts/here"}},
        {"request": {"method": "GET", "url": "Patient"}},
    ]});
    let r = s.post("/", &batch).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let e = &r.body["entry"];
    assert_eq!(e[0]["response"]["status"], "200 OK");
    assert_eq!(e[0]["resource"]["resourceType"], "Bundle");
    assert_eq!(e[0]["resource"]["type"], "searchset");
    assert_eq!(e[1]["resource"]["total"], 1);
    assert_eq!(e[1]["resource"]["entry"][0]["resource"]["id"], "r1");
    assert_eq!(e[2]["resource"]["gender"], "female", "version 1");
    assert_eq!(e[2]["response"]["etag"], "W/\"1\"");
    assert_eq!(e[3]["response"]["status"], "200 OK");
    assert_eq!(e[3]["response"]["etag"], "W/\"2\"");
    assert!(e[3].get("resource").is_none(), "HEAD has no resource");
    assert_eq!(status_of(&e[4]), 404, "{}", e[4]);
    assert_eq!(status_of(&e[5]), 400, "{}", e[5]);
    assert_eq!(
        e[5]["response"]["outcome"]["resourceType"],
        "OperationOutcome"
    );
    assert_eq!(e[6]["resource"]["total"], 1, "a type-level search");

    // A transaction's reads run after its writes and see them.
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": "Patient?identifier=urn:mrn|t9"}},
        {"fullUrl": "urn:uuid:t9", "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "t9"}]},
         "request": {"method": "POST", "url": "Patient"}},
    ]});
    let r = s.post("/", &tx).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body["entry"][0]["resource"]["total"], 1,
        "the search saw the POST"
    );
    assert_eq!(status_of(&r.body["entry"][1]), 201);
}

/// A JSON Patch rides in a bundle as a Binary (contentType
/// application/json-patch+json, the patch base64 in `data`): applied to
/// the current version in a batch or a transaction; a patch that does not
/// apply, a missing resource or a wrong Binary fails its entry (and a
/// transaction with it, writing nothing).
#[tokio::test]
async fn json_patch_entries_apply_in_batches_and_transactions() {
    let s = TestServer::new();
    let p = json!({"resourceType": "Patient", "id": "pp", "gender": "female", "active": true});
    assert_eq!(s.put("/Patient/pp", &p).await.status, StatusCode::CREATED);
    // base64 of [{"op":"replace","path":"/gender","value":"male"}]
    let replace = "W3sib3AiOiJyZXBsYWNlIiwicGF0aCI6Ii9nZW5kZXIiLCJ2YWx1ZSI6Im1hbGUifV0=";
    // base64 of [{"op":"remove","path":"/nothing"}]
    let broken = "W3sib3AiOiJyZW1vdmUiLCJwYXRoIjoiL25vdGhpbmcifV0=";
    let patch = |data: &str, url: &str| {
        json!({"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": data},
               "request": {"method": "PATCH", "url": url}})
    };
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        patch(replace, "Patient/pp"),
        patch(broken, "Patient/pp"),
        patch(replace, "Patient/nobody"),
        {"resource": {"resourceType": "Binary", "contentType": "text/plain", "data": replace},
         "request": {"method": "PATCH", "url": "Patient/pp"}},
    ]});
    let r = s.post("/", &batch).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let e = &r.body["entry"];
    assert_eq!(e[0]["response"]["status"], "200 OK", "{}", e[0]);
    assert_eq!(e[0]["response"]["etag"], "W/\"2\"");
    assert_eq!(status_of(&e[1]), 422, "{}", e[1]);
    assert_eq!(status_of(&e[2]), 404, "{}", e[2]);
    assert_eq!(status_of(&e[3]), 400, "{}", e[3]);
    let now = s.get("/Patient/pp").await;
    assert_eq!(now.body["gender"], "male");
    assert_eq!(now.body["active"], true, "the rest kept");

    let versions = s.versions();
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "id": "other"}, "request": {"method": "PUT", "url": "Patient/other"}},
        patch(broken, "Patient/pp"),
    ]});
    let r = s.post("/", &tx).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["resourceType"], "OperationOutcome");
    assert_eq!(s.versions(), versions, "nothing of the transaction written");
}

/// The HTTP status code of a response entry (`"404 Not Found"` -> 404).
fn status_of(entry: &Value) -> u16 {
    entry["response"]["status"]
        .as_str()
        .and_then(|s| s.split(' ').next())
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn prefer_return_shapes_each_entry_as_it_shapes_a_single_write() {
    let s = TestServer::new();
    let bundle = |kind: &str| {
        json!({"resourceType": "Bundle", "type": kind, "entry": [
            {"resource": {"resourceType": "Patient", "gender": "female"},
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Patient", "id": "pref", "gender": "male"},
             "request": {"method": "PUT", "url": "Patient/pref"}},
        ]})
    };
    for kind in ["transaction", "batch"] {
        for (prefer, resource, outcome) in [
            (None, true, false),
            (Some("return=representation"), true, false),
            (Some("return=minimal"), false, false),
            (Some("return=OperationOutcome"), false, true),
        ] {
            let mut headers = vec![("content-type", "application/fhir+json")];
            if let Some(p) = prefer {
                headers.push(("prefer", p));
            }
            let r = s
                .call(
                    axum::http::Method::POST,
                    "/",
                    &headers,
                    serde_json::to_vec(&bundle(kind)).expect("json"),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
            for e in r.body["entry"].as_array().expect("entries") {
                assert!(
                    e["response"]["location"].is_string(),
                    "{kind} {prefer:?}: {e}"
                );
                assert_eq!(
                    e["resource"].is_object(),
                    resource,
                    "{kind} {prefer:?}: {e}"
                );
                assert_eq!(
                    e["response"]["outcome"]["resourceType"] == "OperationOutcome",
                    outcome,
                    "{kind} {prefer:?}: {e}"
                );
                if resource {
                    assert_eq!(e["resource"]["resourceType"], "Patient");
                }
            }
        }
    }
}
