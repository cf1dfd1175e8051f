//! A store's log, whole, as the tests compare it.

use std::path::Path;

use vigil_engine::{Options, Store};

/// Options for a test store: segments of `segment_bytes` (small, so that
/// tests cross segment boundaries), a replica or not, everything else at
/// its default.
pub fn small_store(segment_bytes: u64, replica: bool) -> Options {
    Options {
        segment_bytes,
        replica,
        ..Options::default()
    }
}

/// Every frame of `store`'s log, as bytes, in order.
pub fn frames(store: &Store) -> Vec<Vec<u8>> {
    store
        .log_frames()
        .collect::<Result<Vec<_>, _>>()
        .expect("read the log")
}

/// Every frame of the log of the (closed) store in `dir`, opened as a
/// replica or not.
pub fn frames_in(dir: &Path, replica: bool) -> Vec<Vec<u8>> {
    let store = Store::open_with(
        dir,
        Options {
            replica,
            ..Options::default()
        },
    )
    .expect("open");
    frames(&store)
}
