//! `PATCH [type]/[id]` with a JSON Patch (RFC 6902) document.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;
use vigil_engine::{Batch, Op, Precondition};

use crate::app::{App, commit};
use crate::http::negotiate::require_content_type;
use crate::http::outcome::FhirError;
use crate::http::{self, if_match};
use crate::interactions::{Params, check_instance, live_version, written_response};
use crate::numbers::exponents;
use crate::resource::{id_of, parse, to_stored_exact, type_of};

/// Attempts when a concurrent write moves the version under a patch
/// without `If-Match`.
const PATCH_ATTEMPTS_MAX: usize = 5;

/// Reads a JSON Patch document; 400 when it is not one.
pub(crate) fn read_ops(bytes: &[u8]) -> Result<json_patch::Patch, FhirError> {
    serde_json::from_slice(bytes).map_err(|e| {
        FhirError::invalid(format!(
            "not a JSON Patch document (line {} column {}): {e}",
            e.line(),
            e.column()
        ))
    })
}

/// `ops` applied to the stored body of `ty/id`: the patched resource, or
/// 422 when the patch does not apply, leaves an invalid resource, or
/// changes `resourceType` or `id`.
pub(crate) fn apply(
    ty: &str,
    id: &str,
    stored: &[u8],
    ops: &json_patch::Patch,
) -> Result<serde_json::Map<String, Value>, FhirError> {
    let mut doc: Value = serde_json::from_slice(stored)
        .map_err(|_| FhirError::internal("a stored resource is not JSON"))?;
    json_patch::patch(&mut doc, ops).map_err(|e| {
        FhirError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "processing",
            format!("the patch does not apply: {e}"),
        )
    })?;
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
    require_content_type(&headers, "application/json-patch+json", "PATCH")?;
    let bytes = http::body(bytes, app.config.max_body_bytes)?;
    let ops = read_ops(&bytes)?;
    let required = if_match(&headers)?;
    for _ in 0..PATCH_ATTEMPTS_MAX {
        let current = live_version(&app, &ty, &id)?;
        if let Some(v) = required
            && v != current.version
        {
            return Err(FhirError::precondition(format!(
                "{ty}/{id} is at version {}, not {v}",
                current.version
            )));
        }
        let mut patched = apply(&ty, &id, &current.body, &ops)?;
        crate::references::resolve_in(&app, &mut patched)?;
        let stored = to_stored_exact(&mut patched, &id, &exponents(&current.body));
        let op = Op::put(ty.clone(), id.clone(), stored.clone())
            .expect(Precondition::Version(current.version));
        match commit(&app, Batch::one(op)).await {
            Ok(c) => return written_response(&app, (&ty, &id), &stored, c.outcomes[0], &headers),
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
