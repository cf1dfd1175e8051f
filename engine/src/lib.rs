//! # vigil-engine
//!
//! An append-only, versioned resource store. Every version of every
//! resource is kept in a log of checksummed, zstd-compressed frames; a redb
//! index derived from the log answers reads. The engine knows that a
//! resource version has a type, an id, a version number, a timestamp, an
//! operation and an opaque JSON body, and nothing of HTTP, QUIC or FHIR.
//!
//! ```no_run
//! use vigil_engine::{Batch, Current, Op, Store};
//!
//! let store = Store::open("./data")?;
//! let done = store.commit(Batch::one(Op::put("Patient", "p1", br#"{"resourceType":"Patient"}"#.to_vec())))?;
//! println!("{:?}", done.outcomes);
//! if let Current::Live(v) = store.get("Patient", "p1")? {
//!     assert_eq!(v.version, 1);
//! }
//! store.close()?;
//! # Ok::<(), vigil_engine::Error>(())
//! ```
//!
//! Guarantees: a commit returns only after its frame is fsynced; a batch is
//! all or nothing; versions of a resource are 1, 2, 3…; timestamps never go
//! backwards in LSN order; the index always equals a rebuild from the log.
//! `docs/format.md` in the repository draws every byte.

pub mod archive;
mod backup;
pub mod crypt;
mod disk;
mod error;
#[cfg(feature = "failpoints")]
pub mod failpoint;
/// Without the `failpoints` feature every point passes, at no cost.
#[cfg(not(feature = "failpoints"))]
mod failpoint {
    #[inline(always)]
    pub(crate) fn check(_name: &'static str) -> std::io::Result<()> {
        Ok(())
    }
}
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod fuzzing;
mod index;
pub mod limits;
#[cfg(feature = "internals")]
pub mod log;
#[cfg(not(feature = "internals"))]
mod log;
mod replica;
mod store;
mod write;

pub use backup::{
    BackupReport, BackupVerify, Progress, RestoreReport, RestoreTarget, backup, restore,
    verify_backup,
};
pub use disk::DiskSpace;
pub use error::{Error, Result};
pub use index::keys::{KeyExtractor, NoKeys};
pub use log::chunk::LogChunk;
pub use log::codec::DecodeError;
pub use log::ends::{LOG_END_LISTENERS_MAX, LogEnd, LogEndListener, LogTip};
pub use log::record::{OpKind, Watermark};
pub use replica::rejoin::CutReport;
pub use replica::{LogFrames, LogPosition};
pub use store::options::{DictionaryPolicy, Options};
pub use store::read::{
    Change, Current, HistoryCursor, HistoryPage, HistoryQuery, HistoryScope, PagePosition,
    StoreStats, TypeCount, VerifyReport, Version, VersionRead,
};
pub use store::{OpenReport, Store};
pub use write::batch::{Action, Batch, Committed, Op, OpOutcome};
pub use write::clock::{Clock, SystemClock};
pub use write::precondition::Precondition;
