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
//! duplicate and no gap. The output directory must be reachable from both
//! data nodes (as the reference service's storage account is).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{OriginalUri, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use vigil_engine::{Batch, Change, Current, Op, OpKind, Precondition, Store};

use crate::app::App;
use crate::outcome::FhirError;

/// The internal resource type holding export jobs (never exported).
pub const JOB_TYPE: &str = "VigilExportJob";

/// Most export jobs kept (finished ones count until deleted).
const JOBS_MAX: usize = 100;
/// Changes read per call while collecting the snapshot.
const CHANGES_PER_CALL: usize = 1_000;
/// A client polling the same job more often than this gets 429.
const POLL_INTERVAL_MIN: Duration = Duration::from_millis(500);
/// Types in the Patient compartment that this server indexes.
const PATIENT_TYPES: [&str; 8] = [
    "Patient",
    "Observation",
    "Condition",
    "Encounter",
    "Procedure",
    "DiagnosticReport",
    "MedicationRequest",
    "Immunization",
];

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
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn read_job(store: &Store, id: &str) -> Result<Option<(Job, u64)>, FhirError> {
    match store.get(JOB_TYPE, id)? {
        Current::Live(v) => {
            let job: Job = serde_json::from_slice(&v.body)
                .map_err(|e| FhirError::internal(format!("export job {id} unreadable: {e}")))?;
            Ok(Some((job, v.version)))
        }
        _ => Ok(None),
    }
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

/// Query of a kick-off.
#[derive(Debug, Deserialize, Default)]
pub struct KickOff {
    /// Comma-separated types.
    #[serde(rename = "_type")]
    pub types: Option<String>,
    /// Only resources changed after this instant.
    #[serde(rename = "_since")]
    pub since: Option<String>,
    /// `application/fhir+ndjson`, `application/ndjson` or `ndjson`.
    #[serde(rename = "_outputFormat")]
    pub output_format: Option<String>,
}

/// `GET [base]/$export`.
pub async fn system(
    State(app): State<Arc<App>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Query(q): Query<KickOff>,
) -> Response {
    kick_off(&app, &uri.to_string(), &headers, q, "system", None).await
}

/// `GET [base]/Patient/$export` and `[base]/Group/[id]/$export`.
pub async fn by_type(
    State(app): State<Arc<App>>,
    OriginalUri(uri): OriginalUri,
    UrlPath(params): UrlPath<Vec<(String, String)>>,
    headers: HeaderMap,
    Query(q): Query<KickOff>,
) -> Response {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    match (get("type").as_deref(), get("id")) {
        (Some("Patient"), None) => {
            kick_off(&app, &uri.to_string(), &headers, q, "patient", None).await
        }
        (Some("Group"), Some(id)) => {
            kick_off(&app, &uri.to_string(), &headers, q, "group", Some(id)).await
        }
        _ => FhirError::not_found("$export is at [base], [base]/Patient and [base]/Group/[id]")
            .into_response(),
    }
}

async fn kick_off(
    app: &App,
    uri: &str,
    headers: &HeaderMap,
    q: KickOff,
    level: &str,
    group: Option<String>,
) -> Response {
    let result: Result<Response, FhirError> = async {
        let prefer = headers
            .get("prefer")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !prefer.contains("respond-async") {
            return Err(FhirError::invalid(
                "a bulk export needs the header Prefer: respond-async",
            ));
        }
        if let Some(f) = q.output_format.as_deref()
            && !matches!(
                f,
                "application/fhir+ndjson" | "application/ndjson" | "ndjson"
            )
        {
            return Err(FhirError::invalid(format!(
                "_outputFormat {f:?} is not supported; use application/fhir+ndjson"
            )));
        }
        let types: Vec<String> = q
            .types
            .as_deref()
            .map(|t| {
                t.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        for t in &types {
            if !crate::types::is_resource_type(t) {
                return Err(FhirError::invalid(format!(
                    "_type {t:?} is not an R4 resource type"
                )));
            }
        }
        let since_us = match q.since.as_deref() {
            None => None,
            Some(s) => Some(
                crate::instant::parse_interval(s)
                    .map(|(a, _)| u64::try_from(a).unwrap_or(0))
                    .ok_or_else(|| FhirError::invalid(format!("_since {s:?} is not an instant")))?,
            ),
        };
        let store = app.store()?;
        if let (Some(g), "group") = (group.as_deref(), level)
            && !matches!(store.get("Group", g)?, Current::Live(_))
        {
            return Err(FhirError::not_found(format!("Group/{g} does not exist")));
        }
        let live_jobs = store
            .stats()?
            .types
            .iter()
            .find(|t| t.resource_type == JOB_TYPE)
            .map_or(0, |t| t.live);
        if live_jobs as usize >= JOBS_MAX {
            return Err(FhirError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "throttled",
                format!("{JOBS_MAX} export jobs exist; delete finished ones first"),
            )
            .with_retry_after(60));
        }
        let snapshot_lsn = store.last_lsn();
        let transaction_time_us = store
            .frame_at(snapshot_lsn)?
            .map_or_else(now_us, |h| h.timestamp_us);
        let id = crate::ids::new_id();
        let job = Job {
            resource_type: JOB_TYPE.into(),
            id: id.clone(),
            status: "in-progress".into(),
            request: format!("{}{uri}", app.base),
            level: level.into(),
            group,
            types,
            since_us,
            snapshot_lsn,
            transaction_time_us,
            position: 0,
            total: None,
            output: Vec::new(),
            deleted: Vec::new(),
            owner: None,
            owner_epoch: 0,
            lease_until_us: 0,
            error: None,
        };
        write_job(app, &job, None).await?;
        app.export_wake.notify_one();
        tracing::info!(job = %id, level, snapshot_lsn, "export accepted");
        let mut r = (StatusCode::ACCEPTED, "").into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("{}/$export-status/{id}", app.base)) {
            r.headers_mut().insert(header::CONTENT_LOCATION, v);
        }
        Ok(r)
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET [base]/$export-status/[id]`: 202 with progress, 200 with the
/// manifest, 429 when polled too often.
pub async fn status(State(app): State<Arc<App>>, UrlPath(id): UrlPath<String>) -> Response {
    let r: Result<Response, FhirError> = (|| {
        let store = app.store()?;
        let (job, _) = read_job(&store, &id)?
            .ok_or_else(|| FhirError::not_found(format!("no export job {id}")))?;
        {
            let mut polls = app.export_polls.lock().unwrap_or_else(|p| p.into_inner());
            let now = std::time::Instant::now();
            if polls
                .get(&id)
                .is_some_and(|t| now.duration_since(*t) < POLL_INTERVAL_MIN)
            {
                return Err(FhirError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "throttled",
                    "polled too often; wait for Retry-After",
                )
                .with_retry_after(1));
            }
            if polls.len() > 10 * JOBS_MAX {
                polls.clear();
            }
            polls.insert(id.clone(), now);
        }
        match job.status.as_str() {
            "in-progress" => {
                let mut r = (StatusCode::ACCEPTED, "").into_response();
                let progress = match job.total {
                    Some(t) => format!("{} of {t} resources", job.position),
                    None => "collecting the snapshot".into(),
                };
                if let Ok(v) = HeaderValue::from_str(&progress) {
                    r.headers_mut().insert("x-progress", v);
                }
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                Ok(r)
            }
            "completed" => {
                let file = |f: &OutputFile| {
                    serde_json::json!({
                        "type": f.resource_type,
                        "url": format!("{}/$export-file/{}/{}", app.base, job.id, f.file),
                        "count": f.count,
                    })
                };
                let mut m = serde_json::json!({
                    "transactionTime": crate::instant::format_instant(job.transaction_time_us),
                    "request": job.request,
                    "requiresAccessToken": app.auth.is_some(),
                    "output": job.output.iter().map(file).collect::<Vec<_>>(),
                    "error": [],
                });
                if job.since_us.is_some() {
                    m["deleted"] = job.deleted.iter().map(file).collect();
                }
                Ok(crate::http::json_response(
                    StatusCode::OK,
                    serde_json::to_vec_pretty(&m).unwrap_or_default(),
                ))
            }
            "cancelled" => Err(FhirError::not_found(format!("export job {id} was deleted"))),
            _ => Err(FhirError::internal(format!(
                "export job {id} failed: {}",
                job.error.unwrap_or_default()
            ))),
        }
    })();
    r.unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE [base]/$export-status/[id]`: 202, files removed; then 404.
pub async fn cancel(State(app): State<Arc<App>>, UrlPath(id): UrlPath<String>) -> Response {
    let r: Result<Response, FhirError> = async {
        let store = app.store()?;
        let (mut job, version) = read_job(&store, &id)?
            .ok_or_else(|| FhirError::not_found(format!("no export job {id}")))?;
        job.status = "cancelled".into();
        if write_job(&app, &job, Some(version)).await?.is_none() {
            return Err(FhirError::new(
                StatusCode::CONFLICT,
                "conflict",
                "the job changed; retry",
            ));
        }
        let _ = std::fs::remove_dir_all(job_dir(&app.config.export_dir(), &id));
        crate::app::commit(&app, Batch::one(Op::delete(JOB_TYPE, id.clone()))).await?;
        Ok((StatusCode::ACCEPTED, "").into_response())
    }
    .await;
    r.unwrap_or_else(IntoResponse::into_response)
}

fn job_dir(export_dir: &Path, id: &str) -> PathBuf {
    export_dir.join(id)
}

/// `GET [base]/$export-file/[job]/[file]`: an output file.
pub async fn file(
    State(app): State<Arc<App>>,
    UrlPath((id, name)): UrlPath<(String, String)>,
) -> Response {
    if !name.ends_with(".ndjson") || name.contains('/') || name.contains("..") || id.contains("..")
    {
        return FhirError::not_found("no such export file").into_response();
    }
    let path = job_dir(&app.config.export_dir(), &id).join(&name);
    match tokio::task::spawn_blocking(move || std::fs::read(path)).await {
        Ok(Ok(bytes)) => {
            let mut r = (StatusCode::OK, bytes).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/fhir+ndjson"),
            );
            r
        }
        _ => FhirError::not_found(format!("no export file {id}/{name}")).into_response(),
    }
}

/// The leader's export worker: every second, claims a job whose lease has
/// run out (or that is its own) and works on it. Runs until the server stops.
pub async fn worker(app: Arc<App>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = app.export_wake.notified() => {}
        }
        if let Err(e) = work_once(&app).await {
            tracing::warn!("export worker: {e}");
        }
    }
}

fn leads(app: &App) -> bool {
    match &app.replication {
        Some(r) => r.is_leader() && r.cluster().is_none_or(|c| c.still_leading().is_ok()),
        None => true,
    }
}

async fn work_once(app: &App) -> Result<(), FhirError> {
    if !leads(app) {
        return Ok(());
    }
    let store = app.store()?;
    let page = store.history(&vigil_engine::HistoryQuery {
        scope: vigil_engine::HistoryScope::Type(JOB_TYPE.into()),
        since_us: None,
        count: JOBS_MAX * 4,
        cursor: None,
    })?;
    let mut seen = std::collections::HashSet::new();
    let me = app.node_name();
    let epoch = store.epoch();
    for v in page.entries {
        if !seen.insert(v.id.clone()) {
            continue;
        }
        let Some((job, version)) = read_job(&store, &v.id)? else {
            continue;
        };
        let mine = job.owner.as_deref() == Some(me.as_str()) && job.owner_epoch == epoch;
        if job.status != "in-progress" || (!mine && job.lease_until_us > now_us()) {
            continue;
        }
        drop(store);
        return run_job(app, job, version).await;
    }
    Ok(())
}

async fn run_job(app: &App, mut job: Job, mut version: u64) -> Result<(), FhirError> {
    let lease = Duration::from_millis(app.config.export_lease_ms);
    let claim = |job: &mut Job, app: &App| -> Result<(), FhirError> {
        job.owner = Some(app.node_name());
        job.owner_epoch = app.store()?.epoch();
        job.lease_until_us = now_us() + lease.as_micros() as u64;
        Ok(())
    };
    claim(&mut job, app)?;
    let Some(v) = write_job(app, &job, Some(version)).await? else {
        return Ok(()); // another claim won
    };
    version = v;
    tracing::info!(job = %job.id, position = job.position, "export: working (claimed)");
    let store = app.store()?;
    let (live, deleted) = {
        let (s, j) = (store.clone(), job.clone());
        tokio::task::spawn_blocking(move || snapshot(&s, &j))
            .await
            .map_err(|e| FhirError::internal(e.to_string()))??
    };
    job.total = Some(live.len());
    let dir = job_dir(&app.config.export_dir(), &job.id);
    std::fs::create_dir_all(&dir)
        .map_err(|e| FhirError::internal(format!("export directory {}: {e}", dir.display())))?;
    let chunk = app.config.export_chunk_resources.max(1);
    while job.position < live.len() {
        if !leads(app) {
            return Ok(());
        }
        let end = (job.position + chunk).min(live.len());
        let index = job.position / chunk;
        let mut files: BTreeMap<String, (Vec<u8>, usize)> = BTreeMap::new();
        for (ty, id, v, ts) in &live[job.position..end] {
            if let vigil_engine::VersionRead::Live(ver) = store.get_version(ty, id, *v)? {
                let body = crate::resource::render(&ver.body, *v, *ts)?;
                let e = files.entry(ty.clone()).or_default();
                e.0.extend_from_slice(&body);
                e.0.push(b'\n');
                e.1 += 1;
            }
        }
        let mut out = Vec::new();
        for (ty, (bytes, count)) in files {
            let name = format!("{index:06}-{ty}.ndjson");
            write_file(&dir.join(&name), &bytes).await?;
            out.push(OutputFile {
                resource_type: ty,
                file: name,
                count,
            });
        }
        job.output.retain(|f| !out.iter().any(|o| o.file == f.file));
        job.output.extend(out);
        job.position = end;
        claim(&mut job, app)?;
        let Some(v) = write_job(app, &job, Some(version)).await? else {
            return Ok(()); // the claim was taken over
        };
        version = v;
    }
    if job.since_us.is_some() && !deleted.is_empty() {
        let mut bytes = Vec::new();
        for (ty, id) in &deleted {
            let b = serde_json::json!({
                "resourceType": "Bundle", "type": "transaction",
                "entry": [{"request": {"method": "DELETE", "url": format!("{ty}/{id}")}}],
            });
            bytes.extend_from_slice(b.to_string().as_bytes());
            bytes.push(b'\n');
        }
        let name = "deleted.ndjson".to_owned();
        write_file(&dir.join(&name), &bytes).await?;
        job.deleted = vec![OutputFile {
            resource_type: "Bundle".into(),
            file: name,
            count: deleted.len(),
        }];
    }
    job.status = "completed".into();
    job.lease_until_us = 0;
    write_job(app, &job, Some(version)).await?;
    tracing::info!(job = %job.id, resources = live.len(), "export completed");
    Ok(())
}

async fn write_file(path: &Path, bytes: &[u8]) -> Result<(), FhirError> {
    let (path, bytes) = (path.to_owned(), bytes.to_vec());
    tokio::task::spawn_blocking(move || {
        let tmp = path.with_extension("tmp");
        let io = |e: std::io::Error| FhirError::internal(format!("{}: {e}", path.display()));
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    })
    .await
    .map_err(|e| FhirError::internal(e.to_string()))?
}

/// Live resource (type, id, version, lastUpdated) and deleted (type, id)
/// matching the job, as of its pinned LSN, in a deterministic order.
#[expect(clippy::type_complexity, reason = "two lists returned to one caller")]
fn snapshot(
    store: &Store,
    job: &Job,
) -> Result<(Vec<(String, String, u64, u64)>, Vec<(String, String)>), FhirError> {
    let wanted = |ty: &str| -> bool {
        if ty == JOB_TYPE {
            return false;
        }
        let by_level = match job.level.as_str() {
            "system" => true,
            _ => PATIENT_TYPES.contains(&ty),
        };
        by_level && (job.types.is_empty() || job.types.iter().any(|t| t == ty))
    };
    let mut latest: BTreeMap<(String, String), (u64, u64, OpKind)> = BTreeMap::new();
    let mut after = 0;
    'scan: loop {
        let changes = store.changes(after, CHANGES_PER_CALL)?;
        if changes.is_empty() {
            break;
        }
        for c in &changes {
            if c.lsn() > job.snapshot_lsn {
                break 'scan;
            }
            after = c.lsn();
            if let Change::Resource { version: v, .. } = c
                && wanted(&v.resource_type)
            {
                latest.insert(
                    (v.resource_type.clone(), v.id.clone()),
                    (v.version, v.last_updated_us, v.op),
                );
            }
        }
    }
    let members = match (&job.level[..], &job.group) {
        ("group", Some(g)) => Some(group_members(store, g, job.snapshot_lsn)?),
        _ => None,
    };
    let mut live = Vec::new();
    let mut deleted = Vec::new();
    for ((ty, id), (v, ts, op)) in latest {
        if job.since_us.is_some_and(|s| ts <= s) {
            continue;
        }
        if let Some(m) = &members
            && !in_group(store, m, &ty, &id, v)?
        {
            continue;
        }
        if op == OpKind::Delete {
            deleted.push((ty, id));
        } else {
            live.push((ty, id, v, ts));
        }
    }
    Ok((live, deleted))
}

/// The Patient ids a Group lists as members, as of `lsn`.
fn group_members(
    store: &Store,
    group: &str,
    lsn: u64,
) -> Result<std::collections::HashSet<String>, FhirError> {
    let page = store.history(&vigil_engine::HistoryQuery {
        scope: vigil_engine::HistoryScope::Instance("Group".into(), group.into()),
        since_us: None,
        count: 1_000,
        cursor: None,
    })?;
    let body = page
        .entries
        .iter()
        .find(|v| v.lsn <= lsn && v.op != OpKind::Delete)
        .map(|v| v.body.clone())
        .ok_or_else(|| {
            FhirError::not_found(format!("Group/{group} did not exist at the export's time"))
        })?;
    let g: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    Ok(g["member"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["entity"]["reference"].as_str())
        .filter_map(|r| r.strip_prefix("Patient/"))
        .map(String::from)
        .collect())
}

fn in_group(
    store: &Store,
    members: &std::collections::HashSet<String>,
    ty: &str,
    id: &str,
    version: u64,
) -> Result<bool, FhirError> {
    if ty == "Patient" {
        return Ok(members.contains(id));
    }
    let vigil_engine::VersionRead::Live(v) = store.get_version(ty, id, version)? else {
        return Ok(false);
    };
    let r: serde_json::Value = serde_json::from_slice(&v.body).unwrap_or_default();
    Ok(["subject", "patient"].iter().any(|k| {
        r[*k]["reference"]
            .as_str()
            .and_then(|s| s.strip_prefix("Patient/"))
            .is_some_and(|p| members.contains(p))
    }))
}
