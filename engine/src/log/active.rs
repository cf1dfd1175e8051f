//! The log as its one writer holds it: the active segment's appender and
//! where the next frame continues (LSN, epoch, time).
//!
//! **Invariant:** `next_lsn` is one past the last frame in the segment
//! files, and `epoch` and `last_ts` are that frame's (or higher, never
//! lower): the next frame's LSN is dense, its epoch and timestamp never go
//! back. **Boundary:** owned by the writer thread alone; others learn
//! where the log ends from `ends`.

use crate::log::files::Appender;

/// The writer thread's end of the log.
pub(crate) struct ActiveLog {
    /// Appends frames to the active segment, rotating as segments fill.
    pub(crate) appender: Appender,
    /// The LSN the next frame starts at.
    pub(crate) next_lsn: u64,
    /// The epoch the next frame carries (a new epoch only by `EpochStart`
    /// or a leader's frame).
    pub(crate) epoch: u64,
    /// The last frame's commit time, µs since the Unix epoch.
    pub(crate) last_ts: u64,
}
