//! The newest frames this store wrote, kept in memory, so replication
//! ships the live tail without a disk read or a blocking thread.
//!
//! A follower that keeps up asks for the frames just written. Reading them
//! back from the segment (through the index or the applier's backlog, a
//! header read per frame, a checksum pass) costs a blocking thread's
//! round trip for every commit group, on the synchronous commit's critical
//! path. The writer puts each frame here once it is written, before its
//! fsync and before the log's written end moves past it, so a leader ships
//! the frame while it fsyncs; a read that finds its frames here copies them.
//!
//! Guarantees: the frames held are consecutive (a frame that does not
//! continue the last one, after a truncation or frames appended from
//! another log, empties the tail first), hold at most
//! [`TAIL_BYTES_MAX`](crate::limits::TAIL_BYTES_MAX) bytes, and a read
//! never returns a frame past the end it is given. A read that
//! cannot be served whole from here returns `None`, and the caller reads
//! the segments instead.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::limits::TAIL_BYTES_MAX;
use crate::log::chunk::{FrameFacts, LogChunk};
use crate::log::frame::FrameHeader;

/// One frame, as written.
#[derive(Debug)]
struct Held {
    header: FrameHeader,
    segment: u64,
    bytes: Vec<u8>,
    /// Its body bytes before compression, and the data keys it uses.
    facts: FrameFacts,
}

/// The newest frames (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct Tail {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Held>,
    bytes: usize,
}

impl Tail {
    /// Adds a frame the writer just wrote in `segment`. Call it before the
    /// log's written end moves past the frame.
    pub(crate) fn push(&self, header: FrameHeader, segment: u64, frame: &[u8], facts: FrameFacts) {
        debug_assert_eq!(frame.len() as u64, header.frame_len());
        let mut s = self.lock();
        if s.frames
            .back()
            .is_some_and(|last| last.header.end_lsn() != header.first_lsn)
        {
            s.frames.clear();
            s.bytes = 0;
        }
        if frame.len() > TAIL_BYTES_MAX {
            // Larger than the whole tail: readers go to disk for it.
            s.frames.clear();
            s.bytes = 0;
            return;
        }
        while s.bytes + frame.len() > TAIL_BYTES_MAX {
            let Some(old) = s.frames.pop_front() else {
                break;
            };
            s.bytes -= old.bytes.len();
        }
        s.bytes += frame.len();
        s.frames.push_back(Held {
            header,
            segment,
            bytes: frame.to_vec(),
            facts,
        });
    }

    /// Forgets every frame (the log was cut).
    pub(crate) fn clear(&self) {
        let mut s = self.lock();
        s.frames.clear();
        s.bytes = 0;
    }

    /// The frames from the one starting at `from_lsn`, as
    /// [`Store::read_log`](crate::Store::read_log) would read them: whole
    /// frames of one segment, at most `max_bytes` (but always one frame),
    /// none past `end_lsn`, with the ids of the data keys they seal under
    /// (the chunk's `data_keys` is left for the store to fill). `None` when
    /// the first of them is not here.
    pub(crate) fn read(
        &self,
        from_lsn: u64,
        max_bytes: usize,
        end_lsn: u64,
    ) -> Option<(LogChunk, Vec<u64>)> {
        let s = self.lock();
        let first = s.frames.front()?.header.first_lsn;
        if from_lsn < first {
            return None;
        }
        // Consecutive frames: find the one starting at `from_lsn` by
        // bisecting on first LSNs.
        let i = s.frames.partition_point(|f| f.header.first_lsn < from_lsn);
        let start = s.frames.get(i)?;
        if start.header.first_lsn != from_lsn || start.header.end_lsn() - 1 > end_lsn {
            return None;
        }
        let mut chunk = LogChunk {
            first_lsn: from_lsn,
            end_lsn: from_lsn,
            frames: 0,
            bytes: Vec::new(),
            raw_bytes: 0,
            data_keys: Vec::new(),
        };
        let mut facts = FrameFacts::default();
        for f in s.frames.range(i..) {
            let fits = chunk.frames == 0 || chunk.bytes.len() + f.bytes.len() <= max_bytes;
            if f.segment != start.segment || f.header.end_lsn() - 1 > end_lsn || !fits {
                break;
            }
            debug_assert_eq!(
                f.header.first_lsn, chunk.end_lsn,
                "held frames are consecutive"
            );
            chunk.bytes.extend_from_slice(&f.bytes);
            chunk.end_lsn = f.header.end_lsn();
            chunk.frames += 1;
            facts.merge(&f.facts);
        }
        chunk.raw_bytes = facts.raw_bytes;
        Some((chunk, facts.key_ids))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::frame::{encode_frame, parse_header};

    fn frame(first_lsn: u64, count: u32, payload_len: usize) -> (FrameHeader, Vec<u8>) {
        let f = encode_frame(first_lsn, count, 1, first_lsn, &vec![7u8; payload_len]);
        (parse_header(&f).expect("header"), f)
    }

    #[test]
    fn reads_consecutive_frames_of_one_segment_up_to_the_end_given() {
        let t = Tail::default();
        let mut lsn = 1;
        for (seg, n) in [(1, 2u32), (1, 3), (1, 1), (2, 2), (2, 1)] {
            let (h, f) = frame(lsn, n, 100);
            t.push(
                h,
                seg,
                &f,
                FrameFacts {
                    raw_bytes: 10 * u64::from(n),
                    key_ids: vec![seg],
                },
            );
            lsn = h.end_lsn();
        }
        // LSNs: [1,2] [3,4,5] [6] in segment 1, [7,8] [9] in segment 2.
        let (c, keys) = t.read(3, usize::MAX, 100).expect("held");
        assert_eq!(
            (c.first_lsn, c.end_lsn, c.frames, c.raw_bytes),
            (3, 7, 2, 40)
        );
        assert_eq!(keys, [1], "each key once");
        let (c, _) = t.read(7, usize::MAX, 8).expect("held");
        assert_eq!(
            (c.first_lsn, c.end_lsn, c.frames),
            (7, 9, 1),
            "not past the end given, 8"
        );
        assert!(
            t.read(9, usize::MAX, 8).is_none(),
            "frame 9 is past the end given"
        );
        let (one, _) = t.read(1, 1, 100).expect("held");
        assert_eq!(one.frames, 1, "always one whole frame");
        assert!(t.read(2, usize::MAX, 100).is_none(), "not a frame boundary");
        assert!(t.read(10, usize::MAX, 100).is_none(), "not written yet");
    }

    #[test]
    fn a_frame_that_does_not_continue_the_tail_empties_it() {
        let t = Tail::default();
        let (h1, f1) = frame(1, 5, 50);
        t.push(h1, 1, &f1, FrameFacts::default());
        // The log was truncated to LSN 2 and written again from 3.
        let (h2, f2) = frame(3, 1, 50);
        t.push(h2, 1, &f2, FrameFacts::default());
        assert!(
            t.read(1, usize::MAX, 100).is_none(),
            "the old frame is gone"
        );
        let (c, _) = t.read(3, usize::MAX, 100).expect("held");
        assert_eq!(c.bytes, f2);
    }

    #[test]
    fn holds_at_most_the_byte_cap_dropping_the_oldest() {
        let t = Tail::default();
        let mut lsn = 1;
        let per = 64 * 1024;
        for _ in 0..(2 * TAIL_BYTES_MAX / per) {
            let (h, f) = frame(lsn, 1, per);
            t.push(h, 1, &f, FrameFacts::default());
            lsn = h.end_lsn();
        }
        assert!(t.lock().bytes <= TAIL_BYTES_MAX);
        assert!(
            t.read(1, usize::MAX, lsn).is_none(),
            "the oldest were dropped"
        );
        assert!(
            t.read(lsn - 1, usize::MAX, lsn).is_some(),
            "the newest is held"
        );
        let (h, f) = frame(lsn, 1, TAIL_BYTES_MAX + 1);
        t.push(h, 1, &f, FrameFacts::default());
        assert!(
            t.lock().frames.is_empty(),
            "a frame larger than the cap is not held"
        );
    }
}
