//! Arbitrary bytes as the key store's manifest or one of its run files:
//! decoding must refuse damage cleanly or read keys in order, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        vigil_engine::fuzzing::key_manifest(bytes);
    } else if let Ok(dir) = tempfile::tempdir() {
        vigil_engine::fuzzing::key_run(dir.path(), bytes);
    }
});
