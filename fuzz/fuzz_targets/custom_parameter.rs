//! Arbitrary bytes as a SearchParameter written by a client, then as a
//! resource of one of its bases: telling the definition, extracting the
//! defined keys and a rekey's keys must never panic; what is in force
//! must be what the write check says; a rekey inserts only keys it also
//! removes (every definition in force was ever in force). Input: the
//! SearchParameter, a 0x00 byte, the resource.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_engine::KeyExtractor;
use vigil_fhir::search::SearchKeys;
use vigil_fhir::search::custom::{Active, check_write};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |b| *b == 0);
    let (Some(sp), Some(body)) = (parts.next(), parts.next()) else {
        return;
    };
    let keys = SearchKeys::default();
    keys.define(1, "sp", Some(sp));
    let checked = serde_json::from_slice::<serde_json::Value>(sp)
        .ok()
        .map(|v| check_write(&Active::default(), "sp", &v));
    let now = keys.custom().current();
    let types: Vec<String> = match checked {
        Some(Ok(types)) => types,
        _ => Vec::new(),
    };
    for ty in &types {
        assert!(
            now.of(ty).next().is_some(),
            "{ty} has the parameter in force"
        );
    }
    for ty in types.iter().map(String::as_str).chain(["Patient"]) {
        let mut defined = Vec::new();
        if keys.has_defined_keys(2, ty) {
            keys.defined_keys(2, ty, body, &mut defined);
        }
        let (mut remove, mut insert) = (Vec::new(), Vec::new());
        keys.rekey_keys(2, ty, body, &mut remove, &mut insert);
        defined.sort();
        insert.sort();
        assert_eq!(defined, insert, "a rekey inserts the keys in force");
        assert!(insert.iter().all(|k| remove.contains(k)));
    }
});
