//! Why the runtime could not start or run, as one typed error.

use vigil_engine::Error as StoreError;

use crate::proto::wire::WireError;
use crate::runtime::tls::TlsError;

/// Why replication could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// Certificates could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A socket could not be opened.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A peer sent bytes that are not a message.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A QUIC connection or stream failed.
    #[error("connection: {0}")]
    Connection(String),
    /// The configuration cannot work.
    #[error("replication configuration: {0}")]
    Config(String),
    /// This node no longer leads the epoch it won (it stepped down, or the
    /// witness refused its record): nothing leader-only is done, and a
    /// write is not acknowledged.
    #[error("not leading: {0}")]
    NotLeading(String),
}
