//! The log archive as the app holds it: the running archiver and its
//! status, for `/status`, `/metrics` and a clean shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use vigil_engine::Store;
use vigil_net::archive::{ArchiveStatus, Archiver, BaseBackupStatus};

/// Most time a shutdown waits for the last upload.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(10);

/// The archive as the node sees it: the running archiver, if any, and
/// the last status (kept after it stops, or the reason it cannot start).
#[derive(Debug, Default)]
pub struct ArchiveView {
    pub(crate) running: tokio::sync::Mutex<Option<(Archiver, Arc<Store>)>>,
    status: Mutex<Option<Arc<Mutex<ArchiveStatus>>>>,
    /// Base backups: what the last ones did (`None`: no archive URL).
    backups: Mutex<Option<BaseBackupStatus>>,
    /// Held while a base backup is taken: one at a time per node.
    pub(crate) backup_running: tokio::sync::Mutex<()>,
}

impl ArchiveView {
    /// The archive's status, when one is configured.
    pub fn status(&self) -> Option<ArchiveStatus> {
        let handle = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        let s = handle.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Some(s)
    }

    /// The base backups' status, when an archive URL is configured.
    pub fn backup_status(&self) -> Option<BaseBackupStatus> {
        self.backups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Changes the base backups' status (starting it at the default).
    pub(crate) fn update_backups(&self, f: impl FnOnce(&mut BaseBackupStatus)) {
        let mut g = self.backups.lock().unwrap_or_else(|p| p.into_inner());
        f(g.get_or_insert_with(BaseBackupStatus::default));
    }

    pub(crate) fn show(&self, handle: Arc<Mutex<ArchiveStatus>>) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    }

    /// Uploads what is durable and stops (a shutdown).
    pub async fn finish(&self) {
        if let Some((a, _)) = self.running.lock().await.take() {
            a.flush(SHUTDOWN_FLUSH).await;
            a.stop().await;
        }
    }
}
