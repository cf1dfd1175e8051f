//! Bulk `$export`: kick-off (202 + Content-Location), polling (202 with
//! X-Progress, 429 when too often), the manifest, NDJSON files holding the
//! store's content at transactionTime (every resource exactly once, writes
//! made meanwhile absent), `_type`, `_since` with deletions, Group-level
//! export, and DELETE (files removed, then 404).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::TestServer;
use serde_json::{Value, json};

const ASYNC: (&str, &str) = ("prefer", "respond-async");
const ACCEPT: (&str, &str) = ("accept", "application/fhir+json");

async fn kick_off(s: &TestServer, uri: &str) -> String {
    let r = s.call(Method::GET, uri, &[ASYNC, ACCEPT], Vec::new()).await;
    assert_eq!(
        r.status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&r.raw)
    );
    let loc = r
        .header("content-location")
        .expect("Content-Location")
        .to_owned();
    loc.strip_prefix("http://vigil.test")
        .expect("base")
        .to_owned()
}

/// Polls until done; returns the manifest.
async fn finish(s: &TestServer, status: &str) -> Value {
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let r = s.get(status).await;
        match r.status {
            StatusCode::OK => return r.body,
            StatusCode::ACCEPTED => {
                assert!(r.header("retry-after").is_some());
                assert!(r.header("x-progress").is_some());
            }
            other => panic!("{other}: {}", String::from_utf8_lossy(&r.raw)),
        }
    }
    panic!("the export did not finish");
}

/// (type, id) -> times seen, over every output file.
async fn exported(s: &TestServer, manifest: &Value) -> BTreeMap<(String, String), usize> {
    let mut seen = BTreeMap::new();
    for o in manifest["output"].as_array().expect("output") {
        let url = o["url"].as_str().expect("url");
        let r = s
            .get(url.strip_prefix("http://vigil.test").expect("base"))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("content-type"), Some("application/fhir+ndjson"));
        let text = String::from_utf8(r.raw).expect("utf8");
        assert_eq!(
            text.lines().count(),
            o["count"].as_u64().expect("count") as usize
        );
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).expect("one resource per line");
            assert_eq!(v["resourceType"], o["type"]);
            *seen
                .entry((
                    o["type"].as_str().unwrap_or("").to_owned(),
                    v["id"].as_str().unwrap_or("").to_owned(),
                ))
                .or_default() += 1;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_is_a_snapshot_with_each_resource_once() {
    let s = TestServer::with(|c| c.export_chunk_resources = 7);
    tokio::spawn(vigil_fhir::export::worker(s.app.clone()));
    for i in 0..30 {
        let r = s
            .put(
                &format!("/Patient/p{i}"),
                &json!({"resourceType": "Patient", "id": format!("p{i}")}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        let r = s
            .put(
                &format!("/Observation/o{i}"),
                &json!({"resourceType": "Observation", "id": format!("o{i}"), "status": "final",
                        "code": {"text": "x"}, "subject": {"reference": format!("Patient/p{i}")}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    // An update: exported once, in its newest version.
    let r = s
        .put(
            "/Patient/p0",
            &json!({"resourceType": "Patient", "id": "p0", "active": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Without Prefer: respond-async, a clear 400.
    let r = s.get("/$export").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let status = kick_off(&s, "/$export").await;
    // Written after the kick-off: not in this export.
    let r = s
        .put(
            "/Patient/late",
            &json!({"resourceType": "Patient", "id": "late"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let first = s.get(&status).await;
    let again = s.get(&status).await;
    assert!(
        first.status == StatusCode::TOO_MANY_REQUESTS
            || again.status == StatusCode::TOO_MANY_REQUESTS,
        "polling twice at once is throttled"
    );
    let manifest = finish(&s, &status).await;
    assert!(manifest["transactionTime"].is_string());
    assert_eq!(manifest["requiresAccessToken"], false);
    let seen = exported(&s, &manifest).await;
    assert_eq!(seen.len(), 60, "every resource: {seen:?}");
    assert!(seen.values().all(|n| *n == 1), "each exactly once");
    assert!(!seen.contains_key(&("Patient".into(), "late".into())));
    // _type and Group-level.
    let r = s
        .put(
            "/Group/g",
            &json!({"resourceType": "Group", "id": "g", "type": "person", "actual": true,
                    "member": [{"entity": {"reference": "Patient/p1"}}, {"entity": {"reference": "Patient/p2"}}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let status = kick_off(&s, "/Group/g/$export?_type=Patient,Observation").await;
    let seen = exported(&s, &finish(&s, &status).await).await;
    let ids: Vec<String> = seen.keys().map(|(t, i)| format!("{t}/{i}")).collect();
    assert_eq!(
        ids,
        [
            "Observation/o1",
            "Observation/o2",
            "Patient/p1",
            "Patient/p2"
        ]
    );
    // _since: changes after it, deletions listed.
    let since = vigil_fhir::instant::format_instant(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("now")
            .as_micros() as u64,
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    let r = s.delete("/Patient/p5").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s
        .put(
            "/Patient/p6",
            &json!({"resourceType": "Patient", "id": "p6", "active": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let status = kick_off(&s, &format!("/Patient/$export?_since={since}")).await;
    let manifest = finish(&s, &status).await;
    let seen = exported(&s, &manifest).await;
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        [("Patient".into(), "p6".into())]
    );
    assert_eq!(manifest["deleted"][0]["count"], 1, "{manifest}");
    // DELETE: 202, files gone, then 404.
    let r = s.delete(&status).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = s.get(&status).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let url = manifest["output"][0]["url"].as_str().expect("url");
    let r = s
        .get(url.strip_prefix("http://vigil.test").expect("base"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// Every file under `dir` that shows `needle`.
fn files_showing(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries {
        let p = e.expect("entry").path();
        if p.is_dir() {
            found.extend(files_showing(&p, needle));
        } else if std::fs::read(&p)
            .expect("read")
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
        {
            found.push(p);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_stores_export_files_are_sealed_on_disk_and_served_in_clear() {
    let keys = tempfile::tempdir().expect("tempdir");
    let kek = keys.path().join("eu.key");
    vigil_engine::crypt::keyfile::KeyFile::create(&kek, "eu").expect("key file");
    let exports = tempfile::tempdir().expect("tempdir");
    let (kek_s, exports_dir) = (kek.display().to_string(), exports.path().to_owned());
    let s = TestServer::with(move |c| {
        c.encryption.kek = Some(kek_s);
        c.export_dir = Some(exports_dir);
        c.export_chunk_resources = 4;
    });
    tokio::spawn(vigil_fhir::export::worker(s.app.clone()));
    for i in 0..10 {
        let r = s
            .put(
                &format!("/Patient/p{i}"),
                &json!({"resourceType": "Patient", "id": format!("p{i}"),
                        "name": [{"family": format!("Qwzxexported{i}")}],
                        "identifier": [{"value": format!("MRN-SECRET-{i}")}]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let status = kick_off(&s, "/Patient/$export").await;
    let manifest = finish(&s, &status).await;
    let seen = exported(&s, &manifest).await;
    assert_eq!(seen.len(), 10, "every Patient exported once: {seen:?}");
    let first = manifest["output"][0]["url"].as_str().expect("url");
    let r = s
        .get(first.strip_prefix("http://vigil.test").expect("base"))
        .await;
    assert!(
        String::from_utf8_lossy(&r.raw).contains("Qwzxexported"),
        "the client gets the resources in clear"
    );
    for needle in ["Qwzxexported", "MRN-SECRET"] {
        let leaks = files_showing(exports.path(), needle);
        assert!(leaks.is_empty(), "{needle} in export files: {leaks:?}");
        let leaks = files_showing(&s.app.config.data, needle);
        assert!(
            leaks.is_empty(),
            "{needle} in the data directory: {leaks:?}"
        );
    }
}
