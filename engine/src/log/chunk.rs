//! The unit replication reads the log in.

use crate::crypt::DataKey;
use crate::log::record::RecordRef;

/// Consecutive whole frames of one segment, exactly as on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// LSN of the first record of the first frame.
    pub first_lsn: u64,
    /// The LSN after the last record of the last frame.
    pub end_lsn: u64,
    /// Number of frames.
    pub frames: u32,
    /// The frames' bytes.
    pub bytes: Vec<u8>,
    /// Bytes of the resource bodies in these frames before compression
    /// (their JSON as committed): with `bytes`, the compression ratio.
    pub raw_bytes: u64,
    /// On an encrypted store, the data keys of what these frames seal
    /// (unwrapped: they go to the follower over mutual TLS, which wraps
    /// them under its own key-encryption key before it appends the
    /// frames); empty otherwise.
    pub data_keys: Vec<(u64, DataKey)>,
}

/// What replication needs to know of frames beyond their bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FrameFacts {
    /// Bytes of the resource bodies before compression.
    pub(crate) raw_bytes: u64,
    /// The data keys their sealed records are sealed under, each once.
    pub(crate) key_ids: Vec<u64>,
}

impl FrameFacts {
    /// Adds one record's facts.
    pub(crate) fn note(&mut self, rec: &RecordRef<'_>) {
        if let RecordRef::Resource(r) = rec {
            self.raw_bytes += u64::from(r.raw_len);
        }
        if let Some(id) = rec.sealed_under()
            && !self.key_ids.contains(&id)
        {
            self.key_ids.push(id);
        }
    }

    /// Adds another frame's facts.
    pub(crate) fn merge(&mut self, other: &FrameFacts) {
        self.raw_bytes += other.raw_bytes;
        for id in &other.key_ids {
            if !self.key_ids.contains(id) {
                self.key_ids.push(*id);
            }
        }
    }
}
