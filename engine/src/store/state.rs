//! `Inner`: the state every engine thread shares (the writer, the applier,
//! readers, replication), in two parts: `LogState` (the segment files,
//! dictionaries, the newest frames, the epoch and the log's ends) and
//! `IndexState` (the redb index, the visible and acknowledged LSNs, the
//! applier's backlog); beside them the read barrier and its wakeups, the
//! replica flag and the failure that stops the store. It depends on the
//! log and the index, never on the threads that use it.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use crate::error::{Error, Result};
use crate::index::tables::{Index, VersionEntry};
use crate::log::dict::Dictionaries;
use crate::log::files::Segments;
use crate::store::options::Options;

/// The index's file in the store directory.
pub(crate) const INDEX_FILE: &str = "index.redb";

pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) opts: Options,
    /// The log: its files, dictionaries, newest frames and ends.
    pub(crate) log: LogState,
    /// The index derived from it, and how far it is visible.
    pub(crate) index: IndexState,
    /// Local commits are refused (a replica following another log).
    pub(crate) read_only: AtomicBool,
    /// Signalled whenever the visible LSN moves.
    pub(crate) lsn_moved: (Mutex<()>, Condvar),
    /// Why the store stopped, once it has (every later call fails).
    pub(crate) failure: Mutex<Option<String>>,
    /// The held `LOCK` file: one process per store directory.
    pub(crate) _lock: File,
}

/// The shared state of the log: what the writer writes and replication
/// and readers read. Only the writer thread moves it forward.
pub(crate) struct LogState {
    pub(crate) segments: Arc<Segments>,
    pub(crate) dicts: Arc<Dictionaries>,
    /// The newest durable frames, for replication's live tail.
    pub(crate) tail: crate::log::tail::Tail,
    /// The epoch of the newest frame (or `EpochStart`).
    pub(crate) epoch: AtomicU64,
    /// The end of the written and of the durable log (on a replica, the
    /// durable end runs ahead of the visible LSN while the applier
    /// indexes), and the functions told when they move.
    pub(crate) ends: crate::log::ends::LogEnds,
}

/// The shared state of the index: the redb index readers open snapshots
/// of, and the LSNs that say how much of the log it shows.
pub(crate) struct IndexState {
    current: RwLock<Arc<Index>>,
    /// The highest *visible* LSN: durable, indexed, and (on a replica)
    /// confirmed durable by the leader. Reads see exactly up to it.
    pub(crate) visible_lsn: AtomicU64,
    /// The highest LSN acknowledged to a local committer. A read waits
    /// until `visible_lsn` reaches it (the read barrier), so it sees every
    /// write acknowledged before it began.
    pub(crate) acked_lsn: AtomicU64,
    /// Durable frames queued for the index applier.
    pub(crate) backlog: crate::index::backlog::Backlog,
}

impl IndexState {
    /// The index at `lsn`, visible through `lsn`.
    pub(crate) fn new(index: Index, lsn: u64) -> Self {
        Self {
            current: RwLock::new(Arc::new(index)),
            visible_lsn: AtomicU64::new(lsn),
            acked_lsn: AtomicU64::new(lsn),
            backlog: crate::index::backlog::Backlog::default(),
        }
    }

    /// The index readers and the applier use now.
    pub(crate) fn current(&self) -> Arc<Index> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Swaps in a rebuilt index.
    pub(crate) fn replace(&self, index: Arc<Index>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = index;
    }
}

impl Inner {
    pub(crate) fn check_alive(&self) -> Result<()> {
        match &*self.failure.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(reason) => Err(Error::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    pub(crate) fn poison(&self, reason: String) {
        tracing::error!("store stopped: {reason}");
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(reason);
        }
        drop(f);
        self.log.ends.wake();
    }

    /// Reads and decodes the body an index entry points to.
    pub(crate) fn read_body(&self, e: &VersionEntry) -> Result<Vec<u8>> {
        crate::index::tables::read_body(&self.log.segments, &self.log.dicts, e)
    }

    /// The highest LSN that is durable and indexed.
    pub(crate) fn visible_lsn(&self) -> u64 {
        self.index.visible_lsn.load(Ordering::Acquire)
    }

    /// The read barrier: waits until every write acknowledged so far is
    /// visible. The applier's backlog is bounded in bytes, so the wait is
    /// too; it ends early only when the store stopped.
    pub(crate) fn await_acked(&self) -> Result<u64> {
        let want = self.index.acked_lsn.load(Ordering::Acquire);
        loop {
            let now = self.visible_lsn();
            if now >= want {
                return Ok(now);
            }
            self.check_alive()?;
            self.wait_for_lsn(now, std::time::Duration::from_millis(50));
        }
    }

    /// Waits until the visible LSN is above `after`, `timeout` passes or the
    /// store stops; returns the visible LSN then.
    pub(crate) fn wait_for_lsn(&self, after: u64, timeout: std::time::Duration) -> u64 {
        self.wait_until(
            timeout,
            || self.index.visible_lsn.load(Ordering::Acquire),
            |l| *l > after,
        )
    }

    /// Reads `read` until `done` holds for its value, `timeout` passes or
    /// the store stops; returns the last value read. Woken by
    /// `lsn_moved` (the visible LSN moved).
    fn wait_until<T>(
        &self,
        timeout: std::time::Duration,
        read: impl Fn() -> T,
        done: impl Fn(&T) -> bool,
    ) -> T {
        let deadline = std::time::Instant::now() + timeout;
        let (lock, cv) = &self.lsn_moved;
        let mut guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let now = read();
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if done(&now) || left.is_zero() || self.check_alive().is_err() {
                return now;
            }
            guard = cv
                .wait_timeout(guard, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Publishes a new visible LSN and wakes [`Store::wait_for_lsn`].
    pub(crate) fn publish_lsn(&self, lsn: u64) {
        let prev = self.index.visible_lsn.swap(lsn, Ordering::AcqRel);
        assert!(prev < lsn, "the visible LSN must strictly increase");
        let _guard = self.lsn_moved.0.lock().unwrap_or_else(|p| p.into_inner());
        self.lsn_moved.1.notify_all();
    }

    pub(crate) fn index_path(&self) -> PathBuf {
        self.dir.join(INDEX_FILE)
    }
}
