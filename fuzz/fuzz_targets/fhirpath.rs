//! Arbitrary text as a FHIRPath expression, evaluated on a resource:
//! parsing and evaluation may refuse it, never panic, and never run past
//! their limits. Input before the first NUL byte is the expression; what
//! follows, when it is JSON, is the resource (else a fixed Patient).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_fhir::fhirpath::Expr;

fuzz_target!(|data: &[u8]| {
    let (expr, rest) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(src) = std::str::from_utf8(expr) else {
        return;
    };
    let resource = serde_json::from_slice(rest).unwrap_or_else(|_| {
        serde_json::json!({
            "resourceType": "Patient",
            "id": "p1",
            "birthDate": "1974-12-25",
            "name": [{"use": "official", "given": ["Peter", "James"], "family": "Chalmers"}],
            "managingOrganization": {"reference": "Organization/1"},
            "extension": [{"url": "http://x/e", "valueQuantity": {"value": 1.5, "code": "kg"}}]
        })
    });
    if let Ok(e) = Expr::parse(src) {
        let _ = e.evaluate(&resource);
    }
});
