//! The continuous log archive on object storage (S3, Azure Blob, Google
//! Cloud Storage or a directory): the leader uploads its durable frames as
//! immutable, create-only pieces every interval (the archive's RPO); a
//! restore rebuilds a store from them to any LSN or commit time they
//! cover. What a piece holds and which pieces make the cluster's history
//! is the engine's (`vigil_engine::archive`); this module moves them.
//!
//! - [`location`]: a URL opened as an object store, create-only uploads.
//! - [`uploader`]: the leader's task, its lag and errors for `/status`.
//! - [`backup`]: base backups (an index copy) beside the archive, their
//!   verification and retention.
//! - [`restore`]: a store rebuilt from an archive and its newest fitting
//!   base backup.

pub mod backup;
pub mod location;
pub mod restore;
pub mod uploader;

pub use backup::{
    BaseBackupStatus, LocationBackupReport, LocationVerify, PruneReport, Retention,
    backup_to_location, newest_backup, prune_backups, verify_location,
};
pub use location::{Created, Location};
pub use restore::{ArchiveRestoreReport, restore_from_archive};
pub use uploader::{ArchiveConfig, ArchiveStatus, Archiver, PIECE_BYTES};

/// Why an archive operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The location's URL cannot be used.
    #[error("archive location {url}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The object store refused or failed a request (unreachable,
    /// credentials refused, no such bucket, ...).
    #[error("{what}: {source}")]
    Store {
        /// What was being done, with the object and the location.
        what: String,
        /// The store's error.
        #[source]
        source: Box<object_store::Error>,
    },
    /// An object's name or size is not one Vigil uses.
    #[error("archive object {name}: {reason}")]
    Name {
        /// The object's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The local store failed, or a piece did not check.
    #[error(transparent)]
    Engine(#[from] vigil_engine::Error),
    /// A local file could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Local {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A blocking task was lost (the runtime is shutting down).
    #[error("archive task: {0}")]
    Task(String),
}

/// Runs `f` on the blocking pool (the engine's calls block on disk).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, vigil_engine::Error> + Send + 'static,
) -> Result<T, ArchiveError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ArchiveError::Task(e.to_string()))?
        .map_err(ArchiveError::from)
}

/// Maps an I/O error on the local file `p` while doing `what`.
pub(crate) fn local_io(
    what: &'static str,
    p: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> ArchiveError + use<> {
    let path = p.to_owned();
    move |source| ArchiveError::Local { what, path, source }
}
