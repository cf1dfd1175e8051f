//! Where the log ends: [`LogTip`], the one type that says it (the written
//! end, and the durable end as its last frame, a [`LogEnd`]). `LogEnds`
//! owns it: the writer moves it forward, replication listens
//! (`Store::on_log_end`) or waits (`Store::wait_for_log_end`), and a
//! replica resets it when it cuts frames.
//!
//! **Invariant:** the ends only move forward, except by `reset` (a cut of
//! frames never shown), which listeners are not told; the written end is
//! never behind the durable one; listeners hear every move in order.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::log::frame::FrameHeader;

/// The durable end of a log: its last frame. On a replica it runs ahead
/// of [`crate::Store::last_lsn`] (what is indexed and visible) while frames are
/// being indexed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogEnd {
    /// The last durable LSN (0: empty log).
    pub lsn: u64,
    /// Epoch of the last frame.
    pub epoch: u64,
    /// CRC of the last frame.
    pub crc: u32,
    /// Commit time of the last frame, µs since the Unix epoch.
    pub timestamp_us: u64,
}

/// Where the log ends, as [`crate::Store::on_log_end`] listeners are told it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogTip {
    /// The last LSN written to the log file, fsynced or not: frames up to
    /// it are served by [`crate::Store::read_log_recent`]. Never behind
    /// `durable.lsn`, and ahead of it only while the writer's fsync of
    /// the newest frame is under way.
    pub written_lsn: u64,
    /// The durable end.
    pub durable: LogEnd,
}

/// Most functions registered with [`crate::Store::on_log_end`] at once.
pub const LOG_END_LISTENERS_MAX: usize = 64;

/// A function told each move of the log's end.
pub(crate) type EndFn = Arc<dyn Fn(LogTip) + Send + Sync>;

/// The log's ends and the functions told when they move (one lock, so a
/// function registers between two moves, never inside one).
#[derive(Debug)]
struct EndState {
    tip: LogTip,
    listeners: EndListeners,
}

impl EndState {
    /// Registers `f` to be told every later move of the ends of `state`;
    /// refused past [`LOG_END_LISTENERS_MAX`].
    fn listen(state: &Arc<Mutex<EndState>>, f: EndFn) -> Result<LogEndListener> {
        let mut g = state.lock().unwrap_or_else(|p| p.into_inner());
        let listeners = &mut g.listeners;
        if listeners.fns.len() >= LOG_END_LISTENERS_MAX {
            return Err(Error::Invalid {
                what: "log end listener",
                value: listeners.fns.len().to_string(),
                reason: format!("at most {LOG_END_LISTENERS_MAX} may be registered at once"),
            });
        }
        let id = listeners.next_id;
        listeners.next_id += 1;
        listeners.fns.push((id, f));
        Ok(LogEndListener {
            ends: Arc::downgrade(state),
            id,
        })
    }

    fn new(durable: LogEnd) -> Self {
        Self {
            tip: LogTip {
                written_lsn: durable.lsn,
                durable,
            },
            listeners: EndListeners::default(),
        }
    }
}

/// The log's ends, shared by every engine thread: moved by the writer,
/// read, listened to and waited on by anyone.
#[derive(Debug)]
pub(crate) struct LogEnds {
    state: Arc<Mutex<EndState>>,
    /// Signalled whenever an end moves (or the store stops).
    moved: Condvar,
}

impl LogEnds {
    /// Ends at `durable`, written through it too.
    pub(crate) fn new(durable: LogEnd) -> Self {
        Self {
            state: Arc::new(Mutex::new(EndState::new(durable))),
            moved: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EndState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The written and the durable end.
    pub(crate) fn tip(&self) -> LogTip {
        self.lock().tip
    }

    /// The durable end: the last durable frame.
    pub(crate) fn durable(&self) -> LogEnd {
        self.lock().tip.durable
    }

    /// The frame `last` is durable: the durable end moves to it (and the
    /// written end with it if behind); listeners are told, waiters woken.
    pub(crate) fn set_durable(&self, last: &FrameHeader) {
        let end = LogEnd {
            lsn: last.end_lsn() - 1,
            epoch: last.epoch,
            crc: last.crc,
            timestamp_us: last.timestamp_us,
        };
        let mut g = self.lock();
        assert!(
            end.lsn >= g.tip.durable.lsn,
            "the durable end never goes back"
        );
        g.tip.durable = end;
        g.tip.written_lsn = g.tip.written_lsn.max(end.lsn);
        g.listeners.tell(g.tip);
        drop(g);
        self.moved.notify_all();
    }

    /// Frames through `lsn` are written but not yet fsynced (the writer
    /// calls it between its write and its fsync): listeners are told, so
    /// replication ships them while the fsync runs.
    pub(crate) fn set_written(&self, lsn: u64) {
        let mut g = self.lock();
        assert!(lsn >= g.tip.written_lsn, "the written end never goes back");
        g.tip.written_lsn = lsn;
        g.listeners.tell(g.tip);
    }

    /// Moves both ends back to `end` (a replica cut frames its leader
    /// lost). Listeners are not told: they hear ends only going forward.
    pub(crate) fn reset(&self, end: LogEnd) {
        self.lock().tip = LogTip {
            written_lsn: end.lsn,
            durable: end,
        };
        self.moved.notify_all();
    }

    /// Registers `f` to be told every later move of the ends.
    pub(crate) fn listen(&self, f: EndFn) -> Result<LogEndListener> {
        EndState::listen(&self.state, f)
    }

    /// Waits until the durable end is above `after`, `timeout` passes or
    /// `stopped` says the store stopped; returns the durable end then.
    pub(crate) fn wait_durable_above(
        &self,
        after: u64,
        timeout: Duration,
        stopped: impl Fn() -> bool,
    ) -> LogEnd {
        let deadline = Instant::now() + timeout;
        let mut g = self.lock();
        loop {
            let now = g.tip.durable;
            let left = deadline.saturating_duration_since(Instant::now());
            if now.lsn > after || left.is_zero() || stopped() {
                return now;
            }
            g = self
                .moved
                .wait_timeout(g, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Wakes every waiter (the store stopped).
    pub(crate) fn wake(&self) {
        let _g = self.lock();
        self.moved.notify_all();
    }
}

/// The functions registered with [`crate::Store::on_log_end`].
#[derive(Default)]
struct EndListeners {
    next_id: u64,
    fns: Vec<(u64, EndFn)>,
}

impl std::fmt::Debug for EndListeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndListeners")
            .field("count", &self.fns.len())
            .finish()
    }
}

impl EndListeners {
    /// Tells every registered function the new ends. Called by whoever
    /// moved them, in order: ends are never told after later ones.
    fn tell(&self, tip: LogTip) {
        for (_, f) in &self.fns {
            f(tip);
        }
    }
}

/// Keeps a function registered with [`crate::Store::on_log_end`]; dropping it
/// unregisters the function (after a call under way, if any, returns).
#[must_use = "dropping the listener unregisters it"]
pub struct LogEndListener {
    ends: Weak<Mutex<EndState>>,
    id: u64,
}

impl std::fmt::Debug for LogEndListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogEndListener")
            .field("id", &self.id)
            .finish()
    }
}

impl Drop for LogEndListener {
    fn drop(&mut self) {
        if let Some(ends) = self.ends.upgrade() {
            ends.lock()
                .unwrap_or_else(|p| p.into_inner())
                .listeners
                .fns
                .retain(|(id, _)| *id != self.id);
        }
    }
}
