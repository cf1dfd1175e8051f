//! The secondary-key store: a redb file of its own under in-memory runs.
//!
//! The index applier publishes each transaction's key changes as a run
//! (`keyruns`) and never writes a key row itself. When the runs hold
//! `key_buffer_entries` entries and the main index is durable past them,
//! this module's flusher thread writes them into its redb file in one
//! sorted transaction and records the LSN they reach (`keys_lsn`). The
//! file therefore always equals the keys at exactly `keys_lsn`, a frame
//! end, and `keys_lsn` never passes the main index's durable LSN: after a
//! crash, replaying the log from `keys_lsn` with the same apply code
//! restores the runs that were lost.
//!
//! Readers pair three things that must agree: a main-index snapshot at
//! LSN `L`, the runs published for exactly `L` (kept in a short ring), and
//! a key-file snapshot at `F`. A pairing is consistent when
//! `runs.base_lsn <= F <= L`; otherwise the reader takes them again.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use redb::{Database, Durability, ReadTransaction, ReadableDatabase, TableDefinition};

use crate::error::{Error, Result};
use crate::keyruns::{Entry, Run, RunSet, merge, push_run};
use crate::limits::KEY_REPLAY_RECORDS_MAX;

/// Runs published for the most recent transactions, newest last.
const RING_LEN: usize = 64;
/// How often a reader takes its snapshots again before giving up (each
/// retry follows a concurrent commit or flush; many in a row mean a bug).
const SNAPSHOT_TRIES: usize = 10_000;

/// `keys` rows as `index::key_row` writes them.
pub(crate) const KEYS: TableDefinition<&[u8], ()> = TableDefinition::new("keys");
const KEY_META: TableDefinition<&str, u64> = TableDefinition::new("key_meta");
const META_KEYS_LSN: &str = "keys_lsn";
const META_KEYS_CRC: &str = "keys_frame_crc";
const META_KEYS_FORMAT: &str = "format_version";

/// The key file that goes with the index file at `index`.
pub(crate) fn keys_path(index: &Path) -> PathBuf {
    let mut s = index.as_os_str().to_owned();
    s.push(".keys");
    PathBuf::from(s)
}

struct State {
    /// Oldest first; every change after `base_lsn`.
    runs: Vec<Arc<Run>>,
    base_lsn: u64,
    /// `runs[..frozen]` are being written to the file, which will then
    /// end with the frame `flush_to` (LSN, CRC).
    frozen: usize,
    flush_to: Option<(u64, u32)>,
    /// The last frame whose keys were published: (LSN, CRC).
    latest: (u64, u32),
    /// The main index is durable up to here.
    durable_lsn: u64,
    /// (LSN, the runs a reader at that LSN merges), oldest first.
    ring: VecDeque<(u64, Arc<RunSet>)>,
    stop: bool,
    failure: Option<String>,
}

/// The key file and the runs above it. Shared by the index, its readers
/// and the flusher thread.
pub(crate) struct KeyStore {
    db: Database,
    path: PathBuf,
    entries_max: usize,
    state: Mutex<State>,
    /// Signalled when runs are frozen, flushed, or the store stops.
    changed: Condvar,
}

/// What the key file says about itself: the frame its contents end with,
/// and the index format that wrote it (0: never written).
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeysAt {
    pub lsn: u64,
    pub crc: u64,
    pub format: u64,
}

impl KeyStore {
    /// Opens (or creates) the key file, holding up to `entries_max` key
    /// changes in memory before a flush (twice that while one runs).
    /// Readers see nothing until [`KeyStore::start_at`]; before that the
    /// caller checks the file against the index ([`KeyStore::at`]).
    pub(crate) fn open(path: &Path, entries_max: usize) -> Result<Self> {
        assert!(entries_max > 0, "the key buffer holds at least one entry");
        let db = Database::builder()
            .set_cache_size(128 * 1024 * 1024)
            .create(path)?;
        let tx = db.begin_write()?;
        {
            tx.open_table(KEYS)?;
            tx.open_table(KEY_META)?;
        }
        tx.commit()?;
        let store = Self {
            db,
            path: path.to_owned(),
            entries_max,
            state: Mutex::new(State {
                runs: Vec::new(),
                base_lsn: 0,
                frozen: 0,
                flush_to: None,
                latest: (0, 0),
                durable_lsn: 0,
                ring: VecDeque::new(),
                stop: false,
                failure: None,
            }),
            changed: Condvar::new(),
        };
        let at = store.at()?;
        let mut s = store.lock();
        s.base_lsn = at.lsn;
        s.latest = (at.lsn, at.crc as u32);
        drop(s);
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A snapshot of the key file alone.
    pub(crate) fn begin_read(&self) -> Result<ReadTransaction> {
        Ok(self.db.begin_read()?)
    }

    /// The frame the file's contents end with (LSN 0: nothing).
    pub(crate) fn at(&self) -> Result<KeysAt> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(KEY_META)?;
        let get = |k: &str| -> Result<u64> { Ok(meta.get(k)?.map_or(0, |v| v.value())) };
        Ok(KeysAt {
            lsn: get(META_KEYS_LSN)?,
            crc: get(META_KEYS_CRC)?,
            format: get(META_KEYS_FORMAT)?,
        })
    }

    /// Empties the file (its keys do not belong to the index's log).
    pub(crate) fn clear(&self) -> Result<()> {
        let tx = self.db.begin_write()?;
        tx.delete_table(KEYS)?;
        tx.delete_table(KEY_META)?;
        tx.open_table(KEYS)?;
        tx.open_table(KEY_META)?;
        tx.commit()?;
        let mut s = self.lock();
        assert!(s.runs.is_empty(), "the key file is cleared before any run");
        s.base_lsn = 0;
        s.latest = (0, 0);
        Ok(())
    }

    /// Starts publishing at the main index's LSN `applied` (durable).
    pub(crate) fn start_at(&self, applied: u64) {
        let mut s = self.lock();
        assert!(
            s.base_lsn <= applied,
            "the key file is not ahead of the index"
        );
        s.durable_lsn = applied;
        let set = Arc::new(RunSet {
            base_lsn: s.base_lsn,
            runs: s.runs.clone(),
        });
        s.ring.clear();
        s.ring.push_back((applied, set));
    }

    /// Publishes, for readers at the main index's LSN `lsn`, the key
    /// changes of the transaction that takes it there: those of the frames
    /// through `run_end` (whose CRC is `crc`). Call before that transaction
    /// commits. Waits while the runs hold twice the flush size and a flush
    /// is under way, so memory stays bounded.
    pub(crate) fn publish(
        &self,
        lsn: u64,
        run_end: u64,
        crc: u32,
        changes: Vec<Entry>,
    ) -> Result<()> {
        let mut s = self.lock();
        while s.flush_to.is_some()
            && s.failure.is_none()
            && entries(&s.runs) >= 2 * self.entries_max
        {
            s = self
                .changed
                .wait_timeout(s, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if let Some(f) = &s.failure {
            return Err(Error::Poisoned(format!("writing search keys failed: {f}")));
        }
        if run_end > s.latest.0 {
            s.latest = (run_end, crc);
        }
        if !changes.is_empty() {
            assert!(
                s.runs.last().is_none_or(|r| r.end_lsn < run_end) && s.base_lsn < run_end,
                "runs follow the log"
            );
            let frozen = s.frozen;
            push_run(&mut s.runs, Run::new(run_end, changes), frozen);
        }
        let set = Arc::new(RunSet {
            base_lsn: s.base_lsn,
            runs: s.runs.clone(),
        });
        if s.ring.len() >= RING_LEN {
            s.ring.pop_front();
        }
        s.ring.push_back((lsn, set));
        Ok(())
    }

    /// The main index is durable through `lsn`: if the runs are due (they
    /// hold `entries_max` entries, or the file trails by
    /// `KEY_REPLAY_RECORDS_MAX` records), the flusher is asked to write
    /// them all, and the file to reach the last published frame.
    pub(crate) fn durable(&self, lsn: u64) {
        let mut s = self.lock();
        s.durable_lsn = s.durable_lsn.max(lsn);
        if Self::due_in(&s, self.entries_max) && s.latest.0 <= s.durable_lsn {
            s.frozen = s.runs.len();
            s.flush_to = Some(s.latest);
            self.changed.notify_all();
        }
    }

    fn due_in(s: &State, entries_max: usize) -> bool {
        s.flush_to.is_none()
            && (entries(&s.runs) >= entries_max
                || s.latest.0 - s.base_lsn >= KEY_REPLAY_RECORDS_MAX)
    }

    /// Whether the runs are due to be written and no flush is under way.
    pub(crate) fn due(&self) -> bool {
        Self::due_in(&self.lock(), self.entries_max)
    }

    /// A consistent trio for a reader: the main snapshot (from `main`), the
    /// runs published at its LSN, and a file snapshot between them.
    pub(crate) fn snapshot(
        &self,
        main: impl Fn() -> Result<(ReadTransaction, u64)>,
    ) -> Result<(ReadTransaction, Arc<RunSet>, ReadTransaction)> {
        for _ in 0..SNAPSHOT_TRIES {
            let (tx, lsn) = main()?;
            let set = {
                let s = self.lock();
                s.ring
                    .iter()
                    .rev()
                    .find(|(l, _)| *l == lsn)
                    .map(|(_, set)| set.clone())
            };
            let Some(set) = set else {
                // The main commit at `lsn` is not published yet, or its
                // entry left the ring: take a newer snapshot.
                std::thread::yield_now();
                continue;
            };
            let keys = self.db.begin_read()?;
            let at = keys
                .open_table(KEY_META)?
                .get(META_KEYS_LSN)?
                .map_or(0, |v| v.value());
            if set.base_lsn <= at && at <= lsn {
                return Ok((tx, set, keys));
            }
            std::thread::yield_now();
        }
        Err(Error::Corrupt(
            "no consistent snapshot of the index and its keys".into(),
        ))
    }

    /// The flusher's loop: writes frozen runs to the file until stopped,
    /// then flushes what the main index holds durably.
    pub(crate) fn run_flusher(&self) {
        loop {
            let (frozen, to) = {
                let mut s = self.lock();
                while s.flush_to.is_none() && !s.stop {
                    s = self
                        .changed
                        .wait_timeout(s, Duration::from_secs(1))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                let Some(to) = s.flush_to else { break };
                (s.runs[..s.frozen].to_vec(), to)
            };
            if let Err(e) = self.flush(&frozen, to) {
                tracing::error!("writing search keys to their file failed: {e}");
                let mut s = self.lock();
                s.failure = Some(e.to_string());
                self.changed.notify_all();
                return;
            }
        }
        // Stopping: write what the main index holds durably, so that the
        // next open replays nothing for keys.
        let last = {
            let mut s = self.lock();
            if s.latest.0 > s.base_lsn && s.latest.0 <= s.durable_lsn && s.failure.is_none() {
                s.frozen = s.runs.len();
                s.flush_to = Some(s.latest);
                Some((s.runs.clone(), s.latest))
            } else {
                None
            }
        };
        if let Some((runs, to)) = last
            && let Err(e) = self.flush(&runs, to)
        {
            tracing::warn!("writing search keys on close failed (the next open replays them): {e}");
        }
    }

    /// Writes `runs` (the oldest runs, oldest first, none past `to`) to
    /// the file in one durable transaction that records `to` as the frame
    /// it ends with, then drops them from memory.
    fn flush(&self, runs: &[Arc<Run>], to: (u64, u32)) -> Result<()> {
        crate::failpoint::check("keys.flush")
            .map_err(|e| Error::io("write search keys", &self.path, e))?;
        let (end, crc) = to;
        assert!(
            runs.iter().all(|r| r.end_lsn <= end),
            "a flush ends after its runs"
        );
        let merged = match runs.split_first() {
            None => Vec::new(),
            Some((first, rest)) => rest
                .iter()
                .fold(first.entries.clone(), |acc, r| merge(&acc, &r.entries)),
        };
        let started = std::time::Instant::now();
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        {
            let mut keys = tx.open_table(KEYS)?;
            for (row, present) in &merged {
                match present {
                    true => keys.insert(row.as_ref(), ())?,
                    false => keys.remove(row.as_ref())?,
                };
            }
            let mut meta = tx.open_table(KEY_META)?;
            meta.insert(META_KEYS_LSN, end)?;
            meta.insert(META_KEYS_CRC, u64::from(crc))?;
            meta.insert(META_KEYS_FORMAT, crate::index::INDEX_FORMAT_VERSION)?;
        }
        tx.commit()?;
        tracing::debug!(
            entries = merged.len(),
            through_lsn = end,
            ms = started.elapsed().as_millis() as u64,
            "search keys written to their file"
        );
        let mut s = self.lock();
        let n = runs.len();
        assert!(
            s.runs.len() >= n && s.runs[..n].iter().zip(runs).all(|(a, b)| Arc::ptr_eq(a, b)),
            "the flushed runs are still the oldest held"
        );
        // Dropped after the lock is released: freeing millions of entries
        // takes tens of milliseconds that publishers and readers must not
        // wait for.
        let flushed: Vec<Arc<Run>> = s.runs.drain(..n).collect();
        s.frozen = 0;
        s.flush_to = None;
        s.base_lsn = end;
        // Entries at or after `end` can drop the flushed runs; older ones
        // would pair with a file that is ahead of them, so they go.
        let old_ring = std::mem::take(&mut s.ring);
        s.ring = old_ring
            .iter()
            .filter(|(l, _)| *l >= end)
            .map(|(l, set)| {
                let runs = set
                    .runs
                    .iter()
                    .filter(|r| r.end_lsn > end)
                    .cloned()
                    .collect();
                (
                    *l,
                    Arc::new(RunSet {
                        base_lsn: end,
                        runs,
                    }),
                )
            })
            .collect();
        self.changed.notify_all();
        drop(s);
        drop((old_ring, flushed, merged));
        Ok(())
    }

    /// Asks the flusher to stop after a last flush of what is durable.
    pub(crate) fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }
}

fn entries(runs: &[Arc<Run>]) -> usize {
    runs.iter().map(|r| r.entries.len()).sum()
}
