//! `PATCH [type]/[id]` and `PATCH [type]?criteria` (conditional patch,
//! one match) with a JSON Patch (RFC 6902, `application/json-patch+json`)
//! or a FHIRPath Patch (a `Parameters` resource, `application/fhir+json`;
//! see [`crate::fhirpatch`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;
use vigil_engine::{Batch, Op, Precondition};

use crate::app::{App, commit};
use crate::http::outcome::FhirError;
use crate::http::{self, if_match};
use crate::interactions::{Params, check_instance, live_version, written_response};
use crate::numbers::exponents;
use crate::resource::{id_of, parse, to_stored_exact, type_of};

/// Attempts when a concurrent write moves the version under a patch
/// without `If-Match`.
const PATCH_ATTEMPTS_MAX: usize = 5;

/// A patch document of either kind.
#[derive(Debug)]
pub(crate) enum Patch {
    /// RFC 6902.
    Json(json_patch::Patch),
    /// FHIRPath Patch.
    FhirPath(Vec<crate::fhirpatch::Operation>),
}

/// Reads a JSON Patch document; 400 when it is not one.
pub(crate) fn read_ops(bytes: &[u8]) -> Result<Patch, FhirError> {
    serde_json::from_slice(bytes).map(Patch::Json).map_err(|e| {
        FhirError::invalid(format!(
            "not a JSON Patch document (line {} column {}): {e}",
            e.line(),
            e.column()
        ))
    })
}

/// Reads a FHIRPath Patch document (a `Parameters` resource) from JSON.
pub(crate) fn read_fhirpath(doc: &Value) -> Result<Patch, FhirError> {
    crate::fhirpatch::read(doc).map(Patch::FhirPath)
}

/// The patch a request carries, by its Content-Type: JSON Patch for
/// `application/json-patch+json`, FHIRPath Patch for
/// `application/fhir+json` (or `application/json`); 415 otherwise.
fn read_request(headers: &HeaderMap, bytes: &[u8]) -> Result<Patch, FhirError> {
    let ct = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match ct.split(';').next().unwrap_or("").trim() {
        "application/json-patch+json" => read_ops(bytes),
        "application/fhir+json" | "application/json" => {
            let doc: Value = serde_json::from_slice(bytes).map_err(|e| {
                FhirError::invalid(format!(
                    "malformed JSON at line {} column {}: {e}",
                    e.line(),
                    e.column()
                ))
            })?;
            read_fhirpath(&doc)
        }
        _ => Err(FhirError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            format!(
                "PATCH takes application/json-patch+json (JSON Patch) or application/fhir+json (FHIRPath Patch, a Parameters resource), not {ct:?}"
            ),
        )),
    }
}

/// `ops` applied to the stored body of `ty/id`: the patched resource, or
/// 422 when the patch does not apply, leaves an invalid resource, or
/// changes `resourceType` or `id`.
pub(crate) fn apply(
    ty: &str,
    id: &str,
    stored: &[u8],
    ops: &Patch,
) -> Result<serde_json::Map<String, Value>, FhirError> {
    let mut doc: Value = serde_json::from_slice(stored)
        .map_err(|_| FhirError::internal("a stored resource is not JSON"))?;
    match ops {
        Patch::Json(ops) => json_patch::patch(&mut doc, ops).map_err(|e| {
            FhirError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "processing",
                format!("the patch does not apply: {e}"),
            )
        })?,
        Patch::FhirPath(ops) => crate::fhirpatch::apply(&mut doc, ops)?,
    }
    let patched = parse(&serde_json::to_vec(&doc).unwrap_or_default()).map_err(|e| {
        FhirError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "processing",
            format!("the patched resource is invalid: {}", e.diagnostics),
        )
    })?;
    if type_of(&patched) != ty || id_of(&patched) != Some(id) {
        return Err(FhirError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "processing",
            "a patch may not change resourceType or id",
        ));
    }
    Ok(patched)
}

/// `PATCH [type]/[id]`.
pub async fn patch(
    State(app): State<Arc<App>>,
    Path((ty, id)): Path<(String, String)>,
    axum::extract::Query(q): Params,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, FhirError> {
    check_instance(&headers, &q, &ty, &id)?;
    let bytes = http::body(bytes, app.config.max_body_bytes)?;
    let ops = read_request(&headers, &bytes)?;
    patch_one(&app, &ty, &id, &ops, &headers).await
}

/// `PATCH [type]?criteria`: the one resource the criteria match is
/// patched (none: 404; several: 412).
pub async fn conditional_patch(
    State(app): State<Arc<App>>,
    Path(ty): Path<String>,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, FhirError> {
    crate::types::check_type(&ty)?;
    let (criteria, _) = crate::conditional::criteria(&uri, "patch")?;
    let criteria = criteria.as_str();
    let bytes = http::body(bytes, app.config.max_body_bytes)?;
    let ops = read_request(&headers, &bytes)?;
    let id = match crate::conditional::resolve(&app, &ty, criteria, None)? {
        crate::conditional::Target::One { id, .. } => id,
        crate::conditional::Target::Nothing => {
            return Err(FhirError::not_found(format!(
                "no {ty} matches {criteria:?}; nothing was patched"
            )));
        }
    };
    patch_one(&app, &ty, &id, &ops, &headers).await
}

/// Applies `ops` to the current version of `ty/id` and writes the result
/// (retrying when another write moves the version, unless If-Match).
async fn patch_one(
    app: &App,
    ty: &str,
    id: &str,
    ops: &Patch,
    headers: &HeaderMap,
) -> Result<Response, FhirError> {
    let required = if_match(headers)?;
    for _ in 0..PATCH_ATTEMPTS_MAX {
        let current = live_version(app, ty, id)?;
        if let Some(v) = required
            && v != current.version
        {
            return Err(FhirError::precondition(format!(
                "{ty}/{id} is at version {}, not {v}",
                current.version
            )));
        }
        let mut patched = apply(ty, id, &current.body, ops)?;
        crate::references::resolve_in(app, &mut patched)?;
        let warnings = crate::validate::check_map(app.config.validation, &mut patched)?;
        let stored = to_stored_exact(&mut patched, id, &exponents(&current.body));
        let op = Op::put(ty, id, stored.clone()).expect(Precondition::Version(current.version));
        match commit(app, Batch::one(op)).await {
            Ok(c) => {
                let resp = written_response(app, (ty, id), &stored, c.outcomes[0], headers)?;
                return Ok(crate::validate::with_warnings(resp, &warnings));
            }
            Err(e) if e.status == StatusCode::CONFLICT && required.is_none() => continue,
            Err(e) if e.status == StatusCode::CONFLICT => {
                return Err(FhirError::precondition(e.diagnostics));
            }
            Err(e) => return Err(e),
        }
    }
    Err(FhirError::new(
        StatusCode::CONFLICT,
        "conflict",
        format!("{ty}/{id} kept changing; the patch was not applied"),
    ))
}
