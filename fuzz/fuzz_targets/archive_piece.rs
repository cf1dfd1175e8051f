//! Arbitrary bytes as an archive piece downloaded from object storage:
//! decoded (every frame checked, the header matching its frames) or
//! refused, never a panic; a piece that decodes re-encodes to its bytes,
//! and its name parses back. Arbitrary names: parsed or refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_engine::archive::{Piece, PieceName};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Piece::decode(data) {
        assert_eq!(p.encode(), data, "re-encodes");
        assert_eq!(PieceName::parse(&p.name.object_name()), Some(p.name));
        assert!(p.name.first_lsn <= p.name.last_lsn);
    }
    if let Ok(s) = std::str::from_utf8(data)
        && let Some(n) = PieceName::parse(s)
    {
        assert!(n.first_lsn >= 1 && n.first_lsn <= n.last_lsn);
    }
});
