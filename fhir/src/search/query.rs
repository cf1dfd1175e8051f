//! A search request read from its parameters, and answered from the
//! search keys: which ids match (by range scans of the keys), in which
//! order, from which `_page` position.

use std::collections::BTreeSet;

use axum::http::{StatusCode, Uri};

use super::keys::{all_key, key, normalise, pair_key, reference_target, unsortable};
use super::params::{Kind, Param, find, params_of};
use crate::app::App;
use crate::http::outcome::FhirError;
use crate::instant::parse_interval;

/// Most index entries one search may scan.
pub const SCAN_ENTRIES_MAX: usize = 2_000_000;

/// A comparison prefix of a date or `_lastUpdated` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Prefix {
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
        .map(|path| super::params::holder(&params, param, path))
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
pub(super) struct Request {
    pub(super) criteria: Vec<(Param, Vec<String>)>,
    pub(super) ids: Option<BTreeSet<String>>,
    pub(super) last_updated: Vec<(Prefix, (i64, i64))>,
    pub(super) count: usize,
    pub(super) sort: Sort,
    pub(super) page: Option<String>,
    pub(super) warnings: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sort {
    #[default]
    Id,
    LastUpdatedAsc,
    LastUpdatedDesc,
}

pub(super) fn parse_request(
    ty: &str,
    pairs: &[(String, String)],
    strict: bool,
) -> Result<Request, FhirError> {
    let mut r = Request {
        count: crate::history::PAGE_DEFAULT,
        ..Request::default()
    };
    for (name, value) in pairs {
        match name.as_str() {
            // Response formatting, applied by the HTTP layer.
            "_format" | "_pretty" => {}
            // R4 allows 0: the total alone (fhirpy's `.count()` asks so).
            "_count" => {
                r.count = match value.parse::<usize>() {
                    Ok(n) => n.min(crate::history::PAGE_MAX),
                    Err(_) => {
                        return Err(FhirError::invalid(format!(
                            "_count={value} is not a whole number"
                        )));
                    }
                }
            }
            "_summary" if value == "count" => r.count = 0,
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
pub(super) struct Hit {
    pub(super) id: String,
    pub(super) ts: u64,
}

pub(super) fn matching(app: &App, ty: &str, r: &Request) -> Result<Vec<Hit>, FhirError> {
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

pub(crate) fn pairs_of(query: &str) -> Result<Vec<(String, String)>, FhirError> {
    let uri: Uri = format!("/?{query}")
        .parse()
        .map_err(|_| FhirError::invalid("the search parameters are not a valid query string"))?;
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|q| q.0)
        .map_err(|e| FhirError::invalid(format!("cannot read the search parameters: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instant::parse_interval;

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
