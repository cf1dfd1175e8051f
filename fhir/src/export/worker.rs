//! The leader's export worker: claims a job whose lease ran out, takes
//! the snapshot at its pinned LSN and writes it in chunks, recording the
//! position after each.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vigil_engine::{Change, OpKind, Store};

use super::{
    CHANGES_PER_CALL, JOB_TYPE, JOBS_MAX, Job, OutputFile, PATIENT_TYPES, job_dir, now_us,
    read_job, write_job,
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
