//! The `$export` endpoints: kick-off, status, cancel, output files.

use std::sync::Arc;

use axum::extract::{OriginalUri, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use vigil_engine::{Batch, Current, Op};

use super::{
    JOB_TYPE, JOBS_MAX, Job, OutputFile, POLL_INTERVAL_MIN, job_dir, now_us, read_job, write_job,
};
use crate::app::App;
use crate::http::outcome::FhirError;

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
