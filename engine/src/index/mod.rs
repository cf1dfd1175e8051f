//! The index: state derived from the log, never anything the log does not
//! say.
//!
//! - `tables` — the redb tables, `apply_frame` (the one function that turns
//!   a frame into index entries, live and rebuild alike) and the queries.
//! - `apply` — the applier thread that indexes acknowledged frames.
//! - `rebuild` — replaying the log into an index, and `verify`'s check.
//! - `keys` — search keys: the extractor plug and their own store of sorted
//!   run files.
//!
//! **Invariant:** the index equals a rebuild from the log.

pub(crate) mod apply;
pub(crate) mod keys;
pub(crate) mod rebuild;
pub(crate) mod tables;
