//! The leader's export worker: claims a job whose lease ran out, takes
//! the snapshot at its pinned LSN and writes it in chunks, recording the
//! position after each.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use vigil_engine::{Change, OpKind, Store};

use super::{
    CHANGES_PER_CALL, JOB_TYPE, JOBS_MAX, Job, OutputFile, job_file, location, now_us, read_job,
    storage_error, write_job,
};
use crate::app::App;
use crate::http::outcome::FhirError;

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

async fn work_once(app: &Arc<App>) -> Result<(), FhirError> {
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
    let now = now_us();
    let mut todo = None;
    for v in page.entries {
        if !seen.insert(v.id.clone()) {
            continue;
        }
        let Some((job, version)) = read_job(&store, &v.id)? else {
            continue;
        };
        let expired = super::handlers::expires_us(app, &job).is_some_and(|at| at <= now);
        // A cancelled job still recorded: its deletion was cut short.
        if expired || job.status == "cancelled" {
            tracing::info!(job = %job.id, status = %job.status, "export: deleting (expired or cancelled)");
            super::delete_job(app, &job.id).await?;
            continue;
        }
        let mine = job.owner.as_deref() == Some(me.as_str()) && job.owner_epoch == epoch;
        if job.status != "in-progress" || (!mine && job.lease_until_us > now) {
            continue;
        }
        if todo.is_none() {
            todo = Some((job, version));
        }
    }
    drop(store);
    match todo {
        Some((job, version)) => run_job(app, job, version).await,
        None => Ok(()),
    }
}

/// Per type, the ids a job is limited to (by its patients or Group, and
/// its `_typeFilter`s); a type not named is not limited.
type Selection = BTreeMap<String, BTreeSet<String>>;

/// The file beside a job's output that holds its [`Selection`].
const SELECTION_FILE: &str = "selection.json";

async fn run_job(app: &Arc<App>, mut job: Job, mut version: u64) -> Result<(), FhirError> {
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
    let dir = location(app)?;
    let selection = if job.selected {
        read_selection(&job, &dir).await?
    } else if needs_selection(&job) {
        // Evaluated once, on the index as of `lsn` (or a little later:
        // searches see at least what was acknowledged when they began),
        // and kept beside the output, so a worker that resumes the job
        // after a failover exports the same resources.
        let store = app.store()?;
        let lsn = store.last_lsn();
        let (a, j) = (app.clone(), job.clone());
        let started = std::time::Instant::now();
        let selection = tokio::task::spawn_blocking(move || select(&a, &j, lsn))
            .await
            .map_err(|e| FhirError::internal(e.to_string()))??;
        tracing::info!(
            job = %job.id,
            ids = selection.values().map(BTreeSet::len).sum::<usize>(),
            ms = started.elapsed().as_millis() as u64,
            "export: selection evaluated"
        );
        let bytes =
            serde_json::to_vec(&selection).map_err(|e| FhirError::internal(e.to_string()))?;
        write_file(&job, &dir, SELECTION_FILE, bytes).await?;
        job.snapshot_lsn = lsn;
        job.transaction_time_us = store.frame_at(lsn)?.map_or_else(now_us, |h| h.timestamp_us);
        job.selected = true;
        claim(&mut job, app)?;
        let Some(v) = write_job(app, &job, Some(version)).await? else {
            return Ok(());
        };
        version = v;
        Some(selection)
    } else {
        None
    };
    let store = app.store()?;
    let (live, deleted) = {
        let (s, j) = (store.clone(), job.clone());
        tokio::task::spawn_blocking(move || snapshot(&s, &j, selection.as_ref()))
            .await
            .map_err(|e| FhirError::internal(e.to_string()))??
    };
    job.total = Some(live.len());
    let chunk = app.config.export_chunk_resources.max(1);
    while job.position < live.len() {
        if !leads(app) {
            return Ok(());
        }
        let end = (job.position + chunk).min(live.len());
        let index = job.position / chunk;
        let mut files: BTreeMap<String, (Vec<u8>, usize)> = BTreeMap::new();
        for (ty, id, v, ts) in &live[job.position..end] {
            let line = match store.get_version(ty, id, *v)? {
                vigil_engine::VersionRead::Live(ver) => {
                    rendered(&ver.body, *v, *ts, ty, &job.elements)
                }
                _ => continue,
            };
            let (file_ty, bytes) = match line {
                Ok(body) => (ty.clone(), body),
                Err(e) => (
                    "OperationOutcome".to_owned(),
                    outcome_line(
                        "error",
                        "exception",
                        &format!(
                            "{ty}/{id} version {v} could not be exported: {}",
                            e.diagnostics
                        ),
                    ),
                ),
            };
            let e = files.entry(file_ty).or_default();
            e.0.extend_from_slice(&bytes);
            e.0.push(b'\n');
            e.1 += 1;
        }
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for (ty, (bytes, count)) in files {
            let name = format!("{index:06}-{ty}.ndjson");
            write_file(&job, &dir, &name, bytes).await?;
            let f = OutputFile {
                resource_type: ty,
                file: name,
                count,
            };
            if f.resource_type == "OperationOutcome" {
                errors.push(f);
            } else {
                out.push(f);
            }
        }
        job.output.retain(|f| !out.iter().any(|o| o.file == f.file));
        job.output.extend(out);
        job.errors
            .retain(|f| !errors.iter().any(|o| o.file == f.file));
        job.errors.extend(errors);
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
        write_file(&job, &dir, &name, bytes).await?;
        job.deleted = vec![OutputFile {
            resource_type: "Bundle".into(),
            file: name,
            count: deleted.len(),
        }];
    }
    if !job.warnings.is_empty() {
        let mut bytes = Vec::new();
        for w in &job.warnings {
            bytes.extend_from_slice(&outcome_line("warning", "not-supported", w));
            bytes.push(b'\n');
        }
        let name = "request-OperationOutcome.ndjson".to_owned();
        write_file(&job, &dir, &name, bytes).await?;
        job.errors.retain(|f| f.file != name);
        job.errors.push(OutputFile {
            resource_type: "OperationOutcome".into(),
            file: name,
            count: job.warnings.len(),
        });
    }
    job.status = "completed".into();
    job.lease_until_us = 0;
    job.finished_us = Some(now_us());
    write_job(app, &job, Some(version)).await?;
    tracing::info!(job = %job.id, resources = live.len(), "export completed");
    Ok(())
}

/// Writes the file `name` of `job` whole (sealed on an encrypted store)
/// at the export location: an object replaced whole, never seen partial.
async fn write_file(
    job: &Job,
    dir: &vigil_net::archive::Location,
    name: &str,
    bytes: Vec<u8>,
) -> Result<(), FhirError> {
    let bytes = job.seal_file(name, bytes)?;
    dir.put(&job_file(&job.id, name), bytes)
        .await
        .map_err(|e| storage_error(&format!("writing {}/{name}", job.id), e))
}

/// One exported line: the stored version rendered, cut to `_elements`
/// when a name applies to its type.
fn rendered(
    body: &[u8],
    version: u64,
    ts: u64,
    ty: &str,
    elements: &[String],
) -> Result<Vec<u8>, FhirError> {
    let body = crate::resource::render(body, version, ts)?;
    match super::kickoff::elements_for(elements, ty) {
        None => Ok(body),
        Some(names) => crate::subset::apply_to_bytes(body, &crate::subset::Subset::Elements(names)),
    }
}

/// An OperationOutcome with one issue, as one NDJSON line.
fn outcome_line(severity: &str, code: &str, diagnostics: &str) -> Vec<u8> {
    crate::http::outcome::outcome_json(severity, code, diagnostics)
        .to_string()
        .into_bytes()
}

fn needs_selection(job: &Job) -> bool {
    !job.patients.is_empty() || job.group.is_some() || !job.type_filters.is_empty()
}

async fn read_selection(
    job: &Job,
    dir: &vigil_net::archive::Location,
) -> Result<Option<Selection>, FhirError> {
    let object = job_file(&job.id, SELECTION_FILE);
    let stored = dir
        .get_opt(&object)
        .await
        .map_err(|e| storage_error(&format!("reading {object}"), e))?
        .ok_or_else(|| {
            FhirError::internal(format!(
                "{object} is missing at the export location: the job's selection is lost"
            ))
        })?;
    let bytes = job.open_file(SELECTION_FILE, stored)?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| FhirError::internal(format!("{object}: {e}")))
}

/// Patients per search when a compartment is searched for.
const PATIENTS_PER_SEARCH: usize = 100;

/// Evaluates a job's patients (its `patient` list, its Group's members
/// as of `lsn`, or both: those in both) and its `_typeFilter`s with the
/// server's search.
fn select(app: &App, job: &Job, lsn: u64) -> Result<Selection, FhirError> {
    let store = app.store()?;
    let mut patients: Option<BTreeSet<String>> = None;
    if let Some(g) = &job.group {
        patients = Some(group_members(&store, g, lsn)?.into_iter().collect());
    }
    if !job.patients.is_empty() {
        let listed: BTreeSet<String> = job.patients.iter().cloned().collect();
        patients = Some(match patients {
            Some(p) => p.intersection(&listed).cloned().collect(),
            None => listed,
        });
    }
    let mut selection = Selection::new();
    let compartment = crate::search::compartment::compartment("Patient")
        .ok_or_else(|| FhirError::internal("the Patient compartment is not built in"))?;
    if let Some(patients) = &patients {
        let refs: Vec<String> = patients.iter().map(|p| format!("Patient/{p}")).collect();
        for ty in compartment.types() {
            if !job.types.is_empty() && !job.types.iter().any(|t| t == ty) {
                continue;
            }
            let mut ids: BTreeSet<String> = if ty == "Patient" {
                patients.clone()
            } else {
                BTreeSet::new()
            };
            for param in compartment.params_of(ty) {
                for chunk in refs.chunks(PATIENTS_PER_SEARCH) {
                    let query = format!("{param}={}", chunk.join(","));
                    ids.extend(crate::search::matching_ids(app, ty, &query)?);
                }
            }
            selection.insert(ty.to_owned(), ids);
        }
    }
    let mut filtered: Selection = Selection::new();
    for f in &job.type_filters {
        let (ty, query) = f.split_once('?').unwrap_or((f, ""));
        filtered
            .entry(ty.to_owned())
            .or_default()
            .extend(crate::search::matching_ids(app, ty, query)?);
    }
    for (ty, ids) in filtered {
        match selection.get_mut(&ty) {
            Some(by_patient) => by_patient.retain(|id| ids.contains(id)),
            None => {
                selection.insert(ty, ids);
            }
        }
    }
    Ok(selection)
}

/// Live resource (type, id, version, lastUpdated) and deleted (type, id)
/// matching the job, as of its pinned LSN, in a deterministic order.
#[expect(clippy::type_complexity, reason = "two lists returned to one caller")]
fn snapshot(
    store: &Store,
    job: &Job,
    selection: Option<&Selection>,
) -> Result<(Vec<(String, String, u64, u64)>, Vec<(String, String)>), FhirError> {
    let compartment = crate::search::compartment::compartment("Patient");
    let wanted = |ty: &str| -> bool {
        if !crate::types::is_resource_type(ty) {
            return false; // the server's own records (jobs)
        }
        let by_level = match job.level.as_str() {
            "system" => true,
            _ => compartment.is_some_and(|c| !c.params_of(ty).is_empty()),
        };
        by_level && (job.types.is_empty() || job.types.iter().any(|t| t == ty))
    };
    let selected = |ty: &str, id: &str| -> bool {
        selection
            .and_then(|s| s.get(ty))
            .is_none_or(|ids| ids.contains(id))
    };
    let mut latest: BTreeMap<(String, String), (u64, u64, OpKind)> = BTreeMap::new();
    let mut provenance: BTreeMap<String, (u64, u64, OpKind)> = BTreeMap::new();
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
            let Change::Resource { version: v, .. } = c else {
                continue;
            };
            if wanted(&v.resource_type) {
                latest.insert(
                    (v.resource_type.clone(), v.id.clone()),
                    (v.version, v.last_updated_us, v.op),
                );
            }
            if job.latest_provenance && v.resource_type == "Provenance" {
                provenance.insert(v.id.clone(), (v.version, v.last_updated_us, v.op));
            }
        }
    }
    let mut live = Vec::new();
    let mut deleted = Vec::new();
    for ((ty, id), (v, ts, op)) in latest {
        if job.since_us.is_some_and(|s| ts <= s) || !selected(&ty, &id) {
            continue;
        }
        if op == OpKind::Delete {
            deleted.push((ty, id));
        } else {
            live.push((ty, id, v, ts));
        }
    }
    if job.latest_provenance {
        add_latest_provenance(store, &mut live, &provenance)?;
    }
    Ok((live, deleted))
}

/// Adds, for each exported resource, the newest live Provenance whose
/// `target` names it (by `Type/id`, with or without a version), once
/// each, keeping the list in (type, id) order.
fn add_latest_provenance(
    store: &Store,
    live: &mut Vec<(String, String, u64, u64)>,
    provenance: &BTreeMap<String, (u64, u64, OpKind)>,
) -> Result<(), FhirError> {
    let exported: BTreeSet<(String, String)> = live
        .iter()
        .map(|(t, i, _, _)| (t.clone(), i.clone()))
        .collect();
    // target -> (lastUpdated, provenance id, version)
    let mut newest: BTreeMap<(String, String), (u64, String, u64)> = BTreeMap::new();
    for (id, (v, ts, op)) in provenance {
        if *op == OpKind::Delete {
            continue;
        }
        let vigil_engine::VersionRead::Live(ver) = store.get_version("Provenance", id, *v)? else {
            continue;
        };
        let Ok(p) = serde_json::from_slice::<serde_json::Value>(&ver.body) else {
            continue;
        };
        for t in p["target"].as_array().into_iter().flatten() {
            let Some((ty, tid)) = t["reference"]
                .as_str()
                .and_then(crate::search::keys::reference_target)
            else {
                continue;
            };
            let key = (ty, tid);
            if !exported.contains(&key) {
                continue;
            }
            let candidate = (*ts, id.clone(), *v);
            if newest.get(&key).is_none_or(|n| candidate > *n) {
                newest.insert(key, candidate);
            }
        }
    }
    let mut all: BTreeMap<(String, String), (u64, u64)> = live
        .drain(..)
        .map(|(t, i, v, ts)| ((t, i), (v, ts)))
        .collect();
    for (ts, id, v) in newest.into_values() {
        all.entry(("Provenance".to_owned(), id)).or_insert((v, ts));
    }
    live.extend(all.into_iter().map(|((t, i), (v, ts))| (t, i, v, ts)));
    Ok(())
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
