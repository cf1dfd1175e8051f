//! The log: the store's one source of truth, on disk and in memory.
//!
//! - [`segment`] — a segment file's header and naming, and the frame
//!   walker recovery and rebuild share; [`frame`] — a frame's header, CRC,
//!   encoding; [`record`] — what a frame holds; `codec` — the bounds-checked
//!   little-endian reader and writer every binary structure goes through;
//!   `dict` — zstd dictionaries and per-body compression.
//! - `files` — the segment files: preallocation, append, rotation,
//!   positioned reads.
//! - `recovery` — the open-time scan: torn tail cut, corruption named.
//! - `tail` — the newest frames, in memory, for replication's live tail;
//!   `chunk` — the unit replication reads the log in.
//! - `active` — the writer thread's end of the log (its appender, the
//!   next frame's LSN, epoch and time).
//! - `ends` — where the log ends (written, durable), and who is told when
//!   that moves.
//!
//! **Invariant:** a `.seg` file always has a whole header, and a frame is
//! read back only after its CRC is checked. **Boundary:** bytes and files
//! only; what a record means to the index is `crate::index`'s.
//! `docs/format.md` draws every byte; `engine/tests/golden/` pins them.

pub(crate) mod active;
pub(crate) mod chunk;
pub(crate) mod codec;
pub(crate) mod dict;
pub(crate) mod ends;
pub(crate) mod files;
pub mod frame;
pub mod record;
pub(crate) mod recovery;
pub(crate) mod scanner;
pub mod segment;
pub(crate) mod tail;
