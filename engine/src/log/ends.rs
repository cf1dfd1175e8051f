//! Where the log ends, one type for each end: [`LogEnd`] (the durable end,
//! its last frame) and [`LogTip`] (the written end with the durable one),
//! held in one `EndState` with the functions told when they move. The
//! writer moves them; replication listens (`Store::on_log_end`); a replica
//! resets them when it cuts frames.

use std::sync::{Arc, Mutex, Weak};

use crate::error::{Error, Result};

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
type EndFn = Arc<dyn Fn(LogTip) + Send + Sync>;

/// The log's ends and the functions told when they move (one lock, so a
/// function registers between two moves, never inside one).
#[derive(Debug)]
pub(crate) struct EndState {
    pub(crate) tip: LogTip,
    pub(crate) listeners: EndListeners,
}

impl EndState {
    /// Registers `f` to be told every later move of the ends of `state`;
    /// refused past [`LOG_END_LISTENERS_MAX`].
    pub(crate) fn listen(state: &Arc<Mutex<EndState>>, f: EndFn) -> Result<LogEndListener> {
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

    pub(crate) fn new(durable: LogEnd) -> Self {
        Self {
            tip: LogTip {
                written_lsn: durable.lsn,
                durable,
            },
            listeners: EndListeners::default(),
        }
    }
}

/// The functions registered with [`crate::Store::on_log_end`].
#[derive(Default)]
pub(crate) struct EndListeners {
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
    pub(crate) fn tell(&self, tip: LogTip) {
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
