//! Composite parameters (R4 search.html#composite): the components of a
//! value match together on one element — an Observation's code and value,
//! a component's code and value, a useContext's type and value — each as
//! its own kind (prefixes, `system|code`, starts-with). The official
//! weight example (`fixtures/fhirpath/input/observation-example.json`,
//! FHIR R4, CC0) and resources written here; every expected id list is
//! written out by hand.

mod common;

use axum::http::StatusCode;
use common::{TestServer, found};
use serde_json::{Value, json};

fn bp(id: &str, systolic: f64, diastolic: f64) -> Value {
    let part = |code: &str, v: f64| {
        json!({"code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "valueQuantity": {"value": v, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}})
    };
    json!({"resourceType": "Observation", "id": id, "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "component": [part("8480-6", systolic), part("8462-4", diastolic)]})
}

async fn seed(s: &TestServer) {
    let path = format!(
        "{}/tests/fixtures/fhirpath/input/observation-example.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let weight: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("fixture JSON");
    s.put_resource(weight).await;
    s.put_resource(json!({"resourceType": "Observation", "id": "kg", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "valueQuantity": {"value": 84.1, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}}))
        .await;
    s.put_resource(bp("bp1", 120.0, 80.0)).await;
    s.put_resource(bp("bp2", 150.0, 95.0)).await;
    s.put_resource(json!({"resourceType": "Observation", "id": "abo", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "883-9"}]},
        "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "112144000"}]}}))
        .await;
    s.put_resource(
        json!({"resourceType": "Observation", "id": "note", "status": "final",
        "code": {"coding": [{"system": "urn:codes", "code": "screen"}]},
        "valueString": "Positive result"}),
    )
    .await;
    s.put_resource(
        json!({"resourceType": "Observation", "id": "onset", "status": "final",
        "code": {"coding": [{"system": "urn:codes", "code": "onset"}]},
        "valueDateTime": "2020-05-01T10:00:00Z"}),
    )
    .await;
    s.put_resource(json!({"resourceType": "ValueSet", "id": "vs", "status": "active",
        "useContext": [
            {"code": {"system": "http://terminology.hl7.org/CodeSystem/usage-context-type", "code": "focus"},
             "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "123"}]}},
            {"code": {"system": "http://terminology.hl7.org/CodeSystem/usage-context-type", "code": "age"},
             "valueQuantity": {"value": 18, "system": "http://unitsofmeasure.org", "code": "a"}}
        ]}))
        .await;
}

#[tokio::test]
async fn code_and_value_match_on_the_same_observation() {
    let s = TestServer::new();
    seed(&s).await;
    // The official example weighs 185 [lb_av].
    assert_eq!(
        found(&s, "/Observation?code-value-quantity=http://loinc.org|29463-7$185|http://unitsofmeasure.org|[lb_av]").await,
        ["example"]
    );
    assert_eq!(
        found(&s, "/Observation?code-value-quantity=29463-7$ge80").await,
        ["example", "kg"]
    );
    assert_eq!(
        found(
            &s,
            "/Observation?code-value-quantity=29463-7$lt100|http://unitsofmeasure.org|kg"
        )
        .await,
        ["kg"]
    );
    assert!(
        found(&s, "/Observation?code-value-quantity=29463-7$gt200")
            .await
            .is_empty()
    );
    // A code of another system does not match `system|code`.
    assert!(
        found(&s, "/Observation?code-value-quantity=urn:x|29463-7$185")
            .await
            .is_empty()
    );
    assert_eq!(
        found(
            &s,
            "/Observation?code-value-concept=883-9$http://snomed.info/sct|112144000"
        )
        .await,
        ["abo"]
    );
    assert_eq!(
        found(&s, "/Observation?code-value-string=screen$POS").await,
        ["note"]
    );
    assert!(
        found(&s, "/Observation?code-value-string=screen$result")
            .await
            .is_empty()
    );
    assert_eq!(
        found(
            &s,
            "/Observation?code-value-date=urn:codes|onset$ge2020-05-01"
        )
        .await,
        ["onset"]
    );
    assert!(
        found(&s, "/Observation?code-value-date=onset$lt2020")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn components_match_within_one_component_not_across() {
    let s = TestServer::new();
    seed(&s).await;
    assert_eq!(
        found(
            &s,
            "/Observation?component-code-value-quantity=http://loinc.org|8480-6$gt140"
        )
        .await,
        ["bp2"]
    );
    assert_eq!(
        found(&s, "/Observation?component-code-value-quantity=8462-4$lt90").await,
        ["bp1"]
    );
    // 80 is bp1's diastolic value, not its systolic one.
    assert!(
        found(&s, "/Observation?component-code-value-quantity=8480-6$80")
            .await
            .is_empty()
    );
    // Several values: any of them.
    assert_eq!(
        found(
            &s,
            "/Observation?component-code-value-quantity=8480-6$gt140,8462-4$lt85"
        )
        .await,
        ["bp1", "bp2"]
    );
    // combo-: the Observation's own code and value, or a component's.
    assert_eq!(
        found(&s, "/Observation?combo-code-value-quantity=8480-6$gt140").await,
        ["bp2"]
    );
    assert_eq!(
        found(&s, "/Observation?combo-code-value-quantity=29463-7$gt100").await,
        ["example"]
    );
    // R4 writes `Observation.component.value as Quantity`: read as a
    // filter over the components (strict `as` fails on two items).
    assert_eq!(
        found(&s, "/Observation?component-value-quantity=gt140").await,
        ["bp2"]
    );
    // combo-code: the Observation's code or a component's; :not, :missing.
    assert_eq!(
        found(&s, "/Observation?combo-code=8480-6").await,
        ["bp1", "bp2"]
    );
    assert_eq!(
        found(&s, "/Observation?combo-code=85354-9,883-9").await,
        ["abo", "bp1", "bp2"]
    );
    assert_eq!(
        found(
            &s,
            "/Observation?combo-code:not=8480-6&combo-code:missing=false"
        )
        .await,
        ["abo", "example", "kg", "note", "onset"]
    );
    assert!(
        found(&s, "/Observation?combo-code:missing=true")
            .await
            .is_empty()
    );
    assert_eq!(
        found(
            &s,
            "/Observation?combo-value-quantity=gt140&_sort=combo-value-quantity"
        )
        .await,
        ["bp2", "example"]
    );
    // :missing on a composite.
    assert_eq!(
        found(
            &s,
            "/Observation?component-code-value-quantity:missing=false"
        )
        .await,
        ["bp1", "bp2"]
    );
}

#[tokio::test]
async fn use_context_type_and_value_match_together() {
    let s = TestServer::new();
    seed(&s).await;
    assert_eq!(
        found(
            &s,
            "/ValueSet?context-type-value=focus$http://snomed.info/sct|123"
        )
        .await,
        ["vs"]
    );
    assert!(
        found(
            &s,
            "/ValueSet?context-type-value=age$http://snomed.info/sct|123"
        )
        .await
        .is_empty()
    );
    assert_eq!(
        found(&s, "/ValueSet?context-type-quantity=age$ge18").await,
        ["vs"]
    );
    assert!(
        found(&s, "/ValueSet?context-type-quantity=focus$ge18")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn malformed_composite_values_are_refused() {
    let s = TestServer::new();
    seed(&s).await;
    for (q, says) in [
        ("/Observation?code-value-quantity=8480-6", "joined by $"),
        ("/Observation?code-value-quantity=a$1$2", "joined by $"),
        (
            "/Observation?code-value-quantity=8480-6$abc",
            "not a number",
        ),
        ("/Observation?code-value-date=x$2020-13", "not a FHIR date"),
        ("/Observation?code-value-quantity:exact=a$1", ":exact"),
    ] {
        let r = s
            .call(
                axum::http::Method::GET,
                q,
                &[("prefer", "handling=strict")],
                Vec::new(),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
        assert!(r.diagnostics().contains(says), "{q}: {}", r.diagnostics());
    }
    // Composites cannot sort.
    let r = s
        .call(
            axum::http::Method::GET,
            "/Observation?_sort=code-value-quantity",
            &[("prefer", "handling=strict")],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}
