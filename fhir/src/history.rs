//! History interactions: instance, type and system, as `history` Bundles
//! with `next`/`previous` links pinned to a snapshot LSN, so paging stays
//! correct while writes continue.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};
use vigil_engine::{HistoryCursor, HistoryQuery, HistoryScope, OpKind, PagePosition, Version};

use crate::app::App;
use crate::http::negotiate::check_accept;
use crate::http::outcome::FhirError;
use crate::http::{etag, json_response};
use crate::instant::{format_instant, parse_interval};
use crate::interactions::check_instance;
use crate::resource::render_map;
use crate::types::check_type;

/// Page size when `_count` is not given.
pub const PAGE_DEFAULT: usize = 50;
/// Largest `_count` honoured.
pub const PAGE_MAX: usize = 1000;

/// Reads `_count`: absent gives the default, above the maximum is capped.
pub fn page_size(q: &HashMap<String, String>) -> Result<usize, FhirError> {
    match q.get("_count") {
        None => Ok(PAGE_DEFAULT),
        Some(c) => match c.parse::<usize>() {
            Ok(0) | Err(_) => Err(FhirError::invalid(format!(
                "_count={c} is not a positive whole number"
            ))),
            Ok(n) => Ok(n.min(PAGE_MAX)),
        },
    }
}

/// Encodes a cursor as the `_page` parameter.
pub fn encode_cursor(c: &HistoryCursor) -> String {
    match c.position {
        PagePosition::Before(l) => format!("{}.b{l}", c.snapshot_lsn),
        PagePosition::After(l) => format!("{}.a{l}", c.snapshot_lsn),
    }
}

/// Decodes a `_page` parameter.
pub fn decode_cursor(s: &str) -> Result<HistoryCursor, FhirError> {
    let bad = || FhirError::invalid(format!("_page={s:?} is not a page of this server"));
    let (snap, rest) = s.split_once('.').ok_or_else(bad)?;
    let snapshot_lsn = snap.parse().map_err(|_| bad())?;
    let position = match rest.split_at_checked(1) {
        Some(("b", l)) => PagePosition::Before(l.parse().map_err(|_| bad())?),
        Some(("a", l)) => PagePosition::After(l.parse().map_err(|_| bad())?),
        _ => return Err(bad()),
    };
    Ok(HistoryCursor {
        snapshot_lsn,
        position,
    })
}

fn query_of(q: &HashMap<String, String>, scope: HistoryScope) -> Result<HistoryQuery, FhirError> {
    let since_us = match q.get("_since") {
        None => None,
        Some(s) => {
            let (start, _) = parse_interval(s)
                .ok_or_else(|| FhirError::invalid(format!("_since={s:?} is not a FHIR instant")))?;
            Some(u64::try_from(start).unwrap_or(0))
        }
    };
    Ok(HistoryQuery {
        scope,
        since_us,
        count: page_size(q)?,
        cursor: q.get("_page").map(|p| decode_cursor(p)).transpose()?,
    })
}

fn link(base: &str, path: &str, q: &HistoryQuery, cursor: Option<&HistoryCursor>) -> String {
    let mut url = format!("{base}/{path}?_count={}", q.count);
    if let Some(s) = q.since_us {
        url.push_str(&format!("&_since={}", format_instant(s)));
    }
    if let Some(c) = cursor {
        url.push_str(&format!("&_page={}", encode_cursor(c)));
    }
    url
}

/// One Bundle entry for a version, as history shows it.
pub fn history_entry(base: &str, v: &Version) -> Result<Value, FhirError> {
    let (method, url, status) = match v.op {
        OpKind::Create => ("POST", v.resource_type.clone(), "201 Created"),
        OpKind::Update => ("PUT", format!("{}/{}", v.resource_type, v.id), "200 OK"),
        OpKind::Delete => (
            "DELETE",
            format!("{}/{}", v.resource_type, v.id),
            "204 No Content",
        ),
    };
    let mut entry = Map::new();
    entry.insert(
        "fullUrl".into(),
        Value::String(format!("{base}/{}/{}", v.resource_type, v.id)),
    );
    if v.op != OpKind::Delete {
        entry.insert(
            "resource".into(),
            Value::Object(render_map(&v.body, v.version, v.last_updated_us)?),
        );
    }
    entry.insert("request".into(), json!({"method": method, "url": url}));
    entry.insert(
        "response".into(),
        json!({"status": status, "etag": etag(v.version), "lastModified": format_instant(v.last_updated_us)}),
    );
    Ok(Value::Object(entry))
}

fn history_bundle(app: &App, path: &str, q: &HistoryQuery) -> Result<Response, FhirError> {
    let bundle = history_value(app, path, q)?;
    Ok(json_response(StatusCode::OK, app.bundle_bytes(&bundle)))
}

/// The history Bundle of the system (`ty` and `id` empty), a type, or an
/// instance, for query parameters `q` (`_since`, `_count`, `_page`): what
/// `GET …/_history` answers, and what a batch entry's GET of it holds.
pub(crate) fn history_of(
    app: &App,
    ty: &str,
    id: &str,
    q: &HashMap<String, String>,
) -> Result<Value, FhirError> {
    let (scope, path) = match (ty, id) {
        ("", _) => (HistoryScope::System, "_history".to_owned()),
        (t, "") => {
            check_type(t)?;
            (HistoryScope::Type(t.to_owned()), format!("{t}/_history"))
        }
        (t, i) => {
            check_type(t)?;
            if app.store()?.head(t, i)?.is_none() {
                return Err(FhirError::not_found(format!("{t}/{i} does not exist")));
            }
            (
                HistoryScope::Instance(t.to_owned(), i.to_owned()),
                format!("{t}/{i}/_history"),
            )
        }
    };
    history_value(app, &path, &query_of(q, scope)?)
}

fn history_value(app: &App, path: &str, q: &HistoryQuery) -> Result<Value, FhirError> {
    let page = app.store()?.history(q)?;
    let mut links =
        vec![json!({"relation": "self", "url": link(&app.base, path, q, q.cursor.as_ref())})];
    if let Some(n) = &page.next {
        links.push(json!({"relation": "next", "url": link(&app.base, path, q, Some(n))}));
    }
    if let Some(p) = &page.previous {
        links.push(json!({"relation": "previous", "url": link(&app.base, path, q, Some(p))}));
    }
    let entries = page
        .entries
        .iter()
        .map(|v| history_entry(&app.base, v))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({
        "resourceType": "Bundle",
        "type": "history",
        "link": links,
        "entry": entries,
    }))
}

/// `GET /_history`.
pub async fn system(
    State(app): State<Arc<App>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, FhirError> {
    check_accept(&headers, q.get("_format").map(String::as_str))?;
    history_bundle(&app, "_history", &query_of(&q, HistoryScope::System)?)
}

/// `GET /[type]/_history`.
pub async fn of_type(
    State(app): State<Arc<App>>,
    Path(ty): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, FhirError> {
    check_accept(&headers, q.get("_format").map(String::as_str))?;
    check_type(&ty)?;
    history_bundle(
        &app,
        &format!("{ty}/_history"),
        &query_of(&q, HistoryScope::Type(ty.clone()))?,
    )
}

/// `GET /[type]/[id]/_history`: 404 for a resource that never existed.
pub async fn instance(
    State(app): State<Arc<App>>,
    Path((ty, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, FhirError> {
    check_instance(&headers, &q, &ty, &id)?;
    // Existence only: the head's metadata, without reading a body.
    if app.store()?.head(&ty, &id)?.is_none() {
        return Err(FhirError::not_found(format!("{ty}/{id} does not exist")));
    }
    let query = query_of(&q, HistoryScope::Instance(ty.clone(), id.clone()))?;
    history_bundle(&app, &format!("{ty}/{id}/_history"), &query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_roundtrip_and_garbage_is_refused() {
        for position in [PagePosition::Before(7), PagePosition::After(9)] {
            let c = HistoryCursor {
                snapshot_lsn: 42,
                position,
            };
            assert_eq!(decode_cursor(&encode_cursor(&c)).expect("decodes"), c);
        }
        for bad in ["", "1", "1.x3", "a.b2", "1.b"] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }
}
