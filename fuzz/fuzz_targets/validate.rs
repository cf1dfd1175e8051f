//! Arbitrary bytes as a resource to validate: the schema check and the
//! checks beyond it must never panic, report at most PROBLEMS_MAX
//! problems, and name each by an expression that starts with the
//! resource's type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_fhir::validate::{PROBLEMS_MAX, problems};

fuzz_target!(|data: &[u8]| {
    let Ok(resource) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let found = problems(&resource);
    assert!(found.len() <= PROBLEMS_MAX);
    if let Some(ty) = resource
        .get("resourceType")
        .and_then(serde_json::Value::as_str)
        && vigil_fhir::types::is_resource_type(ty)
    {
        for p in &found {
            assert!(p.expression.starts_with(ty), "{} for {ty}", p.expression);
        }
    }
});
