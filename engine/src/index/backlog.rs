//! The applier's backlog: durable frames the index does not hold yet,
//! bounded in bytes. A leader ships frames still in it (`read_log` finds
//! them here), and the writer waits for room before it queues more.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::log::frame::FrameHeader;

/// A durable frame not yet in the index, and where it is in the log.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Unindexed {
    pub header: FrameHeader,
    pub segment: u64,
    pub offset: u64,
}

/// Bytes queued for the applier, and the frames they hold.
#[derive(Default)]
pub(crate) struct Backlog {
    state: Mutex<BacklogState>,
    drained: Condvar,
}

#[derive(Default)]
struct BacklogState {
    bytes: u64,
    frames: VecDeque<Unindexed>,
}

impl Backlog {
    /// The durable frames the index does not hold yet, oldest first, that
    /// start at or after `from_lsn` (at most `max` of them).
    pub(crate) fn frames_from(&self, from_lsn: u64, max: usize) -> Vec<Unindexed> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.frames
            .iter()
            .filter(|f| f.header.end_lsn() > from_lsn)
            .take(max)
            .copied()
            .collect()
    }

    pub(crate) fn add(&self, bytes: u64, frames: impl Iterator<Item = Unindexed>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.bytes += bytes;
        s.frames.extend(frames);
    }

    /// Forgets frames past `lsn` (a replica cut frames it held).
    pub(crate) fn forget_after(&self, lsn: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while s
            .frames
            .back()
            .is_some_and(|f| f.header.end_lsn() - 1 > lsn)
        {
            s.frames.pop_back();
        }
    }

    pub(crate) fn add_bytes(&self, bytes: u64) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).bytes += bytes;
    }

    pub(crate) fn applied(&self, bytes: u64, through_lsn: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.bytes = s.bytes.saturating_sub(bytes);
        while s
            .frames
            .front()
            .is_some_and(|f| f.header.end_lsn() - 1 <= through_lsn)
        {
            s.frames.pop_front();
        }
        self.drained.notify_all();
    }

    /// Waits while more than `bound` bytes are queued, or until `alive`
    /// says the store stopped (then nothing will drain the queue).
    pub(crate) fn wait_for_room(&self, alive: impl Fn() -> bool, bound: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while s.bytes > bound && alive() {
            s = self
                .drained
                .wait_timeout(s, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}
