//! The replica appender: frames a leader shipped, appended byte for byte
//! by the writer thread (which owns the active segment), and held back
//! from the index until the leader says they are durable there.
//!
//! A leader may ship a frame before its own fsync returns (synchronous
//! replication overlaps the two fsyncs). Such a frame is durable here but
//! *unconfirmed*: it is held, never indexed and never shown, until the
//! leader's durable end (`confirmed`) covers it. If the leader's machine
//! crashed and lost it, the follower cuts it (`drop_unconfirmed`), which
//! is allowed only while it is held. So a replica never shows a write its
//! leader could lose.
//!
//! **Invariant:** held frames are in log order, each durable here, none
//! visible; everything before the first held frame was released to the
//! applier. **Boundary:** the writer calls in on its own thread; nothing
//! here touches the leader's group commit.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::disk::ReserveGate;
use crate::error::{Error, Result};
use crate::index::apply::{Applier, ApplyJob};
use crate::limits::APPLY_QUEUE_REPLICA_BYTES_MAX;
use crate::log::active::ActiveLog;
use crate::log::files::sync_data;
use crate::log::segment::SEGMENT_HEADER_BYTES;
use crate::store::state::Inner;

/// A replica's appends in flight: frames durable here and held until the
/// leader confirms them.
#[derive(Default)]
pub(crate) struct ReplicaAppender {
    /// Appended frames past the leader's durable end as last heard
    /// (`confirmed`), durable here but not indexed yet, in log order.
    held: VecDeque<ApplyJob>,
    /// The leader's durable end as last heard.
    confirmed: u64,
    /// Frames were appended that may not be indexed yet: a local commit
    /// (a promoted replica) must let the index catch up first.
    unindexed: bool,
}

impl ReplicaAppender {
    /// Whether frames were appended since the last call (and forgets it):
    /// the caller drains the applier before relying on the index.
    pub(crate) fn take_unindexed(&mut self) -> bool {
        std::mem::take(&mut self.unindexed)
    }

    /// Appends frames received from the leader, unchanged: checks each
    /// (checksum, dense LSNs, epochs and timestamps never going back),
    /// writes them all, fsyncs once (and any segment sealed on the way),
    /// indexes them in one transaction and only then publishes the new
    /// durable LSN. Nothing is written unless every frame checks. A failed
    /// write fails only this call; a failed fsync poisons the store.
    pub(crate) fn append(
        &mut self,
        log: &mut ActiveLog,
        inner: &Inner,
        applier: &Applier,
        reserve: &mut ReserveGate,
        bytes: &[u8],
    ) -> Result<()> {
        if !inner.read_only.load(Ordering::Acquire) {
            return Err(Error::NotReplica);
        }
        let mut headers = Vec::new();
        let (mut pos, mut next, mut epoch, mut ts) = (0usize, log.next_lsn, log.epoch, log.last_ts);
        while pos < bytes.len() {
            let h = crate::log::frame::check_frame(&bytes[pos..]).map_err(|e| {
                Error::FrameRejected {
                    lsn: next,
                    reason: e.to_string(),
                }
            })?;
            let problem = if h.first_lsn != next {
                Some(format!(
                    "frame starts at lsn {}, expected {next}",
                    h.first_lsn
                ))
            } else if h.epoch < epoch {
                Some(format!("frame of epoch {} after epoch {epoch}", h.epoch))
            } else if h.timestamp_us < ts {
                Some(format!("frame time {} before {ts}", h.timestamp_us))
            } else {
                None
            };
            if let Some(p) = problem {
                return Err(Error::Discontinuous(p));
            }
            headers.push((pos, h));
            (next, epoch, ts) = (h.end_lsn(), h.epoch, h.timestamp_us);
            pos += h.frame_len() as usize;
        }
        if headers.is_empty() {
            return Ok(());
        }
        // A replica stops at the disk reserve as a leader's clients do:
        // it acknowledges nothing more (and falls behind, which its leader
        // records) until space is freed.
        reserve.admit(bytes.len() as u64)?;
        // Frames written before a failed write (a full disk when a new
        // segment is needed) are still made durable and indexed, so the
        // log and `next_lsn` never disagree; the error is returned after.
        let mut placed = Vec::with_capacity(headers.len());
        let mut failed = None;
        for (pos, h) in &headers {
            let before = log.appender.file();
            match log
                .appender
                .write(h, &bytes[*pos..*pos + h.frame_len() as usize])
            {
                Ok(at) => placed.push(at),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
            if !Arc::ptr_eq(&before.0, &log.appender.file().0) {
                // The write sealed the previous segment: make it durable too.
                sync_data(&before.0, &before.1).inspect_err(|e| inner.poison(e.to_string()))?;
            }
        }
        headers.truncate(placed.len());
        if let Some((_, last)) = headers.last() {
            (next, epoch, ts) = (last.end_lsn(), last.epoch, last.timestamp_us);
        } else {
            // Nothing placed: the loop ended at the first write, which failed.
            return Err(failed.expect("a frame is left unplaced only by a failed write"));
        }
        let (file, path) = log.appender.file();
        sync_data(&file, &path).inspect_err(|e| inner.poison(e.to_string()))?;
        // Durable now: the frames go to the applier (which makes them
        // visible once indexed), the log's end moves once they are queued.
        let last = headers[headers.len() - 1].1;
        log.next_lsn = next;
        log.last_ts = ts;
        if epoch > log.epoch {
            log.epoch = epoch;
            inner.log.epoch.store(epoch, Ordering::Release);
        }
        let frames = headers
            .iter()
            .zip(&placed)
            .map(|((pos, h), (seg, off))| (*pos, *h, *seg, *off))
            .collect();
        self.unindexed = true;
        let job = ApplyJob {
            bytes: bytes.to_vec(),
            frames,
            keys: None,
        };
        // Held until confirmed (the caller confirms what it heard with the
        // frames right after): the log's end moves now either way.
        applier.hold(&job, || inner.log.ends.set_durable(&last));
        self.held.push_back(job);
        failed.map_or(Ok(()), Err)
    }

    /// The leader's durable end moved to `lsn`: held frames through it go
    /// to the applier, in log order (a job that straddles it is split).
    pub(crate) fn confirm(&mut self, applier: &Applier, lsn: u64) {
        self.confirmed = self.confirmed.max(lsn);
        self.release_through(applier, self.confirmed);
    }

    /// Hands held frames through `lsn` to the applier.
    pub(crate) fn release_through(&mut self, applier: &Applier, lsn: u64) {
        while let Some(job) = self.held.front_mut() {
            let whole = job.last_lsn() <= lsn;
            let Some(part) = job.split_through(lsn) else {
                break;
            };
            applier.release(part, APPLY_QUEUE_REPLICA_BYTES_MAX);
            if !whole {
                break;
            }
            self.held.pop_front();
        }
    }

    /// Cuts the frames that end after `after`, all of which must be held
    /// (never shown) and in the active segment; the log then ends at the
    /// last frame before them. Refused otherwise, changing nothing.
    pub(crate) fn drop_unconfirmed(
        &mut self,
        log: &mut ActiveLog,
        inner: &Inner,
        after: u64,
    ) -> Result<()> {
        let refuse = |why: &str| {
            Err(Error::CannotCut {
                after,
                why: why.to_owned(),
            })
        };
        if !inner.read_only.load(Ordering::Acquire) {
            return Err(Error::NotReplica);
        }
        if after >= log.next_lsn - 1 {
            return Ok(());
        }
        // The first frame ending after `after`, among the held ones.
        let Some((j, f)) = self.held.iter().enumerate().find_map(|(j, job)| {
            job.frames
                .iter()
                .position(|(_, h, _, _)| h.end_lsn() - 1 > after)
                .map(|f| (j, f))
        }) else {
            return refuse("the frames after it were shown");
        };
        let (_, first, segment, offset) = self.held[j].frames[f];
        if first.first_lsn > after + 1 {
            return refuse("frames after it were shown");
        }
        if segment != log.appender.segment() {
            return refuse("the frames to cut begin in a sealed segment");
        }
        let kept_end = first.first_lsn - 1;
        let Some((h, kept_segment, kept_offset)) = inner.frame_placed(kept_end)? else {
            return refuse("nothing would be left of the log");
        };
        let kept = crate::log::ends::LogEnd {
            lsn: kept_end,
            epoch: h.epoch,
            crc: h.crc,
            timestamp_us: h.timestamp_us,
        };
        let cut = if offset == SEGMENT_HEADER_BYTES as u64 {
            // The cut frames fill the active segment: the one before it,
            // which ends with the kept frame, is active again.
            assert!(
                kept_segment < segment,
                "the kept frame is in an earlier segment"
            );
            log.appender
                .retreat(kept_segment, kept_offset + h.frame_len(), kept.crc)
        } else {
            log.appender.rewind(offset, kept.crc)
        };
        cut.inspect_err(|e| inner.poison(e.to_string()))?;
        self.held.truncate(j + 1);
        if let Some(job) = self.held.back_mut() {
            match job.split_through(kept_end) {
                Some(front) => *job = front,
                None => {
                    self.held.pop_back();
                }
            }
        }
        inner.index.backlog.forget_after(kept_end);
        inner.log.tail.clear();
        log.next_lsn = kept_end + 1;
        log.epoch = kept.epoch;
        log.last_ts = kept.timestamp_us;
        inner.log.epoch.store(kept.epoch, Ordering::Release);
        inner.log.ends.reset(kept);
        tracing::warn!(
            from_lsn = kept_end + 1,
            "cut frames the leader lost before it made them durable (never shown here)"
        );
        Ok(())
    }
}
