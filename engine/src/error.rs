//! The engine's typed errors. Each variant says what happened and where.
//!
//! Corruption in the middle of the log, an fsync failure and a fenced
//! epoch are distinct variants, never folded into a generic I/O error.

use std::path::PathBuf;

use crate::write::precondition::Precondition;

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine. New cases may be added:
/// match the ones a caller acts on and treat the rest by their message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O call failed; the store may still be usable.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The disk holding the store has no room for a write: the operating
    /// system refused it (no space, or a quota), or free space is below the
    /// store's reserve ([`crate::Options::disk_reserve_bytes`]), where
    /// client writes stop so that internal work still fits. Nothing was
    /// written and the store stays usable: writes succeed again once space
    /// is freed.
    #[error("the disk is full: {op} {path}: {detail}")]
    DiskFull {
        /// What was being done.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// What the operating system said, or the free space and reserve.
        detail: String,
    },
    /// fsync/fdatasync failed. The store is poisoned: data that the kernel
    /// failed to write back may be gone from the page cache, so it is never
    /// retried as if it were safe.
    #[error("fsync of {path} failed, the store is stopped to protect the data: {source}")]
    Fsync {
        /// The file or directory whose sync failed.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The store's data keys cannot be used: its key-encryption key is
    /// wrong, revoked or unreachable, or its `data-keys` file is damaged.
    /// Nothing was written or changed.
    #[error("encryption: {context}: {source}")]
    Crypt {
        /// What was being done, naming the key.
        context: String,
        /// Why it failed.
        #[source]
        source: crate::crypt::CryptError,
    },
    /// The store holds encrypted data and was opened without its
    /// key-encryption key. Nothing was changed.
    #[error(
        "the store at {dir} is encrypted: open it with its key-encryption key ([encryption] kek)"
    )]
    KeyNeeded {
        /// The store directory.
        dir: PathBuf,
    },
    /// An earlier fatal error stopped the store; reopen it to recover.
    #[error("the store stopped after a fatal error: {0}")]
    Poisoned(String),
    /// Another process (or another handle) holds the store's lock.
    #[error("the store at {path} is in use by another process (lock held)")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A frame's checksum does not match, below the tail of the log.
    #[error("checksum mismatch in {segment} at offset {offset}: {detail}")]
    ChecksumMismatch {
        /// The segment file.
        segment: PathBuf,
        /// The byte offset of the bad frame in the segment.
        offset: u64,
        /// What the check found.
        detail: String,
    },
    /// The log is damaged in a way other than a checksum mismatch (bad header,
    /// broken segment chain, LSN gap), at a named place.
    #[error("log corrupt in {segment} at offset {offset}: {detail}")]
    CorruptLog {
        /// The segment file.
        segment: PathBuf,
        /// The byte offset of the damage.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// Data the index points to is not what the log holds, or other
    /// inconsistent state; `verify` and `reindex` diagnose and repair it.
    #[error("store corrupt: {0}")]
    Corrupt(String),
    /// The index does not equal a fresh rebuild from the log.
    #[error("index does not match the log: {0}")]
    IndexMismatch(String),
    /// A format version this build cannot read.
    #[error("unsupported {what} format version {version}")]
    UnsupportedFormatVersion {
        /// Which structure.
        what: &'static str,
        /// The version found.
        version: u16,
    },
    /// A precondition of an operation does not hold; the whole batch failed.
    #[error(
        "version conflict on {resource_type}/{id}: expected {expected}, current is {}",
        actual.map_or_else(|| "none".to_owned(), |v| format!("version {v}"))
    )]
    VersionConflict {
        /// The resource type.
        resource_type: String,
        /// The resource id.
        id: String,
        /// What the caller required.
        expected: Precondition,
        /// The current version, live or deleted, if any.
        actual: Option<u64>,
    },
    /// A resource body exceeds the configured limit.
    #[error("resource {resource_type}/{id} is {bytes} bytes, the limit is {limit}")]
    ResourceTooLarge {
        /// The resource type.
        resource_type: String,
        /// The resource id.
        id: String,
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// A batch exceeds a limit on operations or bytes.
    #[error("batch too large: {what} is {actual}, the limit is {limit}")]
    BatchTooLarge {
        /// Which limit.
        what: &'static str,
        /// The batch's value.
        actual: u64,
        /// The limit.
        limit: u64,
    },
    /// A batch with no operations.
    #[error("a batch needs at least one operation")]
    EmptyBatch,
    /// A type name, id, index key or option value is not acceptable.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// The value (names only; never resource content).
        value: String,
        /// Why.
        reason: String,
    },
    /// An operation on a lower epoch than the store's.
    #[error("epoch fenced: the store is at epoch {ours}, the request carries {theirs}")]
    EpochFenced {
        /// The store's current epoch.
        ours: u64,
        /// The epoch offered.
        theirs: u64,
    },
    /// zstd failed to compress or a dictionary could not be trained.
    #[error("compression failed: {0}")]
    Compression(String),
    /// The redb index failed.
    #[error("index: {0}")]
    Index(#[from] redb::Error),
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
    /// The store is a replica: it takes frames from its leader, not commits.
    #[error("this store is a read-only replica; write to the leader")]
    ReadOnly,
    /// A frame received from the leader failed its checks (checksum,
    /// header): nothing was written. Fetching it again may cure it.
    #[error("replicated frame at lsn {lsn} rejected: {reason}")]
    FrameRejected {
        /// The LSN the frame was expected to start at.
        lsn: u64,
        /// What failed.
        reason: String,
    },
    /// Replicated frames that do not continue this log (an LSN gap, an
    /// epoch or a commit time going back): nothing was written.
    #[error("replicated frames do not continue this log: {0}")]
    Discontinuous(String),
    /// A replica's operation (appending or cutting the leader's frames) on
    /// a store that takes local commits.
    #[error("this store takes local commits; it does not follow another log")]
    NotReplica,
    /// A cut of never-shown frames that this log cannot make; nothing
    /// changed.
    #[error("cannot cut this log after lsn {after}: {why}")]
    CannotCut {
        /// Where the log was to end.
        after: u64,
        /// Why not.
        why: String,
    },
    /// Replication asked for an LSN that does not start a frame of this
    /// log.
    #[error("lsn {lsn} cannot be read: {why}")]
    NotAFrameStart {
        /// The LSN asked for.
        lsn: u64,
        /// Why.
        why: String,
    },
    /// An incremental backup this store does not continue, or a backup
    /// directory that is not this store's.
    #[error("backup: {0}")]
    Backup(String),
    /// A restore the backup cannot satisfy, or into a directory that
    /// holds a store.
    #[error("restore: {0}")]
    Restore(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Index(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl Error {
    /// Builds an [`Error::Io`], or an [`Error::DiskFull`] when the
    /// operating system said the disk (or a quota) is full.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        if is_no_space(&source) {
            return Error::DiskFull {
                op,
                path: path.into(),
                detail: source.to_string(),
            };
        }
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Whether the error means the disk is full: a write refused for lack
    /// of space or below the reserve, or an fsync that failed for it (which
    /// still stops the store).
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::DiskFull { .. } => true,
            Error::Fsync { source, .. } => is_no_space(source),
            _ => false,
        }
    }

    /// Whether a failed commit left the store as it was, so only that
    /// commit failed: an I/O error or a full disk while writing a frame
    /// (the next frame overwrites the same place).
    pub(crate) fn fails_only_this_write(&self) -> bool {
        matches!(self, Error::Io { .. } | Error::DiskFull { .. })
    }

    /// The same error for another recipient: I/O and fsync errors keep
    /// their kind, path and message; others become [`Error::Poisoned`]
    /// with this error's message.
    pub(crate) fn duplicate(&self) -> Error {
        let copy = |e: &std::io::Error| std::io::Error::new(e.kind(), e.to_string());
        match self {
            Error::Fsync { path, source } => Error::Fsync {
                path: path.clone(),
                source: copy(source),
            },
            Error::Io { op, path, source } => Error::Io {
                op,
                path: path.clone(),
                source: copy(source),
            },
            Error::DiskFull { op, path, detail } => Error::DiskFull {
                op,
                path: path.clone(),
                detail: detail.clone(),
            },
            other => Error::Poisoned(other.to_string()),
        }
    }

    /// Whether the error stops the store for good (until reopened).
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::Fsync { .. } | Error::Poisoned(_))
    }
}

/// Whether an operating-system error says there is no space: the disk is
/// full (ENOSPC) or a quota is used up (EDQUOT).
pub(crate) fn is_no_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}
