//! Arbitrary bytes as a POST `$export` kick-off body: reading the
//! `Parameters` and checking them must never panic, and what is accepted
//! keeps to the limits (R4 types only, at most VALUES_MAX values, `_since`
//! never after "now").
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_fhir::export::kickoff::{Level, VALUES_MAX, pairs_of_parameters, read};

const NOW_US: u64 = 1_800_000_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(pairs) = pairs_of_parameters(&body) else {
        return;
    };
    for level in [Level::System, Level::Patient, Level::Group] {
        for strict in [true, false] {
            let Ok(r) = read(&pairs, level, strict, NOW_US, |_, _| Ok(())) else {
                continue;
            };
            assert!(
                r.types
                    .iter()
                    .all(|t| vigil_fhir::types::is_resource_type(t))
            );
            assert!(
                r.types.len() + r.elements.len() + r.patients.len() + r.type_filters.len()
                    <= VALUES_MAX
            );
            assert!(r.since_us.is_none_or(|s| s <= NOW_US));
            assert!(level != Level::System || r.patients.is_empty());
            assert!(
                !strict || r.warnings.is_empty(),
                "strict handling refuses instead"
            );
        }
    }
});
