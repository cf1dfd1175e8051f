//! Guards search by the official R4 definitions: every parameter type
//! (string, token, reference, date, number, quantity, uri; composites in
//! `search_matches_composites.rs`), their
//! modifiers and prefixes, on two official examples
//! (`fixtures/fhirpath/input/{patient,observation}-example.json`, FHIR R4,
//! CC0) and small resources written here. Every expected id list is
//! written out by hand from the resources, not computed by the server's
//! code.

mod common;

use axum::http::{Method, StatusCode};
use common::{TestServer, found};
use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/fhirpath/input/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("fixture JSON")
}

async fn seed(s: &TestServer) {
    s.put_resource(fixture("patient-example.json")).await;
    s.put_resource(fixture("observation-example.json")).await;
    s.put_resource(json!({"resourceType": "Patient", "id": "zoe", "name": [{"family": "Ñúñez", "given": ["Zoë"]}],
            "gender": "female", "birthDate": "1990-06", "deceasedDateTime": "2020-01-01",
            "identifier": [{"system": "urn:mrn", "value": "12345"}],
            "managingOrganization": {"identifier": {"system": "urn:org", "value": "acme"}}}),
    )
    .await;
    s.put_resource(json!({"resourceType": "Observation", "id": "kg", "status": "preliminary",
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
            "subject": {"reference": "Patient/zoe"}, "effectivePeriod": {"start": "2016-03-01", "end": "2016-03-10"},
            "valueQuantity": {"value": 84.1, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}}),
    )
    .await;
    s.put_resource(json!({"resourceType": "Observation", "id": "group", "status": "final",
            "code": {"text": "no coding"}, "subject": {"reference": "http://example.org/fhir/Group/g1"}}),
    )
    .await;
    for (id, p) in [("r1", 0.02), ("r2", 0.5), ("r3", 0.55)] {
        s.put_resource(json!({"resourceType": "RiskAssessment", "id": id, "status": "final",
                "subject": {"reference": "Patient/example"}, "prediction": [{"probabilityDecimal": p}]}),
        )
        .await;
    }
    for (id, url) in [
        ("vs1", "http://acme.org/fhir/ValueSet/a"),
        ("vs2", "http://acme.org/fhir/ValueSet/a/b"),
        ("vs3", "http://other.org/ValueSet/c"),
    ] {
        s.put_resource(
            json!({"resourceType": "ValueSet", "id": id, "status": "active", "url": url}),
        )
        .await;
    }
}

#[tokio::test]
async fn strings_match_by_start_case_and_accent_insensitively_with_exact_and_contains() {
    let s = TestServer::new();
    seed(&s).await;
    assert_eq!(found(&s, "/Patient?family=chal").await, ["example"]);
    assert_eq!(found(&s, "/Patient?family=nunez").await, ["zoe"]);
    assert_eq!(found(&s, "/Patient?given=ZOE").await, ["zoe"]);
    // `name` covers every part, the maiden name too.
    assert_eq!(found(&s, "/Patient?name=windsor").await, ["example"]);
    assert_eq!(found(&s, "/Patient?name=jim").await, ["example"]);
    assert!(found(&s, "/Patient?family=halmers").await.is_empty());
    assert_eq!(
        found(&s, "/Patient?family:contains=ALMER").await,
        ["example"]
    );
    assert_eq!(
        found(&s, "/Patient?family:exact=Chalmers").await,
        ["example"]
    );
    assert!(found(&s, "/Patient?family:exact=chalmers").await.is_empty());
    assert!(found(&s, "/Patient?family:exact=Chalm").await.is_empty());
    assert_eq!(
        found(&s, "/Patient?family:exact=%C3%91%C3%BA%C3%B1ez").await,
        ["zoe"]
    );
    assert_eq!(
        found(&s, "/Patient?address-city=pleasant").await,
        ["example"]
    );
    assert_eq!(found(&s, "/Patient?address=rainbow").await, ["example"]);
    // Either value of a list.
    assert_eq!(found(&s, "/Patient?family=walsh,nunez").await, ["zoe"]);
}

#[tokio::test]
async fn tokens_match_codes_systems_and_identifier_types_with_not_and_missing() {
    let s = TestServer::new();
    seed(&s).await;
    assert_eq!(
        found(&s, "/Observation?code=29463-7").await,
        ["example", "kg"]
    );
    assert_eq!(
        found(&s, "/Observation?code=http://snomed.info/sct|27113001").await,
        ["example"]
    );
    assert!(
        found(&s, "/Observation?code=http://loinc.org|27113001")
            .await
            .is_empty()
    );
    assert_eq!(
        found(
            &s,
            "/Observation?code=http://acme.org/devices/clinical-codes|"
        )
        .await,
        ["example"]
    );
    assert_eq!(
        found(&s, "/Observation?status=final").await,
        ["example", "group"]
    );
    assert_eq!(found(&s, "/Observation?status:not=final").await, ["kg"]);
    assert_eq!(found(&s, "/Observation?code:missing=true").await, ["group"]);
    assert_eq!(
        found(&s, "/Observation?code:missing=false").await,
        ["example", "kg"]
    );
    // Identifiers: value, system|value, and the identifier's type.
    assert_eq!(
        found(&s, "/Patient?identifier=12345").await,
        ["example", "zoe"]
    );
    assert_eq!(
        found(&s, "/Patient?identifier=urn:mrn|12345").await,
        ["zoe"]
    );
    assert_eq!(
        found(
            &s,
            "/Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|12345"
        )
        .await,
        ["example"]
    );
    // Booleans and a computed token (`deceased`: exists and not false).
    assert_eq!(found(&s, "/Patient?active=true").await, ["example"]);
    assert_eq!(found(&s, "/Patient?deceased=true").await, ["zoe"]);
    assert_eq!(found(&s, "/Patient?deceased=false").await, ["example"]);
    // Telecom: the value of a ContactPoint; meta tags of any type.
    assert_eq!(
        found(&s, "/Patient?phone=(03)%205555%206473").await,
        ["example"]
    );
    assert_eq!(found(&s, "/Patient?_tag=HTEST").await, ["example"]);
    assert_eq!(found(&s, "/Observation?_tag=HTEST").await, ["example"]);
    assert_eq!(found(&s, "/Patient?gender=female").await, ["zoe"]);
}

/// `:text` matches a token's text as a string (starts with, case- and
/// accent-insensitive): CodeableConcept.text, Coding.display, an
/// Identifier's type text.
#[tokio::test]
async fn tokens_match_by_their_text() {
    let s = TestServer::new();
    seed(&s).await;
    s.put_resource(
        json!({"resourceType": "Observation", "id": "hb", "status": "final",
        "code": {"text": "Hémoglobine totale"}}),
    )
    .await;
    s.put_resource(json!({"resourceType": "Patient", "id": "typed",
        "identifier": [{"type": {"text": "Driver licence"}, "value": "D-1"}]}))
        .await;
    // The example's displays: "Body Weight", "Body weight Measured".
    assert_eq!(
        found(&s, "/Observation?code:text=body%20we").await,
        ["example"]
    );
    assert_eq!(
        found(&s, "/Observation?code:text=HEMOGLOBINE").await,
        ["hb"]
    );
    assert!(found(&s, "/Observation?code:text=weight").await.is_empty());
    assert_eq!(
        found(&s, "/Patient?identifier:text=driver").await,
        ["typed"]
    );
    // `group` has a code of text "no coding" and no display.
    assert_eq!(
        found(&s, "/Observation?code:text=no%20cod").await,
        ["group"]
    );
}

/// `:in` and `:not-in` against ValueSets stored on the server: by
/// canonical URL (with `|version`) or `ValueSet/[id]`, from an expansion
/// or from the concepts compose lists; what needs a terminology service
/// is refused.
#[tokio::test]
async fn tokens_match_below_and_above_in_a_stored_code_system() {
    let s = TestServer::new();
    let cs = "http://acme.org/cs/conditions";
    // metabolic > diabetes > {type-1, type-2}; gestational under diabetes
    // by a parent property; asthma apart.
    s.put_resource(
        json!({"resourceType": "CodeSystem", "id": "conditions", "status": "active",
        "url": cs, "content": "complete", "hierarchyMeaning": "is-a",
        "concept": [
            {"code": "metabolic", "concept": [
                {"code": "diabetes", "concept": [{"code": "type-1"}, {"code": "type-2"}]}]},
            {"code": "gestational", "property": [{"code": "parent", "valueCode": "diabetes"}]},
            {"code": "asthma"}]}),
    )
    .await;
    for code in [
        "metabolic",
        "diabetes",
        "type-1",
        "type-2",
        "gestational",
        "asthma",
    ] {
        s.put_resource(json!({"resourceType": "Condition", "id": code,
            "subject": {"reference": "Patient/p"},
            "code": {"coding": [{"system": cs, "code": code}]}}))
            .await;
    }
    let q = |m: &str, c: &str| format!("/Condition?code:{m}={cs}|{c}");
    assert_eq!(
        found(&s, &q("below", "diabetes")).await,
        ["diabetes", "gestational", "type-1", "type-2"]
    );
    assert_eq!(
        found(&s, &q("above", "type-2")).await,
        ["diabetes", "metabolic", "type-2"]
    );
    assert_eq!(
        found(&s, &q("above", "gestational")).await,
        ["diabetes", "gestational", "metabolic"]
    );
    assert_eq!(found(&s, &q("below", "asthma")).await, ["asthma"]);
    // A code the CodeSystem lacks stands for itself.
    assert!(found(&s, &q("below", "nothing")).await.is_empty());
    for (bad, why) in [
        ("/Condition?code:below=diabetes", "system|code"),
        (
            "/Condition?code:below=http://acme.org/none|x",
            "no CodeSystem",
        ),
    ] {
        let r = s.get(bad).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(r.diagnostics().contains(why), "{bad}: {}", r.diagnostics());
    }
}

#[tokio::test]
async fn tokens_match_codes_of_stored_value_sets() {
    let s = TestServer::new();
    seed(&s).await;
    s.put_resource(json!({"resourceType": "ValueSet", "id": "weights", "status": "active",
        "url": "http://acme.org/vs/weights", "version": "1",
        "compose": {"include": [{"system": "http://loinc.org", "concept": [{"code": "29463-7"}, {"code": "3141-9"}]}],
            "exclude": [{"system": "http://loinc.org", "concept": [{"code": "3141-9"}]}]}}))
        .await;
    s.put_resource(
        json!({"resourceType": "ValueSet", "id": "snomed", "status": "active",
        "url": "http://acme.org/vs/snomed", "version": "1",
        "expansion": {"timestamp": "2024-01-01", "contains": [
            {"system": "http://snomed.info/sct", "code": "27113001"}]}}),
    )
    .await;
    s.put_resource(json!({"resourceType": "ValueSet", "id": "filtered", "status": "active",
        "url": "http://acme.org/vs/filtered",
        "compose": {"include": [{"system": "http://snomed.info/sct", "filter": [{"property": "concept", "op": "is-a", "value": "1"}]}]}}))
        .await;
    assert_eq!(
        found(&s, "/Observation?code:in=http://acme.org/vs/weights").await,
        ["example", "kg"]
    );
    assert_eq!(
        found(&s, "/Observation?code:in=http://acme.org/vs/weights|1").await,
        ["example", "kg"]
    );
    assert_eq!(
        found(&s, "/Observation?code:in=ValueSet/snomed").await,
        ["example"]
    );
    assert_eq!(
        found(&s, "/Observation?code:not-in=http://acme.org/vs/weights").await,
        ["group"]
    );
    for (q, says) in [
        (
            "/Observation?code:in=http://acme.org/vs/filtered",
            "terminology service",
        ),
        (
            "/Observation?code:in=http://acme.org/vs/none",
            "no ValueSet",
        ),
        (
            "/Observation?code:in=http://acme.org/vs/weights|2",
            "no ValueSet",
        ),
    ] {
        let r = s.get(q).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
        assert!(r.diagnostics().contains(says), "{q}: {}", r.diagnostics());
    }
}

#[tokio::test]
async fn references_match_by_id_type_url_identifier_and_target() {
    let s = TestServer::new();
    seed(&s).await;
    assert_eq!(
        found(&s, "/Observation?subject=Patient/example").await,
        ["example"]
    );
    assert_eq!(found(&s, "/Observation?subject=zoe").await, ["kg"]);
    assert_eq!(found(&s, "/Observation?subject:Patient=zoe").await, ["kg"]);
    assert!(found(&s, "/Observation?subject:Group=zoe").await.is_empty());
    assert_eq!(
        found(&s, "/Observation?subject=http://example.org/fhir/Group/g1").await,
        ["group"]
    );
    // `patient` is `subject` restricted to Patient targets.
    assert_eq!(
        found(&s, "/Observation?patient=g1").await,
        Vec::<String>::new()
    );
    assert_eq!(found(&s, "/Observation?subject=g1").await, ["group"]);
    assert_eq!(found(&s, "/Observation?patient=example").await, ["example"]);
    assert_eq!(
        found(&s, "/Observation?encounter=Encounter/example").await,
        ["example"]
    );
    assert_eq!(
        found(&s, "/RiskAssessment?patient=example").await,
        ["r1", "r2", "r3"]
    );
    // A logical reference by identifier.
    assert_eq!(
        found(&s, "/Patient?organization:identifier=urn:org|acme").await,
        ["zoe"]
    );
    assert_eq!(
        found(&s, "/Patient?organization=Organization/1").await,
        ["example"]
    );
    // A logical reference is a value: not missing.
    assert!(
        found(&s, "/Patient?organization:missing=true")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn dates_numbers_and_quantities_take_every_prefix() {
    let s = TestServer::new();
    seed(&s).await;
    // example: 2016-03-28; kg: the period 2016-03-01..2016-03-10.
    assert_eq!(
        found(&s, "/Observation?date=2016-03").await,
        ["example", "kg"]
    );
    assert_eq!(found(&s, "/Observation?date=2016-03-28").await, ["example"]);
    assert_eq!(
        found(&s, "/Observation?date=gt2016-03-20").await,
        ["example"]
    );
    assert_eq!(found(&s, "/Observation?date=lt2016-03-05").await, ["kg"]);
    assert_eq!(
        found(&s, "/Observation?date=sa2016-03-10").await,
        ["example"]
    );
    assert_eq!(found(&s, "/Observation?date=eb2016-03-11").await, ["kg"]);
    assert_eq!(found(&s, "/Observation?date=ne2016-03-28").await, ["kg"]);
    assert_eq!(found(&s, "/Patient?birthdate=ge1990-01-01").await, ["zoe"]);
    assert_eq!(found(&s, "/Patient?birthdate=1974").await, ["example"]);
    assert_eq!(
        found(&s, "/Patient?birthdate=ap1974-12-20").await,
        ["example"]
    );
    // Numbers: the precision of the value written.
    assert_eq!(found(&s, "/RiskAssessment?probability=0.5").await, ["r2"]);
    assert_eq!(found(&s, "/RiskAssessment?probability=0.6").await, ["r3"]);
    assert_eq!(found(&s, "/RiskAssessment?probability=gt0.5").await, ["r3"]);
    assert_eq!(
        found(&s, "/RiskAssessment?probability=le0.5").await,
        ["r1", "r2"]
    );
    assert_eq!(
        found(&s, "/RiskAssessment?probability=ap0.5").await,
        ["r2", "r3"]
    );
    assert_eq!(found(&s, "/RiskAssessment?probability=2e-2").await, ["r1"]);
    // Quantities: value, value|system|code, value||code.
    assert_eq!(
        found(&s, "/Observation?value-quantity=185").await,
        ["example"]
    );
    assert_eq!(
        found(
            &s,
            "/Observation?value-quantity=185|http://unitsofmeasure.org|[lb_av]"
        )
        .await,
        // 84.1 kg is 185.4 [lb_av]: within 185's precision, in UCUM terms.
        ["example", "kg"]
    );
    assert!(
        found(&s, "/Observation?value-quantity=185||kg")
            .await
            .is_empty()
    );
    assert_eq!(
        found(&s, "/Observation?value-quantity=gt80||kg").await,
        ["kg"]
    );
    assert_eq!(found(&s, "/Observation?value-quantity=lt100").await, ["kg"]);
    assert_eq!(found(&s, "/Observation?value-quantity=84.1").await, ["kg"]);
}

#[tokio::test]
async fn ucum_quantities_compare_in_canonical_units() {
    let s = TestServer::new();
    seed(&s).await;
    let ucum = "http://unitsofmeasure.org";
    // The official example weighs 185 [lb_av] = 83.91 kg; "kg" 84.1 kg.
    let q = |v: &str| format!("/Observation?value-quantity={v}");
    assert_eq!(found(&s, &q(&format!("83.9|{ucum}|kg"))).await, ["example"]);
    assert_eq!(found(&s, &q(&format!("gt84|{ucum}|kg"))).await, ["kg"]);
    assert_eq!(
        found(&s, &q(&format!("ge185|{ucum}|[lb_av]"))).await,
        ["example", "kg"]
    );
    assert_eq!(found(&s, &q(&format!("84100|{ucum}|g"))).await, ["kg"]);
    assert!(
        found(&s, &q(&format!("84.1|{ucum}|m"))).await.is_empty(),
        "a length is not a mass"
    );
    // Amounts per volume, temperatures, and units without a canonical form.
    let obs = |id: &str, v: f64, code: &str| {
        json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": "x"},
               "valueQuantity": {"value": v, "system": ucum, "code": code}})
    };
    for (id, v, code) in [
        ("mgdl", 5.4, "mg/dL"),
        ("gl", 0.054, "g/L"),
        ("high", 60.0, "mg/dL"),
        ("cel", 37.0, "Cel"),
        ("degf", 98.6, "[degF]"),
        ("iu", 5.4, "[IU]/L"),
    ] {
        s.put_resource(obs(id, v, code)).await;
    }
    assert_eq!(
        found(&s, &q(&format!("5.4|{ucum}|mg/dL"))).await,
        ["gl", "mgdl"]
    );
    assert_eq!(found(&s, &q(&format!("gt50|{ucum}|mg/dL"))).await, ["high"]);
    assert_eq!(
        found(&s, &q(&format!("lt0.1|{ucum}|g/L"))).await,
        ["gl", "mgdl"]
    );
    assert_eq!(
        found(&s, &q(&format!("37|{ucum}|Cel"))).await,
        ["cel", "degf"]
    );
    assert_eq!(
        found(&s, &q(&format!("ge310|{ucum}|K"))).await,
        ["cel", "degf"]
    );
    // No canonical form: the code as written; no system: the code as written.
    assert_eq!(found(&s, &q(&format!("5.4|{ucum}|[IU]/L"))).await, ["iu"]);
    assert_eq!(found(&s, &q("5.4||mg/dL")).await, ["mgdl"]);
}

#[tokio::test]
async fn uris_match_exactly_below_and_above() {
    let s = TestServer::new();
    seed(&s).await;
    assert_eq!(
        found(&s, "/ValueSet?url=http://acme.org/fhir/ValueSet/a").await,
        ["vs1"]
    );
    assert_eq!(
        found(&s, "/ValueSet?url:below=http://acme.org/fhir").await,
        ["vs1", "vs2"]
    );
    assert_eq!(
        found(
            &s,
            "/ValueSet?url:above=http://acme.org/fhir/ValueSet/a/b/c"
        )
        .await,
        ["vs1", "vs2"]
    );
    assert!(
        found(&s, "/ValueSet?url=http://acme.org/fhir")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn bad_values_unknown_modifiers_and_unsupported_kinds_are_told() {
    let s = TestServer::new();
    seed(&s).await;
    let strict = [("prefer", "handling=strict")];
    for (q, says) in [
        ("/Observation?date=2016-13-45", "not a FHIR date"),
        ("/RiskAssessment?probability=high", "not a number"),
        ("/Observation?value-quantity=abc||kg", "not a number"),
        ("/Observation?code:missing=maybe", "true or false"),
        ("/Patient?identifier:of-type=MR|12345", "system|code|value"),
        ("/Observation?code-value-quantity=x", "joined by $"),
    ] {
        let r = s.get(q).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
        assert!(r.diagnostics().contains(says), "{q}: {}", r.diagnostics());
    }
    for (q, says) in [
        ("/Patient?family:below=x", ":below"),
        ("/Observation?status.name=x", "only references chain"),
        ("/Location?near=1|2|3|km", "special"),
        ("/Patient?nonsense=1", "unknown"),
    ] {
        let r = s.call(Method::GET, q, &strict, Vec::new()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
        assert!(r.diagnostics().contains(says), "{q}: {}", r.diagnostics());
        // Lenient: the criterion is dropped with a warning in the bundle.
        let r = s.get(q).await;
        assert_eq!(r.status, StatusCode::OK, "{q}");
        let outcome = r.body["entry"]
            .as_array()
            .and_then(|e| e.iter().find(|x| x["search"]["mode"] == "outcome"))
            .cloned()
            .expect("a warning");
        assert!(outcome.to_string().contains(says), "{q}");
    }
}

#[tokio::test]
async fn the_capability_statement_lists_the_official_parameters() {
    let s = TestServer::new();
    let r = s.get("/metadata").await;
    let rest = &r.body["rest"][0]["resource"];
    let patient = rest
        .as_array()
        .and_then(|a| a.iter().find(|x| x["type"] == "Patient"))
        .expect("Patient");
    let names: Vec<&str> = patient["searchParam"]
        .as_array()
        .expect("params")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for n in [
        "name",
        "family",
        "birthdate",
        "address-city",
        "phone",
        "organization",
        "_tag",
        "_id",
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    assert!(!names.contains(&"_text"), "not supported, not listed");
}
