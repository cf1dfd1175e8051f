//! Bulk `$export` (FHIR Bulk Data Access, STU2) that survives a failover.
//!
//! Kick-off records a job as a resource of the internal type
//! [`JOB_TYPE`] in the log, so it replicates like everything else. The job
//! pins the export to the LSN of its `transactionTime`: the output is the
//! store's content at that LSN, each matching resource exactly once,
//! whatever is written meanwhile. The leader's worker claims a job with a
//! lease (owner, epoch, expiry) written to the job record; it writes the
//! output in chunks of a fixed number of resources, each to a file named by
//! its chunk number (temporary file, then rename), and records the position
//! after each chunk. After a failover the new leader finds the job, waits
//! until the lease has run out, and goes on from the recorded position:
//! the order is deterministic at the pinned LSN and a chunk rewritten after
//! a crash has the same name and content, so the finished output has no
//! duplicate and no gap. The output goes to the export location: object
//! storage (`export_url`: S3, Azure Blob, Google Cloud Storage, as the
//! reference service's storage account) that both data nodes reach with
//! nothing shared between their machines, or a directory (`export_dir`)
//! that both reach. Clients fetch the files through this server's
//! `$export-file` route, under the same authorization as the job.
//!
//! - `kickoff` — the kick-off's parameters (GET query or POST
//!   `Parameters`), checked;
//! - `handlers` — kick-off, status polling, cancel and file download;
//! - `worker` — the leader's worker: claims, selects (patients,
//!   `_typeFilter`), snapshots, writes chunks and the error file, deletes
//!   expired jobs.

mod handlers;
pub mod kickoff;
mod worker;

pub use handlers::{by_type, by_type_post, cancel, file, status, system, system_post};
pub use worker::worker;

use std::time::Duration;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use vigil_engine::{Batch, Op, Precondition, Store};

use crate::app::App;
use crate::http::outcome::FhirError;

/// The internal resource type holding export jobs (never exported).
pub const JOB_TYPE: &str = "VigilExportJob";

/// Most export jobs kept (finished ones count until deleted).
const JOBS_MAX: usize = 100;
/// Changes read per call while collecting the snapshot.
const CHANGES_PER_CALL: usize = 1_000;
/// A client polling the same job more often than this gets 429.
const POLL_INTERVAL_MIN: Duration = Duration::from_millis(500);

/// One output file of a job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutputFile {
    /// Resource type of every line.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// File name under the job's directory.
    pub file: String,
    /// Lines.
    pub count: usize,
}

/// An export job, as recorded in the log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Job {
    /// Always [`JOB_TYPE`].
    #[serde(rename = "resourceType")]
    pub resource_type: String,
    /// The job id.
    pub id: String,
    /// `in-progress`, `completed`, `error` or `cancelled`.
    pub status: String,
    /// The kick-off URL.
    pub request: String,
    /// `system`, `patient` or `group`.
    pub level: String,
    /// For a group export, the Group's id.
    pub group: Option<String>,
    /// Types asked for (`_type`), empty for every type.
    pub types: Vec<String>,
    /// `_since`, µs.
    pub since_us: Option<u64>,
    /// The LSN the export is pinned to.
    pub snapshot_lsn: u64,
    /// Its commit time, µs (the manifest's `transactionTime`).
    pub transaction_time_us: u64,
    /// Resources written so far (the position resumed from).
    pub position: usize,
    /// Resources the export will hold, once known.
    pub total: Option<usize>,
    /// Files written so far.
    pub output: Vec<OutputFile>,
    /// Deleted-resource files (with `_since`).
    pub deleted: Vec<OutputFile>,
    /// The node working on it, its epoch, and until when (µs, wall clock).
    pub owner: Option<String>,
    /// The owner's epoch: a deposed leader's claim is void.
    pub owner_epoch: u64,
    /// Until when the claim holds, µs since the Unix epoch.
    pub lease_until_us: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// `_elements`: `Type.element` or `element`.
    #[serde(default)]
    pub elements: Vec<String>,
    /// `patient`: the Patient ids the export is limited to.
    #[serde(default)]
    pub patients: Vec<String>,
    /// `_typeFilter`s, `Type?query`.
    #[serde(default)]
    pub type_filters: Vec<String>,
    /// `includeAssociatedData=LatestProvenanceResources`.
    #[serde(default)]
    pub latest_provenance: bool,
    /// What lenient handling left out of the request (the error file).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Error files (OperationOutcomes) written so far.
    #[serde(default)]
    pub errors: Vec<OutputFile>,
    /// Whether the files need a token (auth was on at kick-off): a node
    /// without auth does not serve them.
    #[serde(default)]
    pub requires_access_token: bool,
    /// The client whose token started it; only it may poll, fetch, delete.
    #[serde(default)]
    pub client: Option<String>,
    /// Whether the selection (patients, `_typeFilter`) was evaluated and
    /// written beside the output (`selection.json`), with `snapshot_lsn`
    /// moved to the LSN it was evaluated at.
    #[serde(default)]
    pub selected: bool,
    /// When it completed, µs: it expires `export_expire_s` later.
    #[serde(default)]
    pub finished_us: Option<u64>,
    /// On an encrypted store: the key (64 hex digits) its files are sealed
    /// under. It lives only in this record, which the log stores sealed
    /// and ships to the follower, so a new leader after a failover opens
    /// the files the old one wrote (with no key of its own region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_key: Option<String>,
}

impl Job {
    /// The key its files are sealed under, if the store is encrypted.
    fn file_key(&self) -> Result<Option<vigil_engine::crypt::DataKey>, FhirError> {
        let Some(hex) = &self.file_key else {
            return Ok(None);
        };
        let bad = || FhirError::internal(format!("export job {}: a malformed file key", self.id));
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut key = [0u8; vigil_engine::crypt::DATA_KEY_BYTES];
        for (i, b) in key.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Some(vigil_engine::crypt::DataKey::from_bytes(key)))
    }

    /// What a file of this job is bound to when sealed.
    fn file_context(&self, name: &str) -> Vec<u8> {
        format!("vigil export file {}/{name}", self.id).into_bytes()
    }

    /// `bytes` as the file `name` stores them: sealed on an encrypted store.
    pub(crate) fn seal_file(&self, name: &str, bytes: Vec<u8>) -> Result<Vec<u8>, FhirError> {
        match self.file_key()? {
            Some(k) => k
                .seal(&self.file_context(name), &bytes)
                .map_err(|e| FhirError::internal(format!("sealing export file {name}: {e}"))),
            None => Ok(bytes),
        }
    }

    /// The file `name`'s bytes as written, opened when sealed.
    pub(crate) fn open_file(&self, name: &str, stored: Vec<u8>) -> Result<Vec<u8>, FhirError> {
        match self.file_key()? {
            Some(k) => k
                .open(&self.file_context(name), &stored, "an export file")
                .map_err(|e| FhirError::internal(format!("export file {name}: {e}"))),
            None => Ok(stored),
        }
    }
}

/// A new job's file key when `store` is encrypted (64 hex digits).
pub(crate) fn new_file_key(store: &Store) -> Result<Option<String>, FhirError> {
    if store.data_keys().is_none() {
        return Ok(None);
    }
    let k = vigil_engine::crypt::DataKey::random()
        .map_err(|e| FhirError::internal(format!("a file key for the export: {e}")))?;
    Ok(Some(k.bytes().iter().map(|b| format!("{b:02x}")).collect()))
}

use crate::instant::now_us_u64 as now_us;

fn read_job(store: &Store, id: &str) -> Result<Option<(Job, u64)>, FhirError> {
    crate::resource::read_record(store, JOB_TYPE, id)
}

/// Writes `job` if it is still at `version`; returns its new version, or
/// `None` if another wrote first.
async fn write_job(app: &App, job: &Job, version: Option<u64>) -> Result<Option<u64>, FhirError> {
    let body = serde_json::to_vec(job).map_err(|e| FhirError::internal(e.to_string()))?;
    let op = Op::put(JOB_TYPE, job.id.clone(), body);
    let op = match version {
        Some(v) => op.expect(Precondition::Version(v)),
        None => op.expect(Precondition::Absent),
    };
    match crate::app::commit(app, Batch::one(op)).await {
        Ok(c) => Ok(match c.outcomes.first() {
            Some(vigil_engine::OpOutcome::Written { version, .. })
            | Some(vigil_engine::OpOutcome::Unchanged { version, .. }) => Some(*version),
            _ => None,
        }),
        Err(e)
            if e.status == StatusCode::PRECONDITION_FAILED || e.status == StatusCode::CONFLICT =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Where the export files go (`export_url`, else `export_dir`), opened.
fn location(app: &App) -> Result<vigil_net::archive::Location, FhirError> {
    let url = app.config.export_location();
    vigil_net::archive::Location::parse(&url)
        .map_err(|e| FhirError::internal(format!("export location {url}: {e}")))
}

/// The object name of job `id`'s file `name` at the export location.
fn job_file(id: &str, name: &str) -> String {
    format!("{id}/{name}")
}

/// Why the export location failed, as an OperationOutcome (503: storage
/// that does not answer is transient).
fn storage_error(what: &str, e: vigil_net::archive::ArchiveError) -> FhirError {
    FhirError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "transient",
        format!("export storage: {what}: {e}"),
    )
}

/// Deletes job `id` and its files.
async fn delete_job(app: &App, id: &str) -> Result<(), FhirError> {
    match location(app) {
        Ok(loc) => {
            if let Err(e) = loc.delete_under(&format!("{id}/")).await {
                tracing::warn!(job = %id, "export: deleting the files failed: {e}");
            }
        }
        Err(e) => tracing::warn!(job = %id, "export: {e:?}"),
    }
    crate::app::commit(app, Batch::one(Op::delete(JOB_TYPE, id.to_owned()))).await?;
    Ok(())
}
