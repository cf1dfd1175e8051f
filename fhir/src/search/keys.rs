//! The search keys: the byte strings this crate hands the engine for
//! every live resource, and the extractor that makes them by evaluating
//! each parameter's FHIRPath expression ([`super::registry`]). This is a
//! persisted schema: change it only with [`EXTRACTOR_NAME`].
//!
//! Keys are byte strings the engine stores for the current live version of
//! each resource and looks up by range; it does not interpret them. Each
//! is `tag \0 Type \0 param \0 value`:
//!
//! | tag | kind      | value                                              |
//! |-----|-----------|----------------------------------------------------|
//! | `t` | (any)     | none: `t\0Type` marks every live resource          |
//! | `k` | token     | `code \0 system`                                   |
//! | `s` | string    | lowercased, accents removed, at most 256 bytes     |
//! | `r` | reference | `id \0 Type`, or the literal reference `\0`          |
//! | `d` | date      | `start end`: sortable big-endian microseconds      |
//! | `n` | number    | the value as a sortable 8-byte float               |
//! | `q` | quantity  | sortable 8-byte value, `code \0 system`           |
//! |     |           | (UCUM: also under `param:ucum`, in base units, the |
//! |     |           | dimension as code; see `search::ucum`)            |
//! | `u` | uri       | the URI as written                                 |
//! | `c` | composite | each component's value as above, joined by `\x01` |
//!
//! A reference's identifier (`Reference.identifier`) is a token key of
//! the parameter `param:identifier`; a token's texts (a CodeableConcept's
//! text and displays, an Identifier's type text) are string keys of
//! `param:text`, for the `:text` modifier. A token or reference is one key, its
//! code (id) first: `code` alone is a prefix scan of `code\0`,
//! `system|code` one exact key. FHIR strings hold no NUL, so `\0`
//! separates unambiguously; a text value that holds one anyway is not
//! indexed, nor one longer than [`VALUE_BYTES_MAX`].
//!
//! A composite (`code-value-quantity`) has one key per item of its own
//! expression and combination of its components' values on that item (at
//! most [`COMPOSITE_KEYS_MAX`]), so its components match on the same
//! element. Components are read in order: dates (16 bytes) and numbers
//! (8) by width, a quantity's 8 bytes then text, other values as text up
//! to the `\x01` separator, which a text value in a composite may not
//! hold (it is not indexed then). The first component is text in every
//! R4 composite: `code|system$…` is a prefix scan.

use std::sync::Arc;

use serde_json::{Map, Value};
use unicode_normalization::UnicodeNormalization;
use vigil_engine::KeyExtractor;

use super::custom::{Custom, DEFINING_TYPE};
use super::fields::{Fields, parse_fields};
use super::registry::{Component, Kind, SearchParam, Source, registry};
use crate::fhirpath::{Expr, Item};
use crate::instant::parse_interval;

/// The name the engine records for this extractor; change it whenever the
/// keys change, and stores rebuild their index on open.
pub const EXTRACTOR_NAME: &str = "vigil-fhir-search-v6";

/// Longest string key value in bytes: longer strings are indexed by their
/// first 256 bytes, and a search for a longer value is checked on the
/// resources themselves.
pub const STRING_KEY_BYTES_MAX: usize = 256;

/// Longest code, system, URI or literal reference indexed, in bytes (the
/// engine keeps keys up to 1,024 bytes); longer values are not indexed.
pub const VALUE_BYTES_MAX: usize = 900;

/// The custom parameters in force on `store` (none unless it was opened
/// with [`SearchKeys`]).
pub fn custom_of(store: &vigil_engine::Store) -> Arc<super::custom::Active> {
    store
        .extractor()
        .as_any()
        .downcast_ref::<SearchKeys>()
        .map(|k| k.custom().current())
        .unwrap_or_default()
}

/// The key of a uri parameter's value: `url` of a canonical resource
/// (a StructureDefinition, a ValueSet) is looked up by it.
pub fn uri_key(ty: &str, param: &str, uri: &str) -> Vec<u8> {
    key(b'u', ty, param, uri.as_bytes())
}

/// The FHIR search-key extractor: the built-in parameters' keys, and
/// those of the custom parameters the store's SearchParameters define.
#[derive(Debug, Default, Clone)]
pub struct SearchKeys {
    custom: Arc<Custom>,
}

impl SearchKeys {
    /// The custom parameters of the store this extractor serves.
    pub fn custom(&self) -> &Arc<Custom> {
        &self.custom
    }

    fn custom_keys(
        ty: &str,
        params: impl Iterator<Item = &'static SearchParam>,
        body: &[u8],
        out: &mut Vec<Vec<u8>>,
    ) {
        let mut params = params.peekable();
        if params.peek().is_none() {
            return;
        }
        let Ok(v @ Value::Object(_)) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        for p in params {
            param_keys(ty, p, &v, out);
        }
    }
}

pub(super) fn key(tag: u8, ty: &str, param: &str, value: &[u8]) -> Vec<u8> {
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
pub(super) fn pair_key(tag: u8, ty: &str, param: &str, first: &str, second: &str) -> Vec<u8> {
    let mut k = key(tag, ty, param, first.as_bytes());
    k.push(0);
    k.extend_from_slice(second.as_bytes());
    k
}

pub(super) fn all_key(ty: &str) -> Vec<u8> {
    let mut k = b"t\0".to_vec();
    k.extend_from_slice(ty.as_bytes());
    k
}

/// The parameter a reference's identifiers are token keys of.
pub(super) fn identifier_param(param: &str) -> String {
    format!("{param}:identifier")
}

/// Lowercase with accents removed (canonical decomposition, combining
/// marks dropped), for case- and accent-insensitive matching.
pub(super) fn normalise(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    s.nfd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// `s` cut to at most `max` bytes at a character boundary.
pub(super) fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `Type/id` of a reference (also from an absolute URL, and without a
/// `_history/N` suffix or a canonical's `|version`), if it has one.
pub fn reference_target(r: &str) -> Option<(String, String)> {
    let r = r.split('|').next().unwrap_or(r).trim_end_matches('/');
    let r = match r.rsplit_once("/_history/") {
        Some((head, _)) => head,
        None => r,
    };
    let mut parts = r.rsplit('/');
    let id = parts.next()?;
    let ty = parts.next()?;
    (crate::types::is_resource_type(ty) && crate::types::is_valid_id(id))
        .then(|| (ty.to_owned(), id.to_owned()))
}

pub(super) fn sortable(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

pub(super) fn unsortable(b: &[u8]) -> Option<i64> {
    Some((u64::from_be_bytes(b.get(..8)?.try_into().ok()?) ^ (1 << 63)) as i64)
}

/// A float as 8 bytes whose byte order is the numbers' order (`None` for
/// NaN; -0 is 0).
pub(super) fn sortable_f64(v: f64) -> Option<[u8; 8]> {
    if v.is_nan() {
        return None;
    }
    let bits = (if v == 0.0 { 0.0f64 } else { v }).to_bits();
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    Some(ordered.to_be_bytes())
}

/// The inverse of [`sortable_f64`].
pub(super) fn unsortable_f64(b: &[u8]) -> Option<f64> {
    let ordered = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
    let bits = if ordered >> 63 == 1 {
        ordered & !(1 << 63)
    } else {
        !ordered
    };
    Some(f64::from_bits(bits))
}

fn text_of(v: Option<&Value>) -> &str {
    v.and_then(Value::as_str).unwrap_or("")
}

fn usable(s: &str) -> bool {
    !s.is_empty() && s.len() <= VALUE_BYTES_MAX && !s.contains('\0')
}

/// `(code, system)` pairs of a token value.
pub(super) fn tokens(item: &Item<'_>, out: &mut Vec<(String, String)>) {
    match item {
        Item::Node(v, _) => node_tokens(v, out),
        Item::Boolean(b) => out.push((b.to_string(), String::new())),
        Item::String(s) => out.push((s.clone(), String::new())),
        Item::Integer(i) => out.push((i.to_string(), String::new())),
        _ => {}
    }
}

fn node_tokens(v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(code) => out.push((code.clone(), String::new())),
        Value::Bool(b) => out.push((b.to_string(), String::new())),
        Value::Number(n) => out.push((n.to_string(), String::new())),
        Value::Array(items) => items.iter().for_each(|i| node_tokens(i, out)),
        Value::Object(o) => {
            if let Some(codings) = o.get("coding") {
                node_tokens(codings, out);
            } else if let Some(code) = o.get("code").and_then(Value::as_str) {
                out.push((code.to_owned(), text_of(o.get("system")).to_owned()));
            } else if let Some(value) = o.get("value").and_then(Value::as_str) {
                // Identifier and ContactPoint.
                out.push((value.to_owned(), text_of(o.get("system")).to_owned()));
            }
        }
        Value::Null => {}
    }
}

/// The texts `:text` searches on a token's item: a CodeableConcept's
/// `text` and its codings' `display`, a Coding's `display`, an
/// Identifier's `type.text`.
pub(super) fn token_texts(item: &Item<'_>, out: &mut Vec<String>) {
    if let Item::Node(v, _) = item {
        node_token_texts(v, out);
    }
}

fn node_token_texts(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| node_token_texts(i, out)),
        Value::Object(o) => {
            let text = |x: Option<&Value>| x.and_then(Value::as_str).map(str::to_owned);
            out.extend(text(o.get("text")));
            out.extend(text(o.get("display")));
            if let Some(Value::Array(codings)) = o.get("coding") {
                out.extend(codings.iter().filter_map(|c| text(c.get("display"))));
            }
            out.extend(text(o.get("type").and_then(|t| t.get("text"))));
        }
        _ => {}
    }
}

/// The parameter a token's texts (`:text`) are string keys of.
pub(super) fn text_param(param: &str) -> String {
    format!("{param}:text")
}

/// The text values of a string parameter's item: a string, or the parts
/// of a HumanName or Address (or any other element's text), but for the
/// members `skip` names (those another parameter indexes).
pub(super) fn strings(item: &Item<'_>, skip: &[(String, String)], out: &mut Vec<String>) {
    match item {
        Item::Node(v, _) => node_strings(v, skip, out, 0),
        Item::String(s) => out.push(s.clone()),
        _ => {}
    }
}

fn node_strings(v: &Value, skip: &[(String, String)], out: &mut Vec<String>, depth: usize) {
    const SKIPPED: [&str; 6] = ["extension", "id", "use", "period", "system", "url"];
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) if depth < 4 => {
            items
                .iter()
                .for_each(|i| node_strings(i, &[], out, depth + 1));
        }
        Value::Object(o) if depth < 4 => {
            for (k, x) in o {
                let covered = skip.iter().any(|(m, _)| m == k);
                if !covered && !SKIPPED.contains(&k.as_str()) {
                    node_strings(x, &[], out, depth + 1);
                }
            }
        }
        _ => {}
    }
}

/// What a reference item points to: `Reference.reference`, or a
/// canonical or URI as written; and the identifiers of a logical
/// reference.
pub(super) fn references(item: &Item<'_>, refs: &mut Vec<String>, ids: &mut Vec<(String, String)>) {
    match item {
        Item::Node(Value::String(s), _) => refs.push(s.clone()),
        Item::Node(Value::Object(o), _) => {
            if let Some(r) = o.get("reference").and_then(Value::as_str) {
                refs.push(r.to_owned());
            }
            if let Some(Value::Object(id)) = o.get("identifier")
                && let Some(value) = id.get("value").and_then(Value::as_str)
            {
                ids.push((value.to_owned(), text_of(id.get("system")).to_owned()));
            }
        }
        Item::String(s) => refs.push(s.clone()),
        _ => {}
    }
}

/// The `[start, end)` intervals of a date, dateTime, instant, Period or
/// Timing.
pub(super) fn date_intervals(item: &Item<'_>, out: &mut Vec<(i64, i64)>) {
    match item {
        Item::Node(v, _) => node_dates(v, out),
        Item::String(s) => out.extend(parse_interval(s)),
        Item::Temporal(t) => out.extend(parse_interval(t.text.trim_start_matches('T'))),
        _ => {}
    }
}

fn node_dates(v: &Value, out: &mut Vec<(i64, i64)>) {
    match v {
        Value::String(s) => out.extend(parse_interval(s)),
        Value::Object(o) if o.contains_key("event") || o.contains_key("repeat") => {
            // Timing: each event, and the bounds of its repeat.
            if let Some(events) = o.get("event").and_then(Value::as_array) {
                events.iter().for_each(|e| node_dates(e, out));
            }
            if let Some(bounds) = o.get("repeat").and_then(|r| r.get("boundsPeriod")) {
                node_dates(bounds, out);
            }
        }
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
            if start != i64::MIN || end != i64::MAX {
                out.push((start, end));
            }
        }
        _ => {}
    }
}

/// A JSON or System number as a float.
fn number_of(item: &Item<'_>) -> Option<f64> {
    match item {
        Item::Node(Value::Number(n), _) => n.as_f64(),
        Item::Integer(i) => Some(*i as f64),
        Item::Decimal(d) => Some(*d),
        _ => None,
    }
}

/// `(value, code, system)` of a Quantity, Age, Duration, Distance, Count,
/// SimpleQuantity or Money (whose currency is its code).
fn quantity_of(item: &Item<'_>) -> Option<(f64, String, String)> {
    match item {
        Item::Node(Value::Object(o), _) => {
            let value = o.get("value").and_then(Value::as_number)?.as_f64()?;
            if let Some(currency) = o.get("currency").and_then(Value::as_str) {
                return Some((value, currency.to_owned(), "urn:iso:std:iso:4217".into()));
            }
            let code = o
                .get("code")
                .or_else(|| o.get("unit"))
                .and_then(Value::as_str)
                .unwrap_or("");
            Some((value, code.to_owned(), text_of(o.get("system")).to_owned()))
        }
        Item::Quantity(v, unit) => Some((*v, unit.clone(), String::new())),
        _ => None,
    }
}

impl KeyExtractor for SearchKeys {
    fn name(&self) -> &str {
        EXTRACTOR_NAME
    }

    /// Parses only the top-level fields the type's parameters read
    /// (`TypeParams::fields`), so the keys are those [`keys_of_value`]
    /// gives the whole parsed body.
    fn keys(&self, ty: &str, body: &[u8], out: &mut Vec<Vec<u8>>) {
        let parsed = match &registry().of(ty).fields {
            Some(fields) => {
                let mut wanted: Vec<&str> = fields.iter().map(String::as_str).collect();
                wanted.push("resourceType");
                parse_fields(body, &wanted)
            }
            None => match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(map)) => Some(Fields::Object(map)),
                Ok(_) => Some(Fields::NotObject),
                Err(_) => None,
            },
        };
        match parsed {
            Some(Fields::Object(map)) => keys_of_value(ty, &Value::Object(map), out),
            Some(Fields::NotObject) => match serde_json::from_slice::<Value>(body) {
                Ok(v @ Value::Object(_)) => keys_of_value(ty, &v, out),
                Ok(_) => out.push(all_key(ty)),
                Err(_) => {}
            },
            None => {}
        }
    }

    fn defining_type(&self) -> Option<&str> {
        Some(DEFINING_TYPE)
    }

    fn forget_definitions(&self) {
        self.custom.forget();
    }

    fn define(&self, lsn: u64, id: &str, body: Option<&[u8]>) {
        self.custom.define(lsn, id, body);
    }

    fn has_defined_keys(&self, lsn: u64, ty: &str) -> bool {
        self.custom
            .at(lsn)
            .is_some_and(|a| a.of(ty).next().is_some())
    }

    fn defined_keys(&self, lsn: u64, ty: &str, body: &[u8], out: &mut Vec<Vec<u8>>) {
        if let Some(a) = self.custom.at(lsn) {
            Self::custom_keys(ty, a.of(ty), body, out);
        }
    }

    fn defined_keys_ever(&self, ty: &str, body: &[u8], out: &mut Vec<Vec<u8>>) {
        Self::custom_keys(ty, self.custom.ever(ty).into_iter(), body, out);
    }

    /// One parse of the body; each parameter ever in force evaluated once.
    fn rekey_keys(
        &self,
        lsn: u64,
        ty: &str,
        body: &[u8],
        remove: &mut Vec<Vec<u8>>,
        insert: &mut Vec<Vec<u8>>,
    ) {
        let ever = self.custom.ever(ty);
        if ever.is_empty() {
            return;
        }
        let Ok(v @ Value::Object(_)) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        let now = self.custom.at(lsn);
        for p in ever {
            let from = remove.len();
            param_keys(ty, p, &v, remove);
            if now
                .as_ref()
                .is_some_and(|a| a.of(ty).any(|q| std::ptr::eq(p, q)))
            {
                insert.extend_from_slice(&remove[from..]);
            }
        }
    }

    fn ever_defines(&self, ty: &str) -> bool {
        self.custom.ever_defines(ty)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The keys [`SearchKeys`] gives a body, from the body already parsed (as
/// the stored JSON: after `resource::to_stored_in`). Writes pass them with
/// the commit (`Op::with_keys`) so the body is not parsed again.
pub fn keys_of_map(ty: &str, map: &mut Map<String, Value>, out: &mut Vec<Vec<u8>>) {
    let v = Value::Object(std::mem::take(map));
    keys_of_value(ty, &v, out);
    if let Value::Object(m) = v {
        *map = m;
    }
}

/// The keys of a resource given as a JSON value: `t\0Type`, then every
/// own-key parameter's values.
pub fn keys_of_value(ty: &str, resource: &Value, out: &mut Vec<Vec<u8>>) {
    out.push(all_key(ty));
    let mut cache = ComponentCache::default();
    for p in &registry().of(ty).params {
        own_param_keys(ty, p, resource, &mut cache, out);
    }
}

/// The keys one parameter of `ty` writes for `resource`, as
/// [`keys_of_value`] adds them (none unless the parameter writes keys of
/// its own).
pub(super) fn param_keys(
    ty: &str,
    p: &'static SearchParam,
    resource: &Value,
    out: &mut Vec<Vec<u8>>,
) {
    own_param_keys(ty, p, resource, &mut ComponentCache::default(), out);
}

fn own_param_keys(
    ty: &str,
    p: &'static SearchParam,
    resource: &Value,
    cache: &mut ComponentCache,
    out: &mut Vec<Vec<u8>>,
) {
    if p.source != Source::Own {
        return;
    }
    let Some(expr) = &p.expr else { return };
    // A parameter whose fields the resource lacks has no values: skip
    // evaluating it (most of a type's parameters, for most resources).
    if let (Some(fields), Some(top)) = (&p.fields, resource.as_object())
        && !top.keys().any(|k| super::fields::wanted_name(fields, k))
    {
        return;
    }
    // An expression that fails on this resource (more than one item
    // where one is required) indexes nothing for the parameter.
    let Ok(items) = expr.evaluate(resource) else {
        return;
    };
    let before = out.len();
    for item in &items {
        item_keys(ty, p, resource, item, cache, out);
    }
    // One key per distinct value.
    if out.len() - before > 1 {
        out[before..].sort_unstable();
        let mut tail = out.split_off(before);
        tail.dedup();
        out.extend(tail);
    }
}

fn item_keys(
    ty: &str,
    p: &'static SearchParam,
    resource: &Value,
    item: &Item<'_>,
    cache: &mut ComponentCache,
    out: &mut Vec<Vec<u8>>,
) {
    let Some(tag) = p.kind.tag() else {
        return;
    };
    let param = p.code.as_str();
    let prefix = key(tag, ty, param, b"");
    let mut ids = Vec::new();
    match p.kind {
        Kind::Composite => {
            let mut values = Vec::new();
            composite_values(p, resource, item, cache, &mut values);
            out.extend(values.iter().map(|v| [prefix.as_slice(), v].concat()));
        }
        Kind::Reference => {
            let mut refs = Vec::new();
            references(item, &mut refs, &mut ids);
            reference_values(&refs, &prefix, out);
        }
        kind => item_values(kind, &p.covers, item, &prefix, out),
    }
    // A UCUM quantity is also its magnitude in base units, `param:ucum`.
    if p.kind == Kind::Quantity
        && let Some((v, code)) = super::ucum::quantity(item)
        && let Some(s) = super::ucum::scale(code)
        && let Some(b) = sortable_f64(s.canonical(v))
    {
        let mut value = b.to_vec();
        value.extend_from_slice(s.unit.as_bytes());
        value.push(0);
        value.extend_from_slice(super::ucum::UCUM_SYSTEM.as_bytes());
        out.push(key(b'q', ty, &super::ucum::param(param), &value));
    }
    // A token's texts are string keys of `param:text`.
    if p.kind == Kind::Token {
        let mut texts = Vec::new();
        token_texts(item, &mut texts);
        for t in texts {
            let n = normalise(&t);
            let n = cut(&n, STRING_KEY_BYTES_MAX);
            if !n.is_empty() && !n.contains('\0') {
                out.push(key(b's', ty, &text_param(param), n.as_bytes()));
            }
        }
    }
    // A logical reference's identifier is a token of `param:identifier`.
    for (value, system) in ids {
        if usable(&value) && (system.is_empty() || usable(&system)) {
            out.push(pair_key(
                b'k',
                ty,
                &identifier_param(param),
                &value,
                &system,
            ));
        }
    }
}

/// The keys `item` gives a parameter of `kind`, each `prefix` (its
/// `tag\0Type\0code\0`, or nothing for a composite's component) and: `code\0system` for tokens, normalised
/// text for strings (less the members `covers` names), `id\0Type` or the
/// literal for references, sortable start and end for dates, a sortable
/// float for numbers (and `code\0system` after it for quantities), the
/// text of a URI.
fn item_values(
    kind: Kind,
    covers: &[(String, String)],
    item: &Item<'_>,
    prefix: &[u8],
    out: &mut Vec<Vec<u8>>,
) {
    let pair =
        |first: &str, second: &str| [prefix, first.as_bytes(), b"\0", second.as_bytes()].concat();
    match kind {
        Kind::Token => {
            let mut pairs = Vec::new();
            tokens(item, &mut pairs);
            for (code, system) in pairs {
                if usable(&code) && (system.is_empty() || usable(&system)) {
                    out.push(pair(&code, &system));
                }
            }
        }
        Kind::String => {
            let mut texts = Vec::new();
            strings(item, covers, &mut texts);
            for s in texts {
                let n = normalise(&s);
                let n = cut(&n, STRING_KEY_BYTES_MAX);
                if !n.is_empty() && !n.contains('\0') {
                    out.push([prefix, n.as_bytes()].concat());
                }
            }
        }
        Kind::Reference => {
            let (mut refs, mut ids) = (Vec::new(), Vec::new());
            references(item, &mut refs, &mut ids);
            reference_values(&refs, prefix, out);
        }
        Kind::Date => {
            let mut spans = Vec::new();
            date_intervals(item, &mut spans);
            for (start, end) in spans {
                out.push([prefix, &sortable(start), &sortable(end)].concat());
            }
        }
        Kind::Number => {
            if let Some(b) = number_of(item).and_then(sortable_f64) {
                out.push([prefix, &b].concat());
            }
        }
        Kind::Quantity => {
            if let Some((v, code, system)) = quantity_of(item)
                && let Some(b) = sortable_f64(v)
                && !code.contains('\0')
                && code.len() <= VALUE_BYTES_MAX
                && (system.is_empty() || usable(&system))
            {
                let mut value = [prefix, &b].concat();
                value.extend_from_slice(code.as_bytes());
                value.push(0);
                value.extend_from_slice(system.as_bytes());
                out.push(value);
            }
        }
        Kind::Uri => {
            if let Some(s) = item
                .node()
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| item.as_str())
                && usable(&s)
            {
                out.push([prefix, s.as_bytes()].concat());
            }
        }
        Kind::Composite | Kind::Special => {}
    }
}

/// `id\0Type` of each reference to a resource, the literal of others.
fn reference_values(refs: &[String], prefix: &[u8], out: &mut Vec<Vec<u8>>) {
    for r in refs {
        match reference_target(r) {
            Some((rty, rid)) => out.push([prefix, rid.as_bytes(), b"\0", rty.as_bytes()].concat()),
            None if usable(r) => out.push([prefix, r.as_bytes(), b"\0"].concat()),
            None => {}
        }
    }
}

/// Most keys one item of a composite parameter gives (the product of its
/// components' values is cut there).
pub const COMPOSITE_KEYS_MAX: usize = 64;

/// The byte between a composite key's components. No component value
/// holds it where a reader looks for it: text values with it are not
/// indexed in composites, and fixed-width values (dates, numbers) are
/// read by width.
pub(super) const COMPONENT_SEPARATOR: u8 = 1;

/// The values of a composite parameter on one item of its expression:
/// every combination of its components' values (each evaluated on the
/// item), joined by [`COMPONENT_SEPARATOR`].
fn composite_values(
    p: &'static SearchParam,
    resource: &Value,
    item: &Item<'_>,
    cache: &mut ComponentCache,
    out: &mut Vec<Vec<u8>>,
) {
    // A component without values leaves the item without keys: find out
    // before combining.
    let mut columns: Vec<&[Vec<u8>]> = Vec::with_capacity(p.components.len());
    let mut at = Vec::with_capacity(p.components.len());
    for c in &p.components {
        let i = cache.values(c, resource, item);
        if cache.0[i].3.is_empty() {
            return;
        }
        at.push(i);
    }
    for i in at {
        columns.push(&cache.0[i].3);
    }
    let mut combos: Vec<Vec<u8>> = vec![Vec::new()];
    for (i, values) in columns.into_iter().enumerate() {
        let mut next = Vec::new();
        for prefix in &combos {
            for v in values {
                if next.len() >= COMPOSITE_KEYS_MAX {
                    break;
                }
                let mut k = prefix.clone();
                if i > 0 {
                    k.push(COMPONENT_SEPARATOR);
                }
                k.extend_from_slice(v);
                next.push(k);
            }
        }
        combos = next;
    }
    out.extend(combos);
}

/// The values of composite components already evaluated on one
/// resource, by (item, kind, expression): the composites of a type share
/// components (`code` is the first of eight of Observation's), so each is
/// evaluated once per item.
#[derive(Default)]
pub(super) struct ComponentCache(Vec<(usize, Kind, &'static Expr, Vec<Vec<u8>>)>);

impl ComponentCache {
    /// The index of `c`'s values on `item`, evaluated if not yet.
    fn values(&mut self, c: &'static Component, resource: &Value, item: &Item<'_>) -> usize {
        let at = match item {
            Item::Node(v, _) => Some(std::ptr::from_ref::<Value>(v) as usize),
            _ => None,
        };
        if let Some(addr) = at
            && let Some(i) = self
                .0
                .iter()
                .position(|(a, k, e, _)| *a == addr && *k == c.kind && e.node() == c.expr.node())
        {
            return i;
        }
        let mut values = Vec::new();
        if let Ok(items) = c.expr.evaluate_on(resource, item) {
            for it in &items {
                item_values(c.kind, &[], it, &[], &mut values);
            }
        }
        // Text must not hold the separator; fixed widths are not looked in.
        values.retain(|v| {
            let text = match c.kind {
                Kind::Date | Kind::Number => &[][..],
                Kind::Quantity => v.get(8..).unwrap_or_default(),
                _ => v.as_slice(),
            };
            !text.contains(&COMPONENT_SEPARATOR)
        });
        values.sort_unstable();
        values.dedup();
        // An item that is not a node is not kept (no address names it).
        self.0
            .push((at.unwrap_or(usize::MAX), c.kind, &c.expr, values));
        self.0.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(ty: &str, body: &str) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        SearchKeys::default().keys(ty, body.as_bytes(), &mut out);
        out
    }

    fn has(k: &[Vec<u8>], want: &[u8]) -> bool {
        k.iter().any(|x| x == want)
    }

    #[test]
    fn every_kind_of_value_becomes_keys_from_the_official_expressions() {
        let k = keys(
            "Observation",
            r#"{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2024-03-05","valueQuantity":{"value":72.5,"unit":"kg","system":"http://unitsofmeasure.org","code":"kg"},"meta":{"tag":[{"system":"urn:t","code":"x"}],"profile":["http://example.org/p"]}}"#,
        );
        assert!(has(&k, &all_key("Observation")));
        assert!(has(
            &k,
            &key(b'k', "Observation", "code", b"8867-4\0http://loinc.org")
        ));
        assert!(has(&k, &key(b'k', "Observation", "status", b"final\0")));
        assert!(has(&k, &key(b'k', "Observation", "_tag", b"x\0urn:t")));
        assert!(has(
            &k,
            &key(b'u', "Observation", "_profile", b"http://example.org/p")
        ));
        // `patient` reads `subject`'s keys: no row of its own.
        assert!(has(
            &k,
            &key(b'r', "Observation", "subject", b"p1\0Patient")
        ));
        assert!(
            !k.iter()
                .any(|x| x.starts_with(&key(b'r', "Observation", "patient", b"")))
        );
        let mut q = sortable_f64(72.5).expect("a number").to_vec();
        q.extend_from_slice(b"kg\0http://unitsofmeasure.org");
        assert!(has(&k, &key(b'q', "Observation", "value-quantity", &q)));
        assert!(
            k.iter()
                .any(|x| x.starts_with(&key(b'd', "Observation", "date", b"")))
        );

        // A NUL in a code is not indexed.
        let k = keys(
            "Observation",
            r#"{"resourceType":"Observation","status":"fi\u0000nal"}"#,
        );
        assert_eq!(k, vec![all_key("Observation")]);

        // Strings: every part of a name, lowercased and without accents.
        let k = keys(
            "Patient",
            r#"{"resourceType":"Patient","name":[{"family":"Łopez-Müller","given":["Zoë","B"]}],"birthDate":"1970","deceasedBoolean":false}"#,
        );
        assert!(has(
            &k,
            &key(b's', "Patient", "family", "łopez-muller".as_bytes())
        ));
        assert!(has(&k, &key(b's', "Patient", "given", b"zoe")));
        assert!(has(&k, &key(b's', "Patient", "given", b"b")));
        // `name` leaves `family` and `given` to their own parameters.
        assert!(
            !k.iter()
                .any(|x| x.starts_with(&key(b's', "Patient", "name", b"")))
        );
        assert!(has(&k, &key(b'k', "Patient", "deceased", b"false\0")));
    }

    #[test]
    fn floats_sort_as_their_bytes() {
        let xs = [-1e300, -2.5, -0.0, 0.0, 1e-22, 0.5, 3.0, 1e300];
        for w in xs.windows(2) {
            let (a, b) = (
                sortable_f64(w[0]).expect("a"),
                sortable_f64(w[1]).expect("b"),
            );
            assert!(a <= b, "{} {}", w[0], w[1]);
            assert_eq!(
                unsortable_f64(&a),
                Some(if w[0] == 0.0 { 0.0 } else { w[0] })
            );
        }
        assert!(sortable_f64(f64::NAN).is_none());
    }

    #[test]
    fn references_are_read_from_urls_versions_and_canonicals() {
        assert_eq!(
            reference_target("http://x/fhir/Patient/1/_history/3"),
            Some(("Patient".into(), "1".into()))
        );
        assert_eq!(
            reference_target("http://x/StructureDefinition/sd|4.0.1"),
            Some(("StructureDefinition".into(), "sd".into()))
        );
        assert_eq!(reference_target("#contained"), None);
        let k = keys(
            "Encounter",
            r##"{"resourceType":"Encounter","subject":{"identifier":{"system":"urn:mrn","value":"42"}},"serviceProvider":{"reference":"#org"}}"##,
        );
        assert!(has(
            &k,
            &key(b'k', "Encounter", "subject:identifier", b"42\0urn:mrn")
        ));
        assert!(has(
            &k,
            &key(b'r', "Encounter", "service-provider", b"#org\0")
        ));
    }

    #[test]
    fn keys_from_the_fields_read_equal_keys_from_the_whole_body() {
        let mut rng = crate::synth::Rng::new(7);
        for _ in 0..20 {
            for (ty, _, body) in crate::synth::patient_record(&mut rng, 40) {
                let v: Value = serde_json::from_slice(&body).expect("generated JSON");
                let mut whole = Vec::new();
                keys_of_value(&ty, &v, &mut whole);
                let mut fast = Vec::new();
                SearchKeys::default().keys(&ty, &body, &mut fast);
                assert_eq!(fast, whole, "{ty}");
                assert!(whole.len() > 1, "{ty} has keys beyond its type");
            }
        }
        // Bodies that are not objects, or not JSON, as before.
        let mut k = Vec::new();
        SearchKeys::default().keys("Patient", b"[1]", &mut k);
        assert_eq!(k, vec![all_key("Patient")]);
        k.clear();
        SearchKeys::default().keys("Patient", b"{\"gender\":", &mut k);
        assert!(k.is_empty());
    }
}
