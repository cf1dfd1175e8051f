//! Arbitrary bytes as a resource body read from the log by a replica: the
//! search keys extracted from the fields the parameters read must equal
//! those of a full parse, and neither may panic. The first byte picks the
//! resource type among all of R4's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_engine::KeyExtractor;
use vigil_fhir::search::{SearchKeys, keys_of_value};
use vigil_fhir::types::R4_RESOURCE_TYPES;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let ty = R4_RESOURCE_TYPES[usize::from(pick) % R4_RESOURCE_TYPES.len()];
    let mut fast = Vec::new();
    SearchKeys::default().keys(ty, body, &mut fast);
    let mut whole = Vec::new();
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v @ serde_json::Value::Object(_)) => keys_of_value(ty, &v, &mut whole),
        Ok(_) => whole.push(b"t\0".iter().chain(ty.as_bytes()).copied().collect()),
        Err(_) => {}
    }
    assert_eq!(fast, whole);
});
