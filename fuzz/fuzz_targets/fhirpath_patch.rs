//! Arbitrary bytes as a FHIRPath Patch document and the resource it
//! patches: reading and applying must never panic, and a patch that
//! applies to an object leaves an object. Input: the resource, a 0x00 byte, the
//! Parameters document.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_fhir::fhirpatch;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |b| *b == 0);
    let (Some(resource), Some(doc)) = (parts.next(), parts.next()) else {
        return;
    };
    let (Ok(mut resource), Ok(doc)) = (
        serde_json::from_slice::<serde_json::Value>(resource),
        serde_json::from_slice::<serde_json::Value>(doc),
    ) else {
        return;
    };
    let was_object = resource.is_object();
    if let Ok(ops) = fhirpatch::read(&doc)
        && fhirpatch::apply(&mut resource, &ops).is_ok()
        && was_object
    {
        assert!(resource.is_object(), "{resource}");
    }
});
