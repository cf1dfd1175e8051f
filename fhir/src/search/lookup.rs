//! Reading the search keys: the range bounds of a key or a key prefix,
//! the bounded scan every lookup goes through, and the reference lookup
//! that searches, chains and includes share. Below `query`, `chain` and
//! `include`; imports none of them.

use std::collections::BTreeSet;

use axum::http::StatusCode;

use super::keys::{key, pair_key, reference_target};
use crate::app::App;
use crate::http::outcome::FhirError;

/// Most index entries one search may scan.
pub const SCAN_ENTRIES_MAX: usize = 2_000_000;

/// The `lo..hi` bounds of exactly the key `k`.
pub(super) fn exact(k: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    let mut hi = k.clone();
    hi.push(0);
    (k, hi)
}

/// The `lo..hi` bounds of every key that starts with `p`. What follows a
/// prefix here is UTF-8 text or a sortable number, which a 0xff byte
/// bounds (8-byte numbers are bounded by their own range instead).
pub(super) fn prefixed(p: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    let mut hi = p.clone();
    hi.push(0xff);
    (p, hi)
}

/// Every key of one parameter: `tag\0Type\0code\0`, up to the next code.
pub(super) fn all_of(tag: u8, ty: &str, code: &str) -> (Vec<u8>, Vec<u8>) {
    let lo = key(tag, ty, code, b"");
    let mut hi = lo.clone();
    // The byte after the separator: every value, whatever its first byte.
    if let Some(last) = hi.last_mut() {
        *last = 1;
    }
    (lo, hi)
}

/// Ids whose reference keys under `code` (restricted to `target` types,
/// or to the type a `:[Type]` modifier names) match `value`: `Type/id`, an absolute URL, a bare id, or a literal.
pub(super) fn reference_ids(
    app: &App,
    ty: &str,
    code: &str,
    target: Option<&str>,
    type_modifier: Option<&str>,
    value: &str,
) -> Result<BTreeSet<String>, FhirError> {
    let value = match type_modifier {
        Some(t) if !value.contains('/') => format!("{t}/{value}"),
        _ => value.to_owned(),
    };
    let want_type = type_modifier.or(target);
    match reference_target(&value) {
        Some((rty, rid)) => {
            if want_type.is_some_and(|t| t != rty) {
                return Ok(BTreeSet::new());
            }
            let (lo, hi) = exact(pair_key(b'r', ty, code, &rid, &rty));
            scan(app, ty, &lo, &hi, |_| true)
        }
        None => match want_type {
            Some(t) => {
                let (lo, hi) = exact(pair_key(b'r', ty, code, &value, t));
                scan(app, ty, &lo, &hi, |_| true)
            }
            // A bare id (any type) or a literal reference.
            None => {
                let (lo, hi) = prefixed(pair_key(b'r', ty, code, &value, ""));
                scan(app, ty, &lo, &hi, |_| true)
            }
        },
    }
}

/// The ids of `ty` whose keys in `lo..hi` satisfy `keep`; 422 when the
/// range holds more than [`SCAN_ENTRIES_MAX`] entries.
pub(super) fn scan(
    app: &App,
    ty: &str,
    lo: &[u8],
    hi: &[u8],
    keep: impl Fn(&[u8]) -> bool,
) -> Result<BTreeSet<String>, FhirError> {
    Ok(scan_keys(app, ty, lo, hi)?
        .into_iter()
        .filter(|(k, _)| keep(k))
        .map(|(_, id)| id)
        .collect())
}

/// The `(key, id)` rows of `ty` in `lo..hi`, in key order; 422 when the
/// range holds more than [`SCAN_ENTRIES_MAX`] entries.
pub(super) fn scan_keys(
    app: &App,
    ty: &str,
    lo: &[u8],
    hi: &[u8],
) -> Result<Vec<(Vec<u8>, String)>, FhirError> {
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
    Ok(rows.into_iter().map(|(k, _, id)| (k, id)).collect())
}

/// The live resources of `ty` whose `url` is `url` (a canonical
/// resource: ValueSet, CodeSystem, StructureDefinition…), as (id, JSON).
pub(super) fn live_by_url(
    app: &App,
    ty: &str,
    url: &str,
) -> Result<Vec<(String, serde_json::Value)>, FhirError> {
    let store = app.store()?;
    let (lo, hi) = exact(super::keys::key(b'u', ty, "url", url.as_bytes()));
    let mut out = Vec::new();
    for id in scan(app, ty, &lo, &hi, |_| true)? {
        if let vigil_engine::Current::Live(r) = store.get(ty, &id)? {
            let body = serde_json::from_slice(&r.body)
                .map_err(|_| FhirError::internal(format!("{ty}/{id} is not stored as JSON")))?;
            out.push((id, body));
        }
    }
    Ok(out)
}
