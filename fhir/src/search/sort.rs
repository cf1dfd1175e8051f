//! `_sort`: the keys a request orders its matches by, each match's
//! values for them, and the order itself.
//!
//! A match's value for a parameter comes from the same search keys the
//! criteria use (the key's bytes after `tag\0Type\0code\0` already sort in
//! the value's order: normalised text, sortable numbers and dates, codes),
//! so sorting needs no second index. With several values, ascending order
//! uses the lowest and descending the highest (R4 search.html#sort);
//! matches without a value come last in both directions. A string
//! parameter that other parameters cover (`name`: `family`, `given`)
//! sorts by the first covering parameter with a value (`family`), then
//! by its own keys.
//!
//! The values are read one of two ways, whichever reads less: for a few
//! matches out of many resources, from the matches' bodies (their keys
//! extracted again, at most [`SORT_READS_MAX`]); otherwise by one scan of
//! the parameter's keys, bounded like every scan.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use vigil_engine::Current;

use super::keys::{key, param_keys};
use super::lookup::{all_of, scan_keys};
use super::registry::{Kind, SearchParam, Source, TypeParams, registry};
use crate::app::App;
use crate::http::outcome::FhirError;

/// Most keys one `_sort` may list.
pub const SORT_KEYS_MAX: usize = 8;

/// Most matches whose sort values are read from their bodies; above it,
/// the parameter's keys are scanned.
pub const SORT_READS_MAX: usize = 1_000;

/// What one sort key orders by.
#[derive(Debug, Clone, Copy)]
pub(super) enum SortBy {
    /// The logical id.
    Id,
    /// `meta.lastUpdated`.
    LastUpdated,
    /// A search parameter's values.
    Param(&'static SearchParam),
    /// A parameter of other types, which this one lacks: no match of this
    /// type has a value (over several types, they sort last).
    Absent(&'static str),
}

/// One key of `_sort`: what, and which way.
#[derive(Debug, Clone, Copy)]
pub(super) struct SortKey {
    pub(super) by: SortBy,
    pub(super) desc: bool,
}

/// One match: its type, id, and its value for each sort key of the
/// request (`None`: it has none).
#[derive(Debug, Clone)]
pub(super) struct Hit {
    pub(super) ty: String,
    pub(super) id: String,
    pub(super) keys: Vec<Option<Vec<u8>>>,
}

/// Reads one `_sort` value (`a,-b`) against `ty`'s parameters; the error
/// says why a key cannot sort.
pub(super) fn parse_sort(
    tp: &'static TypeParams,
    custom: &super::custom::Active,
    ty: &str,
    value: &str,
) -> Result<Vec<SortKey>, String> {
    value
        .split(',')
        .map(|k| {
            let (desc, name) = match k.strip_prefix('-') {
                Some(n) => (true, n),
                None => (false, k),
            };
            let by = match name {
                "" => return Err("_sort has an empty key".to_owned()),
                "_id" => SortBy::Id,
                "_lastUpdated" => SortBy::LastUpdated,
                "_score" => {
                    return Err(
                        "_sort=_score: this server does not rank matches by relevance".to_owned(),
                    );
                }
                code => {
                    let Some(p) = tp.find(code).or_else(|| custom.find(ty, code)) else {
                        return match elsewhere(code) {
                            Some(known) => Ok(SortKey {
                                by: SortBy::Absent(known),
                                desc,
                            }),
                            None => {
                                Err(format!("_sort: unknown search parameter {code:?} for {ty}"))
                            }
                        };
                    };
                    if p.source == Source::NotIndexed
                        || p.kind.tag().is_none()
                        || p.kind == Kind::Composite
                    {
                        return Err(format!(
                            "_sort: {code} of {ty} ({} type) has no values to sort by",
                            p.kind.name()
                        ));
                    }
                    SortBy::Param(p)
                }
            };
            Ok(SortKey { by, desc })
        })
        .collect()
}

/// The code, when some resource type has a sortable parameter of that
/// name.
fn elsewhere(code: &str) -> Option<&'static str> {
    crate::types::R4_RESOURCE_TYPES.iter().find_map(|t| {
        registry()
            .of(t)
            .find(code)
            .filter(|p| {
                p.source != Source::NotIndexed
                    && p.kind.tag().is_some()
                    && p.kind != Kind::Composite
            })
            .map(|p| p.code.as_str())
    })
}

/// How two matches compare under `sort`: key by key, a value before none,
/// then by type and id (so the order is total and a page token names one
/// position).
pub(super) fn order(sort: &[SortKey], a: &Hit, b: &Hit) -> Ordering {
    for (i, k) in sort.iter().enumerate() {
        let x = a.keys.get(i).and_then(Option::as_ref);
        let y = b.keys.get(i).and_then(Option::as_ref);
        let o = match (x, y) {
            (Some(x), Some(y)) if k.desc => y.cmp(x),
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    (&a.ty, &a.id).cmp(&(&b.ty, &b.id))
}

/// Puts hits in the order of `sort`.
pub(super) fn sort_hits(hits: &mut [Hit], sort: &[SortKey]) {
    hits.sort_by(|a, b| order(sort, a, b));
}

/// Where one parameter's sort values are kept: the keys under a prefix,
/// those ending in `\0target` when set.
struct Home {
    /// The parameter whose keys these are.
    param: Option<&'static SearchParam>,
    prefix: Vec<u8>,
    bounds: (Vec<u8>, Vec<u8>),
    target: Option<Vec<u8>>,
}

impl Home {
    fn new(tag: u8, ty: &str, code: &str, target: Option<&str>) -> Self {
        Self {
            param: registry().of(ty).find(code),
            prefix: key(tag, ty, code, b""),
            bounds: all_of(tag, ty, code),
            target: target.map(|t| [b"\0", t.as_bytes()].concat()),
        }
    }

    /// The value part of `k` when it is one of this home's keys.
    fn value_of<'k>(&self, k: &'k [u8]) -> Option<&'k [u8]> {
        let v = k.strip_prefix(self.prefix.as_slice())?;
        match &self.target {
            Some(t) if !v.ends_with(t) => None,
            _ => Some(v),
        }
    }
}

/// The homes of `p`'s sort values on `ty`, first the one that counts.
fn homes(ty: &str, p: &'static SearchParam) -> Vec<Home> {
    let Some(tag) = p.kind.tag() else {
        return Vec::new();
    };
    // A union's values are its members' (the first member first).
    if let Source::Union(members) = &p.source {
        return members
            .iter()
            .map(|m| Home::new(tag, ty, m, None))
            .collect();
    }
    let (code, target) = match &p.source {
        Source::Alias { of, target } => (of.as_str(), target.as_deref()),
        _ => (p.code.as_str(), None),
    };
    let mut out: Vec<Home> = registry()
        .of(ty)
        .find(code)
        .map(|owner| {
            owner
                .covers
                .iter()
                .map(|(_, q)| Home::new(tag, ty, q, None))
                .collect()
        })
        .unwrap_or_default();
    let mut own = Home::new(tag, ty, code, target);
    // A custom parameter is not in the registry: it is its own home.
    own.param = own.param.or(Some(p).filter(|p| p.source == Source::Own));
    out.push(own);
    out
}

/// Each of `ids`' value for sorting `ty` by `p` (lowest ascending,
/// highest descending); ids without one are absent from the map.
pub(super) fn sort_values(
    app: &App,
    ty: &str,
    p: &'static SearchParam,
    desc: bool,
    ids: &[&str],
) -> Result<HashMap<String, Vec<u8>>, FhirError> {
    let homes = homes(ty, p);
    // (rank of the home it came from, value)
    let mut best: HashMap<String, (usize, Vec<u8>)> = HashMap::new();
    let mut offer = |rank: usize, id: &str, v: &[u8]| match best.get_mut(id) {
        None => {
            best.insert(id.to_owned(), (rank, v.to_vec()));
        }
        Some((r, cur)) => {
            let better = rank < *r
                || (rank == *r
                    && if desc {
                        v > cur.as_slice()
                    } else {
                        v < cur.as_slice()
                    });
            if better {
                *r = rank;
                *cur = v.to_vec();
            }
        }
    };
    let store = app.store()?;
    let few = ids.len() <= SORT_READS_MAX
        && (ids.len() as u64).saturating_mul(32) < store.live_count(ty)?;
    if few {
        let mut keys = Vec::new();
        for id in ids {
            let Current::Live(v) = store.get(ty, id)? else {
                continue;
            };
            let Ok(body) = serde_json::from_slice::<serde_json::Value>(&v.body) else {
                continue;
            };
            // Only the keys of the parameters that hold the values.
            for (rank, home) in homes.iter().enumerate() {
                let Some(param) = home.param else { continue };
                keys.clear();
                param_keys(ty, param, &body, &mut keys);
                for k in &keys {
                    if let Some(v) = home.value_of(k) {
                        offer(rank, id, v);
                    }
                }
            }
        }
    } else {
        let wanted: HashSet<&str> = ids.iter().copied().collect();
        for (rank, home) in homes.iter().enumerate() {
            for (k, id) in scan_keys(app, ty, &home.bounds.0, &home.bounds.1)? {
                if wanted.contains(id.as_str())
                    && let Some(v) = home.value_of(&k)
                {
                    offer(rank, &id, v);
                }
            }
        }
    }
    Ok(best.into_iter().map(|(id, (_, v))| (id, v)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str, keys: Vec<Option<&[u8]>>) -> Hit {
        Hit {
            ty: "Patient".into(),
            id: id.into(),
            keys: keys.into_iter().map(|k| k.map(<[u8]>::to_vec)).collect(),
        }
    }

    #[test]
    fn values_sort_both_ways_and_matches_without_one_come_last() {
        let tp = registry().of("Patient");
        let asc = parse_sort(tp, &Default::default(), "Patient", "birthdate").expect("sortable");
        let desc = parse_sort(tp, &Default::default(), "Patient", "-birthdate").expect("sortable");
        let mut hits = vec![
            hit("a", vec![None]),
            hit("b", vec![Some(b"2")]),
            hit("c", vec![Some(b"1")]),
        ];
        sort_hits(&mut hits, &asc);
        let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["c", "b", "a"]);
        sort_hits(&mut hits, &desc);
        let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["b", "c", "a"]);
    }

    #[test]
    fn later_keys_break_ties_and_ids_break_the_rest() {
        let tp = registry().of("Patient");
        let sort =
            parse_sort(tp, &Default::default(), "Patient", "family,-birthdate").expect("sortable");
        let mut hits = vec![
            hit("z", vec![Some(b"x"), Some(b"1")]),
            hit("y", vec![Some(b"x"), Some(b"2")]),
            hit("b", vec![Some(b"a"), None]),
            hit("a", vec![Some(b"a"), None]),
        ];
        sort_hits(&mut hits, &sort);
        let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "y", "z"]);
    }

    #[test]
    fn keys_that_cannot_sort_are_refused_with_the_reason() {
        let tp = registry().of("Observation");
        let err =
            |v: &str| parse_sort(tp, &Default::default(), "Observation", v).expect_err("refused");
        assert!(err("nope").contains("unknown"));
        assert!(err("_score").contains("relevance"));
        assert!(err("code-value-quantity").contains("composite"));
        assert!(err("date,,code").contains("empty"));
        assert_eq!(
            parse_sort(
                tp,
                &Default::default(),
                "Observation",
                "-date,_id,-_lastUpdated"
            )
            .expect("sortable")
            .len(),
            3
        );
    }
}
