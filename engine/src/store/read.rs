//! What reads return.

use crate::log::record::OpKind;

/// One resource version with its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The resource type.
    pub resource_type: String,
    /// The resource id.
    pub id: String,
    /// The version number (1, 2, 3…).
    pub version: u64,
    /// The LSN of the record.
    pub lsn: u64,
    /// When it was committed, microseconds since the Unix epoch.
    pub last_updated_us: u64,
    /// Create, update or delete.
    pub op: OpKind,
    /// The JSON body as committed; empty for a delete.
    pub body: Vec<u8>,
}

/// The current state of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Current {
    /// The newest version is live.
    Live(Version),
    /// The newest version is a tombstone.
    Deleted {
        /// The tombstone's version number.
        version: u64,
        /// When it was deleted.
        last_updated_us: u64,
    },
    /// No version of the resource was ever committed.
    NeverExisted,
}

/// One version of a resource, as asked for by number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionRead {
    /// A live version.
    Live(Version),
    /// That version is a tombstone.
    Deleted {
        /// When it was deleted.
        last_updated_us: u64,
    },
    /// The resource exists but has no such version.
    NoSuchVersion {
        /// Its newest version.
        newest: u64,
    },
    /// No version of the resource was ever committed.
    NeverExisted,
}

/// Which versions a history lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryScope {
    /// Every resource.
    System,
    /// Every resource of one type.
    Type(String),
    /// One resource.
    Instance(String, String),
}

/// Where a history page starts, within a page set pinned to an LSN, so
/// writes that arrive while a client pages do not shift the pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryCursor {
    /// Only versions at or below this LSN are listed.
    pub snapshot_lsn: u64,
    /// Which side of an LSN the page lies on.
    pub position: PagePosition,
}

/// Where a page lies relative to the page it was reached from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagePosition {
    /// The versions just older than this LSN (the "next" page).
    Before(u64),
    /// The versions just newer than this LSN (the "previous" page).
    After(u64),
}

/// A history request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Which versions.
    pub scope: HistoryScope,
    /// Only versions committed at or after this time (microseconds).
    pub since_us: Option<u64>,
    /// Page size, 1..=[`crate::limits::HISTORY_PAGE_MAX`].
    pub count: usize,
    /// Continue from here; `None` starts a new page set at the newest LSN.
    pub cursor: Option<HistoryCursor>,
}

/// One page of history, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// The versions, newest first; deletes have an empty body.
    pub entries: Vec<Version>,
    /// The LSN the page set is pinned to.
    pub snapshot_lsn: u64,
    /// The page of older versions, if there are any.
    pub next: Option<HistoryCursor>,
    /// The page of newer versions (within the snapshot), if there are any.
    pub previous: Option<HistoryCursor>,
}

/// One record of the change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A resource version.
    Resource {
        /// The epoch it was written in.
        epoch: u64,
        /// The version, with its body.
        version: Version,
    },
    /// A new epoch began at this LSN.
    EpochStart {
        /// Its LSN.
        lsn: u64,
        /// The epoch.
        epoch: u64,
    },
    /// A checkpoint record.
    Checkpoint {
        /// Its LSN.
        lsn: u64,
        /// The index LSN it recorded.
        index_lsn: u64,
        /// The watermarks it recorded.
        watermarks: Vec<crate::log::record::Watermark>,
    },
    /// A compression dictionary was stored.
    Dictionary {
        /// Its LSN.
        lsn: u64,
        /// The dictionary id.
        id: u32,
    },
    /// A resource's search keys were re-derived (no version written).
    Rekey {
        /// Its LSN.
        lsn: u64,
        /// The resource type.
        resource_type: String,
        /// The resource id.
        id: String,
    },
}

impl Change {
    /// The LSN of the change.
    pub fn lsn(&self) -> u64 {
        match self {
            Change::Resource { version, .. } => version.lsn,
            Change::EpochStart { lsn, .. }
            | Change::Checkpoint { lsn, .. }
            | Change::Dictionary { lsn, .. }
            | Change::Rekey { lsn, .. } => *lsn,
        }
    }
}

/// Counts for one resource type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeCount {
    /// The resource type.
    pub resource_type: String,
    /// Resources whose newest version is live.
    pub live: u64,
    /// All versions, tombstones included.
    pub versions: u64,
}

/// Size and content figures of a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStats {
    /// Per type, sorted by name.
    pub types: Vec<TypeCount>,
    /// All resource versions.
    pub versions: u64,
    /// The last durable LSN.
    pub last_lsn: u64,
    /// The current epoch.
    pub epoch: u64,
    /// Bytes of log data: segment headers and frames.
    pub log_bytes: u64,
    /// Bytes of the segment files, with the preallocated, still unused end
    /// of the newest segment.
    pub log_bytes_allocated: u64,
    /// Bytes of the index file.
    pub index_bytes: u64,
    /// Number of compression dictionaries.
    pub dictionaries: usize,
}

/// What `verify` checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segments read.
    pub segments: usize,
    /// Frames whose CRC and records were checked.
    pub frames: u64,
    /// Records decoded.
    pub records: u64,
    /// Resource bodies decompressed and CRC-checked.
    pub bodies: u64,
    /// Log bytes read.
    pub bytes: u64,
    /// The LSN up to which the index was compared with a fresh rebuild.
    pub index_lsn: u64,
}
