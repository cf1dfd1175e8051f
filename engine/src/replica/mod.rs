//! The log as replication sees it: whole frames read byte for byte from a
//! leader's segments, and appended unchanged to a replica's.
//!
//! The engine has no networking: `vigil-net` moves these bytes. What this
//! module guarantees is that a chunk holds only durable, checksummed,
//! consecutive frames, and that a replica appends only frames that
//! continue its log (dense LSNs, epochs and timestamps never going back).

pub(crate) mod append;
pub(crate) mod rejoin;

use std::sync::Arc;

use crate::crypt::DataKey;
use crate::error::{Error, Result};
use crate::index::tables::Snapshot;
use crate::log::chunk::{FrameFacts, LogChunk};
use crate::log::ends::{LogEnd, LogEndListener, LogTip};
use crate::log::frame::{
    FRAME_HEADER_BYTES, FrameHeader, check_frame, decode_records, parse_header,
};
use crate::store::Store;
use crate::store::state::Inner;
use crate::write::writer::{Control, Reply, Request};

/// Most frames read per chunk.
const CHUNK_FRAMES_MAX: usize = 4096;

/// The frames of a log in order; see [`Store::log_frames`].
#[derive(Debug)]
pub struct LogFrames<'a> {
    store: &'a Store,
    next_lsn: u64,
    chunk: Vec<u8>,
    pos: usize,
}

/// Bytes read per chunk by [`LogFrames`].
const LOG_FRAMES_CHUNK_BYTES: usize = 4 * 1024 * 1024;

impl Iterator for LogFrames<'_> {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.chunk.len() {
            match self.store.read_log(self.next_lsn, LOG_FRAMES_CHUNK_BYTES) {
                Ok(Some(c)) => {
                    self.next_lsn = c.end_lsn;
                    self.chunk = c.bytes;
                    self.pos = 0;
                }
                Ok(None) => return None,
                Err(e) => {
                    self.chunk.clear();
                    self.pos = 0;
                    self.next_lsn = u64::MAX;
                    return Some(Err(e));
                }
            }
        }
        // read_log checked every frame of the chunk.
        let h = parse_header(&self.chunk[self.pos..]).ok()?;
        let end = self.pos + h.frame_len() as usize;
        let frame = self.chunk[self.pos..end].to_vec();
        self.pos = end;
        Some(Ok(frame))
    }
}

/// Where a replica's log stands against a leader's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogPosition {
    /// The replica's log is a prefix of this one: send from `next_lsn`.
    Prefix {
        /// The first LSN the replica lacks.
        next_lsn: u64,
    },
    /// The logs differ: they agree up to `agree_until` (inclusive) at most.
    Diverged {
        /// The last LSN both logs may share.
        agree_until: u64,
    },
    /// This log no longer holds the frames the replica needs.
    Gone,
}

impl Store {
    /// Reads whole frames starting with the one whose first LSN is
    /// `from_lsn`, at most `max_bytes` (but always one whole frame), never
    /// past a segment's end or the durable end of the log. Every frame's
    /// checksum is verified before it is returned. `Ok(None)` when
    /// `from_lsn` is past the durable end.
    pub fn read_log(&self, from_lsn: u64, max_bytes: usize) -> Result<Option<LogChunk>> {
        let durable = self.log_end().lsn;
        if from_lsn == 0 || from_lsn > durable {
            return Ok(None);
        }
        let frames = self.inner.frames_from(from_lsn, CHUNK_FRAMES_MAX)?;
        let Some(&(first, seg, off)) = frames.first() else {
            return Err(Error::NotAFrameStart {
                lsn: from_lsn,
                why: "it is not in this log".into(),
            });
        };
        if first != from_lsn {
            return Err(Error::NotAFrameStart {
                lsn: from_lsn,
                why: format!("it is inside the frame starting at lsn {first}"),
            });
        }
        let frames = frames.into_iter().take_while(|(_, s, _)| *s == seg);
        // Lengths follow from the headers; read them one by one only as
        // far as the budget reaches.
        let mut end_off = off;
        let mut end_lsn = first;
        let mut count = 0u32;
        for (lsn, _, at) in frames {
            if lsn > durable || at != end_off {
                break;
            }
            let head = self
                .inner
                .log
                .segments
                .read_at(seg, at, FRAME_HEADER_BYTES)?;
            let h: FrameHeader = parse_header(&head).map_err(|e| Error::ChecksumMismatch {
                segment: self.inner.log.segments.path_of(seg),
                offset: at,
                detail: e.to_string(),
            })?;
            if count > 0 && (end_off - off + h.frame_len()) as usize > max_bytes {
                break;
            }
            end_off = at + h.frame_len();
            end_lsn = h.end_lsn();
            count += 1;
        }
        let bytes = self
            .inner
            .log
            .segments
            .read_at(seg, off, (end_off - off) as usize)?;
        let mut pos = 0usize;
        let mut facts = FrameFacts::default();
        while pos < bytes.len() {
            let bad = |detail: String| Error::ChecksumMismatch {
                segment: self.inner.log.segments.path_of(seg),
                offset: off + pos as u64,
                detail,
            };
            let h = check_frame(&bytes[pos..]).map_err(|e| bad(e.to_string()))?;
            let payload = &bytes[pos + FRAME_HEADER_BYTES..pos + h.frame_len() as usize];
            for (_, rec, _) in decode_records(&h, payload).map_err(|e| bad(e.to_string()))? {
                facts.note(&rec);
            }
            pos += h.frame_len() as usize;
        }
        Ok(Some(LogChunk {
            first_lsn: first,
            end_lsn,
            frames: count,
            bytes,
            raw_bytes: facts.raw_bytes,
            data_keys: self.data_keys_for(&facts.key_ids)?,
        }))
    }

    /// [`Store::read_log`] for the newest frames only: the chunk when the
    /// frames from `from_lsn` are among those this store wrote last and
    /// still holds in memory, `None` otherwise (read them with `read_log`).
    /// Never touches the disk and never waits, so an async task may call
    /// it. A chunk from memory is what was written; unlike one read back
    /// from disk, its checksums are not verified again.
    ///
    /// No frame past `through_lsn` is returned. Unlike `read_log`, it may
    /// return frames not yet durable here: up to the written end
    /// ([`LogTip::written_lsn`]), so a leader ships a frame while its own
    /// fsync runs. A replica must not make such frames visible before the
    /// leader's durable end covers them (see [`Store::append_log_with`]):
    /// a leader whose machine crashes before the fsync may come back
    /// without them. Pass the durable end as `through_lsn` for durable
    /// frames only.
    pub fn read_log_recent(
        &self,
        from_lsn: u64,
        max_bytes: usize,
        through_lsn: u64,
    ) -> Option<LogChunk> {
        let end = self.inner.log.ends.tip().written_lsn.min(through_lsn);
        if from_lsn == 0 || from_lsn > end {
            return None;
        }
        let (mut chunk, key_ids) = self.inner.log.tail.read(from_lsn, max_bytes, end)?;
        // Keys are durable here before anything sealed under them is
        // written, so every id a frame names is held.
        chunk.data_keys = self.data_keys_for(&key_ids).ok()?;
        Some(chunk)
    }

    /// The data keys with these ids, unwrapped, for a follower.
    fn data_keys_for(&self, ids: &[u64]) -> Result<Vec<(u64, DataKey)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self
            .inner
            .log
            .dicts
            .keys()
            .ok_or_else(|| Error::KeyNeeded {
                dir: self.inner.dir.clone(),
            })?;
        ids.iter()
            .map(|id| {
                keys.export(*id).map(|k| (*id, k)).ok_or_else(|| {
                    Error::Corrupt(format!(
                        "the log names data key {id:016x}, which is not held"
                    ))
                })
            })
            .collect()
    }

    /// Takes data keys a leader sent with its log (each wrapped under this
    /// store's own key-encryption key and made durable before this
    /// returns), so that the frames sealed under them can be appended.
    /// A store that is not encrypted cannot hold an encrypted log:
    /// [`Error::KeyNeeded`].
    pub fn import_data_keys(&self, keys: &[(u64, DataKey)]) -> Result<()> {
        self.inner.check_alive()?;
        let mine = self
            .inner
            .log
            .dicts
            .keys()
            .ok_or_else(|| Error::KeyNeeded {
                dir: self.inner.dir.clone(),
            })?;
        for (id, key) in keys {
            mine.import(*id, key.clone())?;
        }
        Ok(())
    }

    /// Every durable frame of the log from the first, in order, each as
    /// its bytes on disk (checked), read a chunk at a time: for comparing
    /// two logs, verifying a copy, or copying one.
    pub fn log_frames(&self) -> LogFrames<'_> {
        LogFrames {
            store: self,
            next_lsn: 1,
            chunk: Vec::new(),
            pos: 0,
        }
    }

    /// The header of the durable frame holding `lsn` (for its commit time
    /// and epoch), if the log has it.
    pub fn frame_at(&self, lsn: u64) -> Result<Option<FrameHeader>> {
        self.inner.frame_at(lsn)
    }

    /// The header of the frame that ends exactly at `lsn`, if this log has
    /// one (a replica's last frame, to compare with the leader's).
    pub fn frame_ending_at(&self, lsn: u64) -> Result<Option<FrameHeader>> {
        Ok(self.frame_at(lsn)?.filter(|h| h.end_lsn() == lsn + 1))
    }

    /// Where a replica whose log ends at `last_lsn` with a frame whose CRC
    /// is `last_crc`, written in `last_epoch`, stands against this log.
    /// Like Kafka's leader epochs: the logs can only agree up to the end
    /// of the replica's last epoch as this log records it.
    pub fn position_of(
        &self,
        last_epoch: u64,
        last_lsn: u64,
        last_crc: u32,
    ) -> Result<LogPosition> {
        if last_lsn == 0 {
            return Ok(LogPosition::Prefix { next_lsn: 1 });
        }
        if let Some(h) = self.frame_ending_at(last_lsn)?
            && h.crc == last_crc
            && h.epoch == last_epoch
        {
            return Ok(LogPosition::Prefix {
                next_lsn: last_lsn + 1,
            });
        }
        let epochs = self.epochs()?;
        if epochs.first().is_some_and(|(_, lsn)| *lsn > 1) {
            return Ok(LogPosition::Gone);
        }
        // The end of the replica's epoch here: just before the next epoch began.
        let end_of_epoch = epochs
            .iter()
            .find(|(e, _)| *e > last_epoch)
            .map_or(self.log_end().lsn, |(_, lsn)| lsn - 1);
        let agree_until = end_of_epoch.min(last_lsn).saturating_sub(
            // Same LSN, same epoch, different bytes: they differ there too.
            u64::from(end_of_epoch >= last_lsn),
        );
        Ok(LogPosition::Diverged { agree_until })
    }

    /// The durable end of the log. On a replica this is what has been
    /// appended and fsynced, which the index (and so [`Store::last_lsn`])
    /// reaches a moment later. It is never behind anything a read can see
    /// (it moves before the index makes a frame visible), so a read
    /// followed by `log_end` bounds the LSNs of what it returned.
    pub fn log_end(&self) -> LogEnd {
        self.inner.log.ends.durable()
    }

    /// The written and the durable end of the log (see [`LogTip`]).
    pub fn log_tip(&self) -> LogTip {
        self.inner.log.ends.tip()
    }

    /// Registers `f` to be called with the log's ends ([`LogTip`]) each
    /// time one moves, until the returned listener is dropped: when the
    /// writer has written a frame (before its fsync) and when a frame is
    /// durable. `f` runs on the thread that moved the end (the writer's),
    /// before a commit in that frame is acknowledged, under the lock that
    /// guards the ends: it must be quick (hand the value to a channel) and
    /// must not call into the store. Ends come in order. For replication,
    /// which ships a frame as soon as it is written.
    /// At most [`LOG_END_LISTENERS_MAX`] at once.
    pub fn on_log_end(&self, f: impl Fn(LogTip) + Send + Sync + 'static) -> Result<LogEndListener> {
        self.inner.log.ends.listen(Arc::new(f))
    }

    /// Appends frames read from the leader's log ([`Store::read_log`]),
    /// unchanged, and returns the new durable end of the log. They must
    /// continue this log exactly; every checksum is verified before
    /// anything is written; the call returns after one fsync. The frames
    /// become visible (indexed, [`Store::last_lsn`]) shortly after, on the
    /// replica's applier thread. Only a replica
    /// ([`Options::replica`](crate::Options)) accepts them. They are
    /// visible once indexed, without waiting for a confirmation (see
    /// [`Store::append_log_with`]).
    pub fn append_log(&self, frames: Vec<u8>) -> Result<u64> {
        let (reply, rx) = std::sync::mpsc::sync_channel(1);
        self.send(Request::Control {
            op: Control::Append {
                frames,
                confirmed: u64::MAX,
            },
            reply: Reply::Channel(reply),
        })?;
        self.wait(rx)?;
        Ok(self.log_end().lsn)
    }

    /// Like [`Store::append_log`], but returns at once and calls `done`
    /// with the new durable end of the log, or the error, once the frames
    /// are fsynced (on the writer's thread, so `done` must be quick: hand
    /// the result to a channel). For async followers, which must not park
    /// a thread per append. `done` is called exactly once unless this
    /// returns an error, in which case it is never called.
    ///
    /// `confirmed` is the leader's durable end as last heard: frames past
    /// it are written and fsynced (and count in the durable end) but are
    /// neither indexed nor visible until [`Store::confirm_log`] (or a later
    /// append) confirms them, because a leader that shipped them before its
    /// own fsync may lose them in a crash of its machine. A store that
    /// takes local commits again (a promotion) first makes them all
    /// visible: they are its log now. A reopened store indexes its whole
    /// log.
    pub fn append_log_with(
        &self,
        frames: Vec<u8>,
        confirmed: u64,
        done: impl FnOnce(Result<LogEnd>) + Send + 'static,
    ) -> Result<()> {
        let inner = self.inner.clone();
        self.send(Request::Control {
            op: Control::Append { frames, confirmed },
            reply: Reply::Callback(Box::new(move |r: Result<()>| {
                done(r.map(|()| inner.log.ends.durable()));
            })),
        })
    }

    /// Cuts the frames after `after_lsn` that this replica holds
    /// unconfirmed (see [`Store::append_log_with`]): its leader came back
    /// from a crash of its machine without frames it had shipped before
    /// its fsync, and said so by answering that the logs diverged after
    /// `after_lsn`. A frame holding `after_lsn` goes whole. The bytes are
    /// zeroed and fsynced, so a restart does not find them again. Refused
    /// (changing nothing) when any frame to cut was shown or indexed (after
    /// a restart, say) or they begin in a sealed segment: then the store
    /// must be closed and cut with [`Store::cut_log`], which keeps what it
    /// cuts in quarantine. Returns the new durable end.
    pub fn drop_unconfirmed(&self, after_lsn: u64) -> Result<LogEnd> {
        let (reply, rx) = std::sync::mpsc::sync_channel(1);
        self.send(Request::Control {
            op: Control::DropUnconfirmed(after_lsn),
            reply: Reply::Channel(reply),
        })?;
        self.wait(rx)?;
        Ok(self.log_end())
    }

    /// Makes frames appended through `lsn` visible: the leader's durable
    /// end moved there (see [`Store::append_log_with`]). Returns at once;
    /// the writer confirms in order with the appends.
    pub fn confirm_log(&self, lsn: u64) -> Result<()> {
        self.send(Request::Control {
            op: Control::Confirm(lsn),
            reply: Reply::Callback(Box::new(|_: Result<()>| {})),
        })
    }
}

impl Inner {
    /// The header of the durable frame holding `lsn` (for its commit time
    /// and epoch), if the log has it.
    pub(crate) fn frame_at(&self, lsn: u64) -> Result<Option<FrameHeader>> {
        Ok(self.frame_placed(lsn)?.map(|(h, _, _)| h))
    }

    /// [`Inner::frame_at`] with where the frame is: (header, segment, file
    /// offset).
    pub(crate) fn frame_placed(&self, lsn: u64) -> Result<Option<(FrameHeader, u64, u64)>> {
        if lsn == 0 || lsn > self.log.ends.durable().lsn {
            return Ok(None);
        }
        let Some(&(first, seg, off)) = self.frames_from(lsn, 1)?.first() else {
            return Ok(None);
        };
        let head = self.log.segments.read_at(seg, off, FRAME_HEADER_BYTES)?;
        let h = parse_header(&head).map_err(|e| Error::ChecksumMismatch {
            segment: self.log.segments.path_of(seg),
            offset: off,
            detail: e.to_string(),
        })?;
        assert_eq!(h.first_lsn, first, "the index places frames where they are");
        Ok(Some((h, seg, off)))
    }

    /// Where the durable frames are, from the one holding `lsn` on, in log
    /// order: `(first LSN, segment, file offset)`, at most `max`. Frames
    /// the index has not applied yet come from the applier's backlog, so
    /// the leader ships a frame as soon as it is durable, not once indexed.
    pub(crate) fn frames_from(&self, lsn: u64, max: usize) -> Result<Vec<(u64, u64, u64)>> {
        let at = |f: &crate::index::backlog::Unindexed| (f.header.first_lsn, f.segment, f.offset);
        // The backlog first, the index after: a frame leaves the backlog
        // only once indexed, so between the two every frame is seen.
        let pending = self.index.backlog.frames_from(lsn, max);
        if pending.first().is_some_and(|f| f.header.first_lsn <= lsn) {
            return Ok(pending.iter().map(at).collect());
        }
        let snap = Snapshot::new(&self.index.current())?;
        let Some(first) = snap.frame_holding(lsn)? else {
            return Ok(Vec::new());
        };
        let mut out = vec![first];
        out.extend(snap.frames_after(first.0, max.saturating_sub(1))?);
        let indexed_to = out.last().map_or(0, |f| f.0);
        out.extend(
            pending
                .iter()
                .filter(|f| f.header.first_lsn > indexed_to)
                .map(at),
        );
        out.truncate(max);
        Ok(out)
    }
}
