//! `App`, what every handler shares (the store of the moment, the
//! configuration, replication), and [`commit`], the one path by which a
//! client's write reaches the store: admission and fencing, the local
//! commit (answered by callback, so no thread waits for the fsync), the
//! synchronous wait for a follower, the lease check before the answer.

use std::sync::Arc;

use vigil_engine::{Batch, Committed, Options, Store};
use vigil_net::runtime::replicated::Replicated;

use crate::config::Config;
use crate::http::outcome::FhirError;

/// What every handler shares.
pub struct App {
    /// The store of a standalone server or a static role (see
    /// [`App::store`]); a standalone server's is briefly absent while
    /// [`App::recover_store`] reopens it.
    store: std::sync::RwLock<Option<Arc<Store>>>,
    /// The configuration the server runs with.
    pub config: Config,
    /// Base URL for links, without a trailing slash.
    pub base: String,
    /// Bearer-token checks, when configured.
    pub auth: Option<Arc<crate::http::auth::Authenticator>>,
    /// Replication, when configured (started by [`crate::server::run`]).
    pub replication: Option<crate::replication::Replication>,
    /// Time to acknowledge writes, for `/metrics`.
    pub commit_latency: crate::replication::CommitLatency,
    /// When each export job was last polled (429 when too often).
    pub export_polls: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// Wakes the export worker at once when a job is accepted.
    pub export_wake: tokio::sync::Notify,
    /// Wakes the reindex worker: a job was recorded.
    pub reindex_wake: tokio::sync::Notify,
    /// Free-space samples of the data directory (growth rate, warnings).
    pub disk: crate::disk::DiskWatch,
    /// Whether the key-encryption key answers (see [`crate::keywatch`]).
    pub key_gate: crate::keywatch::gate::KeyGate,
    /// The log archive's progress while this node archives (see
    /// [`crate::archiving`]).
    pub archive: crate::archiving::view::ArchiveView,
}

impl App {
    /// Opens the store the configuration names (under automatic failover
    /// the failover loop opens it: see [`crate::server::run`]).
    pub fn open(config: Config) -> Result<Self, ServeError> {
        let auth = crate::http::auth::Authenticator::from_config(&config.auth)?;
        let opts = Self::store_options(&config)?;
        let store = if config.replication.as_ref().is_some_and(|r| r.is_auto()) {
            None
        } else {
            Some(Arc::new(Store::open_with(&config.data, opts)?))
        };
        Ok(Self {
            store: std::sync::RwLock::new(store),
            base: config.base(),
            config,
            auth: auth.map(Arc::new),
            replication: None,
            commit_latency: Default::default(),
            export_polls: Default::default(),
            export_wake: tokio::sync::Notify::new(),
            reindex_wake: tokio::sync::Notify::new(),
            disk: Default::default(),
            key_gate: Default::default(),
            archive: Default::default(),
        })
    }

    /// The data directory's free space now, with the growth rate from the
    /// samples; `None` while no store is open or it cannot be measured.
    pub fn disk_report(&self) -> Option<crate::disk::DiskReport> {
        let space = self.store().ok()?.disk_space().ok()?;
        Some(self.disk.report(std::time::Instant::now(), space))
    }

    /// This node's name in its cluster (`standalone` without replication).
    pub fn node_name(&self) -> String {
        self.replication
            .as_ref()
            .map_or_else(|| "standalone".into(), |r| r.config.node.clone())
    }

    /// How the configuration says to open the store, its key-encryption
    /// key opened (a key file read, a PKCS#11 token logged into).
    pub fn store_options(config: &Config) -> Result<Options, ServeError> {
        let kek = config
            .encryption
            .open_kek()
            .map_err(|source| ServeError::Kek {
                kek: config.encryption.kek.clone().unwrap_or_default(),
                source,
            })?;
        Ok(Options {
            kek,
            resource_bytes_max: config.max_resource_bytes,
            key_buffer_entries: config.search_key_buffer_entries,
            disk_reserve_bytes: config.disk_reserve_bytes,
            extractor: Arc::new(crate::search::keys::SearchKeys::default()),
            replica: config.replication.as_ref().is_some_and(|r| r.is_follower()),
            ..Options::default()
        })
    }

    /// The stored body of a live version, if it can be read now.
    pub fn stored_version(&self, ty: &str, id: &str, version: u64) -> Option<Vec<u8>> {
        match self.store().ok()?.get_version(ty, id, version).ok()? {
            vigil_engine::VersionRead::Live(v) => Some(v.body),
            _ => None,
        }
    }

    /// A Bundle's bytes, its resources' numbers spelled as stored (see
    /// [`crate::numbers::bundle_bytes`]).
    pub fn bundle_bytes(&self, bundle: &serde_json::Value) -> Vec<u8> {
        crate::numbers::bundle_bytes(bundle, |t, i, v| self.stored_version(t, i, v))
    }

    /// The store now. Under automatic failover it is briefly absent while a
    /// rejoin cuts the log: 503 with Retry-After then.
    pub fn store(&self) -> Result<Arc<Store>, FhirError> {
        if let Some(s) = self.own_store() {
            return Ok(s);
        }
        let why = if self.replication.is_none() {
            "the store stopped after a disk failure and is being reopened; retry"
        } else {
            "this node is rejoining its cluster; retry"
        };
        self.replication
            .as_ref()
            .and_then(|r| r.cluster())
            .and_then(|c| c.store())
            .ok_or_else(|| FhirError::unavailable(why, 1))
    }

    pub(crate) fn own_store(&self) -> Option<Arc<Store>> {
        self.store.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A standalone server's store that stopped (an fsync, index commit or
    /// search-key write failed, the disk full) is closed and reopened once
    /// its file system has room again, so writes resume with no restart and
    /// no operator: the reopen recovers from what the log holds, and every
    /// acknowledged write is in it. Requests meanwhile get 503 with
    /// Retry-After. Returns whether the store was reopened now. Under
    /// automatic failover the cluster does it (a leader steps down first,
    /// see `Cluster::recover_store`); a static replication role is left
    /// stopped, for its operator or service manager to restart.
    pub async fn recover_store(&self) -> bool {
        if let Some(r) = &self.replication {
            return match r.cluster() {
                Some(c) => c.recover_store().await,
                None => false,
            };
        }
        if let Some(store) = self.own_store() {
            let Some(why) = store.stopped() else {
                return false;
            };
            if store.disk_space().is_ok_and(|d| !d.writable()) {
                return false; // no room yet: reopening would stop again
            }
            tracing::warn!("the store stopped ({why}); reopening it");
            *self.store.write().unwrap_or_else(|p| p.into_inner()) = None;
            let deadline = std::time::Instant::now() + STORE_RELEASE_TIMEOUT;
            let mut store = store;
            loop {
                match Arc::try_unwrap(store) {
                    Ok(s) => {
                        let _ = tokio::task::spawn_blocking(move || s.close()).await;
                        break;
                    }
                    Err(s) if std::time::Instant::now() < deadline => {
                        store = s;
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                    // Requests still hold it: it closes when they end,
                    // and the open below (or the next try) follows.
                    Err(_) => break,
                }
            }
        }
        let data = self.config.data.clone();
        let config = self.config.clone();
        let open = move || {
            let opts = Self::store_options(&config).map_err(|e| e.to_string())?;
            Store::open_with(&data, opts).map_err(|e| e.to_string())
        };
        match tokio::task::spawn_blocking(open).await {
            Ok(Ok(store)) => {
                *self.store.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(store));
                tracing::warn!("the store is open again: writes resume");
                true
            }
            Ok(Err(e)) => {
                tracing::error!("cannot reopen the store (tried again in a second): {e}");
                false
            }
            Err(e) => {
                tracing::error!("reopening the store failed: {e}");
                false
            }
        }
    }
}

/// How long a reopen waits for requests still using the stopped store.
const STORE_RELEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Commits a client's write: through replication's one face
/// ([`Replicated::commit`]: admission, the local commit, the synchronous
/// wait or `max_lag` record, the lease check), on the store of the moment.
pub async fn commit(app: &App, mut batch: Batch) -> Result<Committed, FhirError> {
    let started = std::time::Instant::now();
    let store = app.store()?;
    // A SearchParameter write is checked, and brings its reindex job.
    let asked = batch.ops.len();
    if crate::reindex::job::plan(&store, &mut batch)? {
        app.reindex_wake.notify_one();
    }
    let mut committed = match &app.replication {
        Some(r) => r.replicated.commit(store, batch).await,
        None => Replicated::standalone().commit(store, batch).await,
    }?;
    committed.outcomes.truncate(asked);
    app.commit_latency.observe(started.elapsed());
    Ok(committed)
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The store would not open.
    #[error("cannot open the store: {0}")]
    Store(#[from] vigil_engine::Error),
    /// Authorisation is misconfigured.
    #[error(transparent)]
    Auth(#[from] crate::http::auth::AuthSetupError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    /// Replication could not start.
    #[error("replication: {0}")]
    Replication(#[from] vigil_net::runtime::error::NetError),
    /// The key-encryption key of `[encryption]` cannot be used.
    #[error("encryption: key-encryption key {kek}: {source}")]
    Kek {
        /// Where the key was to be found.
        kek: String,
        /// Why it cannot be used.
        source: vigil_engine::crypt::CryptError,
    },
}
