//! Reindex jobs: giving the resources already stored the keys of custom
//! search parameters ([`crate::search::custom`]).
//!
//! A write that changes what a SearchParameter puts in force records a job
//! (a resource of the internal type [`JOB_TYPE`]; `job`) in the same
//! batch, for the types it applies to; so does `POST [base]/$reindex`. The leader's
//! worker walks each type's live resources in id order and commits, per
//! chunk of [`CHUNK`], a rekey record for each ([`vigil_engine::Op::rekey`])
//! together with the job's new position, so the position is exactly what
//! the log holds: after a crash or a failover the leader of the moment
//! goes on from it, and a follower, which applies the same records, shows
//! the same progress. It stays at most two chunks ahead of the index, so
//! a search meanwhile waits for no more than that to be applied.
//! Jobs run one after another; as one ends, finished jobs beyond the
//! newest [`JOBS_KEPT`] are deleted. `/status` (`reindex`) and `GET /$reindex/[id]` show
//! it on every node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use vigil_engine::{Batch, Op, Precondition, Store};

use crate::app::App;
use crate::http::outcome::{FHIR_JSON_TYPE, FhirError};

pub mod job;

pub use job::{JOB_TYPE, Job};
/// Resources rekeyed per commit.
pub const CHUNK: usize = 2_000;
/// Most jobs listed by `/status` (the newest).
pub const STATUS_JOBS_MAX: usize = 10;
/// Most jobs read when looking for work (the oldest first, as ids are
/// time-ordered): finished ones beyond [`JOBS_KEPT`] are deleted, so only
/// as many jobs running at once could reach it.
const JOBS_SCAN_MAX: usize = 1_000;
/// Finished jobs kept (the newest); older ones are deleted when a job ends.
pub const JOBS_KEPT: usize = 100;
/// How often the worker looks for work when not told of any.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// How often a running job's progress is logged.
const LOG_EVERY: Duration = Duration::from_secs(5);
/// Longest wait for the index to apply the chunk before last.
const APPLY_WAIT: Duration = Duration::from_secs(10);

/// The jobs in the store, newest first, at most `limit`.
pub fn jobs(store: &Store, limit: usize) -> Result<Vec<(Job, u64)>, FhirError> {
    let mut out = Vec::new();
    for id in store.live_ids(JOB_TYPE, None, JOBS_SCAN_MAX)? {
        if let Some(j) = read_job(store, &id)? {
            out.push(j);
        }
    }
    out.sort_by(|a, b| {
        b.0.started_us
            .cmp(&a.0.started_us)
            .then(b.0.id.cmp(&a.0.id))
    });
    out.truncate(limit);
    Ok(out)
}

fn read_job(store: &Store, id: &str) -> Result<Option<(Job, u64)>, FhirError> {
    crate::resource::read_record(store, JOB_TYPE, id)
}

/// What `/status` shows: the newest jobs.
pub fn status(app: &App) -> Value {
    let views = app
        .store()
        .ok()
        .and_then(|s| jobs(&s, STATUS_JOBS_MAX).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|(j, _)| j.view())
        .collect::<Vec<_>>();
    Value::Array(views)
}

fn leads(app: &App) -> bool {
    match &app.replication {
        Some(r) => r.is_leader() && r.cluster().is_none_or(|c| c.still_leading().is_ok()),
        None => true,
    }
}

/// The leader's reindex worker: runs the oldest unfinished job to its end,
/// one chunk per commit. Runs until the server stops.
pub async fn worker(app: Arc<App>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(IDLE_POLL) => {}
            () = app.reindex_wake.notified() => {}
        }
        // One job after another while there are any.
        loop {
            match work_once(&app).await {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!("reindex worker: {e}");
                    break;
                }
            }
        }
    }
}

/// Runs the oldest unfinished job, if any and this node leads: whether
/// there was one.
async fn work_once(app: &App) -> Result<bool, FhirError> {
    if !leads(app) {
        return Ok(false);
    }
    let store = app.store()?;
    let Some((mut job, mut version)) = jobs(&store, JOBS_SCAN_MAX)?
        .into_iter()
        .filter(|(j, _)| j.status == "in-progress")
        .min_by(|a, b| a.0.started_us.cmp(&b.0.started_us))
    else {
        return Ok(false);
    };
    drop(store);
    tracing::info!(job = %job.id, types = ?job.types, total = job.total, "reindex running");
    let mut logged = Instant::now();
    // The LSN of the chunk before last: rekeys are small in bytes but
    // each reads a body, so the worker stays at most two chunks ahead of
    // the index; reads, which wait until what was acknowledged is indexed,
    // then never wait for more than that.
    let mut before_last: Option<u64> = None;
    let mut last: Option<u64> = None;
    while job.status == "in-progress" && leads(app) {
        let store = app.store()?;
        if let Some(lsn) = before_last {
            let s = store.clone();
            let seen = tokio::task::spawn_blocking(move || s.wait_for_lsn(lsn - 1, APPLY_WAIT))
                .await
                .map_err(|e| FhirError::internal(e.to_string()))?;
            if seen < lsn {
                continue;
            }
        }
        let mut batch = Batch::new();
        let ids = match job.types.get(job.at) {
            Some(ty) => store.live_ids(ty, job.after.as_deref(), CHUNK)?,
            None => Vec::new(),
        };
        drop(store);
        if let Some(ty) = job.types.get(job.at) {
            for id in &ids {
                batch.push(Op::rekey(ty.clone(), id.clone()));
            }
        }
        job.done += ids.len() as u64;
        match (ids.len() < CHUNK, ids.last()) {
            (false, Some(last)) => job.after = Some(last.clone()),
            _ => {
                job.at += 1;
                job.after = None;
            }
        }
        if job.at >= job.types.len() {
            job.status = "completed".into();
            // With this one's end, finished jobs beyond the newest kept go.
            let store = app.store()?;
            let finished = jobs(&store, JOBS_SCAN_MAX)?
                .into_iter()
                .filter(|(j, _)| j.status == "completed" && j.id != job.id);
            for (old, _) in finished.skip(JOBS_KEPT - 1) {
                batch.push(Op::delete(JOB_TYPE, old.id));
            }
        }
        job.updated_us = crate::instant::now_us_u64();
        batch.push(job.op()?.expect(Precondition::Version(version)));
        let committed = crate::app::commit(app, batch).await?;
        before_last = last;
        last = committed.last_lsn;
        version = match committed.outcomes.last() {
            Some(vigil_engine::OpOutcome::Written { version, .. }) => *version,
            _ => return Err(FhirError::internal("the reindex job was not written")),
        };
        if logged.elapsed() >= LOG_EVERY || job.status != "in-progress" {
            logged = Instant::now();
            tracing::info!(job = %job.id, done = job.done, total = job.total, status = %job.status, "reindex progress");
        }
    }
    Ok(true)
}

/// `POST [base]/$reindex`: records a job that rekeys every resource of
/// every type a custom parameter is or was in force on. 202 with the job.
pub async fn start_system(State(app): State<Arc<App>>) -> Result<Response, FhirError> {
    start(app, None).await
}

/// `POST [base]/[type]/$reindex`: records a job that rekeys every
/// resource of the type. 202 with the job.
pub async fn start_type(
    State(app): State<Arc<App>>,
    Path(ty): Path<String>,
) -> Result<Response, FhirError> {
    start(app, Some(ty)).await
}

async fn start(app: Arc<App>, ty: Option<String>) -> Result<Response, FhirError> {
    let store = app.store()?;
    let types: Vec<String> = match ty {
        Some(t) => {
            if !crate::types::is_resource_type(&t) {
                return Err(FhirError::not_found(format!("unknown resource type {t}")));
            }
            vec![t]
        }
        None => {
            let ex = store.extractor().clone();
            crate::types::R4_RESOURCE_TYPES
                .iter()
                .filter(|t| ex.ever_defines(t))
                .map(|t| (*t).to_owned())
                .collect()
        }
    };
    let job = Job::new(&store, "$reindex".into(), types)?;
    drop(store);
    crate::app::commit(&app, Batch::one(job.op()?.expect(Precondition::Absent))).await?;
    app.reindex_wake.notify_one();
    let mut headers = HeaderMap::new();
    if let Ok(v) = format!("{}/$reindex/{}", app.base, job.id).parse() {
        headers.insert(axum::http::header::CONTENT_LOCATION, v);
    }
    if let Ok(v) = FHIR_JSON_TYPE.parse() {
        headers.insert(axum::http::header::CONTENT_TYPE, v);
    }
    Ok((StatusCode::ACCEPTED, headers, parameters(&job).to_string()).into_response())
}

/// `GET [base]/$reindex/[id]`: a job's progress, on any node.
pub async fn show(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let store = app.store()?;
    let (job, _) = read_job(&store, &id)?
        .ok_or_else(|| FhirError::not_found(format!("no reindex job {id}")))?;
    Ok((
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, FHIR_JSON_TYPE)],
        parameters(&job).to_string(),
    )
        .into_response())
}

/// A job as a FHIR Parameters resource.
fn parameters(job: &Job) -> Value {
    let v = job.view();
    let mut params = vec![
        json!({"name": "job", "valueString": job.id}),
        json!({"name": "status", "valueCode": job.status}),
        json!({"name": "reason", "valueString": job.reason}),
        json!({"name": "done", "valueInteger": job.done.min(i32::MAX as u64)}),
        json!({"name": "total", "valueInteger": job.total.min(i32::MAX as u64)}),
        json!({"name": "percent", "valueDecimal": v["percent"]}),
    ];
    for t in &job.types {
        params.push(json!({"name": "type", "valueCode": t}));
    }
    json!({"resourceType": "Parameters", "parameter": params})
}
