//! Custom SearchParameters: one written to the server is searchable at
//! once for new writes and, once its reindex job has run, for what was
//! stored before; a retired one is gone again; a definition that cannot
//! be in force is refused with nothing written; `$reindex` shows progress.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{TestServer, found};
use serde_json::{Value, json};

const EYES: &str = "http://example.org/fhir/StructureDefinition/eye-colour";

fn patient(id: &str, eyes: Option<&str>) -> Value {
    let mut p = json!({"resourceType": "Patient", "id": id, "name": [{"family": "Doe"}]});
    if let Some(c) = eyes {
        p["extension"] = json!([{"url": EYES, "valueCode": c}]);
    }
    p
}

fn search_parameter(id: &str, code: &str, status: &str) -> Value {
    json!({
        "resourceType": "SearchParameter",
        "id": id,
        "url": format!("http://example.org/fhir/SearchParameter/{id}"),
        "name": code,
        "status": status,
        "description": "Eye colour",
        "code": code,
        "base": ["Patient"],
        "type": "token",
        "expression": format!("Patient.extension.where(url='{EYES}').value"),
    })
}

/// Waits until every reindex job `/status` lists has completed; returns them.
async fn reindexed(s: &TestServer) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = s.get("/status").await;
        let jobs = st.body["reindex"].as_array().cloned().unwrap_or_default();
        if !jobs.is_empty() && jobs.iter().all(|j| j["status"] == "completed") {
            return jobs;
        }
        assert!(
            Instant::now() < deadline,
            "reindex never finished: {jobs:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `n` Patients `q00000…` in one batch, each with the eye colour `eyes`
/// gives it, then the SearchParameter `eye-colour` (which records a job).
async fn patients_then_parameter(s: &TestServer, n: usize, eyes: impl Fn(usize) -> &'static str) {
    let entries: Vec<Value> = (0..n)
        .map(|i| {
            json!({"resource": patient(&format!("q{i:05}"), Some(eyes(i))),
                   "request": {"method": "PUT", "url": format!("Patient/q{i:05}")}})
        })
        .collect();
    let r = s
        .post(
            "/",
            &json!({"resourceType": "Bundle", "type": "batch", "entry": entries}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s
        .put(
            "/SearchParameter/eyes",
            &search_parameter("eyes", "eye-colour", "active"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

async fn strict(s: &TestServer, uri: &str) -> common::Resp {
    s.get_with(uri, &[("prefer", "handling=strict")]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_parameter_finds_old_and_new_resources_after_its_reindex() {
    let s = TestServer::new();
    tokio::spawn(vigil_fhir::reindex::worker(s.app.clone()));
    let colours = ["blue", "brown", "green"];
    for i in 0..45 {
        let eyes = (i % 4 != 3).then(|| colours[i % 3]);
        s.put_resource(patient(&format!("p{i:02}"), eyes)).await;
    }
    let r = strict(&s, "/Patient?eye-colour=blue").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "not a parameter yet");

    let r = s
        .put(
            "/SearchParameter/eye-colour",
            &search_parameter("eye-colour", "eye-colour", "active"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let jobs = reindexed(&s).await;
    assert_eq!(jobs[0]["reason"], "SearchParameter/eye-colour");
    assert_eq!(
        jobs[0]["done"], 45,
        "every stored Patient rekeyed: {jobs:?}"
    );

    // Written before the definition, found through the reindex; written
    // after, found through its own keys.
    s.put_resource(patient("late", Some("blue"))).await;
    let blue: Vec<String> = (0..45)
        .filter(|i| i % 4 != 3 && i % 3 == 0)
        .map(|i| format!("p{i:02}"))
        .chain(["late".to_owned()])
        .collect();
    let mut want = blue.clone();
    want.sort();
    assert_eq!(found(&s, "/Patient?eye-colour=blue&_count=100").await, want);
    let missing = found(&s, "/Patient?eye-colour:missing=true&_count=100").await;
    assert_eq!(missing.len(), 11, "{missing:?}");
    let not_blue = found(&s, "/Patient?eye-colour:not=blue&_count=100").await;
    assert_eq!(not_blue.len(), 46 - blue.len());
    // An update moves the keys.
    s.put_resource(patient("late", Some("green"))).await;
    assert!(
        !found(&s, "/Patient?eye-colour=blue&_count=100")
            .await
            .contains(&"late".to_owned())
    );

    // The CapabilityStatement lists it.
    let meta = s.get("/metadata").await;
    let params = meta.body["rest"][0]["resource"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["type"] == "Patient"))
        .map(|r| r["searchParam"].clone())
        .unwrap_or_default();
    assert!(
        params.as_array().is_some_and(|ps| ps
            .iter()
            .any(|p| p["name"] == "eye-colour" && p["type"] == "token")),
        "{params}"
    );

    // Retired: no longer a parameter, and its keys are rekeyed away.
    let r = s
        .put(
            "/SearchParameter/eye-colour",
            &search_parameter("eye-colour", "eye-colour", "retired"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    reindexed(&s).await;
    let r = strict(&s, "/Patient?eye-colour=blue").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    s.app
        .store()
        .expect("store")
        .verify()
        .expect("the index equals a rebuild from the log");

    // Active again under another id: the same answers as before.
    let r = s
        .put(
            "/SearchParameter/eyes-again",
            &search_parameter("eyes-again", "eye-colour", "active"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    reindexed(&s).await;
    let mut want: Vec<String> = blue.into_iter().filter(|i| i != "late").collect();
    want.sort();
    assert_eq!(found(&s, "/Patient?eye-colour=blue&_count=100").await, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_that_cannot_be_in_force_are_refused_and_nothing_is_written() {
    let s = TestServer::new();
    let ok = search_parameter("eyes", "eye-colour", "active");
    assert_eq!(
        s.put("/SearchParameter/eyes", &ok).await.status,
        StatusCode::CREATED
    );
    let mut cases: Vec<(&str, Value, &str)> = Vec::new();
    let mut v = search_parameter("b1", "name", "active");
    cases.push(("b1", v.clone(), "already has a search parameter name"));
    v = search_parameter("b2", "eye-colour", "active");
    cases.push(("b2", v.clone(), "already defines eye-colour"));
    v = search_parameter("b3", "x1", "active");
    v["type"] = json!("composite");
    cases.push(("b3", v.clone(), "not supported for a custom parameter"));
    v = search_parameter("b4", "x2", "active");
    v["expression"] = json!("Patient.extension.where(");
    cases.push(("b4", v.clone(), "expression"));
    v = search_parameter("b5", "x3", "active");
    v["base"] = json!(["NotAType"]);
    cases.push(("b5", v.clone(), "not an R4 resource type"));
    v = search_parameter("b6", "1abc", "active");
    cases.push(("b6", v.clone(), "a letter"));
    v = search_parameter("b7", "x4", "active");
    v["expression"] = json!("Observation.code");
    cases.push(("b7", v.clone(), "no path on Patient"));
    for (id, body, why) in cases {
        let r = s.put(&format!("/SearchParameter/{id}"), &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{id}: {}", r.body);
        assert_eq!(r.body["resourceType"], "OperationOutcome");
        assert!(r.diagnostics().contains(why), "{id}: {}", r.diagnostics());
        let r = s.get(&format!("/SearchParameter/{id}")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{id} was not written");
    }
    // A draft is stored and changes nothing.
    let draft = search_parameter("d", "draft-code", "draft");
    assert_eq!(
        s.put("/SearchParameter/d", &draft).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        strict(&s, "/Patient?draft-code=x").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_runs_in_chunks_and_shows_its_progress() {
    let s = TestServer::new();
    let n = vigil_fhir::reindex::CHUNK + 150;
    patients_then_parameter(&s, n, |i| if i % 2 == 0 { "blue" } else { "grey" }).await;
    // Recorded with the definition, run once a worker is there.
    let r = s
        .post("/Patient/$reindex", &json!({"resourceType": "Parameters"}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let at = r
        .header("content-location")
        .expect("a job address")
        .to_owned();
    let path = at.trim_start_matches("http://vigil.test");
    let job = s.get(path).await;
    assert_eq!(job.status, StatusCode::OK);
    assert_eq!(job.body["resourceType"], "Parameters");
    tokio::spawn(vigil_fhir::reindex::worker(s.app.clone()));
    let jobs = reindexed(&s).await;
    assert_eq!(jobs.len(), 2);
    for j in &jobs {
        assert_eq!(j["done"], n as u64, "{j}");
        assert_eq!(j["percent"], 100.0);
    }
    let blue = found(&s, "/Patient?eye-colour=blue&_summary=count").await;
    assert!(blue.is_empty(), "a count has no entries");
    let r = s.get("/Patient?eye-colour=blue&_summary=count").await;
    assert_eq!(r.body["total"], (n / 2 + n % 2) as u64);
    let r = s.get("/$reindex/no-such-job").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = s.post("/NotAType/$reindex", &json!({})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

const PHARMACY: &str = "http://example.org/fhir/StructureDefinition/preferred-pharmacy";
const VISIT: &str = "http://example.org/fhir/StructureDefinition/last-visit";

fn extension_parameter(id: &str, kind: &str, url: &str) -> Value {
    let mut sp = search_parameter(id, id, "active");
    sp["type"] = json!(kind);
    sp["expression"] = json!(format!("Patient.extension.where(url='{url}').value"));
    if kind == "reference" {
        sp["target"] = json!(["Organization"]);
    }
    sp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_parameters_sort_chain_include_and_reverse_chain() {
    let s = TestServer::new();
    tokio::spawn(vigil_fhir::reindex::worker(s.app.clone()));
    for (id, name) in [("o1", "Acme Pharmacy"), ("o2", "Corner Drugs")] {
        s.put_resource(json!({"resourceType": "Organization", "id": id, "name": name}))
            .await;
    }
    // (patient, pharmacy, last visit)
    let rows = [
        ("a", Some("o1"), Some("2021-05-01")),
        ("b", Some("o2"), Some("2019-01-20")),
        ("c", Some("o1"), Some("2023-11-02")),
        ("d", None, Some("2020-07-07")),
        ("e", Some("o2"), None),
    ];
    for (id, org, visit) in rows {
        let mut ext = Vec::new();
        if let Some(o) = org {
            ext.push(json!({"url": PHARMACY, "valueReference": {"reference": format!("Organization/{o}")}}));
        }
        if let Some(v) = visit {
            ext.push(json!({"url": VISIT, "valueDate": v}));
        }
        s.put_resource(json!({"resourceType": "Patient", "id": id, "extension": ext}))
            .await;
    }
    for (id, kind, url) in [
        ("pharmacy", "reference", PHARMACY),
        ("last-visit", "date", VISIT),
    ] {
        let r = s
            .put(
                &format!("/SearchParameter/{id}"),
                &extension_parameter(id, kind, url),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    reindexed(&s).await;

    let ids = |b: &Value| -> Vec<String> {
        common::match_refs(b)
            .into_iter()
            .map(|r| r.rsplit('/').next().unwrap_or("").to_owned())
            .collect()
    };
    let r = s.get("/Patient?_sort=-last-visit").await;
    assert_eq!(
        ids(&r.body),
        ["c", "a", "d", "b", "e"],
        "no value sorts last"
    );
    let r = s.get("/Patient?last-visit=ge2020&_sort=last-visit").await;
    assert_eq!(ids(&r.body), ["d", "a", "c"]);
    assert_eq!(
        found(&s, "/Patient?pharmacy=Organization/o1").await,
        ["a", "c"]
    );
    assert_eq!(
        found(&s, "/Patient?pharmacy:Organization.name=corner").await,
        ["b", "e"]
    );
    let r = s.get("/Patient?_id=a&_include=Patient:pharmacy").await;
    assert_eq!(
        common::refs_of_mode(&r.body, "include"),
        ["Organization/o1"]
    );
    let r = s
        .get("/Organization?_id=o2&_revinclude=Patient:pharmacy")
        .await;
    let mut rev = common::refs_of_mode(&r.body, "include");
    rev.sort();
    assert_eq!(rev, ["Patient/b", "Patient/e"]);
    assert_eq!(
        found(&s, "/Organization?_has:Patient:pharmacy:last-visit=ge2021").await,
        ["o1"]
    );
}

/// A leader that rekeyed one chunk and was lost: the job's position is in
/// the log with that chunk, and a worker started afterwards (the new
/// leader's) goes on from it, rekeying each resource once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reindex_goes_on_from_the_position_the_log_holds() {
    use vigil_engine::{Batch, Op, Precondition};
    use vigil_fhir::reindex::{CHUNK, JOB_TYPE, jobs};
    let s = TestServer::new();
    let n = 2 * CHUNK + 10;
    patients_then_parameter(&s, n, |_| "blue").await;

    // The first chunk, committed with the position as the worker does.
    let store = s.app.store().expect("store");
    let (mut job, version) = jobs(&store, 10).expect("jobs").remove(0);
    let first = store.live_ids("Patient", None, CHUNK).expect("ids");
    let mut batch = Batch::new();
    for id in &first {
        batch.push(Op::rekey("Patient", id.clone()));
    }
    job.after = first.last().cloned();
    job.done = first.len() as u64;
    let body = serde_json::to_vec(&job).expect("json");
    batch.push(Op::put(JOB_TYPE, job.id.clone(), body).expect(Precondition::Version(version)));
    vigil_fhir::app::commit(&s.app, batch)
        .await
        .expect("commit");
    drop(store);
    let r = s.get("/Patient?eye-colour=blue&_summary=count").await;
    assert_eq!(r.body["total"], CHUNK as u64, "the first chunk alone");

    tokio::spawn(vigil_fhir::reindex::worker(s.app.clone()));
    let done = reindexed(&s).await;
    assert_eq!(
        done[0]["done"], n as u64,
        "each resource counted once: {done:?}"
    );
    let r = s.get("/Patient?eye-colour=blue&_summary=count").await;
    assert_eq!(r.body["total"], n as u64);
}

/// Finished jobs beyond the newest kept are deleted as each job ends, so
/// the jobs a worker reads stay bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_reindex_jobs_beyond_the_kept_are_deleted() {
    use vigil_fhir::reindex::{JOBS_KEPT, jobs};
    let s = TestServer::new();
    s.put_resource(patient("p", Some("blue"))).await;
    tokio::spawn(vigil_fhir::reindex::worker(s.app.clone()));
    for n in 0..JOBS_KEPT + 5 {
        let mut sp = search_parameter("eyes", "eye-colour", "active");
        sp["description"] = json!(format!("Eye colour, take {n}"));
        let r = s.put("/SearchParameter/eyes", &sp).await;
        assert!(r.status.is_success(), "{}", r.body);
    }
    reindexed(&s).await;
    let kept = jobs(&s.app.store().expect("store"), 10 * JOBS_KEPT).expect("jobs");
    assert!(kept.len() <= JOBS_KEPT, "{} jobs kept", kept.len());
    assert!(kept.iter().all(|(j, _)| j.status == "completed"));
    assert_eq!(found(&s, "/Patient?eye-colour=blue").await, ["p"]);
}
