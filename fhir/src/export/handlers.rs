//! The `$export` endpoints: kick-off, status, cancel, output files.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use vigil_engine::Current;

use super::kickoff::{self, Level};
use super::{
    JOB_TYPE, JOBS_MAX, Job, OutputFile, POLL_INTERVAL_MIN, job_file, location, now_us, read_job,
    storage_error, write_job,
};
use crate::app::App;
use crate::http::auth::Granted;
use crate::http::outcome::FhirError;
use crate::http::scopes::Access;

/// `GET [base]/$export`.
pub async fn system(
    State(app): State<Arc<App>>,
    OriginalUri(uri): OriginalUri,
    granted: Option<Extension<Granted>>,
    headers: HeaderMap,
) -> Response {
    let pairs = query_pairs(&uri);
    kick_off(&app, &uri, &headers, pairs, Level::System, None, granted).await
}

/// `POST [base]/$export` with a `Parameters` body.
pub async fn system_post(
    State(app): State<Arc<App>>,
    OriginalUri(uri): OriginalUri,
    granted: Option<Extension<Granted>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let pairs = post_pairs(&app, &uri, &headers, body);
    kick_off(&app, &uri, &headers, pairs, Level::System, None, granted).await
}

/// `GET [base]/Patient/$export` and `[base]/Group/[id]/$export`.
pub async fn by_type(
    State(app): State<Arc<App>>,
    OriginalUri(uri): OriginalUri,
    UrlPath(params): UrlPath<Vec<(String, String)>>,
    granted: Option<Extension<Granted>>,
    headers: HeaderMap,
) -> Response {
    let pairs = query_pairs(&uri);
    at_type(&app, &uri, &params, &headers, pairs, granted).await
}

/// `POST [base]/Patient/$export` and `[base]/Group/[id]/$export` with a
/// `Parameters` body.
pub async fn by_type_post(
    State(app): State<Arc<App>>,
    OriginalUri(uri): OriginalUri,
    UrlPath(params): UrlPath<Vec<(String, String)>>,
    granted: Option<Extension<Granted>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let pairs = post_pairs(&app, &uri, &headers, body);
    at_type(&app, &uri, &params, &headers, pairs, granted).await
}

async fn at_type(
    app: &App,
    uri: &Uri,
    params: &[(String, String)],
    headers: &HeaderMap,
    pairs: Result<Vec<(String, String)>, FhirError>,
    granted: Option<Extension<Granted>>,
) -> Response {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    match (get("type").as_deref(), get("id")) {
        (Some("Patient"), None) => {
            kick_off(app, uri, headers, pairs, Level::Patient, None, granted).await
        }
        (Some("Group"), Some(id)) => {
            kick_off(app, uri, headers, pairs, Level::Group, Some(id), granted).await
        }
        _ => FhirError::not_found("$export is at [base], [base]/Patient and [base]/Group/[id]")
            .into_response(),
    }
}

/// The query's (name, value) pairs, repeated names kept.
fn query_pairs(uri: &Uri) -> Result<Vec<(String, String)>, FhirError> {
    crate::search::pairs_of(uri.query().unwrap_or(""))
}

/// A POST kick-off's parameters: the query's, then the body's.
fn post_pairs(
    app: &App,
    uri: &Uri,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Vec<(String, String)>, FhirError> {
    crate::http::negotiate::check_content_type(headers)?;
    let body = crate::http::body(body, app.config.max_body_bytes)?;
    let json: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| FhirError::invalid(format!("the body is not JSON: {e}")))?;
    let mut pairs = query_pairs(uri)?;
    pairs.extend(kickoff::pairs_of_parameters(&json)?);
    Ok(pairs)
}

async fn kick_off(
    app: &App,
    uri: &Uri,
    headers: &HeaderMap,
    pairs: Result<Vec<(String, String)>, FhirError>,
    level: Level,
    group: Option<String>,
    granted: Option<Extension<Granted>>,
) -> Response {
    let result: Result<Response, FhirError> = async {
        if !crate::http::prefers(headers, "respond-async") {
            return Err(FhirError::invalid(
                "a bulk export needs the header Prefer: respond-async",
            ));
        }
        if headers.get(header::ACCEPT).is_none() {
            return Err(FhirError::invalid(
                "a bulk export needs the header Accept: application/fhir+json (the format of its OperationOutcomes)",
            ));
        }
        crate::http::negotiate::check_accept(headers, None)?;
        let strict = crate::http::prefer_strict(headers);
        let mut request = kickoff::read(&pairs?, level, strict, now_us(), |ty, query| {
            crate::search::check_query(app, ty, query)
        })?;
        let granted = granted.map(|Extension(g)| g);
        if let Some(g) = &granted {
            restrict_to_scopes(&mut request, g)?;
        }
        let store = app.store()?;
        if let (Some(g), Level::Group) = (group.as_deref(), level)
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
            level: level.name().into(),
            group,
            types: request.types,
            since_us: request.since_us,
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
            elements: request.elements,
            patients: request.patients,
            type_filters: request.type_filters,
            latest_provenance: request.latest_provenance,
            warnings: request.warnings,
            errors: Vec::new(),
            requires_access_token: app.auth.is_some(),
            client: granted.and_then(|g| g.client),
            selected: false,
            finished_us: None,
            file_key: super::new_file_key(&store)?,
        };
        write_job(app, &job, None).await?;
        app.export_wake.notify_one();
        tracing::info!(job = %id, level = level.name(), snapshot_lsn, "export accepted");
        let mut r = accepted(&format!(
            "export {id} accepted; poll its status at the Content-Location"
        ));
        if let Ok(v) = HeaderValue::from_str(&format!("{}/$export-status/{id}", app.base)) {
            r.headers_mut().insert(header::CONTENT_LOCATION, v);
        }
        Ok(r)
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Narrows the export to the types the token may read: a `_type` it may
/// not read is a 403; without `_type`, the export holds the types it may
/// read (every type for a `*` scope), and the error file says so.
fn restrict_to_scopes(request: &mut kickoff::Request, g: &Granted) -> Result<(), FhirError> {
    let Some(scopes) = &g.scopes else {
        return Ok(());
    };
    let may =
        |ty: &str| scopes.allows_type(ty, Access::Read) && scopes.allows_type(ty, Access::Search);
    if request.types.is_empty() {
        if may("*") {
            return Ok(());
        }
        request.types = crate::types::R4_RESOURCE_TYPES
            .iter()
            .filter(|t| may(t))
            .map(|t| (*t).to_owned())
            .collect();
        if request.types.is_empty() {
            return Err(FhirError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the token's scopes allow reading no resource type, so there is nothing to export",
            ));
        }
        request.warnings.push(format!(
            "the export holds only the types the token's scopes allow reading: {}",
            request.types.join(",")
        ));
        return Ok(());
    }
    if let Some(t) = request.types.iter().find(|t| !may(t)) {
        return Err(FhirError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the token's scopes do not allow reading and searching {t}"),
        ));
    }
    Ok(())
}

/// A 202 whose body is an informational OperationOutcome (FHIR JSON, as
/// every answer of these endpoints is).
fn accepted(what: &str) -> Response {
    let body = crate::http::outcome::outcome_json("information", "informational", what);
    crate::http::json_response(StatusCode::ACCEPTED, body.to_string().into_bytes())
}

/// The job `id` as the caller may see it: 404 when there is none, 403
/// when a token of another client started it.
fn job_for(
    store: &vigil_engine::Store,
    id: &str,
    granted: Option<&Granted>,
) -> Result<(Job, u64), FhirError> {
    let (job, version) =
        read_job(store, id)?.ok_or_else(|| FhirError::not_found(format!("no export job {id}")))?;
    if let (Some(owner), Some(g)) = (&job.client, granted)
        && g.client.as_ref().is_some_and(|c| c != owner)
    {
        return Err(FhirError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("export job {id} was started by another client"),
        ));
    }
    Ok((job, version))
}

/// `GET [base]/$export-status/[id]`: 202 with progress, 200 with the
/// manifest (and `Expires`, when its files will be deleted), 429 when
/// polled too often.
pub async fn status(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
    granted: Option<Extension<Granted>>,
) -> Response {
    let r: Result<Response, FhirError> = (|| {
        let store = app.store()?;
        let (job, _) = job_for(&store, &id, granted.as_ref().map(|e| &e.0))?;
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
                let progress = match job.total {
                    Some(t) => format!("{} of {t} resources", job.position),
                    None => "collecting the snapshot".into(),
                };
                let mut r = accepted(&format!("in progress: {progress}"));
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
                    "requiresAccessToken": job.requires_access_token,
                    "output": job.output.iter().map(file).collect::<Vec<_>>(),
                    "error": job.errors.iter().map(file).collect::<Vec<_>>(),
                });
                if job.since_us.is_some() {
                    m["deleted"] = job.deleted.iter().map(file).collect();
                }
                let mut r = crate::http::json_response(
                    StatusCode::OK,
                    serde_json::to_vec_pretty(&m).unwrap_or_default(),
                );
                if let Some(at) = expires_us(&app, &job)
                    && let Ok(v) = HeaderValue::from_str(&crate::http::http_date(at))
                {
                    r.headers_mut().insert(header::EXPIRES, v);
                }
                Ok(r)
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

/// When a finished job and its files are deleted (µs).
pub(super) fn expires_us(app: &App, job: &Job) -> Option<u64> {
    job.finished_us
        .map(|f| f.saturating_add(app.config.export_expire_s.saturating_mul(1_000_000)))
}

/// `DELETE [base]/$export-status/[id]`: 202, files removed; then 404.
pub async fn cancel(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
    granted: Option<Extension<Granted>>,
) -> Response {
    let r: Result<Response, FhirError> = async {
        let store = app.store()?;
        let (mut job, version) = job_for(&store, &id, granted.as_ref().map(|e| &e.0))?;
        job.status = "cancelled".into();
        if write_job(&app, &job, Some(version)).await?.is_none() {
            return Err(FhirError::new(
                StatusCode::CONFLICT,
                "conflict",
                "the job changed; retry",
            ));
        }
        super::delete_job(&app, &id).await?;
        Ok(accepted(&format!("export {id} deleted with its files")))
    }
    .await;
    r.unwrap_or_else(IntoResponse::into_response)
}

/// `GET [base]/$export-file/[job]/[file]`: an output file, to a caller
/// the job's `requiresAccessToken` admits.
pub async fn file(
    State(app): State<Arc<App>>,
    UrlPath((id, name)): UrlPath<(String, String)>,
    granted: Option<Extension<Granted>>,
) -> Response {
    let r: Result<Response, FhirError> = async {
        if !name.ends_with(".ndjson")
            || name.contains('/')
            || name.contains("..")
            || id.contains("..")
        {
            return Err(FhirError::not_found("no such export file"));
        }
        let store = app.store()?;
        let (job, _) = job_for(&store, &id, granted.as_ref().map(|e| &e.0))?;
        if job.requires_access_token && app.auth.is_none() {
            return Err(FhirError::new(
                StatusCode::FORBIDDEN,
                "security",
                "this export requires an access token, and this node has no authorization configured to check one",
            ));
        }
        let got = location(&app)?
            .get_opt(&job_file(&id, &name))
            .await
            .map_err(|e| storage_error(&format!("reading {id}/{name}"), e))?;
        match got {
            Some(stored) => {
                let bytes = job.open_file(&name, stored)?;
                let mut r = (StatusCode::OK, bytes).into_response();
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/fhir+ndjson"),
                );
                Ok(r)
            }
            None => Err(FhirError::not_found(format!("no export file {id}/{name}"))),
        }
    }
    .await;
    r.unwrap_or_else(IntoResponse::into_response)
}
