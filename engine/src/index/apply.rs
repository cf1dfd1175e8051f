//! The index applier: the thread that indexes frames after the writer made
//! them durable.
//!
//! The writer appends and fsyncs a frame and answers its committers at once
//! (on a replica: the follower acknowledges *durable* as soon as it is),
//! then hands the frame here. This thread indexes what is queued, many
//! frames per redb transaction, and only then publishes them as visible
//! (`visible_lsn`, the *applied* watermark). So neither redb's per-commit
//! work nor its periodic durable commits sit on the acknowledgement path.
//!
//! Reads stay linearizable through the read barrier in `Store`: a read
//! first waits until everything acknowledged before it began is visible.
//! The queue is bounded in bytes (`limits::APPLY_QUEUE_BYTES_MAX` for local
//! commits), so that wait is bounded too: when the index falls that far
//! behind, the writer waits. A replica's appends get a larger bound.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::index::backlog::Unindexed;
use crate::index::tables::{FrameToApply, Parts, Tables, apply_frame};
use crate::limits::{APPLY_TXN_BYTES_MAX, INDEX_SYNC_INTERVAL_MS, INDEX_SYNC_LOG_BYTES};
use crate::log::frame::FrameHeader;
use crate::store::state::Inner;

/// The secondary keys a committer extracted, per record of one frame
/// (`None` for a record whose keys the applier extracts itself).
pub(crate) type FrameKeys = Vec<Option<Vec<Vec<u8>>>>;

/// Frames of one append or commit: their bytes and where each was written.
pub(crate) struct ApplyJob {
    pub bytes: Vec<u8>,
    /// (offset in `bytes`, header, segment, file offset)
    pub frames: Vec<(usize, FrameHeader, u64, u64)>,
    /// Keys already extracted for the records of the job's only frame.
    pub keys: Option<FrameKeys>,
}

impl ApplyJob {
    /// Where each of the job's frames is, for the backlog.
    fn unindexed(&self) -> impl Iterator<Item = Unindexed> + '_ {
        self.frames
            .iter()
            .map(|(_, header, segment, offset)| Unindexed {
                header: *header,
                segment: *segment,
                offset: *offset,
            })
    }

    /// The last LSN of the job's last frame.
    pub(crate) fn last_lsn(&self) -> u64 {
        self.frames.last().map_or(0, |(_, h, _, _)| h.end_lsn() - 1)
    }

    /// Splits off, as a job of their own, the leading frames that end at
    /// or before `lsn`; `None` when the first frame ends after it. The
    /// frames left keep their order.
    pub(crate) fn split_through(&mut self, lsn: u64) -> Option<ApplyJob> {
        assert!(self.keys.is_none(), "only a replica's jobs are split");
        let k = self
            .frames
            .partition_point(|(_, h, _, _)| h.end_lsn() - 1 <= lsn);
        if k == 0 {
            return None;
        }
        if k == self.frames.len() {
            return Some(std::mem::replace(
                self,
                ApplyJob {
                    bytes: Vec::new(),
                    frames: Vec::new(),
                    keys: None,
                },
            ));
        }
        let cut = self.frames[k].0;
        let rest = self.bytes.split_off(cut);
        let head = std::mem::replace(&mut self.bytes, rest);
        let later = self.frames.split_off(k);
        let front = std::mem::replace(
            &mut self.frames,
            later
                .into_iter()
                .map(|(pos, h, seg, off)| (pos - cut, h, seg, off))
                .collect(),
        );
        Some(ApplyJob {
            bytes: head,
            frames: front,
            keys: None,
        })
    }
}

/// The handle the writer keeps. Dropping it lets the thread index what is
/// queued, make the index durable, and end; the drop waits for that, so a
/// closed store holds no thread (nor its files) any more.
pub(crate) struct Applier {
    inner: Arc<Inner>,
    tx: Option<Sender<ApplyJob>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Applier {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Applier {
    pub(crate) fn start(inner: Arc<Inner>) -> std::io::Result<Self> {
        let (tx, rx) = channel();
        let thread_inner = inner.clone();
        let thread = std::thread::Builder::new()
            .name("vigil-index-apply".into())
            .spawn(move || run(&thread_inner, &rx))?;
        Ok(Self {
            inner,
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues durable frames for indexing. Blocks while the backlog is
    /// over `bound` bytes (`limits::APPLY_QUEUE_BYTES_MAX` for local
    /// commits, `APPLY_QUEUE_REPLICA_BYTES_MAX` for appends). Never fails: the frames are durable already,
    /// so their writer acknowledges them; if the applier has stopped, the
    /// store is poisoned (reads and commits fail from then on) and the
    /// next open indexes them from the log. `queued` runs once
    /// the frames are in the backlog (so `read_log` finds them) and before
    /// the applier can index them: the writer moves the log's end there,
    /// which is then never behind the index nor ahead of what can be read.
    pub(crate) fn submit(&self, job: ApplyJob, bound: u64, queued: impl FnOnce()) {
        assert!(
            job.keys.is_none() || job.frames.len() == 1,
            "extracted keys belong to a job of one frame"
        );
        let backlog = &self.inner.index.backlog;
        backlog.wait_for_room(|| self.inner.check_alive().is_ok(), bound);
        backlog.add(job.bytes.len() as u64, job.unindexed());
        queued();
        self.send(job);
    }

    fn send(&self, job: ApplyJob) {
        if let Some(tx) = &self.tx
            && tx.send(job).is_err()
        {
            // The applier poisoned the store when it stopped.
            tracing::debug!("a durable frame was not queued: the index applier has stopped");
        }
    }

    /// Registers a replica's durable frames that must not be indexed yet
    /// (the leader has not confirmed them): `read_log` finds them, but
    /// they do not count against the backlog's bound until released.
    /// `queued` runs once they are registered, as with `submit`.
    pub(crate) fn hold(&self, job: &ApplyJob, queued: impl FnOnce()) {
        self.inner.index.backlog.add(0, job.unindexed());
        queued();
    }

    /// Queues a job registered with `hold` for indexing; blocks while the
    /// backlog is over `bound` bytes. Jobs are released in log order.
    pub(crate) fn release(&self, job: ApplyJob, bound: u64) {
        let backlog = &self.inner.index.backlog;
        backlog.wait_for_room(|| self.inner.check_alive().is_ok(), bound);
        backlog.add_bytes(job.bytes.len() as u64);
        self.send(job);
    }

    /// Waits until everything submitted is indexed and visible.
    pub(crate) fn drain(&self, through_lsn: u64) -> Result<()> {
        while self.inner.visible_lsn() < through_lsn {
            self.inner.check_alive()?;
            self.inner.wait_for_lsn(
                self.inner.visible_lsn(),
                Duration::from_millis(INDEX_SYNC_INTERVAL_MS),
            );
        }
        Ok(())
    }
}

fn run(inner: &Inner, rx: &Receiver<ApplyJob>) {
    let mut unsynced = 0u64;
    let mut last_sync = Instant::now();
    loop {
        let first = match rx.recv_timeout(Duration::from_millis(INDEX_SYNC_INTERVAL_MS)) {
            Ok(j) => j,
            Err(RecvTimeoutError::Timeout) => {
                if unsynced > 0 {
                    match sync_index(inner) {
                        Ok(()) => (unsynced, last_sync) = (0, Instant::now()),
                        Err(e) => return inner.poison(format!("index sync: {e}")),
                    }
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut bytes = first.bytes.len() as u64;
        let mut jobs = vec![first];
        while bytes < APPLY_TXN_BYTES_MAX {
            match rx.try_recv() {
                Ok(j) => {
                    bytes += j.bytes.len() as u64;
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        let due = unsynced + bytes >= INDEX_SYNC_LOG_BYTES
            || last_sync.elapsed() >= Duration::from_millis(INDEX_SYNC_INTERVAL_MS);
        match apply(inner, &jobs, due) {
            Ok(end) => {
                if due {
                    (unsynced, last_sync) = (0, Instant::now());
                } else {
                    unsynced += bytes;
                }
                inner.publish_lsn(end);
                inner.index.backlog.applied(bytes, end);
            }
            Err(e) => return inner.poison(format!("indexing frames: {e}")),
        }
    }
    if unsynced > 0
        && let Err(e) = sync_index(inner)
    {
        inner.poison(format!("index sync: {e}"));
    }
}

/// A durable redb commit of everything committed so far; the key runs
/// it covers may then be written to a key run file.
fn sync_index(inner: &Inner) -> Result<()> {
    let ix = inner.index.current();
    ix.begin_write(true)?.commit()?;
    ix.keys.durable(ix.state()?.applied_lsn);
    Ok(())
}

/// Indexes every frame of `jobs` in one transaction; returns the last LSN.
fn apply(inner: &Inner, jobs: &[ApplyJob], durable: bool) -> Result<u64> {
    crate::failpoint::check("index.apply").map_err(|e| Error::io("index frames", &inner.dir, e))?;
    let ix = inner.index.current();
    let tx = ix.begin_write(durable)?;
    let mut end = 0;
    {
        let mut tables = Tables::open(&ix, &tx)?;
        let extractor = inner.opts.extractor.as_ref();
        let parts = Parts {
            tables: true,
            keys: crate::index::keys::extracts(extractor),
        };
        for job in jobs {
            for (pos, h, segment, offset) in &job.frames {
                apply_frame(
                    &mut tables,
                    &FrameToApply {
                        header: *h,
                        segment: *segment,
                        offset: *offset,
                        bytes: &job.bytes[*pos..*pos + h.frame_len() as usize],
                        keys: job.keys.as_deref(),
                    },
                    extractor,
                    &inner.log.segments,
                    &inner.log.dicts,
                    parts,
                )?;
                end = h.end_lsn() - 1;
            }
        }
        tables.finish()?;
    }
    tx.commit()?;
    if durable {
        ix.keys.durable(end);
    }
    Ok(end)
}
