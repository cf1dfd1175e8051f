//! Search at every level — type (`GET [type]?…`, `POST [type]/_search`),
//! system (`GET [base]?…`, `POST [base]/_search`, `_type`) and
//! compartment (`GET Patient/[id]/[type|*]?…`, and by POST) — answered
//! from the search keys the engine indexes.
//!
//! - [`keys`] — the key schema (persisted: versioned by
//!   [`keys::EXTRACTOR_NAME`]) and [`keys::SearchKeys`], the extractor.
//! - [`registry`] — the official R4 parameters, as data, per type.
//! - [`compartment`] — the Patient compartment, as data.
//! - [`fields`] — the top-level fields a parameter reads, parsed alone.
//! - `query` — a request read from its parameters and run on the keys.
//! - `prefix` — comparison prefixes; dates and numbers matched with them.
//! - `composite` — composite parameters' values matched on their keys.
//! - `valueset` — a stored ValueSet's codes, for `:in` and `:not-in`.
//! - `sort` — `_sort`'s keys, each match's values for them, the order.
//! - `page` — keyset `_page` tokens.
//! - [`everything`] — `Patient/$everything`.
//! - this module — the HTTP handlers and the Bundle they answer with.

mod chain;
mod codesystem;
pub mod compartment;
mod composite;
pub mod custom;
pub mod everything;
pub mod fields;
mod include;
pub mod keys;
mod lookup;
mod page;
mod prefix;
mod query;
pub mod registry;
mod sort;
mod ucum;
mod valueset;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use vigil_engine::Current;

pub use keys::{EXTRACTOR_NAME, SearchKeys, keys_of_map, keys_of_value};
pub(crate) use query::pairs_of;
use query::{Request, matching, parse_request};
pub use query::{check_query, matching_ids};
use sort::{Hit, sort_hits};

use crate::app::App;
use crate::http::negotiate::{check_accept, require_content_type};
use crate::http::outcome::{FhirError, outcome_json};
use crate::http::{json_response, prefer_strict};
use crate::resource::render_map;
use crate::types::check_type;

/// What a search runs over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// One type: `GET [type]?…`.
    Type(String),
    /// Every type, or those `_type` names: `GET [base]?…`.
    System,
    /// A compartment: `GET [owner]/[id]/[type]?…`, every type in it
    /// when `ty` is `None` (`*`).
    Compartment {
        /// The compartment's type (`Patient`).
        owner: String,
        /// The owner's id.
        id: String,
        /// One type, or all of the compartment's.
        ty: Option<String>,
    },
    /// `Patient/[id]/$everything` (one patient) and `Patient/$everything`
    /// (every patient): the patients, the resources in their
    /// compartments, and what those refer to (as included entries).
    Everything {
        /// The patient; `None`: all of them.
        id: Option<String>,
    },
}

/// Most resource types one search may name in `_type` (R4 has 145).
const TYPES_MAX: usize = 200;

fn search(
    app: &App,
    scope: &Scope,
    pairs: Vec<(String, String)>,
    headers: &HeaderMap,
) -> Result<Response, FhirError> {
    check_accept(
        headers,
        pairs
            .iter()
            .find(|(k, _)| k == "_format")
            .map(|(_, v)| v.as_str()),
    )?;
    let bundle = scoped_bundle(app, scope, &pairs, prefer_strict(headers))?;
    Ok(json_response(StatusCode::OK, app.bundle_bytes(&bundle)))
}

/// Runs a type-level search given as query pairs: the searchset Bundle
/// (what `GET [type]?…` answers, and what a batch entry's search holds).
pub(crate) fn search_bundle(
    app: &App,
    ty: &str,
    pairs: &[(String, String)],
    strict: bool,
) -> Result<Value, FhirError> {
    scoped_bundle(app, &Scope::Type(ty.to_owned()), pairs, strict)
}

/// The types `_type` names (comma-separated, repeatable), checked; `None`
/// when it is absent.
fn named_types(pairs: &[(String, String)]) -> Result<Option<Vec<String>>, FhirError> {
    let mut out: Option<Vec<String>> = None;
    for (_, v) in pairs.iter().filter(|(k, _)| k == "_type") {
        for t in v.split(',') {
            if !crate::types::is_resource_type(t) {
                return Err(FhirError::invalid(format!(
                    "_type names {t:?}, which is not an R4 resource type"
                )));
            }
            let list = out.get_or_insert_with(Vec::new);
            if !list.iter().any(|x| x == t) {
                list.push(t.to_owned());
            }
            if list.len() > TYPES_MAX {
                return Err(FhirError::invalid(format!(
                    "_type names more than {TYPES_MAX} types"
                )));
            }
        }
    }
    Ok(out)
}

/// The types a scope searches, in name order.
fn types_of(scope: &Scope, pairs: &[(String, String)]) -> Result<Vec<String>, FhirError> {
    let named = named_types(pairs)?;
    let mut types: Vec<String> = match scope {
        Scope::Type(ty) => {
            check_type(ty)?;
            if named.is_some() {
                return Err(FhirError::invalid(
                    "_type is for searches of several types: [base]?_type=… or a compartment's *",
                ));
            }
            vec![ty.clone()]
        }
        Scope::System => match named {
            Some(t) => t,
            None => crate::types::R4_RESOURCE_TYPES
                .iter()
                .map(|t| (*t).to_owned())
                .collect(),
        },
        Scope::Compartment { owner, id, ty } => {
            check_type(owner)?;
            if !crate::types::is_valid_id(id) {
                return Err(FhirError::invalid(format!("{id:?} is not a valid id")));
            }
            let c = compartment::compartment(owner).ok_or_else(|| {
                FhirError::invalid(format!(
                    "the {owner} compartment is not supported (the Patient compartment is)"
                ))
            })?;
            match ty {
                Some(t) => {
                    check_type(t)?;
                    if c.params_of(t).is_empty() {
                        return Err(FhirError::invalid(format!(
                            "{t} is not in the {owner} compartment"
                        )));
                    }
                    if named.is_some() {
                        return Err(FhirError::invalid(
                            "_type is for a compartment's *, not one of its types",
                        ));
                    }
                    vec![t.clone()]
                }
                None => c
                    .types()
                    .filter(|t| named.as_ref().is_none_or(|n| n.iter().any(|x| x == t)))
                    .map(str::to_owned)
                    .collect(),
            }
        }
        Scope::Everything { id } => {
            if id.as_ref().is_some_and(|id| !crate::types::is_valid_id(id)) {
                return Err(FhirError::invalid(
                    "$everything: the patient's id is not a valid id",
                ));
            }
            everything::types()
                .filter(|t| named.as_ref().is_none_or(|n| n.iter().any(|x| x == t)))
                .map(str::to_owned)
                .collect()
        }
    };
    types.sort();
    Ok(types)
}

/// The matches of a search over one or several types, in its sort order.
fn hits_of(
    app: &App,
    scope: &Scope,
    types: &[String],
    pairs: &[(String, String)],
    strict: bool,
) -> Result<(Vec<Hit>, Request), FhirError> {
    let own: Vec<(String, String)> = match scope {
        Scope::Everything { .. } => everything::pairs(pairs)?,
        _ => pairs
            .iter()
            .filter(|(k, _)| k != "_type")
            .cloned()
            .collect(),
    };
    let mut hits = Vec::new();
    let mut first: Option<Request> = None;
    let mut refused: Option<FhirError> = None;
    for ty in types {
        // Over several types, a parameter one type does not have excludes
        // that type (none of its resources can match); over one type, or
        // when every type refuses, the refusal stands.
        let parsed = match scope {
            Scope::Everything { .. } => {
                parse_request(app, ty, &everything::pairs_of_type(ty, &own), true)
            }
            _ if types.len() == 1 => parse_request(app, ty, &own, strict),
            _ => parse_request(app, ty, &own, true),
        };
        let mut r = match parsed {
            Ok(r) => r,
            Err(e) => {
                refused.get_or_insert(e);
                continue;
            }
        };
        match scope {
            Scope::Compartment { owner, id, .. } => r.within(ty, owner, id)?,
            Scope::Everything { id: Some(id) } => {
                r.within(ty, "Patient", id)?;
                if ty == "Patient" {
                    r.also.insert(id.clone());
                }
            }
            Scope::Everything { id: None } => r.within_any(ty, "Patient")?,
            Scope::Type(_) | Scope::System => {}
        }
        hits.extend(matching(app, ty, &r)?);
        first.get_or_insert(r);
    }
    let mut r = match (first, refused) {
        (Some(r), _) => r,
        (None, Some(e)) if strict || types.len() == 1 => return Err(e),
        (None, _) => {
            // Lenient over several types: run as one type would, warning.
            let mut any = None;
            for ty in types {
                let r = parse_request(app, ty, &own, false)?;
                hits.extend(matching(app, ty, &r)?);
                any.get_or_insert(r);
            }
            any.unwrap_or_else(|| parse_request(app, "Resource", &own, false).unwrap_or_default())
        }
    };
    // Over one type, a sort key it lacks is unknown there; over several,
    // the types that lack it sort last.
    if types.len() == 1
        && let Some(code) = r.sort.iter().find_map(|k| match k.by {
            sort::SortBy::Absent(code) => Some(code),
            _ => None,
        })
    {
        let why = format!("_sort: unknown search parameter {code:?} for {}", types[0]);
        match strict {
            true => return Err(FhirError::invalid(why)),
            false => r.warnings.push(format!("{why}; it was ignored")),
        }
    }
    sort_hits(&mut hits, &r.sort);
    Ok((hits, r))
}

/// Runs a search over `scope`: the searchset Bundle.
pub(crate) fn scoped_bundle(
    app: &App,
    scope: &Scope,
    pairs: &[(String, String)],
    strict: bool,
) -> Result<Value, FhirError> {
    let types = types_of(scope, pairs)?;
    let (hits, mut r) = hits_of(app, scope, &types, pairs, strict)?;
    if let Scope::Everything { .. } = scope {
        r.includes = everything::includes();
    }
    let total = hits.len();
    let (start, end) = page::bounds(&hits, &r.sort, r.page.as_deref(), r.count)?;
    let page = &hits[start.min(total)..end.min(total)];
    let path = match scope {
        Scope::Type(ty) => format!("{}/{ty}", app.base),
        Scope::System => app.base.clone(),
        Scope::Compartment { owner, id, ty } => {
            format!("{}/{owner}/{id}/{}", app.base, ty.as_deref().unwrap_or("*"))
        }
        Scope::Everything { id: Some(id) } => format!("{}/Patient/{id}/$everything", app.base),
        Scope::Everything { id: None } => format!("{}/Patient/$everything", app.base),
    };
    let base_q: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k != "_page")
        .map(|(k, v)| format!("{k}={}", v.replace('&', "%26").replace(' ', "%20")))
        .collect();
    let url = |extra: Option<String>| {
        let mut q = base_q.clone();
        q.extend(extra);
        if q.is_empty() {
            path.clone()
        } else {
            format!("{path}?{}", q.join("&"))
        }
    };
    let mut links = vec![
        json!({"relation": "self", "url": url(r.page.as_ref().map(|p| format!("_page={p}")))}),
    ];
    if end < total
        && let Some(last) = page.last()
    {
        links.push(
            json!({"relation": "next", "url": url(Some(format!("_page={}", page::token('n', last))))}),
        );
    }
    if start > 0
        && let Some(first) = page.first()
    {
        links.push(json!({"relation": "previous", "url": url(Some(format!("_page={}", page::token('p', first))))}));
    }
    let mut entries = Vec::with_capacity(page.len() + 1);
    let mut matched: Vec<include::Found> = Vec::new();
    for h in page {
        // Bodies only for the page; a match deleted since is skipped.
        if let Current::Live(v) = app.store()?.get(&h.ty, &h.id)? {
            let mut map = render_map(&v.body, v.version, v.last_updated_us)?;
            // The includes read the whole matches: a copy only when there
            // are any, before `_summary`/`_elements` cut them.
            if !r.includes.is_empty() {
                matched.push((h.ty.clone(), h.id.clone(), Value::Object(map.clone())));
            }
            let subset = crate::subset::for_type(app, &h.ty, &r.subset)?;
            crate::subset::apply(&mut map, &subset);
            let resource = Value::Object(map);
            entries.push(json!({
                "fullUrl": format!("{}/{}/{}", app.base, h.ty, h.id),
                "resource": resource,
                "search": {"mode": "match"},
            }));
        }
    }
    if !r.includes.is_empty() {
        let (more, cut) = include::included(app, &r.includes, &matched)?;
        entries.extend(more);
        if cut {
            r.warnings.push(format!(
                "_include and _revinclude added {} resources, the most one page takes; the rest were left out",
                include::INCLUDED_MAX
            ));
        }
    }
    if !r.warnings.is_empty() {
        let mut outcome = outcome_json("warning", "not-supported", &r.warnings.join("; "));
        if let Some(issues) = outcome.get_mut("issue").and_then(Value::as_array_mut) {
            *issues = r
                .warnings
                .iter()
                .map(|w| json!({"severity": "warning", "code": "not-supported", "diagnostics": w}))
                .collect();
        }
        entries.push(json!({"resource": outcome, "search": {"mode": "outcome"}}));
    }
    let mut bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": entries,
    });
    if r.no_total
        && let Some(b) = bundle.as_object_mut()
    {
        b.remove("total");
    }
    Ok(bundle)
}

/// The form body of a `POST …/_search`, with any parameters in the URL.
fn form_pairs(
    app: &App,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Vec<(String, String)>, FhirError> {
    require_content_type(headers, "application/x-www-form-urlencoded", "POST _search")?;
    let body = crate::http::body(bytes, app.config.max_body_bytes)?;
    let text =
        std::str::from_utf8(&body).map_err(|_| FhirError::invalid("the form body is not UTF-8"))?;
    let mut pairs = pairs_of(uri.query().unwrap_or(""))?;
    pairs.extend(pairs_of(text.trim())?);
    Ok(pairs)
}

/// `GET [type]?…`.
pub async fn search_get(
    State(app): State<Arc<App>>,
    Path(ty): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, FhirError> {
    let pairs = pairs_of(uri.query().unwrap_or(""))?;
    search(&app, &Scope::Type(ty), pairs, &headers)
}

/// `POST [type]/_search` with form-encoded parameters (and any in the URL).
pub async fn search_post(
    State(app): State<Arc<App>>,
    Path(ty): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, FhirError> {
    let pairs = form_pairs(&app, &uri, &headers, bytes)?;
    search(&app, &Scope::Type(ty), pairs, &headers)
}

/// `GET [base]?…`: every type, or those `_type` names.
pub async fn system_get(
    State(app): State<Arc<App>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, FhirError> {
    let pairs = pairs_of(uri.query().unwrap_or(""))?;
    search(&app, &Scope::System, pairs, &headers)
}

/// `POST [base]/_search`.
pub async fn system_post(
    State(app): State<Arc<App>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, FhirError> {
    let pairs = form_pairs(&app, &uri, &headers, bytes)?;
    search(&app, &Scope::System, pairs, &headers)
}

fn compartment_scope(owner: String, id: String, ty: Option<String>) -> Scope {
    Scope::Compartment {
        owner,
        id,
        ty: ty.filter(|t| t != "*"),
    }
}

/// `GET [owner]/[id]/[type]?…` and `GET [owner]/[id]/*?…`.
pub async fn compartment_get(
    State(app): State<Arc<App>>,
    Path((owner, id, ty)): Path<(String, String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, FhirError> {
    let pairs = pairs_of(uri.query().unwrap_or(""))?;
    search(
        &app,
        &compartment_scope(owner, id, Some(ty)),
        pairs,
        &headers,
    )
}

/// `POST [owner]/[id]/[type]/_search`.
pub async fn compartment_type_post(
    State(app): State<Arc<App>>,
    Path((owner, id, ty)): Path<(String, String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, FhirError> {
    let pairs = form_pairs(&app, &uri, &headers, bytes)?;
    search(
        &app,
        &compartment_scope(owner, id, Some(ty)),
        pairs,
        &headers,
    )
}

/// `POST [owner]/[id]/_search`: every type of the compartment.
pub async fn compartment_post(
    State(app): State<Arc<App>>,
    Path((owner, id)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, FhirError> {
    let pairs = form_pairs(&app, &uri, &headers, bytes)?;
    search(&app, &compartment_scope(owner, id, None), pairs, &headers)
}
