//! `_include` and `_revinclude`: the resources a page's matches refer to
//! (`_include=Observation:subject`), and those that refer to them
//! (`_revinclude=Observation:subject`), added as entries with search mode
//! `include`; `:iterate` applies them again to what they added. Bounded:
//! at most [`INCLUDED_MAX`] entries and [`ITERATE_ROUNDS_MAX`] rounds per
//! page; a cut is said in the Bundle's outcome, never made silently.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::keys::{reference_target, references};
use super::lookup::reference_ids;
use super::registry::{Kind, SearchParam, Source, registry};
use crate::app::App;
use crate::http::outcome::FhirError;
use crate::resource::render_map;

/// Most entries `_include` and `_revinclude` add to one page.
pub const INCLUDED_MAX: usize = 1_000;
/// Most rounds of `:iterate`.
pub const ITERATE_ROUNDS_MAX: usize = 4;

/// One `_include` or `_revinclude` value.
#[derive(Debug, Clone)]
pub(super) struct Include {
    /// `_revinclude` (resources referring to the matches).
    pub(super) reverse: bool,
    /// `:iterate`: applied to included resources too.
    pub(super) iterate: bool,
    /// The type whose parameters refer.
    pub(super) source: String,
    /// Its reference parameters named (all of them for `*`).
    pub(super) params: Vec<&'static SearchParam>,
    /// Only references to this type.
    pub(super) target: Option<String>,
}

/// Reads `_include[:iterate]` / `_revinclude[:iterate]` = `Type:param[:target]`
/// or `Type:*`.
pub(super) fn parse(
    custom: &super::custom::Active,
    name: &str,
    value: &str,
) -> Result<Include, String> {
    let (reverse, iterate) = match name {
        "_include" => (false, false),
        "_include:iterate" | "_include:recurse" => (false, true),
        "_revinclude" => (true, false),
        "_revinclude:iterate" | "_revinclude:recurse" => (true, true),
        _ => return Err(format!("{name} is not _include or _revinclude")),
    };
    let mut parts = value.splitn(3, ':');
    let (Some(source), Some(code)) = (parts.next(), parts.next()) else {
        return Err(format!("{name}={value} is not [type]:[parameter][:target]"));
    };
    if !crate::types::is_resource_type(source) {
        return Err(format!("{name}: {source:?} is not an R4 resource type"));
    }
    let target = parts.next().map(str::to_owned);
    if let Some(t) = &target
        && !crate::types::is_resource_type(t)
    {
        return Err(format!(
            "{name}: the target {t:?} is not an R4 resource type"
        ));
    }
    let tp = registry().of(source);
    let params: Vec<&'static SearchParam> = match code {
        "*" => tp
            .params
            .iter()
            .chain(custom.of(source))
            .filter(|p| p.kind == Kind::Reference && p.expr.is_some())
            .collect(),
        c => vec![
            tp.find(c)
                .or_else(|| custom.find(source, c))
                .filter(|p| p.kind == Kind::Reference && p.expr.is_some())
                .ok_or_else(|| format!("{name}: {source} has no reference parameter {c:?}"))?,
        ],
    };
    Ok(Include {
        reverse,
        iterate,
        source: source.to_owned(),
        params,
        target,
    })
}

/// A resource in a Bundle: type, id, and its JSON as served.
pub(super) type Found = (String, String, Value);

/// The entries the includes add for `matched`, and whether the bound cut
/// them.
pub(super) fn included(
    app: &App,
    includes: &[Include],
    matched: &[Found],
) -> Result<(Vec<Value>, bool), FhirError> {
    let mut seen: BTreeSet<(String, String)> = matched
        .iter()
        .map(|(t, i, _)| (t.clone(), i.clone()))
        .collect();
    let mut entries = Vec::new();
    let mut frontier: Vec<Found> = matched.to_vec();
    for round in 0..=ITERATE_ROUNDS_MAX {
        let mut next = Vec::new();
        for inc in includes.iter().filter(|i| round == 0 || i.iterate) {
            for (ty, id, body) in &frontier {
                let found = match inc.reverse {
                    false if *ty == inc.source => referred(inc, body),
                    false => Vec::new(),
                    true => referring(app, inc, ty, id)?,
                };
                for (rty, rid) in found {
                    if !seen.insert((rty.clone(), rid.clone())) {
                        continue;
                    }
                    if entries.len() >= INCLUDED_MAX {
                        return Ok((entries, true));
                    }
                    if let vigil_engine::Current::Live(v) = app.store()?.get(&rty, &rid)? {
                        let resource =
                            Value::Object(render_map(&v.body, v.version, v.last_updated_us)?);
                        entries.push(json!({
                            "fullUrl": format!("{}/{rty}/{rid}", app.base),
                            "resource": resource.clone(),
                            "search": {"mode": "include"},
                        }));
                        next.push((rty, rid, resource));
                    }
                }
            }
        }
        if next.is_empty() || !includes.iter().any(|i| i.iterate) {
            break;
        }
        frontier = next;
    }
    Ok((entries, false))
}

/// What `body` refers to through the include's parameters.
fn referred(inc: &Include, body: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in &inc.params {
        let Some(Ok(items)) = p.expr.as_ref().map(|e| e.evaluate(body)) else {
            continue;
        };
        let (mut refs, mut ids) = (Vec::new(), Vec::new());
        for item in &items {
            references(item, &mut refs, &mut ids);
        }
        out.extend(
            refs.iter()
                .filter_map(|r| reference_target(r))
                .filter(|(t, _)| inc.target.as_deref().is_none_or(|want| want == t)),
        );
    }
    out
}

/// The resources of the include's type whose parameters refer to `ty/id`.
fn referring(
    app: &App,
    inc: &Include,
    ty: &str,
    id: &str,
) -> Result<Vec<(String, String)>, FhirError> {
    if inc.target.as_deref().is_some_and(|t| t != ty) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for p in &inc.params {
        let (code, target) = match &p.source {
            Source::Alias { of, target } => (of.as_str(), target.as_deref()),
            _ => (p.code.as_str(), None),
        };
        for rid in reference_ids(app, &inc.source, code, target, None, &format!("{ty}/{id}"))? {
            out.push((inc.source.clone(), rid));
        }
    }
    Ok(out)
}
