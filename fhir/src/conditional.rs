//! Conditional update and delete: `PUT [type]?criteria` and
//! `DELETE [type]?criteria` (R4 http page, "conditional update" and
//! "conditional delete", single-match mode).
//!
//! The criteria are a search, answered from the same index as `GET
//! [type]?…`. The write that follows carries the version the search saw as
//! its precondition, so a resource changed between the search and the
//! write gets 412 instead of a lost update.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use vigil_engine::{Batch, Op, OpKind, Precondition};

use crate::app::{App, commit};
use crate::http::negotiate::check_accept;
use crate::http::outcome::FhirError;
use crate::interactions::{body_for, conflict_to_412, deleted_response, written_response};
use crate::resource::{id_of, to_stored_exact};
use crate::types::check_type;

/// The search criteria of a conditional URL, without `_format`; refuses an
/// empty one (it would match every resource of the type).
pub(crate) fn criteria(
    uri: &axum::http::Uri,
    what: &str,
) -> Result<(String, Option<String>), FhirError> {
    let query = uri.query().unwrap_or("");
    let mut format = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| match p.strip_prefix("_format=") {
            Some(f) => {
                format = Some(f.to_owned());
                false
            }
            None => true,
        })
        .collect();
    if kept.is_empty() {
        return Err(FhirError::invalid(format!(
            "a conditional {what} needs search criteria, e.g. ?identifier=system|value"
        )));
    }
    Ok((kept.join("&"), format))
}

/// What the criteria of a conditional URL select.
#[derive(Debug)]
pub(crate) enum Target {
    /// Nothing matched.
    Nothing,
    /// Exactly one resource: its id, and its newest version if that is
    /// live (the precondition of the write that follows; `None` when it
    /// was deleted after the search).
    One {
        /// Its id.
        id: String,
        /// Its live version.
        live_version: Option<u64>,
    },
}

/// Runs the criteria `cond` against `ty`: several matches are refused
/// (412), and a body id other than the one match's is refused (400). The
/// one place conditional update and delete, over REST and in Bundles,
/// decide what they write to.
pub(crate) fn resolve(
    app: &App,
    ty: &str,
    cond: &str,
    body_id: Option<&str>,
) -> Result<Target, FhirError> {
    let found = crate::search::matching_ids(app, ty, cond)?;
    match found.as_slice() {
        [] => Ok(Target::Nothing),
        [id] => {
            if let Some(b) = body_id.filter(|b| b != id) {
                return Err(FhirError::invalid(format!(
                    "the body's id {b:?} is not the id of the resource the criteria matched ({id:?})"
                )));
            }
            let live_version = app
                .store()?
                .head(ty, id)?
                .filter(|(_, _, op)| *op != OpKind::Delete)
                .map(|(v, _, _)| v);
            Ok(Target::One {
                id: id.clone(),
                live_version,
            })
        }
        many => Err(FhirError::precondition(format!(
            "the criteria {cond:?} match {} resources; a conditional update or delete needs at most one",
            many.len()
        ))),
    }
}

/// The precondition for updating the one match: its live version, or 412
/// when it was deleted after the search.
pub(crate) fn version_to_update(
    ty: &str,
    id: &str,
    live: Option<u64>,
) -> Result<Precondition, FhirError> {
    live.map(Precondition::Version)
        .ok_or_else(|| FhirError::precondition(format!("{ty}/{id} was deleted meanwhile; retry")))
}

/// `PUT [type]?criteria`: no match creates (with the body's id, or a new
/// one), one match updates that resource, several give 412.
pub async fn conditional_update(
    State(app): State<Arc<App>>,
    Path(ty): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, FhirError> {
    let (cond, format) = criteria(&uri, "update")?;
    check_accept(&headers, format.as_deref())?;
    check_type(&ty)?;
    let crate::interactions::Body {
        mut map,
        numbers,
        warnings,
    } = body_for(&app, &ty, &headers, bytes)?;
    let body_id = id_of(&map).map(str::to_owned);
    let (id, expect, created) = match resolve(&app, &ty, &cond, body_id.as_deref())? {
        // Update as create, only if that id is not taken.
        Target::Nothing => (
            body_id.unwrap_or_else(crate::ids::new_id),
            Precondition::Absent,
            true,
        ),
        Target::One { id, live_version } => {
            let expect = version_to_update(&ty, &id, live_version)?;
            (id, expect, false)
        }
    };
    crate::resource::check_id(&id)?;
    let stored = to_stored_exact(&mut map, &id, &numbers);
    let c = commit(
        &app,
        Batch::one(Op::put(ty.clone(), id.clone(), stored.clone()).expect(expect)),
    )
    .await
    .map_err(|e| match (created, e.status.as_u16()) {
        (true, 409) => FhirError::new(
            axum::http::StatusCode::CONFLICT,
            "conflict",
            format!("no resource matched, but {ty}/{id} exists; it is not created again"),
        ),
        _ => conflict_to_412(e),
    })?;
    let resp = written_response(&app, (&ty, &id), &stored, c.outcomes[0], &headers)?;
    Ok(crate::validate::with_warnings(resp, &warnings))
}

/// `DELETE [type]?criteria`: no match is not an error (200, nothing
/// deleted), one match is deleted, several give 412.
pub async fn conditional_delete(
    State(app): State<Arc<App>>,
    Path(ty): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, FhirError> {
    let (cond, format) = criteria(&uri, "delete")?;
    check_accept(&headers, format.as_deref())?;
    check_type(&ty)?;
    let (id, live_version) = match resolve(&app, &ty, &cond, None)? {
        Target::Nothing => {
            return Ok(crate::http::json_response(
                axum::http::StatusCode::OK,
                serde_json::to_vec(&crate::http::outcome::outcome_json(
                    "information",
                    "informational",
                    &format!("no {ty} matched {cond:?}; nothing deleted"),
                ))
                .unwrap_or_default(),
            ));
        }
        Target::One { id, live_version } => (id, live_version),
    };
    let expect = live_version.map_or(Precondition::None, Precondition::Version);
    let c = commit(
        &app,
        Batch::one(Op::delete(ty.clone(), id.clone()).expect(expect)),
    )
    .await
    .map_err(conflict_to_412)?;
    Ok(deleted_response(&ty, &id, c.outcomes[0]))
}
