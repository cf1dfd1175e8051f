//! Bulk Data Access IG (v2) kick-off and status, over HTTP: GET and POST
//! (`Parameters`) at system, Patient and Group level; repeated and
//! comma-separated `_type`; strict and lenient handling of what is not
//! supported (400, or an OperationOutcome in the manifest's `error` file);
//! `_elements` (SUBSETTED, mandatory elements kept); `patient`;
//! `_typeFilter`; `includeAssociatedData=LatestProvenanceResources`;
//! `_since` in the future and missing headers refused; `Expires`; DELETE
//! then 404 as FHIR JSON; the CapabilityStatement's Bulk Data claims.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::{TestServer, type_ids as refs};
use serde_json::{Value, json};

const ASYNC: (&str, &str) = ("prefer", "respond-async");
const ACCEPT: (&str, &str) = ("accept", "application/fhir+json");
const FHIR: (&str, &str) = ("content-type", "application/fhir+json");

fn path(url: &str) -> &str {
    url.strip_prefix("http://vigil.test").expect("base")
}

/// Kicks off; returns the status URL's path.
async fn kick_off(s: &TestServer, method: Method, uri: &str, body: Option<&Value>) -> String {
    kick_off_with(s, method, uri, body, &[ASYNC, ACCEPT, FHIR]).await
}

async fn kick_off_with(
    s: &TestServer,
    method: Method,
    uri: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> String {
    let raw = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let r = s.call(method, uri, headers, raw).await;
    assert_eq!(
        r.status,
        StatusCode::ACCEPTED,
        "{uri}: {}",
        String::from_utf8_lossy(&r.raw)
    );
    path(r.header("content-location").expect("Content-Location")).to_owned()
}

async fn refused(
    s: &TestServer,
    method: Method,
    uri: &str,
    body: Option<&Value>,
) -> (StatusCode, String) {
    let raw = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let r = s.call(method, uri, &[ASYNC, ACCEPT, FHIR], raw).await;
    assert_eq!(
        r.body["resourceType"],
        "OperationOutcome",
        "{uri}: {}",
        String::from_utf8_lossy(&r.raw)
    );
    (r.status, r.diagnostics().to_owned())
}

/// Polls until done; returns the manifest and the response's headers.
async fn finish(s: &TestServer, status: &str) -> (Value, axum::http::HeaderMap) {
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(550)).await;
        let r = s.get(status).await;
        match r.status {
            StatusCode::OK => return (r.body, r.headers),
            StatusCode::ACCEPTED => {}
            other => panic!("{other}: {}", String::from_utf8_lossy(&r.raw)),
        }
    }
    panic!("the export did not finish");
}

/// Every line of the manifest's `key` files, parsed.
async fn lines(s: &TestServer, manifest: &Value, key: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for f in manifest[key].as_array().expect("a list") {
        let r = s.get(path(f["url"].as_str().expect("url"))).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("content-type"), Some("application/fhir+ndjson"));
        let text = String::from_utf8(r.raw).expect("utf8");
        for l in text.lines() {
            out.push(serde_json::from_str(l).expect("JSON per line"));
        }
    }
    out
}

async fn exported(
    s: &TestServer,
    method: Method,
    uri: &str,
    body: Option<&Value>,
) -> (Value, Vec<Value>) {
    let status = kick_off(s, method, uri, body).await;
    let (manifest, _) = finish(s, &status).await;
    let out = lines(s, &manifest, "output").await;
    (manifest, out)
}

/// Three patients with an Observation and a Condition each, a Practitioner,
/// a Group of p1 and p2, and Provenances of o1.
async fn load(s: &TestServer) {
    for i in 1..=3 {
        s.put_resource(json!({"resourceType": "Patient", "id": format!("p{i}"),
            "gender": if i == 2 { "female" } else { "male" }, "name": [{"family": format!("F{i}")}]}))
            .await;
        s.put_resource(json!({"resourceType": "Observation", "id": format!("o{i}"), "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": if i == 3 { "8302-2" } else { "29463-7" }}]},
            "subject": {"reference": format!("Patient/p{i}")}, "valueString": "x"}))
            .await;
        s.put_resource(json!({"resourceType": "Condition", "id": format!("c{i}"),
            "subject": {"reference": format!("Patient/p{i}")}, "code": {"text": "c"}}))
            .await;
    }
    s.put_resource(json!({"resourceType": "Practitioner", "id": "dr"}))
        .await;
    s.put_resource(json!({"resourceType": "Group", "id": "g", "type": "person", "actual": true,
        "member": [{"entity": {"reference": "Patient/p1"}}, {"entity": {"reference": "Patient/p2"}}]}))
        .await;
    s.put_resource(json!({"resourceType": "Provenance", "id": "prov-old", "recorded": "2020-01-01T00:00:00Z",
        "target": [{"reference": "Observation/o1"}], "agent": [{"who": {"reference": "Practitioner/dr"}}]}))
        .await;
    tokio::time::sleep(Duration::from_millis(2)).await;
    s.put_resource(json!({"resourceType": "Provenance", "id": "prov-new", "recorded": "2021-01-01T00:00:00Z",
        "target": [{"reference": "Observation/o1/_history/1"}], "agent": [{"who": {"reference": "Practitioner/dr"}}]}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_off_takes_every_parameter_by_get_and_post() {
    let s = TestServer::new();
    tokio::spawn(vigil_fhir::export::worker(s.app.clone()));
    load(&s).await;

    // Repeated and comma-separated _type are one list.
    let (_, out) = exported(
        &s,
        Method::GET,
        "/$export?_type=Patient,Group&_type=Practitioner",
        None,
    )
    .await;
    assert_eq!(
        refs(&out),
        [
            "Group/g",
            "Patient/p1",
            "Patient/p2",
            "Patient/p3",
            "Practitioner/dr"
        ]
        .map(String::from)
        .into()
    );

    // POST with a Parameters body: _type, _typeFilter (two filters on one
    // type are alternatives), _outputFormat.
    let params = json!({"resourceType": "Parameters", "parameter": [
        {"name": "_outputFormat", "valueString": "application/fhir+ndjson"},
        {"name": "_type", "valueString": "Patient,Observation"},
        {"name": "_typeFilter", "valueString": "Patient?gender=female"},
        {"name": "_typeFilter", "valueString": "Patient?family=F3"},
        {"name": "_typeFilter", "valueString": "Observation?code=http://loinc.org|8302-2"},
    ]});
    let (manifest, out) = exported(&s, Method::POST, "/$export", Some(&params)).await;
    assert_eq!(
        refs(&out),
        ["Observation/o3", "Patient/p2", "Patient/p3"]
            .map(String::from)
            .into(),
        "{manifest}"
    );
    assert_eq!(manifest["error"], json!([]), "nothing went wrong");

    // Patient level with `patient` (POST): the compartments of those patients.
    let params = json!({"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": "Patient/p3"}},
    ]});
    let (_, out) = exported(&s, Method::POST, "/Patient/$export", Some(&params)).await;
    assert_eq!(
        refs(&out),
        ["Condition/c3", "Observation/o3", "Patient/p3"]
            .map(String::from)
            .into()
    );

    // Group level: members only; with `patient` too, those in both.
    let (_, out) = exported(
        &s,
        Method::GET,
        "/Group/g/$export?_type=Patient,Condition",
        None,
    )
    .await;
    assert_eq!(
        refs(&out),
        ["Condition/c1", "Condition/c2", "Patient/p1", "Patient/p2"]
            .map(String::from)
            .into()
    );
    let params = json!({"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": "Patient/p2"}},
        {"name": "patient", "valueReference": {"reference": "Patient/p3"}},
        {"name": "_type", "valueString": "Patient"},
    ]});
    let (_, out) = exported(&s, Method::POST, "/Group/g/$export", Some(&params)).await;
    assert_eq!(refs(&out), ["Patient/p2"].map(String::from).into());

    // _elements: named and mandatory elements kept, tagged SUBSETTED; a
    // type no name applies to stays whole.
    let (_, out) = exported(
        &s,
        Method::GET,
        "/$export?_type=Observation,Patient&_elements=Observation.status",
        None,
    )
    .await;
    for r in &out {
        let keys: BTreeSet<&str> = r
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        if r["resourceType"] == "Observation" {
            assert_eq!(
                keys,
                ["code", "id", "meta", "resourceType", "status"].into(),
                "{r}"
            );
            assert_eq!(r["meta"]["tag"][0]["code"], "SUBSETTED");
        } else {
            assert!(
                keys.contains("name") && keys.contains("gender"),
                "whole: {r}"
            );
        }
    }

    // includeAssociatedData: the newest Provenance of each exported resource.
    let (_, out) = exported(
        &s,
        Method::GET,
        "/$export?_type=Observation&includeAssociatedData=LatestProvenanceResources",
        None,
    )
    .await;
    assert_eq!(
        refs(&out),
        [
            "Observation/o1",
            "Observation/o2",
            "Observation/o3",
            "Provenance/prov-new"
        ]
        .map(String::from)
        .into()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_not_supported_is_refused_when_strict_and_reported_when_lenient() {
    let s = TestServer::new();
    tokio::spawn(vigil_fhir::export::worker(s.app.clone()));
    load(&s).await;
    let strict = [ASYNC, ACCEPT, ("prefer", "handling=strict")];
    for uri in [
        "/$export?_type=Patient,NotAType",
        "/$export?_elements=Patient.nope",
        "/$export?includeAssociatedData=RelevantProvenanceResources",
        "/$export?organizeOutputBy=Patient",
        "/$export?_unknown=1",
    ] {
        let r = s.call(Method::GET, uri, &strict, Vec::new()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(r.body["resourceType"], "OperationOutcome");
    }
    // Lenient (the default): exported without them, each named in an
    // OperationOutcome of the error file.
    let status = kick_off_with(
        &s,
        Method::GET,
        "/$export?_type=Patient,NotAType&organizeOutputBy=Patient",
        None,
        &[ASYNC, ACCEPT],
    )
    .await;
    let (manifest, _) = finish(&s, &status).await;
    let out = lines(&s, &manifest, "output").await;
    assert_eq!(refs(&out).len(), 3);
    let errors = lines(&s, &manifest, "error").await;
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors
            .iter()
            .all(|e| e["resourceType"] == "OperationOutcome")
    );
    let text = serde_json::to_string(&errors).expect("json");
    assert!(
        text.contains("NotAType") && text.contains("organizeOutputBy"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_kick_offs_start_nothing() {
    let s = TestServer::new();
    load(&s).await;
    let before = s.versions();
    let future = "3020-01-01T00:00:00Z";
    let cases: Vec<(Method, String, Option<Value>, &str)> = vec![
        (
            Method::GET,
            format!("/$export?_since={future}"),
            None,
            "future",
        ),
        (
            Method::GET,
            "/$export?_since=yesterday".into(),
            None,
            "instant",
        ),
        (
            Method::GET,
            "/$export?_since=2020-01-01&_since=2021-01-01".into(),
            None,
            "once",
        ),
        (
            Method::GET,
            "/$export?_outputFormat=text/csv".into(),
            None,
            "_outputFormat",
        ),
        (
            Method::GET,
            "/$export?_typeFilter=Patient?nope=1".into(),
            None,
            "nope",
        ),
        (
            Method::GET,
            "/$export?_typeFilter=gender=male".into(),
            None,
            "Type?",
        ),
        (
            Method::GET,
            "/$export?_type=Patient&_typeFilter=Observation?code=x".into(),
            None,
            "leaves out",
        ),
        (
            Method::GET,
            "/$export?patient=Patient/p1".into(),
            None,
            "Patient and Group level",
        ),
        (
            Method::GET,
            "/Patient/$export?patient=Observation/o1".into(),
            None,
            "reference to a Patient",
        ),
        (
            Method::POST,
            "/$export".into(),
            Some(json!({"resourceType": "Patient"})),
            "Parameters",
        ),
        (
            Method::POST,
            "/Patient/$export".into(),
            Some(json!({"resourceType": "Parameters", "parameter": [{"name": "_type"}]})),
            "no value",
        ),
    ];
    for (method, uri, body, words) in cases {
        let (status, diagnostics) = refused(&s, method, &uri, body.as_ref()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {diagnostics}");
        assert!(diagnostics.contains(words), "{uri}: {diagnostics}");
    }
    // The headers the IG asks for.
    let r = s.call(Method::GET, "/$export", &[ACCEPT], Vec::new()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.diagnostics().contains("respond-async"));
    let r = s.call(Method::GET, "/$export", &[ASYNC], Vec::new()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.diagnostics().contains("Accept"), "{}", r.diagnostics());
    let r = s
        .call(
            Method::GET,
            "/$export",
            &[ASYNC, ("accept", "application/xml")],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);
    let r = s
        .call(
            Method::GET,
            "/Group/nope/$export",
            &[ASYNC, ACCEPT],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(s.versions(), before, "no job was recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_carries_expires_and_delete_leaves_a_fhir_404() {
    let s = TestServer::with(|c| c.export_expire_s = 3_600);
    tokio::spawn(vigil_fhir::export::worker(s.app.clone()));
    load(&s).await;
    let status = kick_off(&s, Method::GET, "/$export?_type=Patient", None).await;
    let (manifest, headers) = finish(&s, &status).await;
    let expires = headers
        .get("expires")
        .and_then(|v| v.to_str().ok())
        .expect("Expires");
    let at = httpdate::parse_http_date(expires).expect("an HTTP date");
    let left = at
        .duration_since(std::time::SystemTime::now())
        .expect("in the future");
    assert!(
        left > Duration::from_secs(3_000) && left <= Duration::from_secs(3_601),
        "{left:?}"
    );
    assert_eq!(manifest["requiresAccessToken"], false);
    assert!(manifest["error"].is_array());
    let r = s.delete(&status).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = s.get(&status).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/fhir+json")),
        "{:?}",
        r.header("content-type")
    );
    assert_eq!(r.body["resourceType"], "OperationOutcome");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_export_is_deleted_with_its_files() {
    let s = TestServer::with(|c| c.export_expire_s = 2);
    tokio::spawn(vigil_fhir::export::worker(s.app.clone()));
    load(&s).await;
    let status = kick_off(&s, Method::GET, "/$export?_type=Patient", None).await;
    let (manifest, _) = finish(&s, &status).await;
    let file = path(manifest["output"][0]["url"].as_str().expect("url")).to_owned();
    let mut gone = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        if s.get(&file).await.status == StatusCode::NOT_FOUND
            && s.get(&status).await.status == StatusCode::NOT_FOUND
        {
            gone = true;
            break;
        }
    }
    assert!(gone, "the worker deletes an expired job and its files");
    let dir = s.app.config.export_dir();
    let left = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "no files left in {}", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_that_cannot_be_exported_goes_to_the_error_file() {
    let s = TestServer::new();
    tokio::spawn(vigil_fhir::export::worker(s.app.clone()));
    load(&s).await;
    // A stored body that is no JSON object (written under the FHIR layer,
    // as a damaged store might hold it).
    s.app
        .store()
        .expect("store")
        .commit(vigil_engine::Batch::one(vigil_engine::Op::put(
            "Patient",
            "damaged",
            b"[1,2,3]".to_vec(),
        )))
        .expect("commit");
    let (manifest, out) = exported(&s, Method::GET, "/$export?_type=Patient", None).await;
    assert_eq!(
        refs(&out),
        ["Patient/p1", "Patient/p2", "Patient/p3"]
            .map(String::from)
            .into(),
        "the job finished without it"
    );
    let errors = lines(&s, &manifest, "error").await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["resourceType"], "OperationOutcome");
    assert_eq!(errors[0]["issue"][0]["severity"], "error");
    let d = errors[0]["issue"][0]["diagnostics"].as_str().unwrap_or("");
    assert!(d.contains("Patient/damaged"), "{d}");
}

#[tokio::test]
async fn the_capability_statement_instantiates_bulk_data() {
    let s = TestServer::new();
    let r = s.get("/metadata").await;
    assert_eq!(
        r.body["instantiates"],
        json!(["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"])
    );
    let ops: Vec<&str> = r.body["rest"][0]["operation"]
        .as_array()
        .expect("operations")
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    assert_eq!(ops, ["export", "patient-export", "group-export"]);
    assert!(
        r.body["rest"][0]["security"].is_null(),
        "no token endpoint, no SMART security"
    );
}
