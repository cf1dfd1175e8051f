//! The search keys: the byte strings this crate hands the engine for
//! every live resource, and the extractor that makes them. This is a
//! persisted schema: change it only with [`EXTRACTOR_NAME`].
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

use serde_json::Value;
use vigil_engine::KeyExtractor;

use super::fields::{Fields, parse_fields};
use super::params::{Kind, params_of};
use crate::instant::parse_interval;

/// The name the engine records for this extractor; change it whenever the
/// keys change, and stores rebuild their index on open.
pub const EXTRACTOR_NAME: &str = "vigil-fhir-search-v3";
/// The FHIR search-key extractor.
#[derive(Debug, Default, Clone, Copy)]
pub struct SearchKeys;

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
pub(super) fn normalise(s: &str) -> String {
    s.to_lowercase()
}

/// `Type/id` of a reference (also from an absolute URL), if it has one.
pub(super) fn reference_target(r: &str) -> Option<(String, String)> {
    let mut parts = r.trim_end_matches('/').rsplit('/');
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
            if super::params::holder(&params, param, path).is_some() {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

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
}
