//! The official FHIRPath Patch cases (fhir-test-cases r4/patch, converted
//! to JSON in tests/fixtures/fhirpatch/ by its convert.py): each patch
//! applied to its input gives its output, or the error it names.

use serde_json::Value;
use vigil_fhir::fhirpatch;

const CASES: &str = include_str!("fixtures/fhirpatch/cases.json");

/// Narrative compared without its whitespace (the XML and the patch's
/// string lay it out differently).
fn without_div_whitespace(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                match x {
                    Value::String(s) if k == "div" => s.retain(|c| !c.is_whitespace()),
                    _ => without_div_whitespace(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(without_div_whitespace),
        _ => {}
    }
}

#[test]
fn every_official_case_passes() {
    let doc: Value = serde_json::from_str(CASES).expect("cases");
    let cases = doc["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 33);
    let mut failed = Vec::new();
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let mut resource = case["input"].clone();
        let result =
            fhirpatch::read(&case["patch"]).and_then(|ops| fhirpatch::apply(&mut resource, &ops));
        match (&case["error"], result) {
            (Value::String(msg), Err(e)) => {
                if !e.diagnostics.to_lowercase().contains(&msg.to_lowercase()) {
                    failed.push(format!(
                        "{name}: error {:?}, expected {msg:?}",
                        e.diagnostics
                    ));
                }
            }
            (Value::String(msg), Ok(())) => {
                failed.push(format!("{name}: applied, expected {msg:?}"))
            }
            (_, Err(e)) => failed.push(format!("{name}: {}", e.diagnostics)),
            (_, Ok(())) => {
                let mut want = case["output"].clone();
                without_div_whitespace(&mut want);
                without_div_whitespace(&mut resource);
                if resource != want {
                    failed.push(format!("{name}: got {resource}, expected {want}"));
                }
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} cases fail:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}
