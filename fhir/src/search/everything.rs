//! `Patient/[id]/$everything` and `Patient/$everything` (R4
//! patient-operation-everything): the patient (or every patient), every
//! resource in its compartment, and the resources those refer to (as
//! entries of search mode `include`: practitioners, organizations,
//! locations, medications), as a searchset Bundle paged like a search.
//!
//! Parameters: `_since` (changed at or after that instant), `_type`
//! (only these types), `_count`, and `start`/`end`, the care dates: a
//! resource whose type has a `date` parameter is kept when that date
//! meets the range; types without one (Patient, Condition, …) are kept
//! whole, as the operation leaves undefined what their care date is.
//! By GET, or by POST with a `Parameters` body. The references followed
//! are bounded per page by the search's include bound.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde_json::Value;
use vigil_engine::Current;

use super::include::{Include, parse};
use super::registry::registry;
use super::{Scope, pairs_of, search};
use crate::app::App;
use crate::http::outcome::FhirError;

/// Most parameters a `Parameters` body may hold.
const PARAMETERS_MAX: usize = 100;

/// The types `$everything` returns: the Patient compartment's (the
/// Patient among them, through `link`).
pub(super) fn types() -> impl Iterator<Item = &'static str> {
    super::compartment::compartment("Patient")
        .into_iter()
        .flat_map(|c| c.types())
}

/// The request's parameters as search parameters: `_since` becomes
/// `_lastUpdated=ge…`; `start`/`end` stay for [`pairs_of_type`]; a
/// parameter the operation does not define is refused.
pub(super) fn pairs(pairs: &[(String, String)]) -> Result<Vec<(String, String)>, FhirError> {
    let mut out = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        match k.as_str() {
            "_type" => {}
            "_since" => out.push(("_lastUpdated".to_owned(), format!("ge{v}"))),
            "_count" | "_page" | "_format" | "_pretty" | "start" | "end" => {
                out.push((k.clone(), v.clone()))
            }
            other => {
                return Err(FhirError::invalid(format!(
                    "$everything takes _since, _type, _count, start and end, not {other}"
                )));
            }
        }
    }
    Ok(out)
}

/// [`pairs`] for one type: `start` and `end` become its `date` criteria,
/// or nothing when it has no `date` parameter.
pub(super) fn pairs_of_type(ty: &str, pairs: &[(String, String)]) -> Vec<(String, String)> {
    let dated = registry()
        .of(ty)
        .find("date")
        .is_some_and(|p| p.is_searchable());
    pairs
        .iter()
        .filter_map(|(k, v)| match k.as_str() {
            "start" => dated.then(|| ("date".to_owned(), format!("ge{v}"))),
            "end" => dated.then(|| ("date".to_owned(), format!("le{v}"))),
            _ => Some((k.clone(), v.clone())),
        })
        .collect()
}

/// The includes that add what the returned resources refer to.
pub(super) fn includes() -> Vec<Include> {
    types()
        .filter_map(|t| parse(&Default::default(), "_include", &format!("{t}:*")).ok())
        .collect()
}

/// 404 when the patient was never written, 410 when it is deleted.
fn patient_exists(app: &App, id: &str) -> Result<(), FhirError> {
    match app.store()?.get("Patient", id)? {
        Current::Live(_) => Ok(()),
        Current::Deleted { .. } => Err(FhirError::new(
            StatusCode::GONE,
            "deleted",
            format!("Patient/{id} is deleted"),
        )),
        Current::NeverExisted => Err(FhirError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("there is no Patient/{id}"),
        )),
    }
}

fn patient_only(ty: &str) -> Result<(), FhirError> {
    match ty {
        "Patient" => Ok(()),
        other => Err(FhirError::invalid(format!(
            "$everything is defined on Patient here, not on {other}"
        ))),
    }
}

/// The parameters of a `Parameters` body, as query pairs.
fn body_pairs(
    app: &App,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Vec<(String, String)>, FhirError> {
    let body = crate::http::body(bytes, app.config.max_body_bytes)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| FhirError::invalid(format!("the body is not JSON: {e}")))?;
    if v.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(FhirError::invalid(
            "$everything by POST takes a Parameters resource",
        ));
    }
    let params = v.get("parameter").and_then(Value::as_array);
    let params = params.map_or(&[][..], Vec::as_slice);
    if params.len() > PARAMETERS_MAX {
        return Err(FhirError::invalid(format!(
            "the Parameters hold more than {PARAMETERS_MAX} parameters"
        )));
    }
    params
        .iter()
        .map(|p| {
            let name = p.get("name").and_then(Value::as_str).unwrap_or("");
            let value = p.as_object().and_then(|o| {
                o.iter()
                    .find(|(k, _)| k.starts_with("value"))
                    .map(|(_, v)| v)
            });
            let text = match value {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => {
                    return Err(FhirError::invalid(format!(
                        "the parameter {name:?} has no value of a primitive type"
                    )));
                }
            };
            Ok((name.to_owned(), text))
        })
        .collect()
}

/// What every handler runs: Patient only, the patient existing (for one
/// patient), the parameters of the query and of the body, the search.
fn everything(
    app: &App,
    ty: &str,
    id: Option<String>,
    uri: &Uri,
    headers: &HeaderMap,
    bytes: Option<Result<Bytes, BytesRejection>>,
) -> Result<Response, FhirError> {
    patient_only(ty)?;
    let mut pairs = pairs_of(uri.query().unwrap_or(""))?;
    if let Some(b) = bytes {
        pairs.extend(body_pairs(app, b)?);
    }
    if let Some(id) = &id {
        patient_exists(app, id)?;
    }
    search(app, &Scope::Everything { id }, pairs, headers)
}

/// `GET Patient/[id]/$everything`.
pub async fn instance_get(
    State(app): State<Arc<App>>,
    Path((ty, id)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, FhirError> {
    everything(&app, &ty, Some(id), &uri, &headers, None)
}

/// `POST Patient/[id]/$everything` with a `Parameters` body (or none).
pub async fn instance_post(
    State(app): State<Arc<App>>,
    Path((ty, id)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, FhirError> {
    everything(&app, &ty, Some(id), &uri, &headers, Some(bytes))
}

/// `GET Patient/$everything`.
pub async fn type_get(
    State(app): State<Arc<App>>,
    Path(ty): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, FhirError> {
    everything(&app, &ty, None, &uri, &headers, None)
}

/// `POST Patient/$everything` with a `Parameters` body (or none).
pub async fn type_post(
    State(app): State<Arc<App>>,
    Path(ty): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, FhirError> {
    everything(&app, &ty, None, &uri, &headers, Some(bytes))
}
