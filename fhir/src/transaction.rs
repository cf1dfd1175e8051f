//! `POST /` with a Bundle: a `transaction` is one engine batch (all or
//! nothing) processed in the spec's order (DELETE, POST, PUT/PATCH, GET)
//! with `urn:uuid:` and other entry fullUrls rewritten to the ids assigned;
//! a `batch` runs its entries independently and reports each. `PUT` and
//! `DELETE` entries may name their target by search criteria
//! (`[type]?criteria`), resolved against the store as it was before the
//! Bundle; conditional references (`Type?criteria`) in the entries'
//! resources are resolved after those, by [`crate::references`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use vigil_engine::{Batch, Op, OpKind, OpOutcome, Precondition};

use crate::app::{App, commit};
use crate::http::negotiate::{check_accept, check_content_type};
use crate::http::outcome::{FhirError, outcome_json};
use crate::http::{self, Return, VersionMeta, etag, json_response, prefer_return};
use crate::instant::format_instant;
use crate::references::Resolver;
use crate::resource::{check_id, id_of, render, to_stored_exact, type_of};
use crate::types::check_type;

/// Most entries in one Bundle.
pub const BUNDLE_ENTRIES_MAX: usize = vigil_engine::limits::BATCH_OPS_MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Method {
    Delete,
    Post,
    Put,
    Patch,
    Get,
    Head,
}

/// What a GET or HEAD entry reads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Read {
    /// `[type]/[id]`: the current version.
    Current,
    /// `[type]/[id]/_history/[vid]`.
    Version(u64),
    /// `[type]` or `[type]?criteria`: a search.
    Search(String),
    /// `?criteria` (`_type`), or `[owner]/[id]/[type|*]?criteria`: a
    /// search of several types or of a compartment.
    Scoped(crate::search::Scope, String),
    /// `_history`, `[type]/_history` or `[type]/[id]/_history`, with
    /// `_since`, `_count`, `_page`.
    History(String),
}

/// One entry, checked and resolved to a type and id.
struct Entry {
    index: usize,
    method: Method,
    ty: String,
    id: String,
    resource: Option<Map<String, Value>>,
    if_match: Option<u64>,
    /// For a POST with `ifNoneExist` that matched: the existing id.
    existing: Option<String>,
    /// For a conditional PUT or DELETE: the precondition its search set.
    expect: Option<Precondition>,
    /// For a GET or HEAD: what it reads.
    read: Option<Read>,
    /// For a conditional create or update: its criteria, which a
    /// conditional reference elsewhere in the Bundle may repeat.
    criteria: Option<String>,
    /// The resource's numbers with an exponent, as written.
    numbers: Vec<String>,
    /// Its validation problems under `validation = "lenient"`.
    warnings: Vec<crate::validate::Problem>,
}

/// Names entry `i` in an error, keeping its status.
fn in_entry(i: usize) -> impl Fn(FhirError) -> FhirError + Copy {
    move |mut e| {
        e.diagnostics = format!("Bundle.entry[{i}]: {}", e.diagnostics);
        e
    }
}

/// A request URL relative to this server's base: `Patient/1` of
/// `[base]/Patient/1`, `/Patient/1` or `Patient/1`.
fn local_path<'u>(app: &App, url: &'u str) -> &'u str {
    url.trim_start_matches(format!("{}/", app.base).as_str())
        .trim_start_matches('/')
}

/// A validation refusal of entry `i`'s resource: its diagnostics and its
/// issues' expressions name the entry.
fn in_bundle(i: usize, e: FhirError) -> FhirError {
    in_resource(i)(e).within(&format!("Bundle.entry[{i}].resource"))
}

/// Entry `i`'s resource validated as the `validation` setting says: its
/// warnings (lenient), or the refusal (strict).
fn checked(app: &App, i: usize, v: &Value) -> Result<Vec<crate::validate::Problem>, FhirError> {
    crate::validate::check_resource(app.config.validation, v).map_err(|e| in_bundle(i, e))
}

/// Names the resource of entry `i` in an error, keeping its status.
fn in_resource(i: usize) -> impl Fn(FhirError) -> FhirError + Copy {
    move |mut e| {
        e.diagnostics = format!("Bundle.entry[{i}].resource: {}", e.diagnostics);
        e
    }
}

fn entry_error(i: usize, msg: impl std::fmt::Display) -> FhirError {
    FhirError::invalid(format!("Bundle.entry[{i}]: {msg}"))
}

/// Parses entry `i`, taking its resource out of `e` (no copy).
fn parse_entry(app: &App, i: usize, e: &mut Value) -> Result<(Entry, Option<String>), FhirError> {
    let taken = e.as_object_mut().and_then(|o| o.shift_remove("resource"));
    let e = &*e;
    let req = e
        .get("request")
        .ok_or_else(|| entry_error(i, "has no request"))?;
    let method = match req.get("method").and_then(Value::as_str) {
        Some("DELETE") => Method::Delete,
        Some("POST") => Method::Post,
        Some("PUT") => Method::Put,
        Some("PATCH") => Method::Patch,
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some(m) => {
            return Err(entry_error(
                i,
                format!("request.method {m} is not supported here"),
            ));
        }
        None => return Err(entry_error(i, "request.method is missing")),
    };
    let url = req
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| entry_error(i, "request.url is missing"))?;
    let (url, cond) = match url.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (url, None),
    };
    if matches!(method, Method::Get | Method::Head) {
        return read_of(app, i, method, url, cond).map(|e| (e, None));
    }
    if method == Method::Patch {
        return patch_of(app, i, url, cond, req, taken.as_ref()).map(|e| (e, None));
    }
    if cond.is_some() && !matches!(method, Method::Put | Method::Delete) {
        return Err(entry_error(
            i,
            format!("only PUT and DELETE take a conditional URL here, not {url:?}?…"),
        ));
    }
    let url = local_path(app, url);
    let mut parts = url.split('/');
    let ty = parts.next().unwrap_or("").to_owned();
    check_type(&ty).map_err(|e| entry_error(i, e.diagnostics))?;
    let id = parts.next().map(str::to_owned);
    if parts.next().is_some() {
        return Err(entry_error(
            i,
            format!("request.url {url:?} is not [type] or [type]/[id]"),
        ));
    }
    let resource = match taken {
        Some(Value::Object(m)) => Some(m),
        Some(_) => return Err(entry_error(i, "resource is not an object")),
        None => None,
    };
    if matches!(method, Method::Post | Method::Put) {
        let r = resource
            .as_ref()
            .ok_or_else(|| entry_error(i, "a POST or PUT needs a resource"))?;
        if type_of(r) != ty {
            return Err(entry_error(
                i,
                format!("the resource is a {:?} but the URL names {ty}", type_of(r)),
            ));
        }
    }
    let mut expect = None;
    let id = match (method, id, cond) {
        (_, Some(_), Some(_)) => {
            return Err(entry_error(
                i,
                "a conditional URL is [type]?criteria, without an id",
            ));
        }
        (_, None, Some(q)) => {
            if req.get("ifMatch").is_some() {
                return Err(entry_error(i, "use a conditional URL or ifMatch, not both"));
            }
            let body_id = resource.as_ref().and_then(id_of).map(str::to_owned);
            let (id, p) = resolve_conditional(app, i, method, &ty, q, body_id)?;
            expect = Some(p);
            id
        }
        (Method::Post, None, None) => crate::ids::new_id(),
        (Method::Post, Some(_), None) => {
            return Err(entry_error(i, "a POST URL is [type] only"));
        }
        (_, Some(id), None) => {
            check_id(&id).map_err(|e| entry_error(i, e.diagnostics))?;
            id
        }
        (_, None, None) => return Err(entry_error(i, "the URL needs an id")),
    };
    if method == Method::Put && cond.is_none() {
        let body_id = resource.as_ref().and_then(id_of);
        if body_id != Some(id.as_str()) {
            return Err(entry_error(
                i,
                format!("the resource id {body_id:?} does not match the URL id {id:?}"),
            ));
        }
    }
    let if_match = match req.get("ifMatch").and_then(Value::as_str) {
        Some(v) => Some(http::if_match_value(v).map_err(in_entry(i))?),
        None => None,
    };
    let existing = match (method, req.get("ifNoneExist").and_then(Value::as_str)) {
        (Method::Post, Some(cond)) => match crate::search::matching_ids(app, &ty, cond)?.as_slice()
        {
            [] => None,
            [one] => Some(one.clone()),
            many => {
                return Err(FhirError::precondition(format!(
                    "Bundle.entry[{i}]: ifNoneExist {cond:?} matches {} resources",
                    many.len()
                )));
            }
        },
        _ => None,
    };
    let criteria = match method {
        Method::Post => req.get("ifNoneExist").and_then(Value::as_str),
        Method::Put => cond,
        _ => None,
    }
    .map(str::to_owned);
    let full_url = e.get("fullUrl").and_then(Value::as_str).map(str::to_owned);
    Ok((
        Entry {
            index: i,
            method,
            ty,
            id,
            resource,
            if_match,
            existing,
            expect,
            read: None,
            criteria,
            numbers: Vec::new(),
            warnings: Vec::new(),
        },
        full_url,
    ))
}

/// Resolves `PUT`/`DELETE [type]?criteria` against the store as it is
/// before the Bundle: no match creates (PUT, with the body's id or a new
/// one, only where that id is free) or deletes nothing (DELETE); one match
/// is written with the version the search saw as its precondition;
/// several are refused (412).
fn resolve_conditional(
    app: &App,
    i: usize,
    method: Method,
    ty: &str,
    query: &str,
    body_id: Option<String>,
) -> Result<(String, Precondition), FhirError> {
    use crate::conditional::{Target, resolve, version_to_update};
    let in_entry = in_entry(i);
    match (
        resolve(app, ty, query, body_id.as_deref()).map_err(in_entry)?,
        method,
    ) {
        (Target::Nothing, Method::Put) => {
            let id = body_id.unwrap_or_else(crate::ids::new_id);
            check_id(&id).map_err(|e| entry_error(i, e.diagnostics))?;
            Ok((id, Precondition::Absent))
        }
        // Deleting nothing: an id that cannot exist, so the engine reports
        // "not found" for the entry and writes nothing.
        (Target::Nothing, _) => Ok((crate::ids::new_id(), Precondition::None)),
        (Target::One { id, live_version }, _) => {
            let expect = version_to_update(ty, &id, live_version).map_err(in_entry)?;
            Ok((id, expect))
        }
    }
}

/// The fullUrls of a Bundle's entries and the `Type/id` each became,
/// with the first bytes those fullUrls start with (most strings of a
/// resource start otherwise and are not looked up at all).
struct FullUrls {
    map: HashMap<String, String>,
    first: [bool; 256],
}

impl FullUrls {
    fn new(map: HashMap<String, String>) -> Self {
        let mut first = [false; 256];
        for k in map.keys() {
            if let Some(b) = k.as_bytes().first() {
                first[usize::from(*b)] = true;
            }
        }
        Self { map, first }
    }

    fn get(&self, s: &str) -> Option<&String> {
        let b = *s.as_bytes().first()?;
        if self.first[usize::from(b)] {
            self.map.get(s)
        } else {
            None
        }
    }
}

/// Replaces every string equal to a fullUrl of `urls` (references to
/// other entries) with its `Type/id`, everywhere in `v`; and in narrative
/// (`div`), every `href` or `src` attribute whose value is such a fullUrl,
/// as R4's transaction rules require.
fn rewrite(v: &mut Value, urls: &FullUrls) {
    match v {
        Value::String(s) => {
            if let Some(to) = urls.get(s) {
                *s = to.clone();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|x| rewrite(x, urls)),
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                match x {
                    Value::String(div) if k == "div" => rewrite_narrative(div, urls),
                    _ => rewrite(x, urls),
                }
            }
        }
        _ => {}
    }
}

/// Rewrites the value of each `href="…"` and `src="…"` attribute (either
/// quote) of XHTML that is a fullUrl of `urls`; one pass over the text.
fn rewrite_narrative(div: &mut String, urls: &FullUrls) {
    if !div.contains("href=") && !div.contains("src=") {
        return;
    }
    let mut out = String::with_capacity(div.len());
    let mut rest = div.as_str();
    let mut changed = false;
    while let Some(at) = rest.find('=') {
        let (head, tail) = rest.split_at(at + 1);
        out.push_str(head);
        rest = tail;
        if !(head.ends_with("href=") || head.ends_with("src=")) {
            continue;
        }
        let Some(q) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            continue;
        };
        let Some(len) = rest[1..].find(q) else {
            continue;
        };
        let value = &rest[1..1 + len];
        if let Some(to) = urls.get(value) {
            out.push(q);
            out.push_str(to);
            out.push(q);
            rest = &rest[len + 2..];
            changed = true;
        }
    }
    if changed {
        out.push_str(rest);
        *div = out;
    }
}

fn status_text(code: u16) -> String {
    let s = StatusCode::from_u16(code).ok();
    format!(
        "{code} {}",
        s.and_then(|s| s.canonical_reason()).unwrap_or("")
    )
}

/// The response entry for a written or read version.
fn response_entry(
    app: &App,
    status: u16,
    m: &VersionMeta<'_>,
    location: bool,
    body: Option<Box<RawValue>>,
) -> Answer {
    let (ty, id) = (m.resource_type, m.id);
    let mut resp = json!({"status": status_text(status), "etag": etag(m.version), "lastModified": format_instant(m.last_updated_us)});
    if location {
        resp["location"] = Value::String(format!("{ty}/{id}/_history/{}", m.version));
    }
    Answer {
        full_url: Some(format!("{}/{ty}/{id}", app.base)),
        resource: body,
        response: resp,
    }
}

/// One entry of a transaction or batch response. Its resource is held as
/// the bytes served (a stored version rendered without parsing it, or a
/// Bundle serialized by [`App::bundle_bytes`]), so numbers keep their
/// spelling and nothing is parsed twice.
#[derive(serde::Serialize)]
struct Answer {
    #[serde(rename = "fullUrl", skip_serializing_if = "Option::is_none")]
    full_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<Box<RawValue>>,
    response: Value,
}

/// The transaction-response or batch-response Bundle.
#[derive(serde::Serialize)]
struct Answers {
    #[serde(rename = "resourceType")]
    resource_type: &'static str,
    #[serde(rename = "type")]
    kind: String,
    entry: Vec<Answer>,
}

/// JSON text as a raw value (`None` if it is not UTF-8, which what
/// `serde_json` writes always is).
fn raw(json: Vec<u8>) -> Option<Box<RawValue>> {
    String::from_utf8(json)
        .ok()
        .and_then(|s| RawValue::from_string(s).ok())
}

/// A 200 answer holding a Bundle (a search or a history).
fn bundle_answer(app: &App, bundle: &Value) -> Answer {
    Answer {
        full_url: None,
        resource: raw(app.bundle_bytes(bundle)),
        response: json!({"status": status_text(200)}),
    }
}

/// A GET or HEAD entry: `[type]/[id]`, `[type]/[id]/_history/[vid]`,
/// `[type]` or `[type]?criteria`.
fn read_of(
    app: &App,
    i: usize,
    method: Method,
    url: &str,
    query: Option<&str>,
) -> Result<Entry, FhirError> {
    let path = local_path(app, url);
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let q = query.unwrap_or("").to_owned();
    let scoped = |ty: &str, id: &str, read: Read| Entry {
        index: i,
        method,
        ty: ty.to_owned(),
        id: id.to_owned(),
        resource: None,
        if_match: None,
        existing: None,
        expect: None,
        read: Some(read),
        criteria: None,
        numbers: Vec::new(),
        warnings: Vec::new(),
    };
    // Reads that name no one type: the system's search and history.
    match parts.as_slice() {
        [] | ["_search"] => {
            return Ok(scoped(
                "",
                "",
                Read::Scoped(crate::search::Scope::System, q),
            ));
        }
        ["_history"] => return Ok(scoped("", "", Read::History(q))),
        [ty, "_history"] => {
            check_type(ty).map_err(|e| entry_error(i, e.diagnostics))?;
            return Ok(scoped(ty, "", Read::History(q)));
        }
        [ty, id, "_history"] => {
            check_type(ty).map_err(|e| entry_error(i, e.diagnostics))?;
            check_id(id).map_err(|e| entry_error(i, e.diagnostics))?;
            return Ok(scoped(ty, id, Read::History(q)));
        }
        [owner, id, comp] if *comp == "*" || crate::types::is_resource_type(comp) => {
            let scope = crate::search::Scope::Compartment {
                owner: (*owner).to_owned(),
                id: (*id).to_owned(),
                ty: (*comp != "*").then(|| (*comp).to_owned()),
            };
            return Ok(scoped(owner, id, Read::Scoped(scope, q)));
        }
        _ => {}
    }
    let ty = parts.first().copied().unwrap_or("").to_owned();
    check_type(&ty).map_err(|e| entry_error(i, e.diagnostics))?;
    let (id, read) = match (parts.as_slice(), query) {
        ([_], q) => (String::new(), Read::Search(q.unwrap_or("").to_owned())),
        ([_, id], None) => (id.to_string(), Read::Current),
        ([_, id, "_history", vid], None) => {
            let v = vid
                .parse()
                .map_err(|_| entry_error(i, format!("{vid:?} is not a version number")))?;
            (id.to_string(), Read::Version(v))
        }
        _ => {
            return Err(entry_error(
                i,
                format!(
                    "a {} entry reads [type]/[id], [type]/[id]/_history/[vid], a history or a search, not {url:?}",
                    if method == Method::Get { "GET" } else { "HEAD" }
                ),
            ));
        }
    };
    if !id.is_empty() {
        check_id(&id).map_err(|e| entry_error(i, e.diagnostics))?;
    }
    Ok(Entry {
        index: i,
        method,
        ty,
        id,
        resource: None,
        if_match: None,
        existing: None,
        expect: None,
        read: Some(read),
        criteria: None,
        numbers: Vec::new(),
        warnings: Vec::new(),
    })
}

/// A PATCH entry: `[type]/[id]` or `[type]?criteria` (one match) with a
/// FHIRPath Patch (a `Parameters` resource) or a JSON Patch as a `Binary`
/// whose `contentType` is `application/json-patch+json` and whose `data`
/// is the patch, base64. The patch is applied to the current version here, and
/// the entry then writes like a PUT that expects that version (so a write
/// in between fails it, and in a transaction fails the transaction).
fn patch_of(
    app: &App,
    i: usize,
    url: &str,
    query: Option<&str>,
    req: &Value,
    resource: Option<&Value>,
) -> Result<Entry, FhirError> {
    let in_entry = in_entry(i);
    let path = local_path(app, url);
    let (ty, id) = match (path.split('/').collect::<Vec<_>>().as_slice(), query) {
        ([ty, id], None) => ((*ty).to_owned(), (*id).to_owned()),
        // A conditional patch: the one resource the criteria match.
        ([ty], Some(q)) => {
            check_type(ty).map_err(in_entry)?;
            match crate::conditional::resolve(app, ty, q, None).map_err(in_entry)? {
                crate::conditional::Target::One { id, .. } => ((*ty).to_owned(), id),
                crate::conditional::Target::Nothing => {
                    return Err(in_entry(FhirError::not_found(format!(
                        "no {ty} matches {q:?}; nothing to patch"
                    ))));
                }
            }
        }
        _ => {
            return Err(entry_error(
                i,
                format!("a PATCH URL is [type]/[id] or [type]?criteria, not {url:?}"),
            ));
        }
    };
    check_type(&ty).map_err(in_entry)?;
    check_id(&id).map_err(in_entry)?;
    let patch = resource.and_then(Value::as_object).ok_or_else(|| {
        entry_error(
            i,
            "a PATCH needs a resource: a Parameters (FHIRPath Patch) or a Binary holding a JSON Patch",
        )
    })?;
    let ops = match type_of(patch) {
        "Parameters" => crate::patch::read_fhirpath(&Value::Object(patch.clone())),
        "Binary" => {
            let content_type = patch.get("contentType").and_then(Value::as_str).unwrap_or("");
            if content_type != "application/json-patch+json" {
                return Err(entry_error(
                    i,
                    format!("a Binary patch has contentType application/json-patch+json, not {content_type:?}"),
                ));
            }
            let data = patch.get("data").and_then(Value::as_str).unwrap_or("");
            let text = crate::fhirpath::decode_base64(data)
                .ok_or_else(|| entry_error(i, "the Binary's data is not base64 of UTF-8 text"))?;
            crate::patch::read_ops(text.as_bytes())
        }
        other => {
            return Err(entry_error(
                i,
                format!("a PATCH entry's resource is a Parameters (FHIRPath Patch) or a Binary (JSON Patch), not a {other}"),
            ));
        }
    }
    .map_err(in_entry)?;
    let current = crate::interactions::live_version(app, &ty, &id).map_err(in_entry)?;
    if let Some(v) = req.get("ifMatch").and_then(Value::as_str) {
        let want = http::if_match_value(v).map_err(in_entry)?;
        if want != current.version {
            return Err(in_entry(FhirError::precondition(format!(
                "{ty}/{id} is at version {}, not {want}",
                current.version
            ))));
        }
    }
    let patched = crate::patch::apply(&ty, &id, &current.body, &ops).map_err(in_entry)?;
    Ok(Entry {
        index: i,
        method: Method::Patch,
        ty,
        id,
        resource: Some(patched),
        if_match: Some(current.version),
        existing: None,
        expect: None,
        read: None,
        criteria: None,
        numbers: crate::numbers::exponents(&current.body),
        warnings: Vec::new(),
    })
}

/// The response entry of a GET or HEAD entry (HEAD: without the resource).
fn read_any(app: &App, e: &Entry) -> Answer {
    let mut out = match &e.read {
        Some(Read::Search(q)) => {
            let run = crate::search::pairs_of(q)
                .and_then(|pairs| crate::search::search_bundle(app, &e.ty, &pairs, false));
            match run {
                Ok(bundle) => bundle_answer(app, &bundle),
                Err(err) => error_entry(&err),
            }
        }
        Some(Read::Scoped(scope, q)) => {
            let run = crate::search::pairs_of(q)
                .and_then(|pairs| crate::search::scoped_bundle(app, scope, &pairs, false));
            match run {
                Ok(bundle) => bundle_answer(app, &bundle),
                Err(err) => error_entry(&err),
            }
        }
        Some(Read::History(q)) => {
            let run = crate::search::pairs_of(q).and_then(|pairs| {
                let map = pairs.into_iter().collect();
                crate::history::history_of(app, &e.ty, &e.id, &map)
            });
            match run {
                Ok(bundle) => bundle_answer(app, &bundle),
                Err(err) => error_entry(&err),
            }
        }
        Some(Read::Version(v)) => version_entry(app, &e.ty, &e.id, *v),
        _ => read_entry(app, &e.ty, &e.id),
    };
    if e.method == Method::Head {
        out.resource = None;
    }
    out
}

/// A vread as a response entry.
fn version_entry(app: &App, ty: &str, id: &str, version: u64) -> Answer {
    version_response(
        app,
        ty,
        id,
        crate::interactions::live_version_at(app, ty, id, version),
    )
}

fn read_entry(app: &App, ty: &str, id: &str) -> Answer {
    version_response(app, ty, id, crate::interactions::live_version(app, ty, id))
}

/// The response entry of a read version, or of why there is none.
fn version_response(
    app: &App,
    ty: &str,
    id: &str,
    read: Result<vigil_engine::Version, FhirError>,
) -> Answer {
    let entry = read.and_then(|v| {
        let body = raw(render(&v.body, v.version, v.last_updated_us)?);
        let m = VersionMeta {
            resource_type: ty,
            id,
            version: v.version,
            last_updated_us: v.last_updated_us,
        };
        Ok(response_entry(app, 200, &m, false, body))
    });
    entry.unwrap_or_else(|e| error_entry(&e))
}

fn error_entry(e: &FhirError) -> Answer {
    Answer {
        full_url: None,
        resource: None,
        response: json!({"status": status_text(e.status.as_u16()), "outcome": e.outcome()}),
    }
}

/// An entry's stored body and its search keys, taking its parsed resource.
fn stored_and_keys(e: &mut Entry) -> (Option<Vec<u8>>, Option<Vec<Vec<u8>>>) {
    match e.resource.take() {
        Some(mut r) => {
            let stored = to_stored_exact(&mut r, &e.id, &e.numbers);
            (
                Some(stored),
                Some(crate::interactions::keys_of(&e.ty, &mut r)),
            )
        }
        None => (None, None),
    }
}

fn op_of(e: &Entry, stored: Option<Vec<u8>>, keys: Option<Vec<Vec<u8>>>) -> Op {
    let expect = e.expect.unwrap_or(match (e.method, e.if_match) {
        (_, Some(v)) => Precondition::Version(v),
        (Method::Post, None) => Precondition::Absent,
        _ => Precondition::None,
    });
    match (e.method, stored) {
        (Method::Delete, _) | (_, None) => Op::delete(e.ty.clone(), e.id.clone()).expect(expect),
        (_, Some(body)) => {
            let op = Op::put(e.ty.clone(), e.id.clone(), body).expect(expect);
            match keys {
                Some(k) => op.with_keys(k),
                None => op,
            }
        }
    }
}

/// The response entry for a committed op, shaped by `Prefer: return=`
/// as a single write's response is: the resource (representation),
/// nothing more (minimal), or an OperationOutcome in `response.outcome`.
fn written_entry(
    app: &App,
    e: &Entry,
    outcome: OpOutcome,
    stored: Option<&[u8]>,
    ret: Return,
) -> Answer {
    let mut entry = written_entry_of(app, e, outcome, stored, ret);
    if !e.warnings.is_empty() {
        let issues = crate::validate::issues("warning", &e.warnings);
        entry.response["outcome"] = json!({
            "resourceType": "OperationOutcome",
            "issue": issues.iter().map(crate::http::outcome::Issue::to_json).collect::<Vec<_>>(),
        });
        return entry;
    }
    if ret == Return::Outcome {
        let said = match outcome {
            OpOutcome::Written {
                kind: OpKind::Delete,
                version,
                ..
            } => {
                format!("{}/{} was deleted (version {version})", e.ty, e.id)
            }
            OpOutcome::Written { version, .. } | OpOutcome::Unchanged { version, .. } => {
                format!("{}/{} is at version {version}", e.ty, e.id)
            }
            _ => format!("{}/{} did not exist; nothing was deleted", e.ty, e.id),
        };
        entry.response["outcome"] = outcome_json("information", "informational", &said);
    }
    entry
}

fn written_entry_of(
    app: &App,
    e: &Entry,
    outcome: OpOutcome,
    stored: Option<&[u8]>,
    ret: Return,
) -> Answer {
    let answer = |response: Value| Answer {
        full_url: None,
        resource: None,
        response,
    };
    match outcome {
        OpOutcome::Written {
            kind,
            version,
            last_updated_us,
            ..
        } if kind != OpKind::Delete => {
            let status = if kind == OpKind::Create { 201 } else { 200 };
            let body = (ret == Return::Representation)
                .then(|| stored.and_then(|s| render(s, version, last_updated_us).ok()))
                .flatten()
                .and_then(raw);
            let m = VersionMeta {
                resource_type: &e.ty,
                id: &e.id,
                version,
                last_updated_us,
            };
            response_entry(app, status, &m, true, body)
        }
        OpOutcome::Unchanged {
            version,
            last_updated_us,
        } => {
            let body = (ret == Return::Representation)
                .then(|| stored.and_then(|s| render(s, version, last_updated_us).ok()))
                .flatten()
                .and_then(raw);
            response_entry(
                app,
                200,
                &VersionMeta {
                    resource_type: &e.ty,
                    id: &e.id,
                    version,
                    last_updated_us,
                },
                true,
                body,
            )
        }
        OpOutcome::Written { version, .. } => {
            answer(json!({"status": status_text(204), "etag": etag(version)}))
        }
        OpOutcome::AlreadyDeleted { .. } | OpOutcome::NotFound | OpOutcome::Rekeyed { .. } => {
            answer(json!({"status": status_text(204)}))
        }
    }
}

/// `POST /` with a transaction or batch Bundle.
pub async fn bundle(
    State(app): State<Arc<App>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, FhirError> {
    check_accept(&headers, q.get("_format").map(String::as_str))?;
    check_content_type(&headers)?;
    let bytes = http::body(bytes, app.config.max_body_bytes)?;
    let mut map = crate::resource::parse(&bytes)?;
    if type_of(&map) != "Bundle" {
        return Err(FhirError::invalid(format!(
            "POST / takes a Bundle, not a {}",
            type_of(&map)
        )));
    }
    let kind = map
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let entries = match map.remove("entry") {
        None => Vec::new(),
        Some(Value::Array(e)) => e,
        Some(_) => return Err(FhirError::invalid("Bundle.entry is not an array")),
    };
    let numbers = entry_numbers(&bytes);
    if entries.len() > BUNDLE_ENTRIES_MAX {
        return Err(FhirError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-costly",
            format!(
                "the Bundle has {} entries, at most {BUNDLE_ENTRIES_MAX} are allowed",
                entries.len()
            ),
        ));
    }
    let ret = prefer_return(&headers);
    let out = match kind.as_str() {
        "transaction" => transaction(&app, entries, &numbers, ret).await?,
        "batch" => batch(&app, entries, &numbers, ret).await,
        other => {
            return Err(FhirError::invalid(format!(
                "Bundle.type {other:?} cannot be processed; send transaction or batch"
            )));
        }
    };
    let bundle = Answers {
        resource_type: "Bundle",
        kind: format!("{kind}-response"),
        entry: out,
    };
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_vec(&bundle).unwrap_or_default(),
    ))
}

/// The numbers with an exponent of each entry's resource, as written (see
/// [`crate::numbers`]); empty when the Bundle has none, as most have.
fn entry_numbers(bytes: &[u8]) -> Vec<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Raw<'a> {
        #[serde(borrow, default)]
        entry: Vec<RawEntry<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct RawEntry<'a> {
        #[serde(borrow, default)]
        resource: Option<&'a serde_json::value::RawValue>,
    }
    if crate::numbers::exponents(bytes).is_empty() {
        return Vec::new();
    }
    serde_json::from_slice::<Raw<'_>>(bytes)
        .map(|r| {
            r.entry
                .iter()
                .map(|e| {
                    e.resource
                        .map(|r| crate::numbers::exponents(r.get().as_bytes()))
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Parses entry `i`, with its resource's numbers as written.
fn parse_entry_of(
    app: &App,
    i: usize,
    e: &mut Value,
    numbers: &[Vec<String>],
) -> Result<(Entry, Option<String>), FhirError> {
    let (mut entry, full_url) = parse_entry(app, i, e)?;
    if entry.method != Method::Patch
        && let Some(n) = numbers.get(i)
    {
        entry.numbers = n.clone();
    }
    Ok((entry, full_url))
}

async fn transaction(
    app: &App,
    raw: Vec<Value>,
    numbers: &[Vec<String>],
    ret: Return,
) -> Result<Vec<Answer>, FhirError> {
    let mut entries = Vec::with_capacity(raw.len());
    let mut refs = HashMap::new();
    for (i, mut e) in raw.into_iter().enumerate() {
        let (entry, full_url) = parse_entry_of(app, i, &mut e, numbers)?;
        let target = format!(
            "{}/{}",
            entry.ty,
            entry.existing.as_deref().unwrap_or(&entry.id)
        );
        if let Some(u) = full_url
            && matches!(entry.method, Method::Post | Method::Put)
            && refs.insert(u.clone(), target).is_some()
        {
            return Err(entry_error(i, format!("fullUrl {u:?} appears twice")));
        }
        entries.push(entry);
    }
    // Settle what conditional references may name: the Bundle's own
    // conditional creates and updates, and not what it deletes.
    let mut resolver = Resolver::new(app);
    for e in &entries {
        let id = e.existing.as_deref().unwrap_or(&e.id);
        match (e.method, &e.criteria) {
            (Method::Delete, _) => resolver.deletes(&e.ty, id),
            (_, Some(c)) => resolver.settled(&e.ty, c, id),
            _ => {}
        }
    }
    // Rewrite references to other entries and conditional references,
    // then process in the spec's order.
    let refs = FullUrls::new(refs);
    for e in &mut entries {
        if let Some(r) = e.resource.as_mut() {
            let mut v = Value::Object(std::mem::take(r));
            rewrite(&mut v, &refs);
            resolver.rewrite(&mut v).map_err(in_resource(e.index))?;
            e.warnings = checked(app, e.index, &v)?;
            if let Value::Object(m) = v {
                *r = m;
            }
        }
    }
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&k| (entries[k].method, k));
    let mut batch = Batch::new();
    let mut planned = Vec::new();
    for &k in &order {
        let e = &mut entries[k];
        if e.read.is_some() || e.existing.is_some() {
            continue;
        }
        // The parsed resource is not needed past this point.
        let (stored, keys) = stored_and_keys(e);
        batch.push(op_of(e, stored.clone(), keys));
        planned.push((k, stored));
    }
    let mut results: Vec<Option<Answer>> = (0..entries.len()).map(|_| None).collect();
    if !batch.ops.is_empty() {
        let c = commit(app, batch).await.map_err(|e| {
            if e.status == StatusCode::CONFLICT {
                FhirError::precondition(format!("transaction failed: {}", e.diagnostics))
            } else {
                e
            }
        })?;
        for ((k, stored), outcome) in planned.iter().zip(c.outcomes) {
            results[*k] = Some(written_entry(
                app,
                &entries[*k],
                outcome,
                stored.as_deref(),
                ret,
            ));
        }
    }
    for &k in &order {
        let e = &entries[k];
        if let Some(id) = &e.existing {
            results[k] = Some(read_entry(app, &e.ty, id));
        } else if e.read.is_some() {
            results[k] = Some(read_any(app, e));
        }
    }
    debug_assert!(entries.iter().all(|e| results[e.index].is_some()));
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| error_entry(&FhirError::internal("an entry had no answer"))))
        .collect())
}

/// Most batch entries committed at once (each its own engine batch, so
/// the group commit writes them in few frames and fsyncs).
const BATCH_WRITES_IN_FLIGHT: usize = 256;

/// A batch: every entry parsed and checked on its own (its conditional
/// parts resolved against the store as it was before the batch), then the
/// writes committed together in the spec's order, each its own engine
/// batch (so one failing fails only itself), then the reads. R4 forbids
/// interdependent entries in a batch, so they are not committed one after
/// another; only entries that write the same resource are, in their
/// order.
async fn batch(app: &App, raw: Vec<Value>, numbers: &[Vec<String>], ret: Return) -> Vec<Answer> {
    let mut out: Vec<Option<Answer>> = (0..raw.len()).map(|_| None).collect();
    let mut writes = Vec::new();
    let mut reads = Vec::new();
    for (i, mut e) in raw.into_iter().enumerate() {
        let mut entry = match parse_entry_of(app, i, &mut e, numbers) {
            Ok((entry, _)) => entry,
            Err(err) => {
                out[i] = Some(error_entry(&err));
                continue;
            }
        };
        if entry.existing.is_some() || entry.read.is_some() {
            reads.push(entry);
            continue;
        }
        if let Some(r) = entry.resource.as_mut() {
            let checked = Resolver::new(app)
                .rewrite_map(r)
                .map_err(in_resource(i))
                .and_then(|()| {
                    crate::validate::check_map(app.config.validation, r)
                        .map_err(|e| in_bundle(i, e))
                });
            match checked {
                Ok(w) => entry.warnings = w,
                Err(err) => {
                    out[i] = Some(error_entry(&err));
                    continue;
                }
            }
        }
        let (stored, keys) = stored_and_keys(&mut entry);
        writes.push((entry, stored, keys));
    }
    writes.sort_by_key(|(e, _, _)| (e.method, e.index));
    for wave in waves(writes) {
        for chunk in wave.chunks(BATCH_WRITES_IN_FLIGHT) {
            let commits = chunk.iter().map(|(entry, stored, keys)| {
                commit(app, Batch::one(op_of(entry, stored.clone(), keys.clone())))
            });
            let done = futures_util::future::join_all(commits).await;
            for ((entry, stored, _), result) in chunk.iter().zip(done) {
                out[entry.index] = Some(match result {
                    Ok(c) => written_entry(app, entry, c.outcomes[0], stored.as_deref(), ret),
                    Err(err) if err.status == StatusCode::CONFLICT => {
                        error_entry(&FhirError::precondition(err.diagnostics))
                    }
                    Err(err) => error_entry(&err),
                });
            }
        }
    }
    reads.sort_by_key(|e| (e.method, e.index));
    for entry in reads {
        out[entry.index] = Some(match &entry.existing {
            Some(id) => read_entry(app, &entry.ty, id),
            None => read_any(app, &entry),
        });
    }
    out.into_iter()
        .map(|a| a.unwrap_or_else(|| error_entry(&FhirError::internal("an entry had no answer"))))
        .collect()
}

/// A planned write: the entry, its stored body and its search keys.
type Write = (Entry, Option<Vec<u8>>, Option<Vec<Vec<u8>>>);

/// `writes` (in order) split into waves that each write a resource at
/// most once, an entry in the wave after the previous write of its
/// resource.
fn waves(writes: Vec<Write>) -> Vec<Vec<Write>> {
    let mut last: HashMap<(String, String), usize> = HashMap::new();
    let mut out: Vec<Vec<Write>> = Vec::new();
    for w in writes {
        let key = (w.0.ty.clone(), w.0.id.clone());
        let wave = last.get(&key).map_or(0, |k| k + 1);
        last.insert(key, wave);
        if out.len() <= wave {
            out.push(Vec::new());
        }
        out[wave].push(w);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrative_links_to_entries_are_rewritten_and_nothing_else() {
        let urls = FullUrls::new(HashMap::from([
            ("urn:uuid:a".to_owned(), "Patient/1".to_owned()),
            ("http://x/Obs/2".to_owned(), "Observation/9".to_owned()),
        ]));
        let mut div = r#"<div><a href="urn:uuid:a">p</a> <img src='http://x/Obs/2'/> <a title="urn:uuid:a" href="urn:uuid:b">q</a> a=b href=</div>"#.to_owned();
        rewrite_narrative(&mut div, &urls);
        assert_eq!(
            div,
            r#"<div><a href="Patient/1">p</a> <img src='Observation/9'/> <a title="urn:uuid:a" href="urn:uuid:b">q</a> a=b href=</div>"#
        );
        let mut plain = "<div>no links</div>".to_owned();
        rewrite_narrative(&mut plain, &urls);
        assert_eq!(plain, "<div>no links</div>");
    }
}
