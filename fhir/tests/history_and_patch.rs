//! Guards history bundles (instance, type, system; deletes as DELETE
//! entries without a resource; `_since`; `_count`; next/previous links that
//! stay correct while writes continue) and JSON Patch with its concurrency
//! rules.

mod common;

use axum::http::{Method, StatusCode};
use common::TestServer;
use serde_json::{Value, json};

fn link(b: &Value, rel: &str) -> Option<String> {
    b["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == rel)
        .map(|l| {
            l["url"]
                .as_str()
                .unwrap_or("")
                .trim_start_matches("http://vigil.test")
                .to_owned()
        })
}

#[tokio::test]
async fn history_lists_versions_newest_first_and_pages_both_ways() {
    let s = TestServer::new();
    for i in 0..5 {
        s.put(
            "/Patient/a",
            &json!({"resourceType": "Patient", "id": "a", "birthDate": format!("19{i:02}")}),
        )
        .await;
    }
    s.delete("/Patient/a").await;
    s.put(
        "/Observation/o",
        &json!({"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "t"}}),
    )
    .await;

    let h = s.get("/Patient/a/_history").await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.body["type"], "history");
    let e = h.body["entry"].as_array().expect("entries");
    assert_eq!(e.len(), 6);
    assert_eq!(e[0]["request"]["method"], "DELETE");
    assert!(e[0].get("resource").is_none(), "a deletion has no resource");
    assert_eq!(e[1]["resource"]["meta"]["versionId"], "5");
    assert_eq!(e[5]["request"]["method"], "POST");
    assert_eq!(
        s.get("/Patient/zzz/_history").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get("/Observation/_history").await.body["entry"]
            .as_array()
            .expect("e")
            .len(),
        1
    );
    assert_eq!(
        s.get("/_history").await.body["entry"]
            .as_array()
            .expect("e")
            .len(),
        7
    );

    // Paging: 3 pages of 2, a write between pages changes nothing, and
    // previous retraces.
    let p1 = s.get("/_history?_count=3").await.body;
    s.put(
        "/Basic/late",
        &json!({"resourceType": "Basic", "id": "late"}),
    )
    .await;
    let p2 = s.get(&link(&p1, "next").expect("next")).await.body;
    let p3 = s.get(&link(&p2, "next").expect("next")).await.body;
    assert!(link(&p3, "next").is_none());
    let all: Vec<String> = [&p1, &p2, &p3]
        .iter()
        .flat_map(|p| p["entry"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            e["fullUrl"].as_str().unwrap_or("").to_owned() + &e["response"]["etag"].to_string()
        })
        .collect();
    assert_eq!(all.len(), 7, "the late write is not in the pinned pages");
    let back = s.get(&link(&p3, "previous").expect("previous")).await.body;
    assert_eq!(back["entry"], p2["entry"]);
    assert!(link(&p1, "previous").is_none());

    // _since: only what came after.
    let when = p1["entry"][0]["response"]["lastModified"]
        .as_str()
        .expect("time")
        .to_owned();
    let since = s.get(&format!("/_history?_since={when}")).await.body;
    assert!(
        since["entry"]
            .as_array()
            .expect("e")
            .iter()
            .all(|e| e["response"]["lastModified"].as_str() >= Some(when.as_str()))
    );
    assert_eq!(
        s.get("/_history?_since=yesterday").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        s.get("/_history?_count=0").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn json_patch_updates_with_concurrency_rules() {
    let s = TestServer::new();
    s.put(
        "/Patient/p",
        &json!({"resourceType": "Patient", "id": "p", "active": false}),
    )
    .await;
    let patch = |body: &str, extra: Option<(&'static str, &'static str)>| {
        let mut h = vec![("content-type", "application/json-patch+json")];
        h.extend(extra);
        (h, body.as_bytes().to_vec())
    };
    let (h, b) = patch(
        r#"[{"op":"replace","path":"/active","value":true},{"op":"add","path":"/gender","value":"female"}]"#,
        None,
    );
    let r = s.call(Method::PATCH, "/Patient/p", &h, b).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.diagnostics());
    assert_eq!(r.body["active"], true);
    assert_eq!(r.body["gender"], "female");
    assert_eq!(r.body["meta"]["versionId"], "2");
    let (h, b) = patch(
        r#"[{"op":"replace","path":"/active","value":false}]"#,
        Some(("if-match", "W/\"1\"")),
    );
    assert_eq!(
        s.call(Method::PATCH, "/Patient/p", &h, b).await.status,
        StatusCode::PRECONDITION_FAILED
    );
    let (h, b) = patch(r#"[{"op":"replace","path":"/id","value":"q"}]"#, None);
    assert_eq!(
        s.call(Method::PATCH, "/Patient/p", &h, b).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (h, b) = patch(r#"[{"op":"remove","path":"/nothing"}]"#, None);
    assert_eq!(
        s.call(Method::PATCH, "/Patient/p", &h, b).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (h, b) = patch("not json", None);
    assert_eq!(
        s.call(Method::PATCH, "/Patient/p", &h, b).await.status,
        StatusCode::BAD_REQUEST
    );
    let (h, b) = patch("[]", None);
    assert_eq!(
        s.call(Method::PATCH, "/Patient/none", &h, b).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get("/Patient/p").await.body["meta"]["versionId"],
        "2",
        "failed patches wrote nothing"
    );
}

#[tokio::test]
async fn metadata_lists_what_is_implemented() {
    let s = TestServer::new();
    let m = s.get("/metadata").await;
    assert_eq!(m.status, StatusCode::OK);
    assert_eq!(m.body["resourceType"], "CapabilityStatement");
    assert_eq!(m.body["fhirVersion"], "4.0.1");
    let patient = m.body["rest"][0]["resource"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["type"] == "Patient")
        .cloned()
        .expect("Patient");
    let names: Vec<&str> = patient["searchParam"]
        .as_array()
        .expect("params")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for p in [
        "_id",
        "_lastUpdated",
        "identifier",
        "name",
        "family",
        "given",
        "birthdate",
        "gender",
    ] {
        assert!(names.contains(&p), "{p}");
    }
    assert!(!names.contains(&"code"));
    assert_eq!(s.get("/health/live").await.status, StatusCode::OK);
    assert_eq!(s.get("/health/ready").await.status, StatusCode::OK);
    assert_eq!(
        s.get("/health/leader").await.status,
        StatusCode::OK,
        "a standalone server takes writes"
    );
}
