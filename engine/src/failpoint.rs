//! Named fault-injection points (in the manner of raft-engine's fail
//! points), for tests of what the store does when the disk fails.
//!
//! Compiled only with the `failpoints` feature, which the tests turn on
//! through their dev-dependencies; a build users run has neither the
//! registry nor a check on the I/O path.
//!
//! A point is armed by name and then fails the next calls that pass it
//! with an I/O error. Unarmed, a point costs one relaxed atomic load. The
//! registry is process-wide: a test that arms points should run alone in
//! its own test binary.
//!
//! Points: `log.preallocate` (allocating a segment's blocks), `log.write`
//! (writing a frame), `log.fsync` (fdatasync of a segment after a frame),
//! `index.apply` (the applier indexing frames that were already
//! acknowledged), `keys.flush` (writing the search-key manifest after a
//! flush or merge). [`arm`] injects a generic I/O error, [`arm_no_space`]
//! the operating system's "no space left on device".

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

static ANY_ARMED: AtomicBool = AtomicBool::new(false);
static FIRED: AtomicBool = AtomicBool::new(false);
static POINTS: Mutex<Option<HashMap<&'static str, (u32, Fault)>>> = Mutex::new(None);

/// What an armed point fails with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// A generic I/O error.
    Io,
    /// ENOSPC: no space left on device.
    NoSpace,
}

/// Arms `name` to fail its next `times` passes with an I/O error.
pub fn arm(name: &'static str, times: u32) {
    arm_with(name, times, Fault::Io);
}

/// Arms `name` to fail its next `times` passes as a full disk does
/// (ENOSPC).
pub fn arm_no_space(name: &'static str, times: u32) {
    arm_with(name, times, Fault::NoSpace);
}

fn arm_with(name: &'static str, times: u32, fault: Fault) {
    FIRED.store(false, Ordering::Release);
    let mut points = POINTS.lock().unwrap_or_else(|p| p.into_inner());
    points
        .get_or_insert_with(HashMap::new)
        .insert(name, (times, fault));
    ANY_ARMED.store(true, Ordering::Release);
}

/// Whether an armed point has failed a call since it was armed.
pub fn fired() -> bool {
    FIRED.load(Ordering::Acquire)
}

/// Disarms every point.
pub fn disarm_all() {
    let mut points = POINTS.lock().unwrap_or_else(|p| p.into_inner());
    *points = None;
    ANY_ARMED.store(false, Ordering::Release);
}

/// Fails with an injected error if `name` is armed.
pub(crate) fn check(name: &'static str) -> std::io::Result<()> {
    if !ANY_ARMED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut points = POINTS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((left, fault)) = points.as_mut().and_then(|p| p.get_mut(name))
        && *left > 0
    {
        *left -= 1;
        FIRED.store(true, Ordering::Release);
        return Err(match fault {
            Fault::Io => std::io::Error::other(format!("injected failure at {name}")),
            Fault::NoSpace => rustix::io::Errno::NOSPC.into(),
        });
    }
    Ok(())
}
