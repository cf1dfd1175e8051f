//! Frames: the unit of writing, checksumming, fsync and replication.
//!
//! A frame is a fixed 44-byte header followed by a payload of encoded
//! records. The CRC32 in the header covers the header's first 40 bytes and
//! the whole payload, so a torn or flipped byte anywhere is detected. A
//! group commit writes exactly one frame and then fsyncs, so at most the
//! last frame of the log can be torn by a crash.
//!
//! Resource bodies are compressed one by one inside the payload (see
//! `docs/format.md` for why), so one version can be read without
//! decompressing its neighbours.

use crate::limits::{FRAME_PAYLOAD_BYTES_MAX, FRAME_RECORDS_MAX};
use crate::log::codec::{DecodeError, Put, Reader};
use crate::log::record::{RecordRef, read_record};

/// `VGFR` as little-endian bytes.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"VGFR");
/// The frame format this build writes and reads.
pub const FRAME_VERSION: u16 = 1;
/// Size of the fixed frame header in bytes.
pub const FRAME_HEADER_BYTES: usize = 44;
/// Bytes of the header covered by the CRC before the payload (all but the CRC).
const FRAME_CRC_COVERED_HEADER_BYTES: usize = 40;

/// The decoded fixed header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Length of the payload following the header.
    pub payload_len: u32,
    /// Number of records in the payload; they take LSNs `first_lsn..first_lsn+count`.
    pub record_count: u32,
    /// LSN of the first record.
    pub first_lsn: u64,
    /// The leadership epoch every record of the frame was written in.
    pub epoch: u64,
    /// Commit time in microseconds since the Unix epoch, shared by all records.
    pub timestamp_us: u64,
    /// CRC32 over header bytes 0..40 and the payload.
    pub crc: u32,
}

impl FrameHeader {
    /// Total bytes of the frame, header included.
    pub fn frame_len(&self) -> u64 {
        FRAME_HEADER_BYTES as u64 + u64::from(self.payload_len)
    }

    /// The LSN after the frame's last record.
    pub fn end_lsn(&self) -> u64 {
        self.first_lsn + u64::from(self.record_count)
    }
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Fewer bytes than the header or the payload it announces.
    #[error("frame truncated: needs {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the frame needs.
        needed: u64,
        /// Bytes there are.
        available: u64,
    },
    /// The header does not start with the frame magic.
    #[error("bad frame magic {0:#010x}")]
    BadMagic(u32),
    /// A frame format this build does not read.
    #[error("unsupported frame format version {0}")]
    UnsupportedVersion(u16),
    /// A header field is out of its allowed range.
    #[error("bad frame header: {0}")]
    BadHeader(String),
    /// The CRC does not match the bytes.
    #[error("frame checksum mismatch: stored {expected:#010x}, computed {actual:#010x}")]
    ChecksumMismatch {
        /// The CRC stored in the header.
        expected: u32,
        /// The CRC of the bytes read.
        actual: u32,
    },
    /// The checksum matched but the payload does not decode: a writer bug or
    /// a format mismatch, never a torn write.
    #[error("frame payload does not decode: {0}")]
    BadPayload(#[from] DecodeError),
}

/// Parses and range-checks a frame header; does not check the CRC.
pub fn parse_header(bytes: &[u8]) -> Result<FrameHeader, FrameError> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return Err(FrameError::Truncated {
            needed: FRAME_HEADER_BYTES as u64,
            available: bytes.len() as u64,
        });
    }
    let mut r = Reader::new(&bytes[..FRAME_HEADER_BYTES]);
    let field = |res: Result<u64, DecodeError>| res.map_err(FrameError::BadPayload);
    let magic = field(r.u32("magic").map(u64::from))? as u32;
    if magic != FRAME_MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let version = field(r.u16("version").map(u64::from))? as u16;
    if version != FRAME_VERSION {
        return Err(FrameError::UnsupportedVersion(version));
    }
    let flags = field(r.u16("flags").map(u64::from))?;
    let payload_len = field(r.u32("payload length").map(u64::from))? as u32;
    let record_count = field(r.u32("record count").map(u64::from))? as u32;
    let first_lsn = field(r.u64("first lsn"))?;
    let epoch = field(r.u64("epoch"))?;
    let timestamp_us = field(r.u64("timestamp"))?;
    let crc = field(r.u32("crc").map(u64::from))? as u32;
    if flags != 0 {
        return Err(FrameError::BadHeader(format!(
            "reserved flags {flags:#06x}"
        )));
    }
    if payload_len > FRAME_PAYLOAD_BYTES_MAX {
        return Err(FrameError::BadHeader(format!(
            "payload of {payload_len} bytes exceeds {FRAME_PAYLOAD_BYTES_MAX}"
        )));
    }
    if record_count == 0 || record_count > FRAME_RECORDS_MAX {
        return Err(FrameError::BadHeader(format!("{record_count} records")));
    }
    if first_lsn == 0 || first_lsn.checked_add(u64::from(record_count)).is_none() {
        return Err(FrameError::BadHeader(format!("first lsn {first_lsn}")));
    }
    Ok(FrameHeader {
        payload_len,
        record_count,
        first_lsn,
        epoch,
        timestamp_us,
        crc,
    })
}

fn crc_of(header: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&header[..FRAME_CRC_COVERED_HEADER_BYTES]);
    h.update(payload);
    h.finalize()
}

/// Parses the frame at the start of `bytes` and verifies its CRC.
///
/// On success returns the header; the payload is
/// `bytes[FRAME_HEADER_BYTES..header.frame_len()]`.
pub fn check_frame(bytes: &[u8]) -> Result<FrameHeader, FrameError> {
    let header = parse_header(bytes)?;
    let len = header.frame_len();
    if (bytes.len() as u64) < len {
        return Err(FrameError::Truncated {
            needed: len,
            available: bytes.len() as u64,
        });
    }
    let payload = &bytes[FRAME_HEADER_BYTES..len as usize];
    let actual = crc_of(bytes, payload);
    if actual != header.crc {
        return Err(FrameError::ChecksumMismatch {
            expected: header.crc,
            actual,
        });
    }
    Ok(header)
}

/// Decodes every record of a checked frame's payload, in LSN order.
///
/// Each item is `(lsn, record, body offset within the payload)`. Fails if
/// the payload holds more or fewer records than the header says.
pub fn decode_records<'a>(
    header: &FrameHeader,
    payload: &'a [u8],
) -> Result<Vec<(u64, RecordRef<'a>, usize)>, FrameError> {
    let mut r = Reader::new(payload);
    // The count is bounded by the payload size: every record takes >= 5 bytes.
    let mut out = Vec::with_capacity((header.record_count as usize).min(payload.len() / 5 + 1));
    for i in 0..u64::from(header.record_count) {
        let (rec, body_offset) = read_record(&mut r)?;
        out.push((header.first_lsn + i, rec, body_offset));
    }
    if r.remaining() != 0 {
        return Err(FrameError::BadPayload(DecodeError(format!(
            "{} bytes after the last of {} records",
            r.remaining(),
            header.record_count
        ))));
    }
    Ok(out)
}

/// Builds a frame from an encoded payload. Asserts the header invariants
/// that [`parse_header`] checks, so a writer bug cannot produce a frame the
/// reader refuses.
pub fn encode_frame(
    first_lsn: u64,
    record_count: u32,
    epoch: u64,
    timestamp_us: u64,
    payload: &[u8],
) -> Vec<u8> {
    assert!(first_lsn > 0, "LSNs start at 1");
    assert!(record_count > 0 && record_count <= FRAME_RECORDS_MAX);
    let payload_len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    assert!(
        payload_len <= FRAME_PAYLOAD_BYTES_MAX,
        "frame payload over limit"
    );
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    out.put_u32(FRAME_MAGIC);
    out.put_u16(FRAME_VERSION);
    out.put_u16(0);
    out.put_u32(payload_len);
    out.put_u32(record_count);
    out.put_u64(first_lsn);
    out.put_u64(epoch);
    out.put_u64(timestamp_us);
    let crc = crc_of(&out, payload);
    out.put_u32(crc);
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::record::{RecordRef, put_record};

    fn sample() -> Vec<u8> {
        let mut payload = Vec::new();
        put_record(&mut payload, &RecordRef::EpochStart { epoch: 2 });
        put_record(&mut payload, &RecordRef::EpochStart { epoch: 2 });
        encode_frame(10, 2, 2, 1_700_000_000_000_000, &payload)
    }

    #[test]
    fn a_frame_roundtrips() {
        let f = sample();
        let h = check_frame(&f).expect("valid");
        assert_eq!(h.first_lsn, 10);
        assert_eq!(h.end_lsn(), 12);
        let recs = decode_records(&h, &f[FRAME_HEADER_BYTES..]).expect("decodes");
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].0, 11);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let f = sample();
        for byte in 0..f.len() {
            for bit in 0..8 {
                let mut g = f.clone();
                g[byte] ^= 1 << bit;
                assert!(check_frame(&g).is_err(), "flip at {byte}:{bit} undetected");
            }
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let f = sample();
        for cut in 0..f.len() {
            assert!(matches!(
                check_frame(&f[..cut]),
                Err(FrameError::Truncated { .. })
            ));
        }
    }
}
