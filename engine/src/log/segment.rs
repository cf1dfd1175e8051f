//! Segment files: bounded pieces of the log, named by their first LSN.
//!
//! A segment is a 32-byte header followed by whole frames. The header holds
//! the first LSN and the CRC of the previous segment's last frame, so the
//! segments form a chain: a missing, reordered or swapped segment is found
//! on open. Only the newest segment is ever written; older ones are sealed.
//!
//! Segments are preallocated (`fallocate`) to their full size when created,
//! so that appending a frame and `fdatasync` need not change the file's
//! size or allocate blocks; the unused end reads as zeros and marks the end
//! of the log.

use std::path::{Path, PathBuf};

use crate::log::codec::{DecodeError, Put, Reader};
use crate::log::frame::{FRAME_HEADER_BYTES, FRAME_MAGIC, FrameError, FrameHeader, check_frame};

/// `VIGILSEG`: the first eight bytes of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"VIGILSEG";
/// The segment format this build writes and reads.
pub const SEGMENT_VERSION: u16 = 1;
/// Size of the segment header in bytes.
pub const SEGMENT_HEADER_BYTES: usize = 32;
/// File name extension of segments.
pub const SEGMENT_EXT: &str = "seg";

/// The decoded header of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// LSN of the first record in the segment (equals the file name).
    pub first_lsn: u64,
    /// CRC of the previous segment's last frame; 0 for the first segment.
    pub prev_tail_crc: u32,
}

impl SegmentHeader {
    /// Encodes the header, with its own CRC in the last four bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut v = Vec::with_capacity(SEGMENT_HEADER_BYTES);
        v.extend_from_slice(&SEGMENT_MAGIC);
        v.put_u16(SEGMENT_VERSION);
        v.put_u16(0);
        v.put_u32(0);
        v.put_u64(self.first_lsn);
        v.put_u32(self.prev_tail_crc);
        let crc = crc32fast::hash(&v);
        v.put_u32(crc);
        let mut out = [0u8; SEGMENT_HEADER_BYTES];
        out.copy_from_slice(&v);
        out
    }

    /// Decodes and checks a header.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let magic = r.take(8, "segment magic")?;
        if magic != SEGMENT_MAGIC {
            return Err(DecodeError("not a Vigil segment (bad magic)".into()));
        }
        let version = r.u16("segment version")?;
        if version != SEGMENT_VERSION {
            return Err(DecodeError(format!(
                "unsupported segment format version {version}"
            )));
        }
        let flags = r.u16("flags")?;
        let reserved = r.u32("reserved")?;
        let first_lsn = r.u64("first lsn")?;
        let prev_tail_crc = r.u32("previous tail crc")?;
        let crc = r.u32("header crc")?;
        let actual = crc32fast::hash(&bytes[..SEGMENT_HEADER_BYTES - 4]);
        if crc != actual {
            return Err(DecodeError(format!(
                "segment header checksum mismatch: stored {crc:#010x}, computed {actual:#010x}"
            )));
        }
        if flags != 0 || reserved != 0 || first_lsn == 0 {
            return Err(DecodeError("segment header fields out of range".into()));
        }
        Ok(Self {
            first_lsn,
            prev_tail_crc,
        })
    }
}

/// The file name of the segment that starts at `first_lsn`.
pub fn segment_file_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.{SEGMENT_EXT}")
}

/// Parses a segment file name back to its first LSN.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(&format!(".{SEGMENT_EXT}"))?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Lists the segment files in `dir`, sorted by first LSN.
pub fn list_segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(lsn) = name.to_str().and_then(parse_segment_file_name) {
            out.push((lsn, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// One valid frame found by a scan.
#[derive(Debug, Clone, Copy)]
pub struct ScannedFrame {
    /// File offset of the frame header.
    pub offset: u64,
    /// The frame's header.
    pub header: FrameHeader,
}

/// Where and why a scan stopped before the end of the bytes.
#[derive(Debug, Clone)]
pub struct ScanStop {
    /// File offset of the first bad byte range (a frame header position).
    pub offset: u64,
    /// What was wrong there.
    pub error: FrameError,
    /// Whether a valid frame exists anywhere after `offset`. A torn write
    /// can only be the last frame, so a bad frame followed by a good one is
    /// corruption, never a torn tail.
    pub valid_frame_after: bool,
    /// Whether every byte from `offset` to the end is zero: the unused,
    /// preallocated end of a segment, which is its clean end, not damage.
    pub zero_tail: bool,
}

/// The result of walking the frames of one segment.
#[derive(Debug)]
pub struct SegmentScan {
    /// The segment's header.
    pub header: SegmentHeader,
    /// Valid frames, in order, until the first bad one.
    pub frames: Vec<ScannedFrame>,
    /// Offset just past the last valid frame.
    pub valid_len: u64,
    /// Why the scan stopped early, if it did.
    pub stop: Option<ScanStop>,
}

/// Walks the frames of a whole segment held in memory.
///
/// Checks every frame's CRC and that LSNs are dense from the header's first
/// LSN, epochs never decrease and timestamps never go backwards.
pub fn scan_segment(bytes: &[u8]) -> Result<SegmentScan, DecodeError> {
    let header = SegmentHeader::decode(bytes)?;
    let mut frames = Vec::new();
    let mut pos = SEGMENT_HEADER_BYTES;
    let mut next_lsn = header.first_lsn;
    let mut last_epoch = 0u64;
    let mut last_ts = 0u64;
    let mut stop = None;
    while pos < bytes.len() {
        match check_next_frame(&bytes[pos..], next_lsn, last_epoch, last_ts) {
            Ok(h) => {
                frames.push(ScannedFrame {
                    offset: pos as u64,
                    header: h,
                });
                next_lsn = h.end_lsn();
                last_epoch = h.epoch;
                last_ts = h.timestamp_us;
                pos += h.frame_len() as usize;
            }
            Err(error) => {
                let zero_tail = bytes[pos..].iter().all(|b| *b == 0);
                stop = Some(ScanStop {
                    offset: pos as u64,
                    valid_frame_after: !zero_tail && valid_frame_after(bytes, pos + 1),
                    zero_tail,
                    error,
                });
                break;
            }
        }
    }
    Ok(SegmentScan {
        header,
        frames,
        valid_len: pos as u64,
        stop,
    })
}

/// Checks the frame at the start of `here` and that it follows the one
/// before: its first LSN is `next_lsn`, its epoch and commit time are not
/// older than `last_epoch` and `last_ts`.
pub(crate) fn check_next_frame(
    here: &[u8],
    next_lsn: u64,
    last_epoch: u64,
    last_ts: u64,
) -> Result<FrameHeader, FrameError> {
    let h = check_frame(here)?;
    if h.first_lsn != next_lsn {
        Err(FrameError::BadHeader(format!(
            "first lsn {} where {next_lsn} was expected",
            h.first_lsn
        )))
    } else if h.epoch < last_epoch {
        Err(FrameError::BadHeader(format!(
            "epoch {} after epoch {last_epoch}",
            h.epoch
        )))
    } else if h.timestamp_us < last_ts {
        Err(FrameError::BadHeader(format!(
            "timestamp {} after {last_ts}",
            h.timestamp_us
        )))
    } else {
        Ok(h)
    }
}

/// Whether any offset at or after `from` starts a frame whose CRC checks.
fn valid_frame_after(bytes: &[u8], from: usize) -> bool {
    let magic = FRAME_MAGIC.to_le_bytes();
    let mut pos = from;
    while pos + FRAME_HEADER_BYTES <= bytes.len() {
        match bytes[pos..].windows(4).position(|w| w == magic) {
            None => return false,
            Some(skip) => {
                pos += skip;
                if check_frame(&bytes[pos..]).is_ok() {
                    return true;
                }
                pos += 1;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrips_and_detects_flips() {
        let h = SegmentHeader {
            first_lsn: 42,
            prev_tail_crc: 0xdead_beef,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        for i in 0..b.len() {
            let mut c = b;
            c[i] ^= 0x10;
            assert!(SegmentHeader::decode(&c).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn file_names_sort_by_lsn_and_parse_back() {
        assert_eq!(segment_file_name(7), "00000000000000000007.seg");
        assert_eq!(parse_segment_file_name(&segment_file_name(7)), Some(7));
        assert_eq!(parse_segment_file_name("7.seg"), None);
        assert_eq!(parse_segment_file_name("00000000000000000007.tmp"), None);
    }
}
