//! The index: state derived from the log, never anything the log does not
//! say.
//!
//! - `tables` — the redb tables, `apply_frame` (the one function that turns
//!   a frame into index entries, live and rebuild alike) and the queries.
//! - `apply` — the applier thread that indexes acknowledged frames;
//!   `backlog` — the frames queued for it, bounded in bytes.
//! - `rebuild` — replaying the log into an index, and `verify`'s check.
//! - `keys` — search keys: the extractor plug and their own store of sorted
//!   run files.
//!
//! **Invariant:** the index equals a rebuild from the log.

pub(crate) mod apply;
pub(crate) mod backlog;
pub(crate) mod keys;
pub(crate) mod rebuild;
pub(crate) mod tables;

/// The index's layout, tables and search keys alike: bumped whenever one
/// changes, and a store whose index has another version rebuilds it.
pub(crate) const INDEX_FORMAT_VERSION: u64 = 5;
