//! Every bound the engine enforces, named with its unit.
//!
//! Hitting a limit gives a typed error ([`crate::Error`]) at the call that
//! crossed it; nothing hangs and nothing is silently truncated. Limits that
//! also bound *decoding* (frame and record sizes) are hard caps: bytes read
//! from disk or from a peer that claim more are rejected before any
//! allocation of that size.

/// Default largest resource body accepted by [`crate::Store::commit`] (16 MiB).
pub const RESOURCE_BYTES_DEFAULT: u32 = 16 * 1024 * 1024;
/// Hard cap on one resource body, whatever the configuration (64 MiB).
pub const RESOURCE_BYTES_MAX: u32 = 64 * 1024 * 1024;
/// Most operations in one batch.
pub const BATCH_OPS_MAX: usize = 10_000;
/// Most raw body bytes in one batch (a batch is written in one frame).
pub const BATCH_BYTES_MAX: u64 = 96 * 1024 * 1024;
/// Hard cap on a frame's payload, checked before reading or allocating it.
pub const FRAME_PAYLOAD_BYTES_MAX: u32 = 128 * 1024 * 1024;
/// Group commit stops adding batches to a frame once its payload reaches this.
pub const FRAME_PAYLOAD_BYTES_TARGET: usize = 4 * 1024 * 1024;
/// Most records in one frame.
pub const FRAME_RECORDS_MAX: u32 = 1_000_000;
/// A segment is sealed and a new one begun once it is at least this large.
pub const SEGMENT_BYTES_TARGET: u64 = 64 * 1024 * 1024;
/// Smallest configurable segment size (tests use small segments).
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// Longest resource type name in bytes (FHIR type names are far shorter).
pub const TYPE_BYTES_MAX: usize = 64;
/// Longest resource id in bytes (FHIR ids are at most 64 characters).
pub const ID_BYTES_MAX: usize = 64;
/// Longest secondary index key in bytes.
pub const INDEX_KEY_BYTES_MAX: usize = 1024;
/// Most secondary index keys one resource version may produce.
pub const INDEX_KEYS_PER_VERSION_MAX: usize = 4096;
/// Largest zstd dictionary the engine trains or accepts.
pub const DICTIONARY_BYTES_MAX: u32 = 1024 * 1024;
/// Most dictionaries a store may hold.
pub const DICTIONARIES_MAX: u32 = 1024;
/// Most committers queued behind the writer before `commit` blocks.
pub const COMMIT_QUEUE_MAX: usize = 4096;
/// Most entries in one history page.
pub const HISTORY_PAGE_MAX: usize = 10_000;
/// Most named watermarks in one checkpoint record.
pub const CHECKPOINT_WATERMARKS_MAX: usize = 64;
/// Longest watermark name in bytes.
pub const WATERMARK_NAME_BYTES_MAX: usize = 64;
/// The index is made durable (a redb durable commit) at least this often,
/// in bytes of log applied. A durable commit stalls the index applier (not
/// the writer) while redb checksums and fsyncs what changed since the last
/// one (measured under the FHIR create load: 20-85 ms each at this
/// cadence); frequent small ones keep each stall, and so the read barrier's
/// longest wait, short and bound the replay on open. (1 s / 64 MiB was
/// measured too: 3% more creates/s, a p99.9 of 100 ms instead of 65 ms.)
pub const INDEX_SYNC_LOG_BYTES: u64 = 16 * 1024 * 1024;
/// The index is made durable at least this often, in milliseconds.
pub const INDEX_SYNC_INTERVAL_MS: u64 = 250;
/// Most bytes of the newest durable frames kept in memory for replication
/// (a follower that keeps up is sent them without a disk read). At the
/// FHIR create load's ~10 KB commit groups, the last ~400 groups.
pub const TAIL_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most bytes of durable frames waiting for the index applier; past it the
/// writer waits. Bounds how far the index (and so a read's barrier wait)
/// trails the acknowledged log.
pub const APPLY_QUEUE_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// Most bytes of frames appended from a leader waiting for a replica's
/// index applier; past it the replica's writer (and so its durable
/// acknowledgements) waits. Large, so that a catch-up runs at network
/// speed and the index follows (measured: with the 8 MiB bound of local
/// commits, catch-up over a 50 ms link fell from ~100 to 39 MB/s); a
/// replica has no read barrier to keep short.
pub const APPLY_QUEUE_REPLICA_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Search-key changes the index holds in memory before writing them as
/// one sorted run file (`Options::key_buffer_entries`). About 140 bytes
/// each for FHIR search keys; at most twice this many are held. Smaller
/// buffers mean more files to merge. Measured with `vigil bench
/// --workload create --clients 64` for 30 s (docs/BENCHMARKS.md, sixth
/// session): 500,000 p99 10.6-11.1 ms, peak RSS 330-341 MB; 1,000,000
/// 9.5-9.7 ms, 428 MB; 2,000,000 8.3-9.7 ms, 538-560 MB.
pub const KEY_BUFFER_ENTRIES_DEFAULT: usize = 2_000_000;
/// The key runs are written at least every this many records of log even
/// when few keys changed, which bounds the replay of keys after a crash.
pub const KEY_REPLAY_RECORDS_MAX: u64 = 1_000_000;
/// Largest `Options::key_buffer_entries`.
pub const KEY_BUFFER_ENTRIES_MAX: usize = 16_000_000;
/// Most bytes of frames the applier indexes in one redb transaction.
pub const APPLY_TXN_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Version numbers each epoch owns per resource: a write in epoch `e`
/// numbers its version at least `(e - 1) * EPOCH_VERSIONS + 1`, so a
/// version written by a deposed leader (epoch `e - 1`, cut on rejoin) is
/// never issued again for other content by the next leader.
pub const EPOCH_VERSIONS: u64 = 1_000_000;

/// Default free space kept for internal work (index commits, search-key
/// flushes and merges, a rejoin's cut, backups' temporary files, a clean
/// shutdown): client writes stop this far before the disk is full. A store
/// whose largest search-key file is bigger should raise it to that size
/// (a merge writes its two files anew before removing them).
pub const DISK_RESERVE_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;
