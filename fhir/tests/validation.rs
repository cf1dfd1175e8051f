//! Validation of every write against the R4 base definitions: invalid
//! resources are refused with one issue per problem and its FHIRPath
//! expression, nothing written; `lenient` stores them with warnings; `off`
//! does not look; `$validate` answers in each mode; the official R4
//! examples kept in tests/fixtures are accepted.

mod common;

use axum::http::{Method, StatusCode};
use common::TestServer;
use serde_json::{Value, json};
use vigil_fhir::validate::Mode;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fhirpath/input");

fn obs(extra: Value) -> Value {
    let mut o = json!({"resourceType": "Observation", "status": "final", "code": {"text": "t"}});
    if let (Some(o), Value::Object(e)) = (o.as_object_mut(), extra) {
        o.extend(e);
    }
    o
}

fn pat(extra: Value) -> Value {
    let mut o = json!({"resourceType": "Patient"});
    if let (Some(o), Value::Object(e)) = (o.as_object_mut(), extra) {
        o.extend(e);
    }
    o
}

/// Invalid resources and an expression each must be named by.
fn invalid() -> Vec<(Value, &'static str)> {
    vec![
        (pat(json!({"foo": 1})), "Patient"),
        (pat(json!({"birthDate": "yesterday"})), "Patient.birthDate"),
        (pat(json!({"birthDate": "1970-13-01"})), "Patient.birthDate"),
        (pat(json!({"birthDate": 1970})), "Patient.birthDate"),
        (pat(json!({"gender": "blue"})), "Patient.gender"),
        (pat(json!({"active": "yes"})), "Patient.active"),
        (pat(json!({"name": {"family": "Doe"}})), "Patient.name"),
        (
            pat(json!({"name": [{"given": "Ann"}]})),
            "Patient.name[0].given",
        ),
        (
            pat(json!({"name": [{"family": ["Doe"]}]})),
            "Patient.name[0].family",
        ),
        (
            pat(json!({"name": [{"use": "nickname2"}]})),
            "Patient.name[0].use",
        ),
        (pat(json!({"id": "a b"})), "Patient.id"),
        (pat(json!({"id": "x".repeat(65)})), "Patient.id"),
        (
            pat(json!({"telecom": [{"system": "pager2", "value": "1"}]})),
            "Patient.telecom[0].system",
        ),
        (
            pat(json!({"deceasedBoolean": true, "deceasedDateTime": "2020"})),
            "Patient",
        ),
        (
            pat(json!({"multipleBirthInteger": 1.5})),
            "Patient.multipleBirthInteger",
        ),
        (
            pat(json!({"meta": {"lastUpdated": "today"}})),
            "Patient.meta.lastUpdated",
        ),
        (
            pat(json!({"managingOrganization": {"reference": "Organisation/1"}})),
            "Patient.managingOrganization.reference",
        ),
        (
            pat(json!({"managingOrganization": {"reference": "Organization"}})),
            "Patient.managingOrganization.reference",
        ),
        (
            pat(json!({"managingOrganization": {"reference": "Organization/a b"}})),
            "Patient.managingOrganization.reference",
        ),
        (
            pat(json!({"generalPractitioner": [{"reference": "#bad id"}]})),
            "Patient.generalPractitioner[0].reference",
        ),
        (pat(json!({"name": []})), "Patient.name"),
        (pat(json!({"name": [{}]})), "Patient.name[0]"),
        (
            pat(json!({"name": [{"family": ""}]})),
            "Patient.name[0].family",
        ),
        (
            pat(json!({"address": [{"line": ["", "x"]}]})),
            "Patient.address[0].line[0]",
        ),
        (
            pat(json!({"extension": [{"valueString": "no url"}]})),
            "Patient.extension[0].url",
        ),
        (
            pat(json!({"extension": [{"url": "http://x", "valueNope": 1}]})),
            "Patient.extension[0]",
        ),
        (
            pat(
                json!({"_birthDate": {"extension": [{"url": "http://x", "valueString": "v"}], "foo": 1}}),
            ),
            "Patient._birthDate",
        ),
        (
            pat(json!({"name": [{"given": ["a"], "_given": [null, {"id": "x"}]}]})),
            "Patient.name[0]._given",
        ),
        (
            pat(json!({"name": [{"given": ["a"], "_given": {"id": "x"}}]})),
            "Patient.name[0]._given",
        ),
        (pat(json!({"_gender": {}})), "Patient._gender"),
        (
            pat(json!({"contained": [{"resourceType": "Organization", "name": "no id"}]})),
            "Patient.contained[0]",
        ),
        (
            pat(
                json!({"contained": [{"resourceType": "Organization", "id": "o1", "active": "maybe"}]}),
            ),
            "Patient.contained[0].active",
        ),
        (
            pat(json!({"contained": [{"resourceType": "Nope", "id": "o1"}]})),
            "Patient.contained[0]",
        ),
        (
            pat(
                json!({"contained": [{"resourceType": "Organization", "id": "o1", "contained": [{"resourceType": "Organization", "id": "o2"}]}]}),
            ),
            "Patient.contained[0]",
        ),
        (
            json!({"resourceType": "Observation", "status": "final"}),
            "Observation.code",
        ),
        (obs(json!({"status": "done"})), "Observation.status"),
        (
            obs(json!({"valueQuantity": {"value": "5"}})),
            "Observation.valueQuantity.value",
        ),
        (
            obs(json!({"valueQuantity": {"value": 5, "comparator": "=="}})),
            "Observation.valueQuantity.comparator",
        ),
        (
            obs(json!({"effectiveDateTime": "2020-02-30T25:00:00Z"})),
            "Observation.effectiveDateTime",
        ),
        (obs(json!({"issued": "2020-01-01"})), "Observation.issued"),
        (
            obs(json!({"component": [{"valueString": "no code"}]})),
            "Observation.component[0].code",
        ),
        (
            obs(json!({"code": {"coding": [{"system": "http://loinc.org", "code": " 1"}]}})),
            "Observation.code.coding[0].code",
        ),
        (
            obs(json!({"subject": {"reference": "Patient/1", "display": 5}})),
            "Observation.subject.display",
        ),
        (json!({"resourceType": "Basic"}), "Basic.code"),
        (
            json!({"resourceType": "Encounter", "status": "finished"}),
            "Encounter.class",
        ),
        (
            json!({"resourceType": "Condition", "subject": {"reference": "Patient/1"}, "onsetAge": {"value": "old"}}),
            "Condition.onsetAge.value",
        ),
        (
            json!({"resourceType": "Parameters", "parameter": [{"name": "r", "resource": {"resourceType": "Patient", "gender": "x"}}]}),
            "Parameters.parameter[0].resource.gender",
        ),
    ]
}

#[tokio::test]
async fn invalid_resources_are_refused_naming_each_problem() {
    let s = TestServer::new();
    let cases = invalid();
    assert!(cases.len() >= 40);
    for (resource, expression) in cases {
        let ty = resource["resourceType"].as_str().expect("type").to_owned();
        let r = s.post(&format!("/{ty}"), &resource).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{resource}: {:?}",
            r.body
        );
        let issues = r.body["issue"].as_array().expect("issues");
        let named: Vec<&str> = issues
            .iter()
            .filter_map(|i| i["expression"][0].as_str())
            .collect();
        assert!(
            named.contains(&expression),
            "{resource}: expected {expression}, got {}",
            r.body
        );
        assert!(
            issues
                .iter()
                .all(|i| i["severity"] == "error" && i["diagnostics"].is_string())
        );
        assert_eq!(s.versions(), 0, "{resource} was written");
    }
}

#[tokio::test]
async fn official_examples_and_generated_data_are_accepted() {
    let s = TestServer::new();
    let mut n = 0;
    for entry in std::fs::read_dir(EXAMPLES).expect("examples") {
        let path = entry.expect("entry").path();
        let body: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        let r = s
            .put(
                &format!(
                    "/{}/{}",
                    body["resourceType"].as_str().expect("type"),
                    body["id"].as_str().expect("id")
                ),
                &body,
            )
            .await;
        assert!(r.status.is_success(), "{path:?}: {}", r.body);
        n += 1;
    }
    assert!(n >= 9);
    let mut rng = vigil_fhir::synth::Rng::new(11);
    let bundle = vigil_fhir::synth::transaction_bundle(&mut rng, 40);
    let r = s.post("/", &bundle).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn a_transaction_with_an_invalid_entry_writes_nothing_and_a_batch_fails_it_alone() {
    let s = TestServer::new();
    let entries = json!([
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "birthDate": "soon"}, "request": {"method": "POST", "url": "Patient"}},
    ]);
    let r = s
        .post(
            "/",
            &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(
        r.body["issue"][0]["expression"][0],
        "Bundle.entry[1].resource.birthDate"
    );
    assert_eq!(s.versions(), 0);
    let r = s
        .post(
            "/",
            &json!({"resourceType": "Bundle", "type": "batch", "entry": entries}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body["entry"][0]["response"]["status"]
            .as_str()
            .unwrap_or("")
            .starts_with("201")
    );
    assert!(
        r.body["entry"][1]["response"]["status"]
            .as_str()
            .unwrap_or("")
            .starts_with("400")
    );
    assert_eq!(
        r.body["entry"][1]["response"]["outcome"]["issue"][0]["expression"][0],
        "Bundle.entry[1].resource.birthDate"
    );
    assert_eq!(s.versions(), 1);
}

#[tokio::test]
async fn lenient_stores_with_warnings_and_off_does_not_look() {
    let bad = json!({"resourceType": "Patient", "gender": "blue"});
    let lenient = TestServer::with(|c| c.validation = Mode::Lenient);
    let r = lenient.post("/Patient", &bad).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(
        r.header("x-validation-warnings")
            .is_some_and(|w| w.contains("Patient.gender"))
    );
    let r = lenient
        .post(
            "/",
            &json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": bad.clone(), "request": {"method": "POST", "url": "Patient"}}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let outcome = &r.body["entry"][0]["response"]["outcome"];
    assert_eq!(outcome["issue"][0]["severity"], "warning");
    assert_eq!(outcome["issue"][0]["expression"][0], "Patient.gender");
    assert_eq!(lenient.versions(), 2);
    let off = TestServer::with(|c| c.validation = Mode::Off);
    let r = off.post("/Patient", &bad).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.header("x-validation-warnings").is_none());
}

#[tokio::test]
async fn validate_operation_in_each_mode() {
    let s = TestServer::new();
    s.put_resource(json!({"resourceType": "Patient", "id": "v1"}))
        .await;
    let call = |uri: &'static str, body: Value| {
        let s = &s;
        async move {
            s.call(
                Method::POST,
                uri,
                &[("content-type", "application/fhir+json")],
                serde_json::to_vec(&body).expect("json"),
            )
            .await
        }
    };
    let before = s.versions();
    // A resource as the body: create mode.
    let r = call(
        "/Patient/$validate",
        json!({"resourceType": "Patient", "gender": "blue"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["issue"][0]["severity"], "error");
    assert_eq!(r.body["issue"][0]["expression"][0], "Patient.gender");
    let r = call(
        "/Patient/$validate",
        json!({"resourceType": "Patient", "gender": "male"}),
    )
    .await;
    assert_eq!(r.body["issue"][0]["severity"], "information", "{}", r.body);
    // Parameters with a mode.
    let params = |mode: &str, resource: Option<Value>| {
        let mut p = vec![json!({"name": "mode", "valueCode": mode})];
        if let Some(r) = resource {
            p.push(json!({"name": "resource", "resource": r}));
        }
        json!({"resourceType": "Parameters", "parameter": p})
    };
    let r = call(
        "/Patient/v1/$validate",
        params(
            "update",
            Some(json!({"resourceType": "Patient", "id": "other"})),
        ),
    )
    .await;
    assert_eq!(
        r.body["issue"][0]["expression"][0], "Patient.id",
        "{}",
        r.body
    );
    let r = call(
        "/Patient/v1/$validate",
        params(
            "update",
            Some(json!({"resourceType": "Patient", "id": "v1"})),
        ),
    )
    .await;
    assert_eq!(r.body["issue"][0]["severity"], "information", "{}", r.body);
    let r = call("/Patient/v1/$validate", params("delete", None)).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call("/Patient/gone/$validate", params("delete", None)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = call("/Patient/$validate", params("delete", None)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = call("/Patient/$validate", params("sideways", None)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = call("/Patient/$validate", json!({"resourceType": "Observation"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(s.versions(), before, "$validate wrote something");
}
