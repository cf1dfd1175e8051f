//! The unit replication reads the log in.

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
}
