//! A replica's index applier: the thread that indexes replicated frames
//! after the writer made them durable.
//!
//! On a replica the writer appends and fsyncs frames and answers at once
//! (so the follower acknowledges *durable* as soon as it is), then hands
//! the frames here. This thread indexes them, several appends per redb
//! transaction, and only then publishes them as visible (`durable_lsn`,
//! the *applied* watermark). Reads therefore never see a frame before it
//! is indexed, and indexing never delays durability.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::frame::FrameHeader;
use crate::index::{FrameToApply, Tables, apply_frame};
use crate::limits::{INDEX_SYNC_INTERVAL_MS, INDEX_SYNC_LOG_BYTES};
use crate::store::Inner;

/// Appends queued for indexing before the writer waits.
const QUEUE_JOBS_MAX: usize = 64;
/// Most appends indexed in one transaction.
const JOBS_PER_TXN_MAX: usize = 8;

/// Frames of one append: their bytes and where each was written.
pub(crate) struct ApplyJob {
    pub bytes: Vec<u8>,
    /// (offset in `bytes`, header, segment, file offset)
    pub frames: Vec<(usize, FrameHeader, u64, u64)>,
}

/// The handle the writer keeps. Dropping it lets the thread index what is
/// queued, make the index durable, and end; the drop waits for that, so a
/// closed store holds no thread (nor its files) any more.
pub(crate) struct Applier {
    tx: Option<SyncSender<ApplyJob>>,
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
        let (tx, rx) = sync_channel(QUEUE_JOBS_MAX);
        let thread = std::thread::Builder::new()
            .name("vigil-replica-apply".into())
            .spawn(move || run(&inner, &rx))?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues frames for indexing (blocks while the queue is full).
    pub(crate) fn submit(&self, job: ApplyJob) -> Result<()> {
        self.tx
            .as_ref()
            .ok_or(Error::Closed)?
            .send(job)
            .map_err(|_| Error::Poisoned("the replica index applier stopped".into()))
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
                    match inner
                        .index()
                        .begin_write(true)
                        .and_then(|t| Ok(t.commit()?))
                    {
                        Ok(()) => (unsynced, last_sync) = (0, Instant::now()),
                        Err(e) => return inner.poison(format!("replica index sync: {e}")),
                    }
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut jobs = vec![first];
        while jobs.len() < JOBS_PER_TXN_MAX {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let bytes: u64 = jobs.iter().map(|j| j.bytes.len() as u64).sum();
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
            }
            Err(e) => return inner.poison(format!("indexing replicated frames: {e}")),
        }
    }
    if unsynced > 0
        && let Err(e) = inner
            .index()
            .begin_write(true)
            .and_then(|t| Ok(t.commit()?))
    {
        inner.poison(format!("replica index sync: {e}"));
    }
}

/// Indexes every frame of `jobs` in one transaction; returns the last LSN.
fn apply(inner: &Inner, jobs: &[ApplyJob], durable: bool) -> Result<u64> {
    let tx = inner.index().begin_write(durable)?;
    let mut end = 0;
    {
        let mut tables = Tables::open(&tx)?;
        let extractor = inner.opts.extractor.as_ref();
        for job in jobs {
            for (pos, h, segment, offset) in &job.frames {
                apply_frame(
                    &mut tables,
                    &FrameToApply {
                        header: *h,
                        segment: *segment,
                        offset: *offset,
                        bytes: &job.bytes[*pos..*pos + h.frame_len() as usize],
                        keys: None,
                    },
                    extractor,
                    &inner.dicts,
                    crate::keys::extracts(extractor),
                )?;
                end = h.end_lsn() - 1;
            }
        }
        tables.finish()?;
    }
    tx.commit()?;
    Ok(end)
}
