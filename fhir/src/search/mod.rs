//! Search: `GET [type]?…` and `POST [type]/_search`, answered from the
//! search keys the engine indexes.
//!
//! - [`keys`] — the key schema (persisted: versioned by
//!   [`keys::EXTRACTOR_NAME`]) and [`keys::SearchKeys`], the extractor.
//! - [`params`] — the one list of indexed search parameters.
//! - [`fields`] — the top-level fields a parameter reads, parsed alone.
//! - `query` — a request read from its parameters and run on the keys.
//! - this module — the HTTP handlers and the Bundle they answer with.

pub mod fields;
pub mod keys;
pub mod params;
mod query;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use vigil_engine::Current;

pub use keys::{EXTRACTOR_NAME, SearchKeys, keys_of_map};
pub use query::matching_ids;
pub(crate) use query::pairs_of;
use query::{Hit, Sort, matching, parse_request};

use crate::app::App;
use crate::http::negotiate::{check_accept, require_content_type};
use crate::http::outcome::{FhirError, outcome_json};
use crate::http::{json_response, prefer_strict};
use crate::resource::render_map;
use crate::types::check_type;

/// The position of a hit in the sort order, as a `_page` token.
fn token(dir: char, h: &Hit) -> String {
    format!("{dir}~{}~{}", h.ts, h.id)
}

fn search(
    app: &App,
    ty: &str,
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
    let bundle = search_bundle(app, ty, &pairs, prefer_strict(headers))?;
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_vec(&bundle).unwrap_or_default(),
    ))
}

/// Runs a type-level search given as query pairs: the searchset Bundle
/// (what `GET [type]?…` answers, and what a batch entry's search holds).
pub(crate) fn search_bundle(
    app: &App,
    ty: &str,
    pairs: &[(String, String)],
    strict: bool,
) -> Result<Value, FhirError> {
    check_type(ty)?;
    let r = parse_request(ty, pairs, strict)?;
    let hits = matching(app, ty, &r)?;
    let total = hits.len();
    // Keyset paging: a page starts after (or ends before) a hit's position,
    // so writes between requests neither repeat nor skip an unchanged match.
    let pos = |tok: &str| -> Result<(char, usize), FhirError> {
        let bad = || FhirError::invalid(format!("_page={tok:?} is not a page of this search"));
        let mut parts = tok.splitn(3, '~');
        let dir = parts
            .next()
            .and_then(|d| d.chars().next())
            .ok_or_else(bad)?;
        let ts: u64 = parts.next().and_then(|t| t.parse().ok()).ok_or_else(bad)?;
        let id = parts.next().ok_or_else(bad)?;
        let probe = Hit {
            id: id.to_owned(),
            ts,
        };
        let cmp = |h: &Hit| match r.sort {
            Sort::Id => h.id.as_str().cmp(probe.id.as_str()),
            Sort::LastUpdatedAsc => (h.ts, &h.id).cmp(&(probe.ts, &probe.id)),
            Sort::LastUpdatedDesc => (probe.ts, &probe.id).cmp(&(h.ts, &h.id)),
        };
        Ok((dir, hits.partition_point(|h| cmp(h).is_le())))
    };
    let (start, end) = match r.page.as_deref() {
        None => (0, r.count.min(total)),
        Some(tok) => match pos(tok)? {
            ('n', after) => (after, (after + r.count).min(total)),
            ('p', upto) => {
                // `upto` counts hits <= the token's hit; the page ends before it.
                let end = upto.saturating_sub(1);
                (end.saturating_sub(r.count), end)
            }
            _ => {
                return Err(FhirError::invalid(format!(
                    "_page={tok:?} is not a page of this search"
                )));
            }
        },
    };
    let page = &hits[start.min(total)..end.min(total)];
    let path = format!("{}/{ty}", app.base);
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
            json!({"relation": "next", "url": url(Some(format!("_page={}", token('n', last))))}),
        );
    }
    if start > 0
        && let Some(first) = page.first()
    {
        links.push(json!({"relation": "previous", "url": url(Some(format!("_page={}", token('p', first))))}));
    }
    let mut entries = Vec::with_capacity(page.len() + 1);
    for h in page {
        // Bodies only for the page; a match deleted since is skipped.
        if let Current::Live(v) = app.store()?.get(ty, &h.id)? {
            entries.push(json!({
                "fullUrl": format!("{}/{ty}/{}", app.base, h.id),
                "resource": Value::Object(render_map(&v.body, v.version, v.last_updated_us)?),
                "search": {"mode": "match"},
            }));
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
    Ok(json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": entries,
    }))
}

/// `GET [type]?…`.
pub async fn search_get(
    State(app): State<Arc<App>>,
    Path(ty): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, FhirError> {
    let pairs = pairs_of(uri.query().unwrap_or(""))?;
    search(&app, &ty, pairs, &headers)
}

/// `POST [type]/_search` with form-encoded parameters (and any in the URL).
pub async fn search_post(
    State(app): State<Arc<App>>,
    Path(ty): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, FhirError> {
    require_content_type(
        &headers,
        "application/x-www-form-urlencoded",
        "POST _search",
    )?;
    let body = crate::http::body(bytes, app.config.max_body_bytes)?;
    let text =
        std::str::from_utf8(&body).map_err(|_| FhirError::invalid("the form body is not UTF-8"))?;
    let mut pairs = pairs_of(uri.query().unwrap_or(""))?;
    pairs.extend(pairs_of(text.trim())?);
    search(&app, &ty, pairs, &headers)
}
