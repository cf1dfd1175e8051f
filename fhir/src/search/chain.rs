//! Chained and reverse-chained parameters: `subject:Patient.name=x` (the
//! resources whose reference points at a Patient named x) and
//! `_has:Observation:subject:code=x` (the resources an Observation with
//! code x points at through `subject`). Each hop is a search of its own,
//! answered from the index; its matches are bounded
//! ([`HOP_MATCHES_MAX`]), and a name may hold at most [`HOPS_MAX`] hops.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use serde_json::Value;

use super::keys::{reference_target, references};
use super::lookup::reference_ids;
use super::registry::{Kind, SearchParam, Source, registry};
use crate::app::App;
use crate::http::outcome::FhirError;

/// A link to other resources a criterion goes through.
#[derive(Debug)]
pub(super) enum Hop {
    /// `param[:Type].rest`: a reference whose target (of one of `types`)
    /// matches `rest`.
    Forward { types: Vec<String>, rest: String },
    /// `_has:ty:param:rest`: resources of `ty` matching `rest` whose
    /// `param` (the criterion's) refers here.
    Reverse { ty: String, rest: String },
}

/// An inner search, run by the caller (the query module, which calls
/// this one): the ids of `ty` matching `name=value`; `Ok(Err(_))` when
/// the criteria do not apply to `ty`.
pub(super) type Inner<'a> =
    dyn Fn(&str, &str, &str) -> Result<Result<Vec<String>, FhirError>, FhirError> + 'a;

/// Most hops (chain links and `_has`) one parameter name may hold.
pub const HOPS_MAX: usize = 4;

/// Most matches one hop may have before the search is refused as too
/// costly (narrowing the inner criteria answers it).
pub const HOP_MATCHES_MAX: usize = 10_000;

/// How many hops a parameter name holds.
pub(super) fn hops_in(name: &str) -> usize {
    name.matches('.').count() + name.matches("_has:").count()
}

/// Reads `_has:Type:param:rest` (the name without `_has:`).
pub(super) fn reverse(
    custom: &super::custom::Active,
    after: &str,
) -> Result<(&'static SearchParam, Hop), String> {
    let mut parts = after.splitn(3, ':');
    let (Some(src), Some(code), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!(
            "_has:{after} is not _has:[type]:[reference parameter]:[parameter]"
        ));
    };
    if !crate::types::is_resource_type(src) {
        return Err(format!(
            "_has names {src:?}, which is not an R4 resource type"
        ));
    }
    let param = registry()
        .of(src)
        .find(code)
        .or_else(|| custom.find(src, code))
        .filter(|p| p.kind == Kind::Reference && p.expr.is_some())
        .ok_or_else(|| format!("_has: {src} has no reference parameter {code:?}"))?;
    if rest.is_empty() {
        return Err(format!("_has:{after} names no parameter of {src}"));
    }
    Ok((
        param,
        Hop::Reverse {
            ty: src.to_owned(),
            rest: rest.to_owned(),
        },
    ))
}

/// Reads the link `rest` of a chain through reference `param` (typed by
/// `ty_modifier` when the name said `:Type`).
pub(super) fn forward(
    param: &'static SearchParam,
    ty_modifier: Option<&str>,
    rest: &str,
) -> Result<Hop, String> {
    if param.kind != Kind::Reference {
        return Err(format!(
            "{} is a {} parameter; only references chain",
            param.code,
            param.kind.name()
        ));
    }
    if rest.is_empty() {
        return Err(format!("{}. names no parameter to chain to", param.code));
    }
    let restricted = match &param.source {
        Source::Alias { target, .. } => target.clone(),
        _ => None,
    };
    let types: Vec<String> = match (ty_modifier, restricted) {
        (Some(t), _) => vec![t.to_owned()],
        (None, Some(t)) => vec![t],
        (None, None) => param.targets.clone(),
    };
    if types.is_empty() {
        return Err(format!("{} names no target type to chain to", param.code));
    }
    Ok(Hop::Forward {
        types,
        rest: rest.to_owned(),
    })
}

fn too_costly(what: &str, n: usize) -> FhirError {
    FhirError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "too-costly",
        format!("{what} matches {n} resources (at most {HOP_MATCHES_MAX}); narrow it"),
    )
}

/// The ids of `ty` a hop leads to, for any of `values`.
pub(super) fn ids_through(
    app: &App,
    ty: &str,
    param: &'static SearchParam,
    hop: &Hop,
    values: &[String],
    inner: &Inner<'_>,
) -> Result<BTreeSet<String>, FhirError> {
    let joined = values.join(",");
    match hop {
        Hop::Forward { types, rest } => {
            let mut out = BTreeSet::new();
            let mut refused = None;
            let mut ran = false;
            for t in types {
                let hits = match inner(t, rest, &joined)? {
                    Ok(ids) => ids,
                    Err(e) => {
                        refused.get_or_insert(e);
                        continue;
                    }
                };
                ran = true;
                if hits.len() > HOP_MATCHES_MAX {
                    return Err(too_costly(&format!("{t}?{rest}={joined}"), hits.len()));
                }
                let (code, target) = match &param.source {
                    Source::Alias { of, target } => (of.as_str(), target.as_deref()),
                    _ => (param.code.as_str(), None),
                };
                for id in hits {
                    let r = format!("{t}/{id}");
                    out.extend(reference_ids(app, ty, code, target, None, &r)?);
                }
            }
            match (ran, refused) {
                (false, Some(e)) => Err(e),
                _ => Ok(out),
            }
        }
        Hop::Reverse { ty: src, rest } => {
            let hits = inner(src, rest, &joined)??;
            if hits.len() > HOP_MATCHES_MAX {
                return Err(too_costly(&format!("{src}?{rest}={joined}"), hits.len()));
            }
            let Some(expr) = &param.expr else {
                return Ok(BTreeSet::new());
            };
            let store = app.store()?;
            let mut out = BTreeSet::new();
            for id in hits {
                let vigil_engine::Current::Live(v) = store.get(src, &id)? else {
                    continue;
                };
                let Ok(body) = serde_json::from_slice::<Value>(&v.body) else {
                    continue;
                };
                let Ok(items) = expr.evaluate(&body) else {
                    continue;
                };
                let (mut refs, mut ids) = (Vec::new(), Vec::new());
                for item in &items {
                    references(item, &mut refs, &mut ids);
                }
                for r in refs {
                    if let Some((rty, rid)) = reference_target(&r)
                        && rty == ty
                    {
                        out.insert(rid);
                    }
                }
            }
            Ok(out)
        }
    }
}
