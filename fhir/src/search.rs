//! Search: the key extractor the engine indexes, and `GET [type]?…` /
//! `POST [type]/_search` answered from those keys.
//!
//! Keys are byte strings the engine stores for the current live version of
//! each resource and looks up by range; it does not interpret them:
//! `t\0Type` (every live resource), `k\0Type\0param\0code\0system`
//! (tokens), `s\0Type\0param\0lowercased` (strings, matched by prefix),
//! `r\0Type\0param\0id\0Type` (references), `d\0Type\0param\0<start><end>`
//! (dates as sortable big-endian microsecond intervals).
//!
//! A token or reference is one key, its code (id) first: `code` alone is a
//! prefix scan of `code\0`, `system|code` one exact key, and the rare
//! `system|` a scan of the parameter's keys. (Version 1 wrote two keys per
//! value, one per way of asking; a quarter of a Patient's index entries.)
//! FHIR strings hold no NUL, so `\0` separates unambiguously; a value that
//! holds one anyway is not indexed.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};
use vigil_engine::{Current, KeyExtractor};

use crate::fields::{Fields, parse_fields};
use crate::http::{json_response, prefer_strict};
use crate::instant::parse_interval;
use crate::interactions::check_type;
use crate::negotiate::{check_accept, require_content_type};
use crate::outcome::{FhirError, outcome_json};
use crate::params::{Kind, Param, find, params_of};
use crate::resource::render_map;
use crate::server::App;

/// The name the engine records for this extractor; change it whenever the
/// keys change, and stores rebuild their index on open.
pub const EXTRACTOR_NAME: &str = "vigil-fhir-search-v3";
/// Most index entries one search may scan.
pub const SCAN_ENTRIES_MAX: usize = 2_000_000;

/// The FHIR search-key extractor.
#[derive(Debug, Default, Clone, Copy)]
pub struct SearchKeys;

fn key(tag: u8, ty: &str, param: &str, value: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + ty.len() + param.len() + value.len());
    k.push(tag);
    k.push(0);
    k.extend_from_slice(ty.as_bytes());
    k.push(0);
    k.extend_from_slice(param.as_bytes());
    k.push(0);
    k.extend_from_slice(value);
    k
}

/// `key(tag, ty, param, first\0second)`: a token (code, system) or a
/// reference (id, type).
fn pair_key(tag: u8, ty: &str, param: &str, first: &str, second: &str) -> Vec<u8> {
    let mut k = key(tag, ty, param, first.as_bytes());
    k.push(0);
    k.extend_from_slice(second.as_bytes());
    k
}

fn all_key(ty: &str) -> Vec<u8> {
    let mut k = b"t\0".to_vec();
    k.extend_from_slice(ty.as_bytes());
    k
}

/// Every value at a dotted path, arrays flattened.
fn walk<'a>(v: &'a Value, path: &[&str], out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| walk(i, path, out)),
        _ => match path.split_first() {
            None => out.push(v),
            Some((head, rest)) => {
                if let Some(next) = v.get(head) {
                    walk(next, rest, out);
                }
            }
        },
    }
}

/// `(system, code)` pairs of a token value.
fn tokens(v: &Value) -> Vec<(String, String)> {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_owned();
    match v {
        Value::String(code) => vec![(String::new(), code.clone())],
        Value::Object(o) if o.contains_key("coding") => {
            let mut out = Vec::new();
            let mut codings = Vec::new();
            walk(v, &["coding"], &mut codings);
            for c in codings {
                out.extend(tokens(c));
            }
            out
        }
        Value::Object(o) if o.contains_key("code") => vec![(s(o.get("system")), s(o.get("code")))],
        Value::Object(o) if o.contains_key("value") => {
            vec![(s(o.get("system")), s(o.get("value")))]
        }
        _ => Vec::new(),
    }
}

/// Lowercase, for case-insensitive prefix matching.
fn normalise(s: &str) -> String {
    s.to_lowercase()
}

/// `Type/id` of a reference (also from an absolute URL), if it has one.
fn reference_target(r: &str) -> Option<(String, String)> {
    let mut parts = r.trim_end_matches('/').rsplit('/');
    let id = parts.next()?;
    let ty = parts.next()?;
    (crate::types::is_resource_type(ty) && crate::types::is_valid_id(id))
        .then(|| (ty.to_owned(), id.to_owned()))
}

fn sortable(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

fn unsortable(b: &[u8]) -> Option<i64> {
    Some((u64::from_be_bytes(b.get(..8)?.try_into().ok()?) ^ (1 << 63)) as i64)
}

/// The `[start, end)` interval of a date, dateTime, instant or Period.
fn date_interval(v: &Value) -> Option<(i64, i64)> {
    match v {
        Value::String(s) => parse_interval(s),
        Value::Object(o) => {
            let start = o
                .get("start")
                .and_then(Value::as_str)
                .and_then(parse_interval)
                .map_or(i64::MIN, |i| i.0);
            let end = o
                .get("end")
                .and_then(Value::as_str)
                .and_then(parse_interval)
                .map_or(i64::MAX, |i| i.1);
            (start != i64::MIN || end != i64::MAX).then_some((start, end))
        }
        _ => None,
    }
}

impl KeyExtractor for SearchKeys {
    fn name(&self) -> &str {
        EXTRACTOR_NAME
    }

    /// Parses only the top-level fields the type's parameters read
    /// ([`fields_read`]), so the keys are those [`keys_of_map`] gives the
    /// whole parsed body.
    fn keys(&self, ty: &str, body: &[u8], out: &mut Vec<Vec<u8>>) {
        match parse_fields(body, &fields_read(ty)) {
            Some(Fields::Object(map)) => keys_of_map(ty, &map, out),
            Some(Fields::NotObject) => match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(map)) => keys_of_map(ty, &map, out),
                Ok(_) => out.push(all_key(ty)),
                Err(_) => {}
            },
            None => {}
        }
    }
}

/// The top-level fields the search parameters of `ty` read: all that
/// [`keys_of_map`] looks at.
fn fields_read(ty: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = params_of(ty)
        .iter()
        .flat_map(|p| p.paths.iter())
        .filter_map(|path| path.split('.').next())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The keys [`SearchKeys`] gives a body, from the body already parsed (as
/// the stored JSON: after `resource::to_stored_in`). Writes pass them with
/// the commit (`Op::with_keys`) so the body is not parsed again.
pub fn keys_of_map(ty: &str, map: &serde_json::Map<String, Value>, out: &mut Vec<Vec<u8>>) {
    out.push(all_key(ty));
    let params = params_of(ty);
    for param in &params {
        let mut values = Vec::new();
        for path in param.paths {
            if crate::params::holder(&params, param, path).is_some() {
                continue;
            }
            let segs: Vec<&str> = path.split('.').collect();
            if let Some((head, rest)) = segs.split_first()
                && let Some(next) = map.get(*head)
            {
                walk(next, rest, &mut values);
            }
        }
        for value in values {
            match param.kind {
                Kind::Token => {
                    for (system, code) in tokens(value) {
                        if code.is_empty() || code.contains('\0') || system.contains('\0') {
                            continue;
                        }
                        out.push(pair_key(b'k', ty, param.name, &code, &system));
                    }
                }
                Kind::String => {
                    if let Some(s) = value.as_str() {
                        out.push(key(b's', ty, param.name, normalise(s).as_bytes()));
                    }
                }
                Kind::Reference => {
                    if let Some((rty, rid)) = value
                        .get("reference")
                        .and_then(Value::as_str)
                        .and_then(reference_target)
                    {
                        if param.name == "patient" && rty != "Patient" {
                            continue;
                        }
                        out.push(pair_key(b'r', ty, param.name, &rid, &rty));
                    }
                }
                Kind::Date => {
                    if let Some((start, end)) = date_interval(value) {
                        let mut b = sortable(start).to_vec();
                        b.extend_from_slice(&sortable(end));
                        out.push(key(b'd', ty, param.name, &b));
                    }
                }
            }
        }
    }
}

/// A comparison prefix of a date or `_lastUpdated` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prefix {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

fn split_prefix(v: &str) -> Result<(Prefix, &str), FhirError> {
    let (p, rest) = v.split_at_checked(2).unwrap_or(("", v));
    Ok(match p {
        "eq" => (Prefix::Eq, rest),
        "ne" => (Prefix::Ne, rest),
        "gt" => (Prefix::Gt, rest),
        "ge" => (Prefix::Ge, rest),
        "lt" => (Prefix::Lt, rest),
        "le" => (Prefix::Le, rest),
        "sa" | "eb" | "ap" => {
            return Err(FhirError::invalid(format!(
                "the prefix {p} is not supported (eq ne gt ge lt le are)"
            )));
        }
        _ => (Prefix::Eq, v),
    })
}

/// Whether the target interval `t` matches the search interval `s` (R4
/// semantics for date ranges).
fn date_matches(prefix: Prefix, t: (i64, i64), s: (i64, i64)) -> bool {
    match prefix {
        Prefix::Eq => t.0 >= s.0 && t.1 <= s.1,
        Prefix::Ne => !(t.0 >= s.0 && t.1 <= s.1),
        Prefix::Gt => t.1 > s.1,
        Prefix::Ge => t.1 > s.0,
        Prefix::Lt => t.0 < s.0,
        Prefix::Le => t.0 < s.1,
    }
}

fn date_value(v: &str) -> Result<(Prefix, (i64, i64)), FhirError> {
    let (prefix, text) = split_prefix(v)?;
    let interval = parse_interval(text)
        .ok_or_else(|| FhirError::invalid(format!("{text:?} is not a FHIR date")))?;
    Ok((prefix, interval))
}

/// Ids of `ty` matching one value of one parameter.
/// The `lo..hi` bounds of exactly the key `k`.
fn exact(k: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    let mut hi = k.clone();
    hi.push(0);
    (k, hi)
}

/// The `lo..hi` bounds of every key that starts with `p`. What follows a
/// prefix here is UTF-8 text or a sortable date, neither of which starts
/// with a 0xff byte.
fn prefixed(p: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    let mut hi = p.clone();
    hi.push(0xff);
    (p, hi)
}

/// The ids of `ty` whose `param` matches `value`: from the parameter's
/// own keys and from those of the parameters that hold some of its paths
/// (`params::holder`).
fn ids_for_value(
    app: &App,
    ty: &str,
    param: &Param,
    value: &str,
) -> Result<BTreeSet<String>, FhirError> {
    let params = params_of(ty);
    let holders: Vec<Option<Param>> = param
        .paths
        .iter()
        .map(|path| crate::params::holder(&params, param, path))
        .collect();
    // A parameter whose every path another one holds has no keys of its
    // own (`patient`: `subject`'s); otherwise scan its own first.
    let mut ids = match holders.iter().all(Option::is_some) {
        true => BTreeSet::new(),
        false => ids_in_keys_of(app, ty, param, value)?,
    };
    let mut held_by: Vec<Param> = holders.into_iter().flatten().collect();
    held_by.dedup_by_key(|h| h.name);
    for h in held_by {
        let value = match param.name {
            // `patient` is `subject` restricted to Patient targets.
            "patient" => match reference_target(value) {
                Some((rty, _)) if rty != "Patient" => continue,
                Some((_, rid)) => format!("Patient/{rid}"),
                None => format!("Patient/{value}"),
            },
            _ => value.to_owned(),
        };
        ids.extend(ids_in_keys_of(app, ty, &h, &value)?);
    }
    Ok(ids)
}

fn ids_in_keys_of(
    app: &App,
    ty: &str,
    param: &Param,
    value: &str,
) -> Result<BTreeSet<String>, FhirError> {
    let (lo, hi) = match param.kind {
        Kind::Token => match value.split_once('|') {
            Some((system, "")) => {
                // Any code of one system: the parameter's keys, filtered.
                let (lo, hi) = prefixed(key(b'k', ty, param.name, b""));
                let want = [b"\0", system.as_bytes()].concat();
                let skip = lo.len();
                return scan(app, ty, &lo, &hi, |k| {
                    k[skip..]
                        .iter()
                        .position(|b| *b == 0)
                        .is_some_and(|at| k[skip + at..] == want[..])
                });
            }
            Some((system, code)) => exact(pair_key(b'k', ty, param.name, code, system)),
            None => prefixed(pair_key(b'k', ty, param.name, value, "")),
        },
        Kind::String => prefixed(key(b's', ty, param.name, normalise(value).as_bytes())),
        Kind::Reference => match reference_target(value) {
            Some((rty, rid)) => exact(pair_key(b'r', ty, param.name, &rid, &rty)),
            None => prefixed(pair_key(b'r', ty, param.name, value, "")),
        },
        Kind::Date => {
            let (prefix, s) = date_value(value)?;
            let (base, hi) = prefixed(key(b'd', ty, param.name, b""));
            let skip = base.len();
            return scan(app, ty, &base, &hi, |k| {
                let t = (
                    unsortable(&k[skip..]).unwrap_or(i64::MIN),
                    unsortable(&k[skip + 8..]).unwrap_or(i64::MAX),
                );
                date_matches(prefix, t, s)
            });
        }
    };
    scan(app, ty, &lo, &hi, |_| true)
}

fn scan(
    app: &App,
    ty: &str,
    lo: &[u8],
    hi: &[u8],
    keep: impl Fn(&[u8]) -> bool,
) -> Result<BTreeSet<String>, FhirError> {
    let rows = app
        .store()?
        .lookup_range(lo, hi, Some(ty), SCAN_ENTRIES_MAX + 1)?;
    if rows.len() > SCAN_ENTRIES_MAX {
        return Err(FhirError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too-costly",
            format!("the search would scan more than {SCAN_ENTRIES_MAX} index entries; narrow it"),
        ));
    }
    Ok(rows
        .into_iter()
        .filter(|(k, _, _)| keep(k))
        .map(|(_, _, id)| id)
        .collect())
}

/// A parsed search request.
#[derive(Debug, Default)]
struct Request {
    criteria: Vec<(Param, Vec<String>)>,
    ids: Option<BTreeSet<String>>,
    last_updated: Vec<(Prefix, (i64, i64))>,
    count: usize,
    sort: Sort,
    page: Option<String>,
    warnings: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Sort {
    #[default]
    Id,
    LastUpdatedAsc,
    LastUpdatedDesc,
}

fn parse_request(ty: &str, pairs: &[(String, String)], strict: bool) -> Result<Request, FhirError> {
    let mut r = Request {
        count: crate::history::PAGE_DEFAULT,
        ..Request::default()
    };
    for (name, value) in pairs {
        match name.as_str() {
            "_format" => {}
            "_count" => {
                r.count = crate::history::page_size(&HashMap::from([(
                    "_count".to_owned(),
                    value.clone(),
                )]))?
            }
            "_page" => r.page = Some(value.clone()),
            "_sort" => {
                r.sort = match value.as_str() {
                    "_lastUpdated" => Sort::LastUpdatedAsc,
                    "-_lastUpdated" => Sort::LastUpdatedDesc,
                    "_id" => Sort::Id,
                    other => {
                        return Err(FhirError::invalid(format!(
                            "_sort={other} is not supported (_lastUpdated, -_lastUpdated, _id are)"
                        )));
                    }
                }
            }
            "_id" => {
                let set: BTreeSet<String> = value.split(',').map(str::to_owned).collect();
                r.ids = Some(match r.ids.take() {
                    Some(prev) => prev.intersection(&set).cloned().collect(),
                    None => set,
                });
            }
            "_lastUpdated" => r.last_updated.push(date_value(value)?),
            _ => match find(ty, name) {
                Some(param) => r
                    .criteria
                    .push((param, value.split(',').map(str::to_owned).collect())),
                None if strict => {
                    return Err(FhirError::invalid(format!(
                        "unknown search parameter {name:?} for {ty}"
                    )));
                }
                None => r.warnings.push(format!(
                    "the search parameter {name:?} is not supported for {ty} and was ignored"
                )),
            },
        }
    }
    Ok(r)
}

/// One match: its id and, when the sort or a filter needs it, its time.
struct Hit {
    id: String,
    ts: u64,
}

fn matching(app: &App, ty: &str, r: &Request) -> Result<Vec<Hit>, FhirError> {
    let mut set: Option<BTreeSet<String>> = r.ids.clone();
    for (param, values) in &r.criteria {
        let mut any = BTreeSet::new();
        for v in values {
            any.extend(ids_for_value(app, ty, param, v)?);
        }
        set = Some(match set {
            Some(s) => s.intersection(&any).cloned().collect(),
            None => any,
        });
    }
    let keyed = set.is_none() || !r.criteria.is_empty();
    let ids = match set {
        Some(s) => s,
        None => {
            let (lo, hi) = exact(all_key(ty));
            scan(app, ty, &lo, &hi, |_| true)?
        }
    };
    // Index keys exist only for current live versions; ids from `_id`
    // alone must still be checked. Times are read (without bodies) only
    // when a filter or the sort needs them.
    let need_ts = !r.last_updated.is_empty() || r.sort != Sort::Id;
    let mut hits = Vec::with_capacity(ids.len());
    for id in ids {
        if !need_ts && keyed {
            hits.push(Hit { id, ts: 0 });
            continue;
        }
        if let Some((_, ts, op)) = app.store()?.head(ty, &id)?
            && op != vigil_engine::OpKind::Delete
        {
            let t = (ts as i64, ts as i64 + 1);
            if r.last_updated.iter().all(|(p, s)| date_matches(*p, t, *s)) {
                hits.push(Hit { id, ts });
            }
        }
    }
    match r.sort {
        Sort::Id => {}
        Sort::LastUpdatedAsc => hits.sort_by(|a, b| (a.ts, &a.id).cmp(&(b.ts, &b.id))),
        Sort::LastUpdatedDesc => hits.sort_by(|a, b| (b.ts, &b.id).cmp(&(a.ts, &a.id))),
    }
    Ok(hits)
}

/// Ids of `ty` matching a query string such as `identifier=sys|1` (for
/// conditional create).
pub fn matching_ids(app: &App, ty: &str, query: &str) -> Result<Vec<String>, FhirError> {
    let pairs = pairs_of(query.trim_start_matches('?'))?;
    let r = parse_request(ty, &pairs, true)?;
    Ok(matching(app, ty, &r)?.into_iter().map(|h| h.id).collect())
}

fn pairs_of(query: &str) -> Result<Vec<(String, String)>, FhirError> {
    let uri: Uri = format!("/?{query}")
        .parse()
        .map_err(|_| FhirError::invalid("the search parameters are not a valid query string"))?;
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|q| q.0)
        .map_err(|e| FhirError::invalid(format!("cannot read the search parameters: {e}")))
}

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
    check_type(ty)?;
    let r = parse_request(ty, &pairs, prefer_strict(headers))?;
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
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": entries,
    });
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_vec(&bundle).unwrap_or_default(),
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(ty: &str, body: &str) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        SearchKeys.keys(ty, body.as_bytes(), &mut out);
        out
    }

    #[test]
    fn tokens_strings_references_and_dates_become_keys() {
        let k = keys(
            "Observation",
            r#"{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2024-03-05"}"#,
        );
        assert!(k.contains(&all_key("Observation")));
        assert!(k.contains(&key(
            b'k',
            "Observation",
            "code",
            b"8867-4\0http://loinc.org"
        )));
        assert!(k.contains(&key(b'k', "Observation", "status", b"final\0")));
        // `patient` reads `subject`'s keys: no second row for the reference.
        assert!(k.contains(&key(b'r', "Observation", "subject", b"p1\0Patient")));
        assert!(
            !k.iter()
                .any(|x| x.starts_with(&key(b'r', "Observation", "patient", b"")))
        );
        // One key per token and per reference; a NUL in a value is not indexed.
        assert_eq!(k.len(), 5, "{k:?}");
        assert!(
            k.iter()
                .any(|x| x.starts_with(&key(b'd', "Observation", "date", b"")))
        );
        let k = keys(
            "Observation",
            r#"{"resourceType":"Observation","status":"fi\u0000nal"}"#,
        );
        assert_eq!(k, vec![all_key("Observation")]);
        let k = keys(
            "Patient",
            r#"{"resourceType":"Patient","name":[{"family":"Lemke","given":["Abram","B"]}]}"#,
        );
        assert!(k.contains(&key(b's', "Patient", "family", b"lemke")));
        assert!(k.contains(&key(b's', "Patient", "given", b"b")));
        // `name` reads `family`'s and `given`'s keys; only its own paths
        // (text, prefix, suffix) get `name` keys.
        assert!(
            !k.iter()
                .any(|x| x.starts_with(&key(b's', "Patient", "name", b"")))
        );
        let k = keys(
            "Patient",
            r#"{"resourceType":"Patient","name":[{"text":"Dr Abram Lemke","prefix":["Dr"]}]}"#,
        );
        assert!(k.contains(&key(b's', "Patient", "name", b"dr abram lemke")));
        assert!(k.contains(&key(b's', "Patient", "name", b"dr")));
    }

    #[test]
    fn keys_from_the_fields_read_equal_keys_from_the_whole_body() {
        let mut rng = crate::synth::Rng::new(7);
        let mut types = BTreeSet::new();
        for _ in 0..20 {
            for (ty, _, body) in crate::synth::patient_record(&mut rng, 40) {
                let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&body) else {
                    panic!("generated {ty} is not an object");
                };
                let mut whole = Vec::new();
                keys_of_map(&ty, &map, &mut whole);
                let mut fast = Vec::new();
                SearchKeys.keys(&ty, &body, &mut fast);
                assert_eq!(fast, whole, "{ty}");
                types.insert(ty);
            }
        }
        // The sample covers every type with search parameters of its own
        // (beyond `identifier`, which nearly every type has).
        for ty in crate::types::R4_RESOURCE_TYPES {
            if params_of(ty).iter().any(|p| p.name != "identifier") {
                assert!(types.contains(*ty), "{ty} not generated: {types:?}");
            }
        }
        // Bodies that are not objects, or not JSON, as before.
        let mut k = Vec::new();
        SearchKeys.keys("Patient", b"[1]", &mut k);
        assert_eq!(k, vec![all_key("Patient")]);
        k.clear();
        SearchKeys.keys("Patient", b"{\"gender\":", &mut k);
        assert!(k.is_empty());
    }

    #[test]
    fn date_prefixes_follow_r4_range_semantics() {
        let day = parse_interval("2024-03-05").expect("date");
        let hour = parse_interval("2024-03-05T10:00:00Z").expect("time");
        assert!(date_matches(Prefix::Eq, hour, day));
        assert!(!date_matches(Prefix::Eq, day, hour));
        assert!(date_matches(
            Prefix::Gt,
            parse_interval("2024-03-06").expect("d"),
            day
        ));
        assert!(date_matches(
            Prefix::Lt,
            parse_interval("2024-03-04").expect("d"),
            day
        ));
        assert!(date_matches(Prefix::Ge, day, day) && date_matches(Prefix::Le, day, day));
        assert!(!date_matches(Prefix::Ne, hour, day));
        assert!(split_prefix("sa2024").is_err());
    }
}
