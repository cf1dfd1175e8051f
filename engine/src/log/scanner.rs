//! A segment scanned as it is read: the scan of
//! [`scan_segment`](super::segment::scan_segment) with about one frame in
//! memory instead of the whole file, through one buffer reused from frame
//! to frame. Opening a store checks its newest segments in full; read
//! whole, each took a fresh allocation of up to 64 MiB that the kernel
//! first zeroes and then copies into, page by page.
//!
//! The streamed scan covers what an open meets: frames to the end of the
//! file, or to the zeros of its preallocated end. Anything else (a torn or
//! damaged frame) is left to the whole-file scan, which also looks past
//! the damage for a valid frame.

use std::io::Read;

use super::frame::{FRAME_HEADER_BYTES, parse_header};
use super::segment::{
    SEGMENT_HEADER_BYTES, ScanStop, ScannedFrame, SegmentHeader, SegmentScan, check_next_frame,
};

/// Bytes read at a time (a frame is written at about 4 MiB; a larger one
/// grows the buffer to its size).
pub(crate) const SCAN_CHUNK_BYTES: usize = 4 << 20;

/// The scan of the segment `r` reads (`len` bytes long): the same
/// [`SegmentScan`] as [`scan_segment`](super::segment::scan_segment) of
/// its bytes when it holds only frames, or frames and then zeros. `None`
/// when its header does not decode or a frame is bad with nonzero bytes
/// at or after it: scan the whole segment to learn more.
pub(crate) fn scan_segment_stream(
    r: &mut impl Read,
    len: u64,
) -> std::io::Result<Option<SegmentScan>> {
    let mut w = Window::new(r, len);
    w.fill(SEGMENT_HEADER_BYTES)?;
    let Ok(header) = SegmentHeader::decode(w.bytes()) else {
        return Ok(None);
    };
    w.consume(SEGMENT_HEADER_BYTES);
    let mut frames = Vec::new();
    let mut pos = SEGMENT_HEADER_BYTES as u64;
    let (mut next_lsn, mut last_epoch, mut last_ts) = (header.first_lsn, 0u64, 0u64);
    let mut stop = None;
    loop {
        w.fill(FRAME_HEADER_BYTES)?;
        if w.bytes().is_empty() {
            break;
        }
        // A header that parses names the frame's length: have it whole.
        if let Ok(h) = parse_header(w.bytes()) {
            w.fill(usize::try_from(h.frame_len()).unwrap_or(usize::MAX))?;
        }
        match check_next_frame(w.bytes(), next_lsn, last_epoch, last_ts) {
            Ok(h) => {
                frames.push(ScannedFrame {
                    offset: pos,
                    header: h,
                });
                next_lsn = h.end_lsn();
                last_epoch = h.epoch;
                last_ts = h.timestamp_us;
                pos += h.frame_len();
                w.consume(h.frame_len() as usize);
            }
            Err(error) => {
                if !w.rest_is_zero()? {
                    return Ok(None);
                }
                stop = Some(ScanStop {
                    offset: pos,
                    error,
                    valid_frame_after: false,
                    zero_tail: true,
                });
                break;
            }
        }
    }
    Ok(Some(SegmentScan {
        header,
        frames,
        valid_len: pos,
        stop,
    }))
}

/// Alignment of reads from a file opened with `O_DIRECT`: memory, file
/// offset and length (the largest logical block size in use).
pub(crate) const DIRECT_ALIGN: usize = 4096;

/// The part of a file read but not yet consumed: `lo..hi` of the region
/// of `buf` that starts at the aligned `at`. Reads go to the end of what
/// is held, which is kept at an aligned position, so a file opened with
/// `O_DIRECT` can be read through it too (every read then a whole number
/// of blocks at a block-aligned offset, the last one cut by the file's
/// end).
struct Window<'r, R> {
    r: &'r mut R,
    buf: Vec<u8>,
    at: usize,
    /// Bytes of the region from `at` (a multiple of the alignment).
    cap: usize,
    lo: usize,
    hi: usize,
    /// Bytes of the file not yet read (the buffer never grows much past
    /// what is left to read).
    unread: u64,
}

impl<'r, R: Read> Window<'r, R> {
    fn new(r: &'r mut R, len: u64) -> Self {
        let mut w = Self {
            r,
            buf: Vec::new(),
            at: 0,
            cap: 0,
            lo: 0,
            hi: 0,
            unread: len,
        };
        w.regrow(0);
        w
    }

    /// Moves what is held so that its end is aligned, into a region of at
    /// least `want` bytes beyond its start and one chunk (or what is left
    /// of the file) of room after it: a new buffer when this one is too
    /// small.
    fn regrow(&mut self, want: usize) {
        let held = self.hi - self.lo;
        let lo = (DIRECT_ALIGN - held % DIRECT_ALIGN) % DIRECT_ALIGN;
        let left = usize::try_from(self.unread)
            .unwrap_or(usize::MAX)
            .next_multiple_of(DIRECT_ALIGN);
        let room = want.saturating_sub(held).max(SCAN_CHUNK_BYTES).min(left);
        let cap = (lo + held + room).next_multiple_of(DIRECT_ALIGN);
        if cap > self.cap {
            let mut buf = vec![0u8; cap + DIRECT_ALIGN];
            let at = buf.as_ptr().align_offset(DIRECT_ALIGN);
            assert!(at < DIRECT_ALIGN, "a byte buffer can be aligned");
            let from = self.at + self.lo;
            buf[at + lo..at + lo + held].copy_from_slice(&self.buf[from..from + held]);
            (self.buf, self.at, self.cap) = (buf, at, cap);
        } else {
            let from = self.at + self.lo;
            self.buf.copy_within(from..from + held, self.at + lo);
        }
        (self.lo, self.hi) = (lo, lo + held);
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.at + self.lo..self.at + self.hi]
    }

    fn consume(&mut self, n: usize) {
        assert!(n <= self.hi - self.lo, "consumed more than was read");
        self.lo += n;
    }

    /// Reads until `want` bytes are held or the file ends.
    fn fill(&mut self, want: usize) -> std::io::Result<()> {
        while self.hi - self.lo < want && self.unread > 0 {
            if self.cap - self.lo < want || self.hi == self.cap {
                self.regrow(want);
            }
            // Whole blocks, as far as the file goes (rounded up: the
            // kernel stops at its end).
            let left = usize::try_from(self.unread)
                .unwrap_or(usize::MAX)
                .next_multiple_of(DIRECT_ALIGN);
            let len = (self.cap - self.hi).min(left);
            let start = self.at + self.hi;
            let n = match self.r.read(&mut self.buf[start..start + len]) {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("the segment ended {} bytes early", self.unread),
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            // (A direct read ends off a block only at the file's end.)
            self.hi += n;
            self.unread = self.unread.saturating_sub(n as u64);
        }
        Ok(())
    }

    /// Whether every byte not yet consumed, to the end of the file, is
    /// zero (reads, and consumes, as far as it needs to know).
    fn rest_is_zero(&mut self) -> std::io::Result<bool> {
        loop {
            if self.bytes().iter().any(|b| *b != 0) {
                return Ok(false);
            }
            self.lo = self.hi;
            if self.unread == 0 {
                return Ok(true);
            }
            self.fill(1)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::frame::{FrameHeader, encode_frame};
    use crate::log::segment::scan_segment;
    use proptest::prelude::*;

    /// A segment of `frames` frames of `payload` bytes each (the last
    /// `zeros` bytes preallocated space).
    fn segment(frames: usize, payload: usize, zeros: usize) -> Vec<u8> {
        let mut out = SegmentHeader {
            first_lsn: 10,
            prev_tail_crc: 7,
        }
        .encode()
        .to_vec();
        let mut lsn = 10;
        for i in 0..frames {
            let body: Vec<u8> = (0..payload).map(|j| (i * 31 + j) as u8).collect();
            let f = encode_frame(lsn, 1, 1, 1_000 + i as u64, &body);
            let h: FrameHeader = parse_header(&f).expect("header");
            lsn = h.end_lsn();
            out.extend_from_slice(&f);
        }
        out.resize(out.len() + zeros, 0);
        out
    }

    fn same(a: &SegmentScan, b: &SegmentScan) {
        assert_eq!(a.header, b.header);
        assert_eq!(a.valid_len, b.valid_len);
        let offsets = |s: &SegmentScan| -> Vec<(u64, FrameHeader)> {
            s.frames.iter().map(|f| (f.offset, f.header)).collect()
        };
        assert_eq!(offsets(a), offsets(b));
        match (&a.stop, &b.stop) {
            (None, None) => {}
            (Some(x), Some(y)) => {
                assert_eq!(
                    (x.offset, x.zero_tail, x.valid_frame_after),
                    (y.offset, y.zero_tail, y.valid_frame_after)
                );
                assert_eq!(x.error.to_string(), y.error.to_string());
            }
            (x, y) => panic!("stops differ: {x:?} / {y:?}"),
        }
    }

    fn streamed(bytes: &[u8]) -> Option<SegmentScan> {
        scan_segment_stream(&mut &bytes[..], bytes.len() as u64).expect("read")
    }

    #[test]
    fn frames_to_the_end_or_to_zeros_scan_as_in_memory() {
        // Frames smaller and larger than a read, and zero tails shorter
        // than a frame header, of one read and of many.
        for (frames, payload, zeros) in [
            (0, 0, 0),
            (0, 0, 100),
            (3, 10, 0),
            (3, 10, 5),
            (40, 300_000, 0),
            (5, SCAN_CHUNK_BYTES + 1000, 3 * SCAN_CHUNK_BYTES + 17),
        ] {
            let seg = segment(frames, payload, zeros);
            let whole = scan_segment(&seg).expect("scan");
            let s = streamed(&seg).expect("streamed scan");
            same(&s, &whole);
            assert_eq!(s.frames.len(), frames);
            assert_eq!(s.stop.is_some(), zeros > 0);
        }
    }

    #[test]
    fn damage_is_left_to_the_whole_file_scan() {
        let seg = segment(6, 1000, 4096);
        let at = seg.len() - 4096 - 500;
        let mut flipped = seg.clone();
        flipped[at] ^= 1;
        assert!(streamed(&flipped).is_none(), "a bad last frame");
        let mut torn = seg[..at].to_vec();
        torn.resize(torn.len() + 4096, 0);
        assert!(streamed(&torn).is_none(), "a torn frame before zeros");
        let mut junk = seg.clone();
        let end = junk.len() - 10;
        junk[end] = 1;
        assert!(streamed(&junk).is_none(), "a byte in the zeros");
        assert!(streamed(&seg[..10]).is_none(), "a cut header");
        // A file shorter than it said is an error, not a scan.
        let short = scan_segment_stream(&mut &seg[..], seg.len() as u64 + 1);
        assert!(short.is_err());
    }

    #[test]
    fn a_file_opened_with_o_direct_scans_the_same() {
        let dir = tempfile::tempdir().expect("dir");
        for (i, (frames, payload, zeros)) in [(0, 0, 0), (7, 100_001, 0), (3, 5_000_000, 12_345)]
            .into_iter()
            .enumerate()
        {
            let seg = segment(frames, payload, zeros);
            let path = dir.path().join(format!("s{i}"));
            std::fs::write(&path, &seg).expect("write");
            let mut f = std::fs::File::open(&path).expect("open");
            // Where the file system takes it (not tmpfs): every read is
            // then whole aligned blocks, or it is refused.
            let _ = rustix::fs::fcntl_getfl(&f)
                .and_then(|fl| rustix::fs::fcntl_setfl(&f, fl | rustix::fs::OFlags::DIRECT));
            let s = scan_segment_stream(&mut f, seg.len() as u64)
                .expect("aligned reads")
                .expect("frames and zeros");
            same(&s, &scan_segment(&seg).expect("scan"));
        }
    }

    proptest! {
        #[test]
        fn a_streamed_scan_is_the_whole_scan_or_defers_to_it(
            frames in 0usize..6,
            payload in 0usize..3000,
            zeros in 0usize..5000,
            cut in proptest::option::of(0usize..20_000),
            flip in proptest::option::of((0usize..20_000, 1u8..=255)),
        ) {
            let mut seg = segment(frames, payload, zeros);
            if let Some(c) = cut {
                seg.truncate(c.min(seg.len()));
            }
            if let Some((at, x)) = flip
                && at < seg.len()
            {
                seg[at] ^= x;
            }
            if let Some(s) = streamed(&seg) {
                let whole = scan_segment(&seg).expect("the whole scan decodes what the streamed one did");
                same(&s, &whole);
            }
        }
    }
}
