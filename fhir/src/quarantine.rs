//! What failover cut from this node's log, for `/status` and `vigil
//! quarantine list`: each `quarantine/*/MANIFEST` the engine wrote, and the
//! lost versions in `versions.ndjson` beside it (which `vigil quarantine
//! reapply` submits to the current leader as new versions). An encrypted
//! store writes them sealed, as `versions.ndjson.sealed` (opened with the
//! store's key-encryption key); their count is then read from the
//! manifest.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Most quarantine folders listed.
const FOLDERS_MAX: usize = 1000;
/// Largest `versions.ndjson` read for a reapply.
pub const VERSIONS_BYTES_MAX: u64 = 1 << 30;

/// One quarantine folder.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Folder {
    /// The folder, e.g. `quarantine/rejoin-lsn-1201`.
    pub path: PathBuf,
    /// Why it exists: `rejoin` (a failover cut these writes) or `repair`.
    pub kind: String,
    /// Resource versions it holds (lines of `versions.ndjson`).
    pub versions: usize,
    /// Whether `vigil quarantine reapply` already submitted it.
    pub reapplied: bool,
}

/// Marks a folder as submitted.
pub const REAPPLIED_FILE: &str = "REAPPLIED";

/// The quarantine folders of the store in `data`, oldest first.
pub fn list(data: &Path) -> std::io::Result<Vec<Folder>> {
    let dir = data.join("quarantine");
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in entries.take(FOLDERS_MAX) {
        let path = e?.path();
        if !path.is_dir() {
            continue;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let kind = name.split('-').next().unwrap_or("").to_owned();
        let versions = match std::fs::read_to_string(path.join("versions.ndjson")) {
            Ok(t) => t.lines().filter(|l| !l.trim().is_empty()).count(),
            Err(_) => versions_in_manifest(&path),
        };
        out.push(Folder {
            reapplied: path.join(REAPPLIED_FILE).exists(),
            path,
            kind,
            versions,
        });
    }
    out.sort_by_key(|f| lsn_of(&f.path));
    Ok(out)
}

/// The sealed versions file of a folder of an encrypted store.
pub const SEALED_VERSIONS_FILE: &str = "versions.ndjson.sealed";

/// The count of versions the folder's manifest states (a sealed folder's
/// versions cannot be counted without its key); 0 when it states none.
fn versions_in_manifest(folder: &Path) -> usize {
    std::fs::read_to_string(folder.join("MANIFEST.txt"))
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("resource versions: "))
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// The first LSN a folder holds (its name ends `-lsn-N`).
pub fn first_lsn(folder: &Path) -> u64 {
    lsn_of(folder)
}

fn lsn_of(p: &Path) -> u64 {
    p.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.rsplit('-').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
