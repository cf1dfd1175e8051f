//! A search request read from its parameters, and answered from the
//! search keys: which ids match (by range scans of the keys), in which
//! order, from which `_page` position.

use std::collections::BTreeSet;

use axum::http::{StatusCode, Uri};
use serde_json::Value;

use super::keys::{
    STRING_KEY_BYTES_MAX, all_key, cut, identifier_param, key, normalise, pair_key, text_param,
    unsortable, unsortable_f64,
};
use super::lookup::{all_of, exact, prefixed, reference_ids, scan};
use super::prefix::{Prefix, date_matches, date_value, number_matches, number_value};
use super::registry::{Kind, SearchParam, Source, TypeParams, registry};
use super::sort::{Hit, SORT_KEYS_MAX, SortBy, SortKey, parse_sort, sort_hits, sort_values};
use crate::app::App;
use crate::fhirpath::Item;
use crate::http::outcome::FhirError;
use crate::subset::Subset;

/// Most resources one search may read to check a value the keys cannot
/// settle alone (`:exact`, `:of-type`, strings longer than the key).
pub const VERIFY_RESOURCES_MAX: usize = 10_000;

/// A search modifier (`name:modifier`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Modifier {
    Missing,
    Exact,
    Contains,
    Not,
    OfType,
    /// A token's text (`CodeableConcept.text`, `Coding.display`),
    /// matched as a string.
    Text,
    /// A code of a ValueSet stored on this server.
    In,
    /// No code of such a ValueSet.
    NotIn,
    Identifier,
    Below,
    Above,
    /// A reference's target type: `subject:Patient`.
    Type(String),
    /// Any reference to a resource of this type (no URL names it: it
    /// puts a resource in any compartment of the type, for
    /// `Patient/$everything`).
    RefersTo(String),
}

fn modifier_of(kind: Kind, m: &str) -> Option<Modifier> {
    Some(match (kind, m) {
        (_, "missing") => Modifier::Missing,
        (Kind::String, "exact") => Modifier::Exact,
        (Kind::String, "contains") => Modifier::Contains,
        (Kind::Token, "not") => Modifier::Not,
        (Kind::Token, "of-type") => Modifier::OfType,
        (Kind::Token, "text") => Modifier::Text,
        (Kind::Token, "in") => Modifier::In,
        (Kind::Token, "not-in") => Modifier::NotIn,
        (Kind::Reference, "identifier") => Modifier::Identifier,
        (Kind::Uri | Kind::Token, "below") => Modifier::Below,
        (Kind::Uri | Kind::Token, "above") => Modifier::Above,
        (Kind::Reference, t) if crate::types::is_resource_type(t) => Modifier::Type(t.to_owned()),
        _ => return None,
    })
}

/// One parameter of a request: the definition, its modifier, and the
/// values any of which may match (`a,b`).
#[derive(Debug)]
pub(super) struct Criterion {
    pub(super) param: &'static SearchParam,
    pub(super) modifier: Option<Modifier>,
    pub(super) values: Vec<String>,
    /// A chain or `_has` through `param`.
    pub(super) hop: Option<super::chain::Hop>,
}

/// Where a parameter's keys are: its own code, or the one it aliases, and
/// the second part of the keys it is restricted to (a reference's target
/// type, a token's system).
fn keys_home(p: &'static SearchParam) -> (&'static str, Option<&'static str>) {
    match &p.source {
        Source::Alias { of, target } => (of.as_str(), target.as_deref()),
        _ => (p.code.as_str(), None),
    }
}

/// The parameters whose keys also hold a string parameter's values: those
/// covering members of its values (`family` and `given` for `name`).
fn covered_homes(ty: &str, p: &'static SearchParam) -> Vec<&'static str> {
    let (code, _) = keys_home(p);
    registry()
        .of(ty)
        .find(code)
        .map(|owner| owner.covers.iter().map(|(_, q)| q.as_str()).collect())
        .unwrap_or_default()
}

/// The ids of `ty` whose parameter matches one of the criterion's values.
fn ids_for(app: &App, ty: &str, c: &Criterion) -> Result<BTreeSet<String>, FhirError> {
    let p = c.param;
    if let Some(hop) = &c.hop {
        // The inner search of a hop, run here so that `chain` needs
        // nothing of this module: `Ok(Err(_))` when its criteria do not
        // apply to the type.
        let inner = |t: &str, name: &str, value: &str| {
            let r = match parse_request(app, t, &[(name.to_owned(), value.to_owned())], true) {
                Ok(r) => r,
                Err(refused) => return Ok(Err(refused)),
            };
            Ok(Ok(matching(app, t, &r)?
                .into_iter()
                .map(|h| h.id)
                .collect()))
        };
        return super::chain::ids_through(app, ty, p, hop, &c.values, &inner);
    }
    if let Source::Union(members) = &p.source {
        return union_ids(app, ty, c, members);
    }
    if c.modifier == Some(Modifier::Missing) {
        let present = present_ids(app, ty, p)?;
        return match c.values.first().map(String::as_str) {
            Some("true") => Ok(all_ids(app, ty)?.difference(&present).cloned().collect()),
            Some("false") => Ok(present),
            _ => Err(FhirError::invalid(format!(
                "{}:missing takes true or false",
                p.code
            ))),
        };
    }
    if let Some(Modifier::RefersTo(owner)) = &c.modifier {
        let (code, target) = keys_home(p);
        if p.kind != Kind::Reference || target.is_some_and(|t| t != owner) {
            return Ok(BTreeSet::new());
        }
        let (lo, hi) = all_of(b'r', ty, code);
        let want = [b"\0", owner.as_bytes()].concat();
        return scan(app, ty, &lo, &hi, |k| k.ends_with(&want));
    }
    if let Some(positive) = negated(c.modifier.as_ref()) {
        let mut hit = BTreeSet::new();
        for v in &c.values {
            hit.extend(ids_for_value(app, ty, p, positive.as_ref(), v)?);
        }
        return Ok(all_ids(app, ty)?.difference(&hit).cloned().collect());
    }
    let mut any = BTreeSet::new();
    for v in &c.values {
        any.extend(ids_for_value(app, ty, p, c.modifier.as_ref(), v)?);
    }
    Ok(any)
}

/// For a modifier that matches what its positive form does not (`:not`,
/// `:not-in`), that positive form (none, `:in`).
fn negated(m: Option<&Modifier>) -> Option<Option<Modifier>> {
    match m {
        Some(Modifier::Not) => Some(None),
        Some(Modifier::NotIn) => Some(Some(Modifier::In)),
        _ => None,
    }
}

/// Narrows the ids matched so far (`None`: no criterion yet) to `with`.
fn narrow(set: &mut Option<BTreeSet<String>>, with: BTreeSet<String>) {
    *set = Some(match set.take() {
        Some(s) => s.intersection(&with).cloned().collect(),
        None => with,
    });
}

/// The ids matching `c` on a parameter whose keys are its `members'`:
/// those matching on any member, or (for `:not`, `:not-in`,
/// `:missing=true`) those matching on none.
fn union_ids(
    app: &App,
    ty: &str,
    c: &Criterion,
    members: &[String],
) -> Result<BTreeSet<String>, FhirError> {
    let (modifier, values, negate) = match (negated(c.modifier.as_ref()), &c.modifier) {
        (Some(positive), _) => (positive, c.values.clone(), true),
        (None, Some(Modifier::Missing)) if c.values.first().is_some_and(|v| v == "true") => {
            (Some(Modifier::Missing), vec!["false".to_owned()], true)
        }
        (None, other) => (other.clone(), c.values.clone(), false),
    };
    let tp = registry().of(ty);
    let mut any = BTreeSet::new();
    for m in members {
        let param = tp.find(m).ok_or_else(|| {
            FhirError::internal(format!("{} of {ty} names no parameter {m}", c.param.code))
        })?;
        let one = Criterion {
            param,
            modifier: modifier.clone(),
            values: values.clone(),
            hop: None,
        };
        any.extend(ids_for(app, ty, &one)?);
    }
    match negate {
        true => Ok(all_ids(app, ty)?.difference(&any).cloned().collect()),
        false => Ok(any),
    }
}

/// Every live id of `ty`.
fn all_ids(app: &App, ty: &str) -> Result<BTreeSet<String>, FhirError> {
    let (lo, hi) = exact(all_key(ty));
    scan(app, ty, &lo, &hi, |_| true)
}

/// The ids with at least one value of `p`.
fn present_ids(
    app: &App,
    ty: &str,
    p: &'static SearchParam,
) -> Result<BTreeSet<String>, FhirError> {
    let tag = p.kind.tag().ok_or_else(|| not_indexed(ty, p))?;
    let (code, target) = keys_home(p);
    let (lo, hi) = all_of(tag, ty, code);
    let mut ids = scan(app, ty, &lo, &hi, |k| {
        target.is_none_or(|t| k.ends_with(&[b"\0", t.as_bytes()].concat()))
    })?;
    for q in covered_homes(ty, p) {
        let (lo, hi) = all_of(tag, ty, q);
        ids.extend(scan(app, ty, &lo, &hi, |_| true)?);
    }
    // A logical reference (by identifier only) is a value too.
    if p.kind == Kind::Reference && target.is_none() {
        let (lo, hi) = all_of(b'k', ty, &identifier_param(code));
        ids.extend(scan(app, ty, &lo, &hi, |_| true)?);
    }
    Ok(ids)
}

fn not_indexed(ty: &str, p: &SearchParam) -> FhirError {
    FhirError::invalid(format!(
        "the search parameter {} of {ty} ({} type) is not supported yet",
        p.code,
        p.kind.name()
    ))
}

/// The ids of `ty` whose `p` matches `value` under `modifier`.
fn ids_for_value(
    app: &App,
    ty: &str,
    p: &'static SearchParam,
    modifier: Option<&Modifier>,
    value: &str,
) -> Result<BTreeSet<String>, FhirError> {
    let (code, target) = keys_home(p);
    match p.kind {
        Kind::Token => match modifier {
            Some(Modifier::OfType) => {
                let mut parts = value.splitn(3, '|');
                let (Some(system), Some(ty_code), Some(v)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(FhirError::invalid(format!(
                        "{}:of-type takes system|code|value, not {value:?}",
                        p.code
                    )));
                };
                let candidates = token_ids(app, ty, code, target, v)?;
                verify(app, ty, p, candidates, |item| {
                    let Some(Value::Object(o)) = item.node() else {
                        return false;
                    };
                    o.get("value").and_then(Value::as_str) == Some(v)
                        && o.get("type")
                            .and_then(|t| t.get("coding"))
                            .and_then(Value::as_array)
                            .is_some_and(|cs| {
                                cs.iter().any(|c| {
                                    c.get("code").and_then(Value::as_str) == Some(ty_code)
                                        && (system.is_empty()
                                            || c.get("system").and_then(Value::as_str)
                                                == Some(system))
                                })
                            })
                })
            }
            // The codes of a stored ValueSet, or under or above a code in
            // a stored CodeSystem: any of them.
            Some(m @ (Modifier::In | Modifier::Below | Modifier::Above)) => {
                use super::codesystem::{Direction, codes};
                let members = match m {
                    Modifier::In => super::valueset::members(app, value)?,
                    Modifier::Below => codes(app, value, Direction::Below)?,
                    _ => codes(app, value, Direction::Above)?,
                };
                let mut ids = BTreeSet::new();
                for (system, code_of) in members {
                    let token = match system.is_empty() {
                        true => code_of,
                        false => format!("{system}|{code_of}"),
                    };
                    ids.extend(token_ids(app, ty, code, target, &token)?);
                }
                Ok(ids)
            }
            Some(Modifier::Text) => {
                let norm = normalise(value);
                let head = cut(&norm, STRING_KEY_BYTES_MAX);
                let (lo, hi) = prefixed(key(b's', ty, &text_param(code), head.as_bytes()));
                scan(app, ty, &lo, &hi, |_| true)
            }
            _ => token_ids(app, ty, code, target, value),
        },
        Kind::String => {
            let mut ids = string_ids(app, ty, p, code, modifier, value)?;
            for q in covered_homes(ty, p) {
                ids.extend(string_ids(app, ty, p, q, modifier, value)?);
            }
            Ok(ids)
        }
        Kind::Reference => {
            if modifier == Some(&Modifier::Identifier) {
                return token_ids(app, ty, &identifier_param(code), None, value);
            }
            let type_modifier = match modifier {
                Some(Modifier::Type(t)) => Some(t.as_str()),
                _ => None,
            };
            reference_ids(app, ty, code, target, type_modifier, value)
        }
        Kind::Date => {
            let (prefix, s) = date_value(value)?;
            let now = crate::instant::now_us();
            let (lo, hi) = all_of(b'd', ty, code);
            let skip = lo.len();
            scan(app, ty, &lo, &hi, |k| {
                let t = (
                    unsortable(&k[skip..]).unwrap_or(i64::MIN),
                    unsortable(&k[skip + 8..]).unwrap_or(i64::MAX),
                );
                date_matches(prefix, t, s, now)
            })
        }
        Kind::Number => {
            let n = number_value(value)?;
            let (lo, hi) = all_of(b'n', ty, code);
            let skip = lo.len();
            scan(app, ty, &lo, &hi, |k| {
                unsortable_f64(&k[skip..]).is_some_and(|t| number_matches(n, t))
            })
        }
        Kind::Quantity => {
            let mut parts = value.splitn(3, '|');
            let n = number_value(parts.next().unwrap_or(""))?;
            let system = parts.next().unwrap_or("");
            let unit = parts.next().unwrap_or("");
            // A UCUM unit with a canonical form: compared in base units.
            if system == super::ucum::UCUM_SYSTEM
                && let Some(s) = super::ucum::scale(unit)
            {
                let n = n.converted(|v| s.canonical(v), |h| s.width(h));
                let (lo, hi) = all_of(b'q', ty, &super::ucum::param(code));
                let skip = lo.len();
                return scan(app, ty, &lo, &hi, |k| {
                    let rest = k.get(skip + 8..).unwrap_or(b"");
                    unsortable_f64(&k[skip..]).is_some_and(|t| number_matches(n, t))
                        && rest.split(|b| *b == 0).next() == Some(s.unit.as_bytes())
                });
            }
            let (lo, hi) = all_of(b'q', ty, code);
            let skip = lo.len();
            scan(app, ty, &lo, &hi, |k| {
                let Some(t) = unsortable_f64(&k[skip..]) else {
                    return false;
                };
                let rest = k.get(skip + 8..).unwrap_or(b"");
                let mut it = rest.splitn(2, |b| *b == 0);
                let (kcode, ksystem) = (it.next().unwrap_or(b""), it.next().unwrap_or(b""));
                number_matches(n, t)
                    && (unit.is_empty() || kcode == unit.as_bytes())
                    && (system.is_empty() || ksystem == system.as_bytes())
            })
        }
        Kind::Uri => match modifier {
            Some(Modifier::Below) => {
                let (lo, hi) = prefixed(key(b'u', ty, code, value.as_bytes()));
                scan(app, ty, &lo, &hi, |_| true)
            }
            Some(Modifier::Above) => {
                // Every URI the value starts with, at a path boundary.
                let mut ids = BTreeSet::new();
                let cuts = value
                    .char_indices()
                    .filter(|(_, c)| *c == '/')
                    .map(|(i, _)| i)
                    .chain([value.len()]);
                for end in cuts {
                    let (lo, hi) = exact(key(b'u', ty, code, &value.as_bytes()[..end]));
                    ids.extend(scan(app, ty, &lo, &hi, |_| true)?);
                }
                Ok(ids)
            }
            _ => {
                let (lo, hi) = exact(key(b'u', ty, code, value.as_bytes()));
                scan(app, ty, &lo, &hi, |_| true)
            }
        },
        Kind::Composite => super::composite::ids(app, ty, p, code, value),
        Kind::Special => Err(not_indexed(ty, p)),
    }
}

/// Ids whose string keys under `code` match `value` (checked on the
/// resources for `:exact` and for values longer than a key).
fn string_ids(
    app: &App,
    ty: &str,
    p: &SearchParam,
    code: &str,
    modifier: Option<&Modifier>,
    value: &str,
) -> Result<BTreeSet<String>, FhirError> {
    let norm = normalise(value);
    let head = cut(&norm, STRING_KEY_BYTES_MAX);
    let long = norm.len() > head.len();
    match modifier {
        Some(Modifier::Contains) => {
            let (lo, hi) = all_of(b's', ty, code);
            let skip = lo.len();
            let ids = scan(app, ty, &lo, &hi, |k| {
                std::str::from_utf8(&k[skip..]).is_ok_and(|s| long || s.contains(head))
            })?;
            match long {
                false => Ok(ids),
                true => verify_strings(app, ty, p, ids, |s| normalise(s).contains(&norm)),
            }
        }
        Some(Modifier::Exact) => {
            let (lo, hi) = prefixed(key(b's', ty, code, head.as_bytes()));
            let ids = scan(app, ty, &lo, &hi, |_| true)?;
            verify_strings(app, ty, p, ids, |s| s == value)
        }
        _ => {
            let (lo, hi) = prefixed(key(b's', ty, code, head.as_bytes()));
            let ids = scan(app, ty, &lo, &hi, |_| true)?;
            match long {
                false => Ok(ids),
                true => verify_strings(app, ty, p, ids, |s| normalise(s).starts_with(&norm)),
            }
        }
    }
}

/// Ids whose token keys of `code` match `value`: `code`, `system|code`,
/// `|code` (no system) or `system|` (any code of the system); only keys
/// of the system `only` count when set (`phone` is `telecom`'s keys of
/// system phone).
fn token_ids(
    app: &App,
    ty: &str,
    code: &str,
    only: Option<&str>,
    value: &str,
) -> Result<BTreeSet<String>, FhirError> {
    let value = match (only, value.split_once('|')) {
        (None, _) => value.to_owned(),
        (Some(sys), None) => format!("{sys}|{value}"),
        (Some(sys), Some((s, _))) if s == sys => value.to_owned(),
        (Some(_), Some(_)) => return Ok(BTreeSet::new()),
    };
    let value = value.as_str();
    let (lo, hi) = match value.split_once('|') {
        Some((system, "")) => {
            let (lo, hi) = all_of(b'k', ty, code);
            let want = [b"\0", system.as_bytes()].concat();
            let skip = lo.len();
            return scan(app, ty, &lo, &hi, |k| {
                k[skip..]
                    .iter()
                    .position(|b| *b == 0)
                    .is_some_and(|at| k[skip + at..] == want[..])
            });
        }
        Some((system, c)) => exact(pair_key(b'k', ty, code, c, system)),
        None => prefixed(pair_key(b'k', ty, code, value, "")),
    };
    scan(app, ty, &lo, &hi, |_| true)
}

/// The candidates whose current version has an item of `p` for which
/// `keep` holds (read from the resources: bounded by
/// [`VERIFY_RESOURCES_MAX`]).
fn verify(
    app: &App,
    ty: &str,
    p: &SearchParam,
    candidates: BTreeSet<String>,
    keep: impl Fn(&Item<'_>) -> bool,
) -> Result<BTreeSet<String>, FhirError> {
    if candidates.len() > VERIFY_RESOURCES_MAX {
        return Err(FhirError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too-costly",
            format!(
                "{} would need {} resources read (at most {VERIFY_RESOURCES_MAX}); narrow the search",
                p.code,
                candidates.len()
            ),
        ));
    }
    let Some(expr) = &p.expr else {
        return Ok(BTreeSet::new());
    };
    let store = app.store()?;
    let mut out = BTreeSet::new();
    for id in candidates {
        if let vigil_engine::Current::Live(v) = store.get(ty, &id)?
            && let Ok(body) = serde_json::from_slice::<Value>(&v.body)
            && expr
                .evaluate(&body)
                .is_ok_and(|items| items.iter().any(&keep))
        {
            out.insert(id);
        }
    }
    Ok(out)
}

/// [`verify`] on the text values of a string parameter.
fn verify_strings(
    app: &App,
    ty: &str,
    p: &SearchParam,
    candidates: BTreeSet<String>,
    keep: impl Fn(&str) -> bool,
) -> Result<BTreeSet<String>, FhirError> {
    verify(app, ty, p, candidates, |item| {
        let mut texts = Vec::new();
        super::keys::strings(item, &[], &mut texts);
        texts.iter().any(|s| keep(s))
    })
}

/// A parsed search request.
#[derive(Debug, Default)]
pub(super) struct Request {
    pub(super) criteria: Vec<Criterion>,
    /// A compartment's links: a match must satisfy one of them (or be
    /// one of `also`).
    pub(super) within: Option<Vec<Criterion>>,
    /// Ids that are in the compartment without a link: its owner.
    pub(super) also: BTreeSet<String>,
    /// `_include` and `_revinclude`.
    pub(super) includes: Vec<super::include::Include>,
    pub(super) ids: Option<BTreeSet<String>>,
    pub(super) last_updated: Vec<(Prefix, (i64, i64))>,
    pub(super) count: usize,
    /// `_sort`'s keys; none: by type and id.
    pub(super) sort: Vec<SortKey>,
    pub(super) page: Option<String>,
    /// `_total=none`: the Bundle leaves `total` out.
    pub(super) no_total: bool,
    /// `_summary` (but `count`) or `_elements`, applied to the matches.
    pub(super) subset: Subset,
    /// `_list`: the id of a List whose entries bound the matches.
    pub(super) list: Option<String>,
    pub(super) warnings: Vec<String>,
}

pub(super) fn parse_request(
    app: &App,
    ty: &str,
    pairs: &[(String, String)],
    strict: bool,
) -> Result<Request, FhirError> {
    let custom = app
        .store()
        .map(|s| super::keys::custom_of(&s))
        .unwrap_or_default();
    let mut r = Request {
        count: crate::history::PAGE_DEFAULT,
        ..Request::default()
    };
    let (mut summary, mut elements) = (None, None);
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
            "_summary" => summary = Some(value.as_str()),
            "_elements" => elements = Some(value.as_str()),
            "_total" => {
                r.no_total = match value.as_str() {
                    "none" => true,
                    // Every search counts its matches exactly.
                    "estimate" | "accurate" => false,
                    other => {
                        return Err(FhirError::invalid(format!(
                            "_total={other} is not one of none, estimate, accurate"
                        )));
                    }
                }
            }
            "_list" => {
                if !crate::types::is_valid_id(value) {
                    return Err(FhirError::invalid(format!(
                        "_list={value}: a List's id is expected (functional lists such as $current-problems are not supported)"
                    )));
                }
                r.list = Some(value.clone());
            }
            "_page" => r.page = Some(value.clone()),
            n if n.starts_with("_include") || n.starts_with("_revinclude") => {
                match super::include::parse(&custom, n, value) {
                    Ok(i) => r.includes.push(i),
                    Err(why) if strict => return Err(FhirError::invalid(why)),
                    Err(why) => r.warnings.push(format!("{why}; it was ignored")),
                }
            }
            "_sort" => match parse_sort(registry().of(ty), &custom, ty, value) {
                Ok(keys) => {
                    r.sort.extend(keys);
                    if r.sort.len() > SORT_KEYS_MAX {
                        return Err(FhirError::invalid(format!(
                            "_sort lists more than {SORT_KEYS_MAX} keys"
                        )));
                    }
                }
                Err(why) if strict => return Err(FhirError::invalid(why)),
                Err(why) => r.warnings.push(format!("{why}; it was ignored")),
            },
            "_id" => {
                let set: BTreeSet<String> = value.split(',').map(str::to_owned).collect();
                r.ids = Some(match r.ids.take() {
                    Some(prev) => prev.intersection(&set).cloned().collect(),
                    None => set,
                });
            }
            "_lastUpdated" => r.last_updated.push(date_value(value)?),
            _ => match criterion(registry().of(ty), &custom, ty, name, value) {
                Ok(c) => r.criteria.push(c),
                Err(why) if strict => return Err(FhirError::invalid(why)),
                Err(why) => r.warnings.push(format!("{why}; it was ignored")),
            },
        }
    }
    r.subset = crate::subset::parse(summary, elements)?;
    Ok(r)
}

/// Reads `name=value` as a criterion on `ty`'s parameters; the error
/// says why it cannot be one (unknown parameter or modifier, a parameter
/// not indexed, a chain).
fn criterion(
    tp: &'static TypeParams,
    custom: &super::custom::Active,
    ty: &str,
    name: &str,
    value: &str,
) -> Result<Criterion, String> {
    if super::chain::hops_in(name) > super::chain::HOPS_MAX {
        return Err(format!(
            "{name} chains more than {} hops",
            super::chain::HOPS_MAX
        ));
    }
    let values: Vec<String> = value.split(',').map(str::to_owned).collect();
    if values.iter().any(String::is_empty) {
        return Err(format!("{name} has an empty value"));
    }
    if let Some(after) = name.strip_prefix("_has:") {
        let (param, hop) = super::chain::reverse(custom, after)?;
        return Ok(Criterion {
            param,
            modifier: None,
            values,
            hop: Some(hop),
        });
    }
    if let Some((head, rest)) = name.split_once('.') {
        let (code, ty_modifier) = match head.split_once(':') {
            Some((c, t)) if crate::types::is_resource_type(t) => (c, Some(t)),
            Some((_, m)) => return Err(format!("a chain takes a type (:[Type]), not :{m}")),
            None => (head, None),
        };
        let param = tp
            .find(code)
            .or_else(|| custom.find(ty, code))
            .ok_or_else(|| format!("unknown search parameter {code:?} for {ty}"))?;
        let hop = super::chain::forward(param, ty_modifier, rest)?;
        return Ok(Criterion {
            param,
            modifier: None,
            values,
            hop: Some(hop),
        });
    }
    let (code, modifier) = match name.split_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (name, None),
    };
    let param = tp
        .find(code)
        .or_else(|| custom.find(ty, code))
        .ok_or_else(|| format!("unknown search parameter {code:?} for {ty}"))?;
    if !param.is_searchable() {
        return Err(format!(
            "the search parameter {code} of {ty} ({} type) is not supported yet",
            param.kind.name()
        ));
    }
    let modifier = match modifier {
        None => None,
        Some(m) => Some(modifier_of(param.kind, m).ok_or_else(|| {
            format!(
                "the modifier :{m} is not supported on {code} ({} type)",
                param.kind.name()
            )
        })?),
    };
    Ok(Criterion {
        param,
        modifier,
        values,
        hop: None,
    })
}

impl Request {
    /// Restricts the request to `[owner]/[id]`'s compartment: a resource
    /// of `ty` matches only if one of the compartment's parameters for
    /// `ty` refers to the owner.
    pub(super) fn within(&mut self, ty: &str, owner: &str, id: &str) -> Result<(), FhirError> {
        self.within_links(ty, owner, None, vec![format!("{owner}/{id}")])
    }

    /// Restricts the request to resources of `ty` in any compartment of
    /// type `owner`: those with a reference to one through one of its
    /// links (for `Patient/$everything`). The owner type itself is not
    /// restricted.
    pub(super) fn within_any(&mut self, ty: &str, owner: &str) -> Result<(), FhirError> {
        if ty == owner {
            return Ok(());
        }
        let refers = Modifier::RefersTo(owner.to_owned());
        self.within_links(ty, owner, Some(refers), Vec::new())
    }

    /// Sets `within` to one criterion (`modifier`, `values`) per parameter
    /// that links `ty` to an `owner` compartment.
    fn within_links(
        &mut self,
        ty: &str,
        owner: &str,
        modifier: Option<Modifier>,
        values: Vec<String>,
    ) -> Result<(), FhirError> {
        let c = super::compartment::compartment(owner).ok_or_else(|| {
            FhirError::invalid(format!("the {owner} compartment is not supported"))
        })?;
        let tp = registry().of(ty);
        let links = c
            .params_of(ty)
            .iter()
            .filter_map(|code| tp.find(code))
            .filter(|p| p.is_searchable())
            .map(|param| Criterion {
                param,
                modifier: modifier.clone(),
                values: values.clone(),
                hop: None,
            })
            .collect();
        self.within = Some(links);
        Ok(())
    }
}

pub(super) fn matching(app: &App, ty: &str, r: &Request) -> Result<Vec<Hit>, FhirError> {
    let mut set: Option<BTreeSet<String>> = r.ids.clone();
    if let Some(list) = &r.list {
        narrow(&mut set, list_members(app, list, ty)?);
    }
    if let Some(links) = &r.within {
        let mut any = r.also.clone();
        for c in links {
            any.extend(ids_for(app, ty, c)?);
        }
        narrow(&mut set, any);
    }
    for c in &r.criteria {
        narrow(&mut set, ids_for(app, ty, c)?);
    }
    let keyed = set.is_none() || !r.criteria.is_empty() || r.within.is_some();
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
    let need_ts =
        !r.last_updated.is_empty() || r.sort.iter().any(|k| matches!(k.by, SortBy::LastUpdated));
    let now = crate::instant::now_us();
    let mut found: Vec<(String, u64)> = Vec::with_capacity(ids.len());
    for id in ids {
        if !need_ts && keyed {
            found.push((id, 0));
            continue;
        }
        if let Some((_, ts, op)) = app.store()?.head(ty, &id)?
            && op != vigil_engine::OpKind::Delete
        {
            let t = (ts as i64, ts as i64 + 1);
            if r.last_updated
                .iter()
                .all(|(p, s)| date_matches(*p, t, *s, now))
            {
                found.push((id, ts));
            }
        }
    }
    let mut columns = Vec::with_capacity(r.sort.len());
    let found_ids: Vec<&str> = found.iter().map(|(id, _)| id.as_str()).collect();
    for k in &r.sort {
        columns.push(match k.by {
            SortBy::Param(p) => Some(sort_values(app, ty, p, k.desc, &found_ids)?),
            SortBy::Id | SortBy::LastUpdated | SortBy::Absent(_) => None,
        });
    }
    let mut hits: Vec<Hit> = found
        .into_iter()
        .map(|(id, ts)| {
            let keys = r
                .sort
                .iter()
                .zip(&columns)
                .map(|(k, column)| match k.by {
                    SortBy::Id => Some(id.as_bytes().to_vec()),
                    SortBy::LastUpdated => Some(ts.to_be_bytes().to_vec()),
                    SortBy::Param(_) => column.as_ref().and_then(|c| c.get(&id).cloned()),
                    SortBy::Absent(_) => None,
                })
                .collect();
            Hit {
                ty: ty.to_owned(),
                id,
                keys,
            }
        })
        .collect();
    if !r.sort.is_empty() {
        sort_hits(&mut hits, &r.sort);
    }
    Ok(hits)
}

/// The ids of `ty` a List's entries refer to (`_list`), leaving out
/// entries marked deleted; 404 when the List does not exist.
fn list_members(app: &App, list: &str, ty: &str) -> Result<BTreeSet<String>, FhirError> {
    let vigil_engine::Current::Live(v) = app.store()?.get("List", list)? else {
        return Err(FhirError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("_list={list}: there is no List/{list}"),
        ));
    };
    let body: Value = serde_json::from_slice(&v.body)
        .map_err(|_| FhirError::internal(format!("List/{list} is not stored as JSON")))?;
    let entries = body.get("entry").and_then(Value::as_array);
    Ok(entries
        .into_iter()
        .flatten()
        .filter(|e| e.get("deleted").and_then(Value::as_bool) != Some(true))
        .filter_map(|e| e.pointer("/item/reference").and_then(Value::as_str))
        .filter_map(super::keys::reference_target)
        .filter(|(rty, _)| rty == ty)
        .map(|(_, id)| id)
        .collect())
}

/// Ids of `ty` matching a query string such as `identifier=sys|1` (for
/// conditional create).
pub fn matching_ids(app: &App, ty: &str, query: &str) -> Result<Vec<String>, FhirError> {
    let pairs = pairs_of(query.trim_start_matches('?'))?;
    let r = parse_request(app, ty, &pairs, true)?;
    Ok(matching(app, ty, &r)?.into_iter().map(|h| h.id).collect())
}

/// Checks a query string as a search of `ty` (strict handling), without
/// running it: 400 naming what is wrong (for `_typeFilter`).
pub fn check_query(app: &App, ty: &str, query: &str) -> Result<(), FhirError> {
    let pairs = pairs_of(query.trim_start_matches('?'))?;
    parse_request(app, ty, &pairs, true).map(|_| ())
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

    #[test]
    fn names_and_modifiers_are_checked_against_the_definitions() {
        let r = registry();
        let c =
            |ty: &str, name: &str, v: &str| criterion(r.of(ty), &Default::default(), ty, name, v);
        assert!(c("Patient", "name:exact", "Ada").is_ok());
        assert!(c("Observation", "subject:Patient", "1").is_ok());
        assert!(c("Observation", "code:not", "x").is_ok());
        assert!(c("Observation", "code:missing", "true").is_ok());
        let err = |ty, name, v| c(ty, name, v).expect_err("refused");
        assert!(err("Patient", "name:below", "x").contains(":below"));
        assert!(err("Patient", "nope", "x").contains("unknown"));
        assert!(c("Observation", "subject.name", "x").is_ok());
        assert!(err("Observation", "status.name", "x").contains("only references chain"));
        assert!(err("Observation", "subject:Nope", "x").contains(":Nope"));
        assert!(err("Patient", "name", "a,,b").contains("empty"));
        assert!(c("Observation", "code-value-quantity", "x$1").is_ok());
        assert!(err("Observation", "code-value-quantity:exact", "x$1").contains(":exact"));
        assert!(err("Location", "near", "1|2|3|km").contains("special"));
    }
}
