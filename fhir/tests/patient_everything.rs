//! `Patient/[id]/$everything` and `Patient/$everything`: the patient, the
//! resources of its compartment (by the official Patient
//! CompartmentDefinition: an Observation by `subject` or `performer`, an
//! Encounter by `patient`, …), what those refer to as included entries,
//! nothing of another patient; `_type`, `_since`, `start`/`end`,
//! `_count` with paging; by GET and by POST.

mod common;

use axum::http::{Method, StatusCode};
use common::{TestServer, match_refs, refs_of_mode};
use serde_json::json;

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

async fn seed(s: &TestServer) {
    for body in [
        json!({"resourceType": "Organization", "id": "org", "name": "Clinic"}),
        json!({"resourceType": "Practitioner", "id": "doc"}),
        json!({"resourceType": "Patient", "id": "p1", "managingOrganization": {"reference": "Organization/org"}}),
        json!({"resourceType": "Patient", "id": "p2"}),
        json!({"resourceType": "Patient", "id": "p3", "link": [{"other": {"reference": "Patient/p1"}, "type": "seealso"}]}),
        json!({"resourceType": "Encounter", "id": "e1", "status": "finished", "class": {"code": "AMB"},
            "subject": {"reference": "Patient/p1"}, "period": {"start": "2020-02-01", "end": "2020-02-01"},
            "participant": [{"individual": {"reference": "Practitioner/doc"}}]}),
        json!({"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2020-02-01",
            "encounter": {"reference": "Encounter/e1"}}),
        json!({"resourceType": "Observation", "id": "o2", "status": "final", "code": {"text": "x"},
            "subject": {"reference": "Patient/p2"}, "effectiveDateTime": "2021-06-01",
            "performer": [{"reference": "Patient/p1"}]}),
        json!({"resourceType": "Observation", "id": "o3", "status": "final", "code": {"text": "x"},
            "subject": {"reference": "Patient/p2"}, "effectiveDateTime": "2022-01-01",
            "performer": [{"reference": "Practitioner/doc"}]}),
        json!({"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}}),
        json!({"resourceType": "Condition", "id": "c2", "subject": {"reference": "Patient/p2"}}),
    ] {
        s.put_resource(body).await;
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

#[tokio::test]
async fn one_patients_everything_is_its_compartment_and_what_that_refers_to() {
    let s = TestServer::new();
    seed(&s).await;
    let r = s.get("/Patient/p1/$everything").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["type"], "searchset");
    // The patient itself, p3 (which links to p1), e1, o1, o2 (p1 performed
    // it), c1 — not p2, o3 or c2.
    assert_eq!(
        sorted(match_refs(&r.body)),
        strs(&[
            "Condition/c1",
            "Encounter/e1",
            "Observation/o1",
            "Observation/o2",
            "Patient/p1",
            "Patient/p3"
        ])
    );
    assert_eq!(r.body["total"], 6);
    // Referenced from them and outside the compartment: included.
    let inc = sorted(refs_of_mode(&r.body, "include"));
    assert!(inc.contains(&"Organization/org".to_owned()), "{inc:?}");
    assert!(inc.contains(&"Practitioner/doc".to_owned()), "{inc:?}");
    // p2 is referred to by o2 but is another patient: included, not a match.
    assert!(!match_refs(&r.body).contains(&"Patient/p2".to_owned()));
}

#[tokio::test]
async fn type_since_dates_and_paging_narrow_it() {
    let s = TestServer::new();
    seed(&s).await;
    let r = s
        .get("/Patient/p1/$everything?_type=Observation,Patient")
        .await;
    assert_eq!(
        sorted(match_refs(&r.body)),
        strs(&[
            "Observation/o1",
            "Observation/o2",
            "Patient/p1",
            "Patient/p3"
        ])
    );
    // start/end: Observations by their date; Patients and Conditions have
    // none and stay.
    let r = s
        .get("/Patient/p1/$everything?start=2021-01-01&end=2021-12-31")
        .await;
    assert_eq!(
        sorted(match_refs(&r.body)),
        strs(&["Condition/c1", "Observation/o2", "Patient/p1", "Patient/p3"])
    );
    // _since: only what changed at or after the instant.
    let before_update = s.get("/Observation/o1").await.body["meta"]["lastUpdated"]
        .as_str()
        .expect("lastUpdated")
        .to_owned();
    let mid = s.get("/Condition/c1").await.body["meta"]["lastUpdated"]
        .as_str()
        .expect("lastUpdated")
        .to_owned();
    assert!(mid > before_update);
    let r = s
        .get(&format!(
            "/Patient/p1/$everything?_since={}",
            mid.replace('+', "%2B")
        ))
        .await;
    assert_eq!(match_refs(&r.body), strs(&["Condition/c1"]));
    // Pages of two, in order, with the includes beside each page.
    let pages = s.pages("/Patient/p1/$everything?_count=2").await;
    assert_eq!(pages.len(), 3);
    let all: Vec<String> = pages.iter().flat_map(match_refs).collect();
    assert_eq!(all.len(), 6);
    assert_eq!(sorted(all.clone()), all, "pages in type and id order");
}

#[tokio::test]
async fn every_patients_everything_and_post() {
    let s = TestServer::new();
    seed(&s).await;
    let r = s
        .get("/Patient/$everything?_type=Patient,Condition,Observation")
        .await;
    assert_eq!(
        sorted(match_refs(&r.body)),
        strs(&[
            "Condition/c1",
            "Condition/c2",
            "Observation/o1",
            "Observation/o2",
            "Observation/o3",
            "Patient/p1",
            "Patient/p2",
            "Patient/p3"
        ])
    );
    let params = json!({"resourceType": "Parameters", "parameter": [
        {"name": "_type", "valueString": "Observation"},
        {"name": "_count", "valueInteger": 1}
    ]});
    let r = s
        .call(
            Method::POST,
            "/Patient/p1/$everything",
            &[("content-type", "application/fhir+json")],
            serde_json::to_vec(&params).expect("json"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(match_refs(&r.body), strs(&["Observation/o1"]));
    assert_eq!(r.body["total"], 2);
}

#[tokio::test]
async fn bad_requests_get_outcomes() {
    let s = TestServer::new();
    seed(&s).await;
    for (uri, status) in [
        ("/Observation/o1/$everything", StatusCode::BAD_REQUEST),
        ("/Patient/p1/$everything?code=x", StatusCode::BAD_REQUEST),
        (
            "/Patient/p1/$everything?_type=Nope",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/Patient/p1/$everything?_since=yesterday",
            StatusCode::BAD_REQUEST,
        ),
        ("/Patient/p1/$everything?_count=x", StatusCode::BAD_REQUEST),
    ] {
        let r = s.get(uri).await;
        assert_eq!(r.status, status, "{uri}: {:?}", r.body);
        assert_eq!(r.body["resourceType"], "OperationOutcome", "{uri}");
    }
    let r = s
        .call(
            Method::POST,
            "/Patient/p1/$everything",
            &[("content-type", "application/fhir+json")],
            br#"{"resourceType":"Patient"}"#.to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // A patient that does not exist (or no longer does): 404.
    let r = s.get("/Patient/nobody/$everything").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["resourceType"], "OperationOutcome");
    s.delete("/Patient/p2").await;
    let r = s.get("/Patient/p2/$everything").await;
    assert_eq!(r.status, StatusCode::GONE);
}
