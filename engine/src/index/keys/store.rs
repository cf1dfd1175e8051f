//! The secondary-key store: sorted run files under in-memory runs.
//!
//! The index applier publishes each transaction's key changes as a run
//! (`keyruns`) and never writes a key row itself. When the runs hold
//! `key_buffer_entries` entries and the main index is durable past them,
//! this module's flusher thread writes them all as one sorted run file
//! (`runfile`) and records, in the directory's manifest (`keyfiles`),
//! the LSN they reach (`keys_lsn`). The files therefore always hold the
//! keys at exactly `keys_lsn`, a frame end, and `keys_lsn` never passes
//! the main index's durable LSN: after a crash, replaying the log from
//! `keys_lsn` with the same apply code restores the runs that were lost.
//! A merger thread merges neighbouring files in the background, so each
//! key is rewritten about log2(keys / flush size) times whatever the
//! store's size.
//!
//! Readers pair three things that must agree: a main-index snapshot at
//! LSN `L`, the runs published for exactly `L` (kept in a short ring), and
//! the file set at `F`. The runs and the file set change together under
//! one lock, so a pairing has `runs.base_lsn <= F <= L`; a reader that
//! finds otherwise takes them again.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use crate::crypt::datakeys::DataKeys;
use crate::error::{Error, Result};
use crate::index::keys::files::{
    Manifest, load, merge_files, pick_merge, remove_strays, run_path, write_manifest, write_merged,
};
use crate::index::keys::runfile::RunFile;
use crate::index::keys::runs::{Entry, Run, RunSet, push_run, shared_source};
use crate::limits::KEY_REPLAY_RECORDS_MAX;

/// Runs published for the most recent transactions, newest last.
const RING_LEN: usize = 64;
/// How often a reader takes its snapshots again before giving up (each
/// retry follows a concurrent commit or flush; many in a row mean a bug).
const SNAPSHOT_TRIES: usize = 10_000;

/// The key directory that goes with the index file at `index`.
pub(crate) fn keys_path(index: &Path) -> PathBuf {
    let mut s = index.as_os_str().to_owned();
    s.push(".keys.d");
    PathBuf::from(s)
}

/// Where index format 4 kept its keys (a redb file); removed on rebuild.
pub(crate) fn legacy_keys_path(index: &Path) -> PathBuf {
    let mut s = index.as_os_str().to_owned();
    s.push(".keys");
    PathBuf::from(s)
}

/// The run files that hold the keys at one frame, oldest first.
#[derive(Debug)]
pub(crate) struct FileSet {
    /// The frame the files' keys end with (0: none) and its CRC.
    pub lsn: u64,
    crc: u32,
    /// The index format that wrote them.
    format: u64,
    pub files: Vec<Arc<RunFile>>,
}

impl FileSet {
    /// No files: the keys of an empty log.
    pub(crate) fn empty() -> Self {
        Self {
            lsn: 0,
            crc: 0,
            format: crate::index::INDEX_FORMAT_VERSION,
            files: Vec::new(),
        }
    }
}

struct State {
    /// Oldest first; every change after `base_lsn`.
    runs: Vec<Arc<Run>>,
    base_lsn: u64,
    /// `runs[..frozen]` are being written to a file, which will then end
    /// with the frame `flush_to` (LSN, CRC).
    frozen: usize,
    flush_to: Option<(u64, u32)>,
    /// The last frame whose keys were published: (LSN, CRC).
    latest: (u64, u32),
    /// The main index is durable up to here.
    durable_lsn: u64,
    /// (LSN, the runs a reader at that LSN merges), oldest first.
    ring: VecDeque<(u64, Arc<RunSet>)>,
    /// The files below the runs; `files.lsn == base_lsn`.
    files: Arc<FileSet>,
    stop: bool,
    failure: Option<String>,
}

/// What only the thread changing the file set holds: the directory, and
/// the number the next file takes. Taken before `state`.
struct Disk {
    dir: PathBuf,
    next_file: u64,
    /// Set by [`KeyStore::retire`]: the directory belongs to another key
    /// store now, so nothing more is written to it.
    retired: bool,
}

/// The key files and the runs above them. Shared by the index, its
/// readers, the flusher thread and the merger thread.
pub(crate) struct KeyStore {
    entries_max: usize,
    /// The store's data keys when it is encrypted: files are then sealed.
    keys: Option<Arc<DataKeys>>,
    state: Mutex<State>,
    disk: Mutex<Disk>,
    /// Held (shared) by a flush or merge while it writes in the directory,
    /// and (exclusive) by [`KeyStore::relocate`] while it moves it and by
    /// [`KeyStore::clear`] while it empties it.
    /// Taken before `disk`.
    moving: RwLock<()>,
    /// Signalled when runs are frozen, files change, or the store stops.
    changed: Condvar,
    stopping: AtomicBool,
}

/// What the key files say about themselves: the frame their contents end
/// with, and the index format that wrote them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeysAt {
    pub lsn: u64,
    pub crc: u64,
    pub format: u64,
}

impl KeyStore {
    /// Opens (or creates) the key directory `dir`, holding up to
    /// `entries_max` key changes in memory before a flush (twice that
    /// while one runs). A manifest or file that does not check is logged
    /// and the keys start empty (they are replayed from the log). Readers
    /// see nothing until [`KeyStore::start_at`]; before that the caller
    /// checks the files against the index ([`KeyStore::at`]).
    /// With `keys` (an encrypted store) the files it writes are sealed.
    pub(crate) fn open(
        dir: &Path,
        entries_max: usize,
        keys: Option<Arc<DataKeys>>,
    ) -> Result<Self> {
        assert!(entries_max > 0, "the key buffer holds at least one entry");
        let format = crate::index::INDEX_FORMAT_VERSION;
        let (manifest, files) = match load(dir, format, keys.as_ref()) {
            Ok(loaded) => loaded,
            Err(e @ (Error::Corrupt(_) | Error::UnsupportedFormatVersion { .. })) => {
                tracing::warn!(dir = %dir.display(), "search key files are unreadable ({e}); their keys are rebuilt from the log");
                let m = Manifest::empty(format);
                write_manifest(dir, &m)?;
                remove_strays(dir, &[])?;
                (m, Vec::new())
            }
            Err(e) => return Err(e),
        };
        let files = Arc::new(FileSet {
            lsn: manifest.lsn,
            crc: manifest.crc,
            format: manifest.index_format,
            files,
        });
        Ok(Self {
            entries_max,
            keys,
            state: Mutex::new(State {
                runs: Vec::new(),
                base_lsn: files.lsn,
                frozen: 0,
                flush_to: None,
                latest: (files.lsn, files.crc),
                durable_lsn: 0,
                ring: VecDeque::new(),
                files,
                stop: false,
                failure: None,
            }),
            disk: Mutex::new(Disk {
                dir: dir.to_owned(),
                next_file: manifest.next_file,
                retired: false,
            }),
            moving: RwLock::new(()),
            changed: Condvar::new(),
            stopping: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_disk(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file set alone.
    /// Why writing or merging key files failed, once it has: the store
    /// must stop then (the keys in memory can no longer be made durable).
    pub(crate) fn failure(&self) -> Option<String> {
        self.lock().failure.clone()
    }

    pub(crate) fn files(&self) -> Arc<FileSet> {
        self.lock().files.clone()
    }

    /// The frame the files' contents end with (LSN 0: nothing).
    pub(crate) fn at(&self) -> Result<KeysAt> {
        let f = self.files();
        Ok(KeysAt {
            lsn: f.lsn,
            crc: u64::from(f.crc),
            format: f.format,
        })
    }

    /// Empties the key store (its keys do not belong to the index's log).
    /// Waits for a merge under way (the merger runs from open) to finish.
    pub(crate) fn clear(&self) -> Result<()> {
        let _moving = self.moving.write().unwrap_or_else(|p| p.into_inner());
        let mut disk = self.lock_disk();
        let m = Manifest {
            next_file: disk.next_file,
            ..Manifest::empty(crate::index::INDEX_FORMAT_VERSION)
        };
        write_manifest(&disk.dir, &m)?;
        remove_strays(&disk.dir, &[])?;
        disk.next_file = m.next_file;
        let mut s = self.lock();
        assert!(s.runs.is_empty(), "the key store is cleared before any run");
        s.files = Arc::new(FileSet::empty());
        s.base_lsn = 0;
        s.latest = (0, 0);
        Ok(())
    }

    /// The directory moves: `mv` renames it to `to` (a rebuilt index
    /// taking the place of the old one). Waits for a flush or merge under
    /// way to finish; the next ones wait for the move.
    pub(crate) fn relocate(
        &self,
        to: &Path,
        mv: impl FnOnce(&Path, &Path) -> Result<()>,
    ) -> Result<()> {
        let _moving = self.moving.write().unwrap_or_else(|p| p.into_inner());
        let mut disk = self.lock_disk();
        mv(&disk.dir, to)?;
        disk.dir = to.to_owned();
        Ok(())
    }

    /// Writes into `dest` (a new directory) the key store as a reader at
    /// one main-index snapshot sees it: `main` opens that snapshot and
    /// says its LSN; `crc` gives the CRC of the frame ending there. The
    /// files are hard-linked (copied where the filesystem cannot link),
    /// the runs in memory at that LSN written as one more file, and a
    /// manifest names them all at that frame; so the copy needs no replay
    /// beside a copy of the main index taken in the same snapshot. Holds
    /// `disk` while it takes the snapshot and links the files, so no
    /// flush or merge changes them meanwhile.
    pub(crate) fn snapshot_to<T>(
        &self,
        dest: &Path,
        main: impl Fn() -> Result<(T, u64)>,
        crc: impl Fn(&T) -> Result<u32>,
    ) -> Result<(T, u64)> {
        std::fs::create_dir(dest).map_err(|e| Error::io("create key snapshot", dest, e))?;
        let disk = self.lock_disk();
        let ((t, lsn), runs, files) = self.snapshot(|| {
            let (t, lsn) = main()?;
            Ok(((t, lsn), lsn))
        })?;
        let mut names = Vec::with_capacity(files.files.len() + 1);
        for f in &files.files {
            let from = run_path(&disk.dir, f.number());
            let to = run_path(dest, f.number());
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to).map_err(|e| Error::io("copy key run", &from, e))?;
            }
            names.push(f.number());
        }
        let mut next_file = disk.next_file;
        // The files are linked: flushes and merges may go on while the
        // runs (an immutable snapshot) are written.
        drop(disk);
        if !runs.runs.is_empty() {
            let sources = runs
                .runs
                .iter()
                .map(|r| shared_source(&r.entries))
                .collect();
            write_merged(
                dest,
                next_file,
                sources,
                files.files.is_empty(),
                &|| false,
                self.keys.as_ref(),
            )?
            .expect("a snapshot is never abandoned");
            names.push(next_file);
            next_file += 1;
        }
        write_manifest(
            dest,
            &Manifest {
                lsn,
                crc: if lsn == 0 { 0 } else { crc(&t)? },
                index_format: crate::index::INDEX_FORMAT_VERSION,
                next_file,
                files: names,
            },
        )?;
        Ok((t, lsn))
    }

    /// This key store's directory is about to belong to another: nothing
    /// more is written to it (a flush or merge under way is abandoned).
    /// Reads go on from the open files.
    pub(crate) fn retire(&self) {
        self.stopping.store(true, Ordering::Release);
        let mut disk = self.lock_disk();
        disk.retired = true;
        let mut s = self.lock();
        s.stop = true;
        self.changed.notify_all();
    }

    /// Starts publishing at the main index's LSN `applied` (durable).
    pub(crate) fn start_at(&self, applied: u64) {
        let mut s = self.lock();
        assert!(
            s.base_lsn <= applied,
            "the key files are not ahead of the index"
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
            && !s.stop
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
    /// runs published at its LSN, and the file set below them.
    pub(crate) fn snapshot<T>(
        &self,
        main: impl Fn() -> Result<(T, u64)>,
    ) -> Result<(T, Arc<RunSet>, Arc<FileSet>)> {
        for _ in 0..SNAPSHOT_TRIES {
            let (tx, lsn) = main()?;
            let found = {
                let s = self.lock();
                s.ring
                    .iter()
                    .rev()
                    .find(|(l, _)| *l == lsn)
                    .map(|(_, set)| (set.clone(), s.files.clone()))
            };
            match found {
                Some((set, files)) if set.base_lsn <= files.lsn && files.lsn <= lsn => {
                    return Ok((tx, set, files));
                }
                // The main commit at `lsn` is not published yet, or its
                // entry left the ring: take a newer snapshot.
                _ => std::thread::yield_now(),
            }
        }
        Err(Error::Corrupt(
            "no consistent snapshot of the index and its keys".into(),
        ))
    }

    /// The flusher's loop: writes frozen runs to a file until stopped,
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
            match self.flush(&frozen, to) {
                Ok(true) => {}
                // Retired: the directory is another key store's now.
                Ok(false) => return,
                Err(e) => {
                    self.fail("writing search keys to their files failed", &e);
                    return;
                }
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

    fn fail(&self, what: &str, e: &Error) {
        tracing::error!("{what}: {e}");
        let mut s = self.lock();
        s.failure = Some(e.to_string());
        self.changed.notify_all();
    }

    /// Writes `runs` (the oldest runs, oldest first, none past `to`) as a
    /// new file, and a manifest that adds it and records `to` as the frame
    /// the files end with; then drops the runs from memory. `false`: the
    /// key store is retired and nothing was written.
    fn flush(&self, runs: &[Arc<Run>], to: (u64, u32)) -> Result<bool> {
        let (end, crc) = to;
        assert!(
            runs.iter().all(|r| r.end_lsn <= end),
            "a flush ends after its runs"
        );
        let started = std::time::Instant::now();
        let _moving = self.moving.read().unwrap_or_else(|p| p.into_inner());
        let (dir, number) = {
            let mut disk = self.lock_disk();
            if disk.retired {
                return Ok(false);
            }
            disk.next_file += 1;
            (disk.dir.clone(), disk.next_file - 1)
        };
        // No runs (the files trail by many records without key changes):
        // only the manifest moves on.
        let file = match runs.is_empty() {
            true => None,
            false => {
                // Only this thread adds files, so "no files" stays true
                // until this one is named: nothing lies below, and
                // removals can go.
                let no_files = self.files().files.is_empty();
                let sources = runs.iter().map(|r| shared_source(&r.entries)).collect();
                let written = write_merged(
                    &dir,
                    number,
                    sources,
                    no_files,
                    &|| false,
                    self.keys.as_ref(),
                )?
                .expect("a flush is never abandoned");
                Some(Arc::new(written))
            }
        };
        let entries = file.as_ref().map_or(0, |f| f.entries());
        let disk = self.lock_disk();
        if disk.retired {
            if let Some(f) = file {
                drop(f);
                let p = run_path(&dir, number);
                std::fs::remove_file(&p).map_err(|e| Error::io("remove key run", &p, e))?;
            }
            return Ok(false);
        }
        let mut names: Vec<u64> = self.files().files.iter().map(|f| f.number()).collect();
        names.extend(file.as_ref().map(|f| f.number()));
        write_manifest(
            &disk.dir,
            &Manifest {
                lsn: end,
                crc,
                index_format: crate::index::INDEX_FORMAT_VERSION,
                next_file: disk.next_file,
                files: names,
            },
        )?;
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
        let mut files = s.files.files.clone();
        files.extend(file);
        s.files = Arc::new(FileSet {
            lsn: end,
            crc,
            format: crate::index::INDEX_FORMAT_VERSION,
            files,
        });
        // Entries at or after `end` can drop the flushed runs; older ones
        // would pair with files that are ahead of them, so they go.
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
        drop(disk);
        tracing::debug!(
            entries,
            through_lsn = end,
            ms = started.elapsed().as_millis() as u64,
            "search keys written to a run file"
        );
        drop((old_ring, flushed));
        Ok(true)
    }

    /// The merger's loop: merges neighbouring files while
    /// [`pick_merge`] finds a pair, until stopped.
    pub(crate) fn run_merger(&self) {
        loop {
            let pair = {
                let mut s = self.lock();
                loop {
                    if s.stop || s.failure.is_some() {
                        return;
                    }
                    let sizes: Vec<u64> = s.files.files.iter().map(|f| f.entries()).collect();
                    if let Some(i) = pick_merge(&sizes) {
                        break (i, s.files.files[i].clone(), s.files.files[i + 1].clone());
                    }
                    s = self
                        .changed
                        .wait_timeout(s, Duration::from_secs(1))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            };
            if let Err(e) = self.merge_pair(pair) {
                self.fail("merging search key files failed", &e);
                return;
            }
        }
    }

    /// Merges files `older` (at position `i`) and `newer` into one that
    /// takes their place; removals go when `older` is the oldest file.
    fn merge_pair(&self, (i, older, newer): (usize, Arc<RunFile>, Arc<RunFile>)) -> Result<()> {
        let started = std::time::Instant::now();
        let _moving = self.moving.read().unwrap_or_else(|p| p.into_inner());
        let (dir, number) = {
            let mut disk = self.lock_disk();
            if disk.retired {
                return Ok(());
            }
            disk.next_file += 1;
            (disk.dir.clone(), disk.next_file - 1)
        };
        let stopping = || self.stopping.load(Ordering::Acquire);
        let Some(merged) = merge_files(
            &dir,
            number,
            &older,
            &newer,
            i == 0,
            &stopping,
            self.keys.as_ref(),
        )?
        else {
            return Ok(());
        };
        let entries = merged.entries();
        let merged = Arc::new(merged);
        let disk = self.lock_disk();
        if disk.retired {
            drop(merged);
            let p = run_path(&dir, number);
            return std::fs::remove_file(&p).map_err(|e| Error::io("remove key run", &p, e));
        }
        // Only this thread removes files, and new ones go after these two:
        // they are still neighbours at `i`. The flusher changes the set
        // only while holding `disk`, as this thread does now.
        let current = self.files();
        assert!(
            current.files.len() > i + 1
                && Arc::ptr_eq(&current.files[i], &older)
                && Arc::ptr_eq(&current.files[i + 1], &newer),
            "merged files keep their place"
        );
        let mut files = current.files.clone();
        files.splice(i..i + 2, [merged]);
        write_manifest(
            &disk.dir,
            &Manifest {
                lsn: current.lsn,
                crc: current.crc,
                index_format: current.format,
                next_file: disk.next_file,
                files: files.iter().map(|f| f.number()).collect(),
            },
        )?;
        {
            let mut s = self.lock();
            // Both threads change the file set only while holding `disk`.
            assert!(Arc::ptr_eq(&s.files, &current), "the file set is unchanged");
            s.files = Arc::new(FileSet {
                lsn: current.lsn,
                crc: current.crc,
                format: current.format,
                files,
            });
            self.changed.notify_all();
        }
        // Readers holding the old files keep reading them: an open file
        // outlives its name.
        for f in [&older, &newer] {
            let p = run_path(&disk.dir, f.number());
            std::fs::remove_file(&p).map_err(|e| Error::io("remove merged key run", &p, e))?;
        }
        drop(disk);
        tracing::debug!(
            entries,
            older = older.entries(),
            newer = newer.entries(),
            ms = started.elapsed().as_millis() as u64,
            "search key files merged"
        );
        Ok(())
    }

    /// Asks the flusher to stop after a last flush of what is durable, and
    /// the merger to stop (abandoning a merge under way).
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.lock().stop = true;
        self.changed.notify_all();
    }
}

fn entries(runs: &[Arc<Run>]) -> usize {
    runs.iter().map(|r| r.entries.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::keys::runs::{Bytes, Merged, Source, run_source};
    use std::collections::BTreeMap;

    /// Every present key a reader sees: the files, then the runs, merged.
    fn scan(runs: &RunSet, files: &FileSet) -> Vec<u8> {
        let mut sources: Vec<Source<'_, Error>> = Vec::new();
        for f in &files.files {
            sources.push(Box::new(f.range(&[], None)));
        }
        for r in &runs.runs {
            sources.push(run_source(&r.entries));
        }
        Merged::new(sources)
            .filter_map(|r| {
                let (k, p) = r.expect("read");
                p.then_some(k[0])
            })
            .collect()
    }

    /// Flushes after every few changes and merges files behind them,
    /// while a reader checks each LSN's keys against a model; a reopen
    /// finds the keys of the frame the manifest names.
    #[test]
    fn readers_see_each_lsns_keys_through_flushes_and_merges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = Arc::new(KeyStore::open(dir.path(), 3, None).expect("open"));
        let threads: Vec<_> = [KeyStore::run_flusher, KeyStore::run_merger]
            .into_iter()
            .map(|work: fn(&KeyStore)| {
                let k = keys.clone();
                std::thread::spawn(move || work(&k))
            })
            .collect();
        keys.start_at(0);
        let mut model: BTreeMap<u8, bool> = BTreeMap::new();
        let mut history = vec![Vec::new()];
        for lsn in 1..=400u64 {
            let mut changes = BTreeMap::new();
            for j in 0..3u64 {
                let k = ((lsn * 37 + j * 101) % 211) as u8;
                changes.insert(k, (lsn + j) % 5 != 0);
            }
            model.extend(changes.iter());
            let entries = changes
                .into_iter()
                .map(|(k, p)| (Bytes::from(vec![k]), p))
                .collect();
            keys.publish(lsn, lsn, lsn as u32, entries)
                .expect("publish");
            keys.durable(lsn);
            let present: Vec<u8> = model.iter().filter(|e| *e.1).map(|e| *e.0).collect();
            let (_, runs, files) = keys.snapshot(|| Ok(((), lsn))).expect("snapshot");
            assert_eq!(scan(&runs, &files), present, "keys at lsn {lsn}");
            history.push(present);
            if lsn % 50 == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        keys.stop();
        for t in threads {
            t.join().expect("thread");
        }
        let files = keys.files();
        assert!(files.lsn > 0, "keys were flushed");
        assert!(
            files.files.len() <= 12,
            "{} files: merges keep them few",
            files.files.len()
        );
        drop((keys, files));

        let keys = KeyStore::open(dir.path(), 3, None).expect("reopen");
        let at = keys.at().expect("at");
        let files = keys.files();
        assert_eq!(at.crc, at.lsn, "the manifest names a published frame");
        assert_eq!(
            scan(&RunSet::default(), &files),
            history[at.lsn as usize],
            "the files hold the keys at their LSN"
        );
        let on_disk = std::fs::read_dir(dir.path()).expect("list").count();
        assert_eq!(
            on_disk,
            files.files.len() + 1,
            "only named files and the manifest"
        );
    }

    /// Files that trail by many records without key changes are brought
    /// up to date by a manifest alone, with no empty file.
    #[test]
    fn a_flush_without_key_changes_writes_only_the_manifest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = Arc::new(KeyStore::open(dir.path(), 3, None).expect("open"));
        let k = keys.clone();
        let flusher = std::thread::spawn(move || k.run_flusher());
        keys.start_at(0);
        let lsn = KEY_REPLAY_RECORDS_MAX;
        keys.publish(lsn, lsn, 7, Vec::new()).expect("publish");
        keys.durable(lsn);
        for _ in 0..500 {
            if keys.at().expect("at").lsn == lsn {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(keys.at().expect("at").lsn, lsn, "the manifest moved on");
        assert!(keys.files().files.is_empty());
        keys.stop();
        flusher.join().expect("flusher");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["MANIFEST"], "no run file was written");
    }
}
