//! The instance-level REST interactions: create, read, vread, update,
//! delete.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use vigil_engine::{Batch, Current, Op, OpKind, OpOutcome, Precondition, Version, VersionRead};

use crate::app::{App, commit};
use crate::http::negotiate::{check_accept, check_content_type};
use crate::http::outcome::{FhirError, outcome_json};
use crate::http::{self, Return, VersionMeta, if_match, prefer_return, resource_response};
use crate::resource::{check_id, id_of, parse, render, to_stored_exact, type_of};
use crate::types::check_type;

/// Query parameters every interaction understands.
pub type Params = Query<HashMap<String, String>>;

/// The checks every instance-level interaction starts with: the client
/// accepts JSON, the type is an R4 type, the id is a valid id.
pub fn check_instance(
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    ty: &str,
    id: &str,
) -> Result<(), FhirError> {
    check_accept(headers, q.get("_format").map(String::as_str))?;
    check_type(ty)?;
    check_id(id)
}

/// The response to a write of `stored`: 201 with `Location` when it
/// created the resource, else 200 (also when the content was unchanged);
/// ETag, Last-Modified and the body `Prefer` asks for.
pub fn written_response(
    app: &App,
    (ty, id): (&str, &str),
    stored: &[u8],
    outcome: OpOutcome,
    headers: &HeaderMap,
) -> Result<Response, FhirError> {
    let (status, version, last_updated_us) = match outcome {
        OpOutcome::Written {
            kind: OpKind::Create,
            version,
            last_updated_us,
            ..
        } => (StatusCode::CREATED, version, last_updated_us),
        OpOutcome::Written {
            kind: OpKind::Update,
            version,
            last_updated_us,
            ..
        }
        | OpOutcome::Unchanged {
            version,
            last_updated_us,
        } => (StatusCode::OK, version, last_updated_us),
        other => {
            return Err(FhirError::internal(format!(
                "a write of {ty}/{id} ended as {other:?}"
            )));
        }
    };
    let meta = VersionMeta {
        resource_type: ty,
        id,
        version,
        last_updated_us,
    };
    let rendered = render(stored, version, last_updated_us)?;
    Ok(resource_response(
        status,
        &app.base,
        &meta,
        rendered,
        prefer_return(headers),
        status == StatusCode::CREATED,
    ))
}

pub(crate) fn conflict_to_412(e: FhirError) -> FhirError {
    if e.status == StatusCode::CONFLICT {
        FhirError::precondition(e.diagnostics)
    } else {
        e
    }
}

/// The search keys of a stored body, from its parsed form (after
/// `to_stored_in`), for `Op::with_keys`.
pub(crate) fn keys_of(
    ty: &str,
    stored: &mut serde_json::Map<String, serde_json::Value>,
) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    crate::search::keys_of_map(ty, stored, &mut keys);
    keys
}

/// A resource body read for a write.
pub(crate) struct Body {
    /// The resource.
    pub map: serde_json::Map<String, serde_json::Value>,
    /// Its numbers that have an exponent, as written (for
    /// [`crate::resource::to_stored_exact`]).
    pub numbers: Vec<String>,
    /// Its validation problems under `validation = "lenient"`.
    pub warnings: Vec<crate::validate::Problem>,
}

/// Reads and checks a resource body for `ty`: its conditional references
/// resolved (see [`crate::references`]), then validated as the
/// `validation` setting says (strict: 400 with every problem).
pub(crate) fn body_for(
    app: &App,
    ty: &str,
    headers: &HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Body, FhirError> {
    check_content_type(headers)?;
    let bytes = http::body(bytes, app.config.max_body_bytes)?;
    let map = parse(&bytes)?;
    if type_of(&map) != ty {
        return Err(FhirError::invalid(format!(
            "the body is a {} but the URL names {ty}",
            type_of(&map)
        )));
    }
    let mut map = map;
    crate::references::resolve_in(app, &mut map)?;
    let warnings = crate::validate::check_map(app.config.validation, &mut map)?;
    Ok(Body {
        map,
        numbers: crate::numbers::exponents(&bytes),
        warnings,
    })
}

/// `POST [type]`: the server assigns the id.
pub async fn create(
    State(app): State<Arc<App>>,
    Path(ty): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, FhirError> {
    check_accept(&headers, q.get("_format").map(String::as_str))?;
    check_type(&ty)?;
    let Body {
        mut map,
        numbers,
        warnings,
    } = body_for(&app, &ty, &headers, bytes)?;
    if let Some(cond) = headers.get("if-none-exist") {
        let cond = cond
            .to_str()
            .map_err(|_| FhirError::invalid("If-None-Exist is not text"))?;
        let found = crate::search::matching_ids(&app, &ty, cond)?;
        match found.as_slice() {
            [] => {}
            [id] => {
                return read_response(
                    &app,
                    &ty,
                    id,
                    &headers,
                    StatusCode::OK,
                    prefer_return(&headers),
                    &crate::subset::Subset::Full,
                );
            }
            many => {
                return Err(FhirError::precondition(format!(
                    "If-None-Exist {cond:?} matches {} resources",
                    many.len()
                )));
            }
        }
    }
    // A fresh random id cannot collide in practice; the engine's Absent
    // precondition makes sure, and a collision just draws again.
    for _ in 0..3 {
        let id = crate::ids::new_id();
        let stored = to_stored_exact(&mut map, &id, &numbers);
        let batch = Batch::one(
            Op::put(ty.clone(), id.clone(), stored.clone())
                .with_keys(keys_of(&ty, &mut map))
                .expect(Precondition::Absent),
        );
        match commit(&app, batch).await {
            Ok(c) => {
                let resp = written_response(&app, (&ty, &id), &stored, c.outcomes[0], &headers)?;
                return Ok(crate::validate::with_warnings(resp, &warnings));
            }
            Err(e) if e.status == StatusCode::CONFLICT => continue,
            Err(e) => return Err(e),
        }
    }
    Err(FhirError::internal("could not draw an unused id"))
}

/// The current live version of a resource, or the error a read of it
/// gets: 410 when its newest version is a deletion, 404 when it never
/// existed.
pub fn live_version(app: &App, ty: &str, id: &str) -> Result<Version, FhirError> {
    match app.store()?.get(ty, id)? {
        Current::Live(v) => Ok(v),
        Current::Deleted { version, .. } => Err(FhirError::gone(format!(
            "{ty}/{id} was deleted (version {version})"
        ))),
        Current::NeverExisted => Err(FhirError::not_found(format!("{ty}/{id} does not exist"))),
    }
}

/// Version `version` of `ty/id` if it is live; 410 if it is a deletion,
/// 404 if there is no such version.
pub fn live_version_at(app: &App, ty: &str, id: &str, version: u64) -> Result<Version, FhirError> {
    match app.store()?.get_version(ty, id, version)? {
        VersionRead::Live(v) => Ok(v),
        VersionRead::Deleted { .. } => Err(FhirError::gone(format!(
            "version {version} of {ty}/{id} is a deletion"
        ))),
        VersionRead::NoSuchVersion { newest } => Err(FhirError::not_found(format!(
            "{ty}/{id} has no version {version} (newest is {newest})"
        ))),
        VersionRead::NeverExisted => Err(FhirError::not_found(format!("{ty}/{id} does not exist"))),
    }
}

fn read_response(
    app: &App,
    ty: &str,
    id: &str,
    headers: &HeaderMap,
    status: StatusCode,
    ret: Return,
    subset: &crate::subset::Subset,
) -> Result<Response, FhirError> {
    let v = live_version(app, ty, id)?;
    let meta = VersionMeta {
        resource_type: ty,
        id,
        version: v.version,
        last_updated_us: v.last_updated_us,
    };
    let none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|h| h.to_str().ok())
        .and_then(http::parse_etag);
    // If-None-Match decides when sent (RFC 9110 13.2.2); otherwise
    // If-Modified-Since, at the second precision of Last-Modified (an
    // unreadable date is ignored, as the RFC says).
    let unmodified = match none_match {
        Some(tag) => tag == v.version,
        None => headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|h| h.to_str().ok())
            .and_then(|d| httpdate::parse_http_date(d).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .is_some_and(|since| v.last_updated_us / 1_000_000 <= since.as_secs()),
    };
    if unmodified {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(e) = http::etag(v.version).parse() {
            resp.headers_mut().insert(header::ETAG, e);
        }
        return Ok(resp);
    }
    let rendered = render(&v.body, v.version, v.last_updated_us)?;
    let subset = crate::subset::for_type(app, ty, subset)?;
    let rendered = crate::subset::apply_to_bytes(rendered, &subset)?;
    Ok(resource_response(
        status, &app.base, &meta, rendered, ret, false,
    ))
}

/// The `_summary` / `_elements` of a read.
fn subset_of(q: &HashMap<String, String>) -> Result<crate::subset::Subset, FhirError> {
    crate::subset::parse(
        q.get("_summary").map(String::as_str),
        q.get("_elements").map(String::as_str),
    )
}

/// `GET [type]/[id]`.
pub async fn read(
    State(app): State<Arc<App>>,
    Path((ty, id)): Path<(String, String)>,
    Query(q): Params,
    headers: HeaderMap,
) -> Result<Response, FhirError> {
    check_instance(&headers, &q, &ty, &id)?;
    let subset = subset_of(&q)?;
    read_response(
        &app,
        &ty,
        &id,
        &headers,
        StatusCode::OK,
        Return::Representation,
        &subset,
    )
}

/// `GET [type]/[id]/_history/[vid]`.
pub async fn vread(
    State(app): State<Arc<App>>,
    Path((ty, id, vid)): Path<(String, String, String)>,
    Query(q): Params,
    headers: HeaderMap,
) -> Result<Response, FhirError> {
    check_instance(&headers, &q, &ty, &id)?;
    let subset = subset_of(&q)?;
    let version: u64 = vid
        .parse()
        .map_err(|_| FhirError::not_found(format!("{ty}/{id} has no version {vid:?}")))?;
    let v = live_version_at(&app, &ty, &id, version)?;
    let meta = VersionMeta {
        resource_type: &ty,
        id: &id,
        version,
        last_updated_us: v.last_updated_us,
    };
    let rendered = render(&v.body, version, v.last_updated_us)?;
    let subset = crate::subset::for_type(&app, &ty, &subset)?;
    let rendered = crate::subset::apply_to_bytes(rendered, &subset)?;
    Ok(resource_response(
        StatusCode::OK,
        &app.base,
        &meta,
        rendered,
        Return::Representation,
        false,
    ))
}

/// `PUT [type]/[id]`: update, or create with the client's id.
pub async fn update(
    State(app): State<Arc<App>>,
    Path((ty, id)): Path<(String, String)>,
    Query(q): Params,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, FhirError> {
    check_instance(&headers, &q, &ty, &id)?;
    let Body {
        map,
        numbers,
        warnings,
    } = body_for(&app, &ty, &headers, bytes)?;
    match id_of(&map) {
        Some(body_id) if body_id == id => {}
        Some(body_id) => {
            return Err(FhirError::invalid(format!(
                "the body's id {body_id:?} does not match the URL's {id:?}"
            )));
        }
        None => {
            return Err(FhirError::invalid(
                "an update needs the resource's id in the body",
            ));
        }
    }
    let expect = if_match(&headers)?.map_or(Precondition::None, Precondition::Version);
    let mut map = map;
    let stored = to_stored_exact(&mut map, &id, &numbers);
    let c = commit(
        &app,
        Batch::one(
            Op::put(ty.clone(), id.clone(), stored.clone())
                .with_keys(keys_of(&ty, &mut map))
                .expect(expect),
        ),
    )
    .await
    .map_err(conflict_to_412)?;
    let resp = written_response(&app, (&ty, &id), &stored, c.outcomes[0], &headers)?;
    Ok(crate::validate::with_warnings(resp, &warnings))
}

/// `DELETE [type]/[id]`: 200 with an OperationOutcome, also when there was
/// nothing to delete.
pub async fn delete(
    State(app): State<Arc<App>>,
    Path((ty, id)): Path<(String, String)>,
    Query(q): Params,
    headers: HeaderMap,
) -> Result<Response, FhirError> {
    check_instance(&headers, &q, &ty, &id)?;
    let expect = if_match(&headers)?.map_or(Precondition::None, Precondition::Version);
    let c = commit(
        &app,
        Batch::one(Op::delete(ty.clone(), id.clone()).expect(expect)),
    )
    .await
    .map_err(conflict_to_412)?;
    Ok(deleted_response(&ty, &id, c.outcomes[0]))
}

/// The answer to a delete: 200 with an OperationOutcome saying what
/// happened, and the deletion's ETag when one was written.
pub fn deleted_response(ty: &str, id: &str, outcome: OpOutcome) -> Response {
    let (msg, version) = match outcome {
        OpOutcome::Written { version, .. } => (
            format!("deleted {ty}/{id} (version {version})"),
            Some(version),
        ),
        OpOutcome::AlreadyDeleted { version } => (
            format!("{ty}/{id} was already deleted (version {version})"),
            None,
        ),
        _ => (format!("{ty}/{id} does not exist; nothing to delete"), None),
    };
    let body =
        serde_json::to_vec(&outcome_json("information", "informational", &msg)).unwrap_or_default();
    let mut resp = http::json_response(StatusCode::OK, body);
    if let Some(v) = version
        && let Ok(e) = http::etag(v).parse()
    {
        resp.headers_mut().insert(header::ETAG, e);
    }
    resp
}
