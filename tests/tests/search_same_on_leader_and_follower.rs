//! A follower answers every search from its own index, which it builds
//! from the shipped log with the same extractor: the same query gives the
//! same matches, includes, order, totals and page links on the leader and
//! on the follower. One real Synthea patient (fhir/tests/fixtures, with
//! its source) is written to the leader; the queries cover every kind of
//! parameter, modifiers, prefixes, chains, `_has`, includes, composites,
//! `_sort`, compartments and `$everything`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use vigil_fhir::config::replication::ReplicationConfig;
use vigil_testkit::http::request;
use vigil_testkit::until;
use vigil_tests::NodeProcess;

const BIN: &str = env!("CARGO_BIN_EXE_vigil_node");

fn write_config(
    dir: &std::path::Path,
    node: &str,
    replication: Option<ReplicationConfig>,
) -> PathBuf {
    vigil_tests::write_node_config(dir, node, replication, |c| {
        c.base_url = Some("http://vigil.test".into());
    })
    .expect("write config")
}

fn get(addr: SocketAddr, path: &str) -> Value {
    let r = request(addr, "GET", path, None).expect("request");
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    serde_json::from_str(&r.body).expect("JSON")
}

/// Writes the Synthea patient of fhir/tests/fixtures (one transaction).
fn load_patient(addr: SocketAddr) {
    let bundle = std::fs::read_to_string(format!(
        "{}/../fhir/tests/fixtures/synthea-r4/Dwain_McGlynn_7515d14b-843b-4210-8b6b-a33ab253d560.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture");
    let r = request(addr, "POST", "/", Some(&bundle)).expect("transaction");
    assert_eq!(r.status, 200, "{}", r.body);
}

/// What a searchset says, less what may differ between nodes (ids of
/// the Bundle itself, times): total, entries (fullUrl and mode), links.
fn shape(b: &Value) -> Value {
    let entries: Vec<Value> = b["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|x| {
                    serde_json::json!([
                        x["fullUrl"],
                        x["search"]["mode"],
                        x["resource"]["meta"]["versionId"]
                    ])
                })
                .collect()
        })
        .unwrap_or_default();
    serde_json::json!({"total": b["total"], "entries": entries, "link": b["link"]})
}

#[test]
fn every_search_gives_the_same_answer_on_leader_and_follower() {
    let dir = tempfile::tempdir().expect("dir");
    let (leader, follower) =
        vigil_tests::leader_follower_configs(dir.path()).expect("cluster settings");
    let leader =
        NodeProcess::start(BIN, &write_config(dir.path(), "a", Some(leader))).expect("leader");
    let follower =
        NodeProcess::start(BIN, &write_config(dir.path(), "b", Some(follower))).expect("follower");

    load_patient(leader.http);
    let patient = get(leader.http, "/Patient?name=dwain");
    let pid = patient["entry"][0]["resource"]["id"]
        .as_str()
        .expect("the patient")
        .to_owned();
    // The follower has indexed everything once its total agrees.
    let want = get(leader.http, "/?_count=0")["total"].clone();
    assert!(want.as_u64().is_some_and(|n| n >= 96), "{want}");
    until("the follower caught up", Duration::from_secs(30), || {
        request(follower.http, "GET", "/?_count=0", None)
            .ok()
            .and_then(|r| serde_json::from_str::<Value>(&r.body).ok())
            .is_some_and(|b| b["total"] == want)
    });

    let queries = [
        "/Patient?name=dwain".to_owned(),
        "/Patient?family:exact=McGlynn".to_owned(),
        "/Observation?code=http://loinc.org|8302-2&_sort=-date&_count=3".to_owned(),
        "/Observation?date=ge2015-01-01&date=lt2018&_sort=date,_id&_count=7".to_owned(),
        "/Observation?value-quantity=gt100&_sort=-value-quantity&_count=5".to_owned(),
        "/Observation?code:text=body&_count=4".to_owned(),
        "/Observation?value-quantity=gt50000|http://unitsofmeasure.org|g&_sort=_id&_count=3"
            .to_owned(),
        "/Observation?subject:Patient.name=dwain&_count=2".to_owned(),
        "/Patient?_has:Observation:subject:code=8302-2".to_owned(),
        "/Patient?_revinclude=Observation:subject&_count=1&_elements=id".to_owned(),
        "/Encounter?_include=Encounter:subject&_include=Encounter:service-provider&_count=2"
            .to_owned(),
        "/Observation?component-code-value-quantity=http://loinc.org|8480-6$gt100".to_owned(),
        "/Observation?combo-code-value-quantity=8462-4$lt100&_sort=-date&_count=2".to_owned(),
        "/Condition?onset-date:missing=false&_total=accurate&_count=0".to_owned(),
        "/?_type=Patient,Condition&_count=5".to_owned(),
        format!("/Patient/{pid}/Observation?date=ge2015&_count=4"),
        format!("/Patient/{pid}/$everything?_count=25"),
        format!("/Patient/{pid}/$everything?_type=Condition,Encounter&_since=2000-01-01"),
        "/Patient/$everything?_type=Immunization&_count=3".to_owned(),
    ];
    for q in &queries {
        let on_leader = get(leader.http, q);
        let on_follower = get(follower.http, q);
        assert!(
            on_leader["entry"].as_array().is_some_and(|e| !e.is_empty())
                || on_leader["total"].as_u64().is_some_and(|n| n > 0),
            "{q} finds something on the leader: {on_leader}"
        );
        assert_eq!(shape(&on_leader), shape(&on_follower), "{q}");
        // And the next page too, where there is one.
        if let Some(next) = on_leader["link"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["relation"] == "next"))
            .and_then(|x| x["url"].as_str())
        {
            let path = next.trim_start_matches("http://vigil.test");
            assert_eq!(
                shape(&get(leader.http, path)),
                shape(&get(follower.http, path)),
                "{path}"
            );
        }
    }
}

/// The reindex jobs `/status` lists on a node, once all have completed.
fn completed_jobs(addr: SocketAddr) -> Option<Vec<Value>> {
    let st = request(addr, "GET", "/status", None).ok()?;
    let st: Value = serde_json::from_str(&st.body).ok()?;
    let jobs = st["reindex"].as_array()?.clone();
    (!jobs.is_empty() && jobs.iter().all(|j| j["status"] == "completed")).then_some(jobs)
}

#[test]
fn a_custom_parameter_written_through_the_follower_is_reindexed_on_both_nodes() {
    let dir = tempfile::tempdir().expect("dir");
    let (leader, follower) =
        vigil_tests::leader_follower_configs(dir.path()).expect("cluster settings");
    // Each node's own address as its base: the follower forwards writes
    // to the leader's.
    let config = |node, r| {
        vigil_tests::write_node_config(dir.path(), node, Some(r), |_| {}).expect("write config")
    };
    let leader = NodeProcess::start(BIN, &config("a", leader)).expect("leader");
    let follower = NodeProcess::start(BIN, &config("b", follower)).expect("follower");
    load_patient(leader.http);
    let strict = |addr| {
        vigil_testkit::http::request_with(
            addr,
            "GET",
            "/Observation?code-display=body",
            None,
            &[("prefer", "handling=strict")],
        )
        .expect("request")
        .status
    };
    assert_eq!(strict(follower.http), 400, "not a parameter yet");

    // Written to the follower, which forwards it; the leader's worker
    // rekeys every Observation, and the follower applies the same records.
    let sp = serde_json::json!({
        "resourceType": "SearchParameter", "id": "code-display",
        "url": "http://example.org/fhir/SearchParameter/code-display",
        "name": "code-display", "status": "active", "description": "A code's display",
        "code": "code-display", "base": ["Observation"], "type": "string",
        "expression": "Observation.code.coding.display",
    });
    let r = request(
        follower.http,
        "PUT",
        "/SearchParameter/code-display",
        Some(&sp.to_string()),
    )
    .expect("forwarded write");
    assert_eq!(r.status, 201, "{}", r.body);
    let mut on_leader = Vec::new();
    until(
        "the leader's reindex completed",
        Duration::from_secs(60),
        || completed_jobs(leader.http).map(|j| on_leader = j).is_some(),
    );
    until(
        "the follower shows it completed",
        Duration::from_secs(60),
        || completed_jobs(follower.http).is_some_and(|j| j == on_leader),
    );
    let observations = get(leader.http, "/Observation?_count=0")["total"].clone();
    assert_eq!(on_leader[0]["done"], observations, "{on_leader:?}");
    assert_eq!(strict(follower.http), 200);

    // The same matches on both (each node names them by its own address).
    let ids = |b: &Value| -> (Value, Vec<Value>) {
        let e = b["entry"].as_array().cloned().unwrap_or_default();
        (
            b["total"].clone(),
            e.iter().map(|x| x["resource"]["id"].clone()).collect(),
        )
    };
    for q in [
        "/Observation?code-display=body&_sort=_id&_count=500",
        "/Observation?code-display:contains=pressure&_count=500",
        "/Observation?code-display:missing=false&_count=0",
    ] {
        let a = get(leader.http, q);
        assert!(a["total"].as_u64().is_some_and(|n| n > 0), "{q}: {a}");
        assert_eq!(ids(&a), ids(&get(follower.http, q)), "{q}");
    }

    // A transaction with a conditional reference, sent to the follower:
    // the leader resolves it as it does its own; one that matches nothing
    // fails with 400 and writes nothing.
    let org = serde_json::json!({"resourceType": "Organization",
        "identifier": [{"system": "http://example.org/org", "value": "fwd"}]});
    let r = request(
        follower.http,
        "POST",
        "/Organization",
        Some(&org.to_string()),
    )
    .expect("forwarded create");
    assert_eq!(r.status, 201, "{}", r.body);
    let org_id = serde_json::from_str::<Value>(&r.body).expect("json")["id"].clone();
    let bundle = |value: &str| {
        serde_json::json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "managingOrganization":
                {"reference": format!("Organization?identifier=http://example.org/org|{value}")}},
             "request": {"method": "POST", "url": "Patient"}}]})
        .to_string()
    };
    let r = request(follower.http, "POST", "/", Some(&bundle("fwd"))).expect("forwarded");
    assert_eq!(r.status, 200, "{}", r.body);
    let answer: Value = serde_json::from_str(&r.body).expect("json");
    let location = answer["entry"][0]["response"]["location"]
        .as_str()
        .expect("location");
    let patient = location.split("/_history").next().expect("Patient/id");
    let stored = get(leader.http, &format!("/{patient}"));
    assert_eq!(
        stored["managingOrganization"]["reference"],
        format!("Organization/{}", org_id.as_str().expect("id"))
    );
    let before = get(leader.http, "/Patient?_count=0")["total"].clone();
    let r = request(follower.http, "POST", "/", Some(&bundle("none"))).expect("forwarded");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("matches no Organization"), "{}", r.body);
    assert_eq!(get(leader.http, "/Patient?_count=0")["total"], before);
}
