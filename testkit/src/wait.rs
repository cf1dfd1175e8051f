//! Waiting for a condition, with a deadline that names what was awaited.

use std::time::{Duration, Instant};

/// Polls `f` (every 20 ms) until it holds; panics naming `what` after
/// `limit`. Returns how long it took.
pub fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

/// [`until`] for async tests: sleeps on the tokio timer between polls.
pub async fn until_async(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t0.elapsed()
}
