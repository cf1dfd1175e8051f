//! The search parameters, as data: the official R4 SearchParameter
//! definitions (`fhir/data/search-parameters-r4.json`, built into the
//! binary), each with its FHIRPath `expression` cut down to the branches
//! that apply to one resource type and parsed once per process.
//!
//! What this module decides, per resource type:
//! - which parameters exist and of which [`Kind`] (what the
//!   CapabilityStatement lists and what a request may name);
//! - which of them write keys, and which read another parameter's keys
//!   instead ([`Source::Alias`]): `Observation.patient` is
//!   `Observation.subject.where(resolve() is Patient)`, so it reads
//!   `subject`'s keys restricted to Patient targets rather than repeating
//!   each of them;
//! - which top-level fields of a body the keys can come from, so a
//!   replica parses only those ([`TypeParams::fields`]).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::fhirpath::{Expr, Node};
use crate::types::R4_RESOURCE_TYPES;

/// The definitions built into the binary.
const DEFINITIONS: &str = include_str!("../../data/search-parameters-r4.json");

/// How a parameter's values are matched (R4 search, "search parameter
/// types").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Decimal numbers, with prefixes and the value's implicit precision.
    Number,
    /// Dates, dateTimes, instants, Periods and Timings, with prefixes.
    Date,
    /// Text: starts-with, case- and accent-insensitive.
    String,
    /// Codes, Codings, CodeableConcepts, Identifiers, ContactPoints,
    /// booleans: `system|code`.
    Token,
    /// References to other resources (and canonical URLs).
    Reference,
    /// Two or more components matched together on one element
    /// (`code-value-quantity=loinc|8480-6$gt100`).
    Composite,
    /// Quantities: `[prefix]number|system|code`.
    Quantity,
    /// URIs: exact, `:below`, `:above`.
    Uri,
    /// Parameters with their own rules (`near`; not indexed).
    Special,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "number" => Kind::Number,
            "date" => Kind::Date,
            "string" => Kind::String,
            "token" => Kind::Token,
            "reference" => Kind::Reference,
            "composite" => Kind::Composite,
            "quantity" => Kind::Quantity,
            "uri" => Kind::Uri,
            "special" => Kind::Special,
            _ => return None,
        })
    }

    /// The name R4 gives the type (`SearchParameter.type`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Number => "number",
            Kind::Date => "date",
            Kind::String => "string",
            Kind::Token => "token",
            Kind::Reference => "reference",
            Kind::Composite => "composite",
            Kind::Quantity => "quantity",
            Kind::Uri => "uri",
            Kind::Special => "special",
        }
    }

    /// The byte that starts every key of a parameter of this kind; `None`
    /// for kinds that write no keys.
    pub fn tag(self) -> Option<u8> {
        Some(match self {
            Kind::Number => b'n',
            Kind::Date => b'd',
            Kind::String => b's',
            Kind::Token => b'k',
            Kind::Reference => b'r',
            Kind::Quantity => b'q',
            Kind::Uri => b'u',
            Kind::Composite => b'c',
            Kind::Special => return None,
        })
    }
}

/// Where a parameter's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Its own expression: it writes keys under its own code.
    Own,
    /// Another parameter's keys (same kind), restricted to those whose
    /// second part is `target` when set: a reference's target type
    /// (`patient` is `subject` to a Patient), a token's system (`phone`
    /// is `telecom` with system `phone`).
    Alias {
        /// The parameter whose keys hold this one's values.
        of: String,
        /// The second part of the keys that count.
        target: Option<String>,
    },
    /// The union of other parameters' keys: its expression's branches are
    /// exactly theirs (`combo-code` is `code | component-code`), so it
    /// writes none of its own. Tokens, quantities and composites only.
    Union(Vec<String>),
    /// None: it has no expression this server can evaluate for the type
    /// (`_text`, `_content`, composites, `near`), or it is answered
    /// without keys (`_id`, `_lastUpdated`).
    NotIndexed,
}

/// One search parameter of one resource type.
#[derive(Debug)]
pub struct SearchParam {
    /// The name used in URLs.
    pub code: String,
    /// How it matches.
    pub kind: Kind,
    /// Its canonical URL.
    pub url: String,
    /// The branches of the official expression that apply to this type
    /// (`None` when no branch does, or the parameter has none).
    pub expr: Option<Expr>,
    /// Where its keys come from.
    pub source: Source,
    /// The top-level fields its expression reads (`None`: it may read
    /// any); a resource with none of them has no values for it.
    pub fields: Option<Vec<String>>,
    /// Members of its values whose text another string parameter indexes
    /// (`name` of a Patient: `family` and `given`), as (member, that
    /// parameter): it writes no keys for them, and a search reads theirs.
    pub covers: Vec<(String, String)>,
    /// The resource types a reference parameter may point to.
    pub targets: Vec<String>,
    /// A composite's components, in order (empty for other kinds, and for
    /// a composite whose components this server cannot evaluate).
    pub components: Vec<Component>,
}

/// One component of a composite parameter: how it matches (the kind of
/// the parameter its definition names) and the expression that gives its
/// values, evaluated on each item of the composite's own expression.
#[derive(Debug)]
pub struct Component {
    /// The component's kind.
    pub kind: Kind,
    /// Its expression, relative to the composite's items.
    pub expr: Expr,
}

impl SearchParam {
    /// Whether a search on it can be answered from the keys.
    pub fn is_searchable(&self) -> bool {
        !matches!(self.source, Source::NotIndexed)
            || matches!(self.code.as_str(), "_id" | "_lastUpdated")
    }
}

/// The parameters of one resource type.
#[derive(Debug, Default)]
pub struct TypeParams {
    /// In the official bundle's order.
    pub params: Vec<SearchParam>,
    /// The top-level fields every key of the type comes from (besides
    /// `resourceType`), or `None` when an expression may read anything.
    pub fields: Option<Vec<String>>,
}

impl TypeParams {
    /// The parameter named `code`.
    pub fn find(&self, code: &str) -> Option<&SearchParam> {
        self.params.iter().find(|p| p.code == code)
    }
}

/// Every resource type's parameters.
#[derive(Debug)]
pub struct Registry {
    types: BTreeMap<&'static str, TypeParams>,
    empty: TypeParams,
}

/// One definition as the data file holds it.
#[derive(Deserialize)]
struct Definition {
    url: String,
    code: String,
    base: Vec<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    expression: Option<String>,
    #[serde(default)]
    target: Vec<String>,
    #[serde(default)]
    component: Vec<ComponentDefinition>,
}

/// One component as the data file holds it.
#[derive(Deserialize)]
struct ComponentDefinition {
    definition: String,
    expression: String,
}

/// The built-in registry, parsed on first use.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry::from_definitions(DEFINITIONS))
}

impl Registry {
    /// Builds the registry from definitions (a JSON array). A definition
    /// that does not parse, or whose expression does not, is left out; the
    /// built-in file has none such (a unit test checks).
    fn from_definitions(text: &str) -> Registry {
        let defs: Vec<Definition> = serde_json::from_str(text).unwrap_or_default();
        let kinds: BTreeMap<&str, Kind> = defs
            .iter()
            .filter_map(|d| Some((d.url.as_str(), Kind::parse(&d.kind)?)))
            .collect();
        let mut types: BTreeMap<&'static str, TypeParams> = BTreeMap::new();
        for ty in R4_RESOURCE_TYPES {
            let mut params: Vec<SearchParam> = Vec::new();
            for d in &defs {
                let applies = d
                    .base
                    .iter()
                    .any(|b| b == ty || b == "Resource" || (b == "DomainResource" && !is_bare(ty)));
                let Some(kind) = Kind::parse(&d.kind) else {
                    continue;
                };
                if !applies || params.iter().any(|p| p.code == d.code) {
                    continue;
                }
                let expr = d
                    .expression
                    .as_deref()
                    .and_then(|e| Expr::parse(e).ok())
                    .and_then(|e| on_type(&e, ty));
                let components = components_of(d, &kinds);
                let fields = expr.as_ref().and_then(|e| {
                    sorted_fields(|f| match kind {
                        Kind::Composite => composite_fields(e.node(), &components, f),
                        _ => root_fields(e.node(), f),
                    })
                });
                params.push(SearchParam {
                    code: d.code.clone(),
                    kind,
                    url: d.url.clone(),
                    expr,
                    fields,
                    covers: Vec::new(),
                    source: Source::NotIndexed,
                    targets: d.target.clone(),
                    components,
                });
            }
            for i in 0..params.len() {
                let source = source_of(&params, i);
                params[i].source = source;
            }
            // A restriction may name a later parameter that turned out to
            // read a third one's keys: point it at the owner.
            for i in 0..params.len() {
                if let Source::Alias { of, target } = &params[i].source
                    && let Some(Source::Alias {
                        of: owner,
                        target: None,
                    }) = params.iter().find(|q| &q.code == of).map(|q| &q.source)
                {
                    params[i].source = Source::Alias {
                        of: owner.clone(),
                        target: target.clone(),
                    };
                }
            }
            let unions: Vec<(usize, Vec<String>)> = (0..params.len())
                .filter_map(|i| union_of(&params, i).map(|m| (i, m)))
                .collect();
            // A member must write its keys: it is not made a union itself.
            let members: Vec<&String> = unions.iter().flat_map(|(_, m)| m).collect();
            let unions: Vec<(usize, Vec<String>)> = unions
                .iter()
                .filter(|(i, _)| !members.contains(&&params[*i].code))
                .cloned()
                .collect();
            for (i, m) in unions {
                params[i].source = Source::Union(m);
            }
            for i in 0..params.len() {
                let covers = covers_of(&params, i);
                params[i].covers = covers;
            }
            let fields = fields_of(&params);
            types.insert(ty, TypeParams { params, fields });
        }
        Registry {
            types,
            empty: TypeParams::default(),
        }
    }

    /// The parameters of `ty` (none for a type R4 does not define).
    pub fn of(&self, ty: &str) -> &TypeParams {
        self.types.get(ty).unwrap_or(&self.empty)
    }
}

/// A parameter of `ty` from a definition that is not built in (a
/// SearchParameter resource, `custom`): `Err` says why it cannot be one.
/// Composite and special parameters are not taken.
pub(super) fn custom_param(
    ty: &str,
    code: &str,
    kind: &str,
    url: &str,
    expression: &str,
    targets: &[String],
) -> Result<SearchParam, String> {
    let kind = match Kind::parse(kind) {
        Some(Kind::Composite | Kind::Special) | None => {
            return Err(format!(
                "type {kind:?} is not supported for a custom parameter (number, date, string, token, reference, quantity, uri are)"
            ));
        }
        Some(k) => k,
    };
    let parsed = Expr::parse(expression).map_err(|e| format!("expression: {e}"))?;
    let expr = on_type(&parsed, ty).ok_or_else(|| format!("the expression has no path on {ty}"))?;
    let fields = sorted_fields(|f| root_fields(expr.node(), f));
    Ok(SearchParam {
        code: code.to_owned(),
        kind,
        url: url.to_owned(),
        expr: Some(expr),
        source: Source::Own,
        fields,
        covers: Vec::new(),
        targets: targets.to_vec(),
        components: Vec::new(),
    })
}

/// The branches of an expression that apply to `ty`, with `as` read as
/// `ofType` (`None` when no branch does).
fn on_type(parsed: &Expr, ty: &str) -> Option<Expr> {
    branches_for(parsed.node(), ty).map(|n| Expr::from_node(lenient_as(n)))
}

/// The top-level fields `collect` finds, sorted and without repeats;
/// `None` when it cannot tell (an expression that may read anything).
fn sorted_fields(collect: impl FnOnce(&mut Vec<String>) -> bool) -> Option<Vec<String>> {
    let mut f = Vec::new();
    collect(&mut f).then(|| {
        f.sort_unstable();
        f.dedup();
        f
    })
}

/// `x as T` and `x.as(T)` read as `x.ofType(T)`: R4's expressions apply
/// `as` to collections (`Observation.component.value as Quantity`), where
/// strict FHIRPath would fail on more than one item and index nothing;
/// servers read them as a filter, and so does this one.
fn lenient_as(n: Node) -> Node {
    let boxed = |b: Box<Node>| Box::new(lenient_as(*b));
    match n {
        Node::TypeOp(t, false, ty) => {
            let arg = match ty.namespace {
                Some(ns) => Node::Member(Box::new(Node::Ident(ns)), ty.name),
                None => Node::Ident(ty.name),
            };
            Node::Call(Some(boxed(t)), "ofType".to_owned(), vec![arg])
        }
        Node::TypeOp(t, true, ty) => Node::TypeOp(boxed(t), true, ty),
        Node::Call(t, name, args) => {
            let name = if name == "as" {
                "ofType".to_owned()
            } else {
                name
            };
            Node::Call(
                t.map(boxed),
                name,
                args.into_iter().map(lenient_as).collect(),
            )
        }
        Node::Member(t, name) => Node::Member(boxed(t), name),
        Node::Index(a, b) => Node::Index(boxed(a), boxed(b)),
        Node::Negate(t, plus) => Node::Negate(boxed(t), plus),
        Node::Binary(op, a, b) => Node::Binary(op, boxed(a), boxed(b)),
        other => other,
    }
}

/// Types that are resources but not domain resources.
fn is_bare(ty: &str) -> bool {
    matches!(ty, "Binary" | "Bundle" | "Parameters")
}

/// The union's branches that apply to `ty`: those whose path starts at
/// `ty` itself, at `Resource` or `DomainResource`, or at no type name.
fn branches_for(root: &Node, ty: &str) -> Option<Node> {
    let mut all = Vec::new();
    flatten_union(root, &mut all);
    let kept: Vec<&Node> = all
        .into_iter()
        .filter(|b| match chain_root(b) {
            Some(name) if crate::types::is_resource_type(name) => name == ty,
            _ => true,
        })
        .collect();
    let mut it = kept.into_iter().cloned();
    let first = it.next()?;
    Some(it.fold(first, |acc, b| {
        Node::Binary("|", Box::new(acc), Box::new(b))
    }))
}

fn flatten_union<'a>(n: &'a Node, out: &mut Vec<&'a Node>) {
    match n {
        Node::Binary("|", a, b) => {
            flatten_union(a, out);
            flatten_union(b, out);
        }
        other => out.push(other),
    }
}

/// The identifier a path starts from (`Observation` in
/// `(Observation.value as Quantity).unit`).
fn chain_root(n: &Node) -> Option<&str> {
    match n {
        Node::Ident(name) => Some(name),
        Node::Member(t, _)
        | Node::Call(Some(t), _, _)
        | Node::Index(t, _)
        | Node::TypeOp(t, _, _)
        | Node::Negate(t, _) => chain_root(t),
        Node::Binary(_, a, _) => chain_root(a),
        _ => None,
    }
}

/// Whether parameter `i` writes keys, reads another one's, or none. Runs
/// over the parameters in order, so those before `i` are settled.
fn source_of(params: &[SearchParam], i: usize) -> Source {
    let p = &params[i];
    if p.kind.tag().is_none() || matches!(p.code.as_str(), "_id" | "_lastUpdated") {
        return Source::NotIndexed;
    }
    let Some(expr) = &p.expr else {
        return Source::NotIndexed;
    };
    // A composite is its expression and its components: never another's.
    if p.kind == Kind::Composite {
        return match p.components.is_empty() {
            true => Source::NotIndexed,
            false => Source::Own,
        };
    }
    let same_kind = |q: &&SearchParam| q.kind == p.kind && q.code != p.code;
    // The same expression as an earlier parameter: the same keys.
    if let Some(q) = params[..i]
        .iter()
        .filter(same_kind)
        .find(|q| q.source == Source::Own && q.expr.as_ref().map(Expr::node) == Some(expr.node()))
    {
        return Source::Alias {
            of: q.code.clone(),
            target: None,
        };
    }
    // `X.where(system = 'S')` where another token parameter is `X`:
    // its keys with system S.
    if p.kind == Kind::Token
        && let Node::Call(Some(inner), f, args) = expr.node()
        && f == "where"
        && let [Node::Binary("=", lhs, rhs)] = args.as_slice()
        && matches!(lhs.as_ref(), Node::Ident(n) if n == "system")
        && let Node::Literal(crate::fhirpath::Literal::String(system)) = rhs.as_ref()
        && let Some(q) = params
            .iter()
            .filter(same_kind)
            .find(|q| q.expr.as_ref().map(Expr::node) == Some(inner.as_ref()))
    {
        // A later `X` is pointed at its keys' owner by the pass after this.
        return Source::Alias {
            of: q.code.clone(),
            target: Some(system.clone()),
        };
    }
    // `X.where(resolve() is T)` where another parameter is `X` (and is
    // not itself a restriction, so the keys are written exactly once).
    if p.kind == Kind::Reference
        && let Node::Call(Some(inner), f, args) = expr.node()
        && f == "where"
        && let [Node::TypeOp(call, true, t)] = args.as_slice()
        && matches!(call.as_ref(), Node::Call(None, r, a) if r == "resolve" && a.is_empty())
        && let Some(q) = params
            .iter()
            .filter(same_kind)
            .find(|q| q.expr.as_ref().map(Expr::node) == Some(inner.as_ref()))
    {
        let of = match params.iter().position(|x| x.code == q.code) {
            // An earlier one is settled: follow it to the owner of the keys.
            Some(j) if j < i => match &params[j].source {
                Source::Alias { of, target: None } => of.clone(),
                _ => q.code.clone(),
            },
            _ => q.code.clone(),
        };
        return Source::Alias {
            of,
            target: Some(t.name.clone()),
        };
    }
    Source::Own
}

/// The parameters whose keys together are exactly parameter `i`'s, when
/// its expression is a union of theirs (every branch of it is a branch of
/// one of them, and each of theirs is one of its branches).
fn union_of(params: &[SearchParam], i: usize) -> Option<Vec<String>> {
    let p = &params[i];
    if !matches!(p.kind, Kind::Token | Kind::Quantity | Kind::Composite) || p.source != Source::Own
    {
        return None;
    }
    fn branches(q: &SearchParam) -> Vec<&Node> {
        let mut out = Vec::new();
        if let Some(e) = &q.expr {
            flatten_union(e.node(), &mut out);
        }
        out
    }
    let same_components = |q: &SearchParam| {
        q.components.len() == p.components.len()
            && q.components
                .iter()
                .zip(&p.components)
                .all(|(a, b)| a.kind == b.kind && a.expr.node() == b.expr.node())
    };
    let mine = branches(p);
    if mine.len() < 2 {
        return None;
    }
    let mut covered = vec![false; mine.len()];
    let mut members = Vec::new();
    for q in params.iter().filter(|q| {
        q.code != p.code && q.kind == p.kind && q.source == Source::Own && same_components(q)
    }) {
        let theirs = branches(q);
        let at: Option<Vec<usize>> = theirs
            .iter()
            .map(|b| mine.iter().position(|m| m == b))
            .collect();
        let Some(at) = at else { continue };
        if at.is_empty() || at.len() >= mine.len() || at.iter().any(|k| covered[*k]) {
            continue;
        }
        for k in at {
            covered[k] = true;
        }
        members.push(q.code.clone());
    }
    covered.iter().all(|c| *c).then_some(members)
}

/// The members of string parameter `i`'s values that another string
/// parameter of the type indexes on its own (`X.member` where `i` is `X`).
fn covers_of(params: &[SearchParam], i: usize) -> Vec<(String, String)> {
    let p = &params[i];
    let (Kind::String, Source::Own, Some(expr)) = (p.kind, &p.source, &p.expr) else {
        return Vec::new();
    };
    params
        .iter()
        .filter(|q| q.kind == Kind::String && q.source == Source::Own && q.code != p.code)
        .filter_map(|q| match q.expr.as_ref().map(Expr::node) {
            Some(Node::Member(base, member)) if base.as_ref() == expr.node() => {
                Some((member.clone(), q.code.clone()))
            }
            _ => None,
        })
        .collect()
}

/// The top-level fields the type's own-key parameters read.
fn fields_of(params: &[SearchParam]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for p in params.iter().filter(|p| p.source == Source::Own) {
        match p.kind {
            Kind::Composite => out.extend(p.fields.clone()?),
            _ if !root_fields(p.expr.as_ref()?.node(), &mut out) => return None,
            _ => {}
        }
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// Adds to `out` the top-level fields `n` reads from the resource; `false`
/// when it may read more than named fields (`%resource`, a function of the
/// resource itself, the resource as a whole).
fn root_fields(n: &Node, out: &mut Vec<String>) -> bool {
    let is_type = |name: &str| {
        name == "Resource" || name == "DomainResource" || crate::types::is_resource_type(name)
    };
    match n {
        Node::Literal(_) | Node::Empty => true,
        Node::Ident(name) if is_type(name) => false,
        Node::Ident(name) => {
            out.push(name.clone());
            true
        }
        Node::Member(t, name) => match t.as_ref() {
            Node::Ident(root) if is_type(root) => {
                out.push(name.clone());
                true
            }
            _ => root_fields(t, out),
        },
        // Arguments are evaluated on the target's items, not the resource,
        // unless they name it.
        Node::Call(Some(t), _, args) => root_fields(t, out) && args.iter().all(no_env),
        Node::Call(None, _, _) | Node::Var(_) | Node::Env(_) => false,
        Node::Index(t, i) => root_fields(t, out) && root_fields(i, out),
        Node::Negate(t, _) | Node::TypeOp(t, _, _) => root_fields(t, out),
        Node::Binary(_, a, b) => root_fields(a, out) && root_fields(b, out),
    }
}

/// A composite's components, when every one names a known definition
/// and parses (none otherwise: the composite is then not indexed).
fn components_of(d: &Definition, kinds: &BTreeMap<&str, Kind>) -> Vec<Component> {
    d.component
        .iter()
        .map(|c| {
            let kind = *kinds.get(c.definition.as_str())?;
            // An erratum of the R4 definitions: `code-value-date` reads
            // `value.as(DateTime)`, the System type, which no FHIR element
            // is (R4B reads `value.as(dateTime)`).
            let text = c.expression.replace("as(DateTime)", "as(dateTime)");
            let expr = Expr::from_node(lenient_as(Expr::parse(&text).ok()?.node().clone()));
            (kind.tag().is_some() && kind != Kind::Composite).then_some(Component { kind, expr })
        })
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default()
}

/// [`root_fields`] of a composite: a branch that is the resource itself
/// (`Observation`) reads what its components read; another branch
/// (`Observation.component`) reads its own root field.
fn composite_fields(n: &Node, components: &[Component], out: &mut Vec<String>) -> bool {
    let mut branches = Vec::new();
    flatten_union(n, &mut branches);
    branches.into_iter().all(|b| match b {
        Node::Ident(name) if crate::types::is_resource_type(name) => {
            components.iter().all(|c| root_fields(c.expr.node(), out))
        }
        // Components that name `%resource` may read any field.
        other => root_fields(other, out) && components.iter().all(|c| no_env(c.expr.node())),
    })
}

/// Whether `n` never names `%resource` (or any environment variable).
fn no_env(n: &Node) -> bool {
    match n {
        Node::Env(_) => false,
        Node::Literal(_) | Node::Empty | Node::Ident(_) | Node::Var(_) => true,
        Node::Member(t, _) | Node::Negate(t, _) | Node::TypeOp(t, _, _) => no_env(t),
        Node::Call(t, _, args) => t.as_deref().is_none_or(no_env) && args.iter().all(no_env),
        Node::Index(a, b) | Node::Binary(_, a, b) => no_env(a) && no_env(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_official_definition_is_read_and_every_expression_parses() {
        let defs: Vec<Definition> = serde_json::from_str(DEFINITIONS).expect("the data file");
        assert_eq!(defs.len(), 1375);
        for d in &defs {
            assert!(Kind::parse(&d.kind).is_some(), "{}", d.url);
            if let Some(e) = &d.expression {
                assert!(Expr::parse(e).is_ok(), "{}: {e}", d.url);
            }
        }
        // The (type, code) pairs the README of the official bundle counts,
        // over the resource types (Resource and DomainResource parameters
        // apply to every type and are counted once per type here).
        let r = registry();
        let own: usize = R4_RESOURCE_TYPES
            .iter()
            .map(|t| {
                r.of(t)
                    .params
                    .iter()
                    .filter(|p| !p.code.starts_with('_'))
                    .count()
            })
            .sum();
        assert!(own >= 1_600, "{own} type-specific pairs");
    }

    #[test]
    fn every_composite_of_every_type_is_indexed_with_its_components() {
        let r = registry();
        let mut pairs = 0;
        for ty in R4_RESOURCE_TYPES {
            for p in r.of(ty).params.iter().filter(|p| p.kind == Kind::Composite) {
                pairs += 1;
                assert!(
                    matches!(p.source, Source::Own | Source::Union(_)),
                    "{ty}.{}",
                    p.code
                );
                assert!(p.components.len() >= 2, "{ty}.{}", p.code);
            }
        }
        // The official bundle's composites: 46 definitions, 72 (type, code)
        // pairs once each base type counts.
        assert_eq!(pairs, 72);
        let cvq = r
            .of("Observation")
            .find("code-value-quantity")
            .expect("defined");
        let kinds: Vec<Kind> = cvq.components.iter().map(|c| c.kind).collect();
        assert_eq!(kinds, [Kind::Token, Kind::Quantity]);
        assert_eq!(
            cvq.fields.as_deref(),
            Some(&["code".to_owned(), "value".to_owned()][..])
        );
        // The combo- parameters read their parts' keys.
        let obs = r.of("Observation");
        let union = |code: &str| match &obs.find(code).expect("defined").source {
            Source::Union(m) => m.clone(),
            other => panic!("{code}: {other:?}"),
        };
        assert_eq!(union("combo-code"), ["code", "component-code"]);
        assert_eq!(
            union("combo-value-quantity"),
            ["component-value-quantity", "value-quantity"]
        );
        assert_eq!(
            union("combo-code-value-quantity"),
            ["code-value-quantity", "component-code-value-quantity"]
        );
        assert_eq!(obs.find("code").map(|p| &p.source), Some(&Source::Own));
    }

    #[test]
    fn branches_of_shared_expressions_are_cut_to_the_type() {
        let r = registry();
        let code = r.of("Condition").find("code").expect("Condition.code");
        let text = format!("{:?}", code.expr.as_ref().expect("an expression").node());
        assert!(
            text.contains("Condition") && !text.contains("Observation"),
            "{text}"
        );
        assert_eq!(code.source, Source::Own);
        // `patient` reads `subject`'s keys, restricted to Patient.
        let patient = r.of("Observation").find("patient").expect("patient");
        assert_eq!(
            patient.source,
            Source::Alias {
                of: "subject".into(),
                target: Some("Patient".into())
            }
        );
        // `phone` reads `telecom`'s keys with system phone; `name` leaves
        // `family` and `given` to their own parameters.
        let phone = r.of("Patient").find("phone").expect("phone");
        assert_eq!(
            phone.source,
            Source::Alias {
                of: "telecom".into(),
                target: Some("phone".into())
            }
        );
        let name = r.of("Patient").find("name").expect("name");
        let mut covered: Vec<&str> = name.covers.iter().map(|(m, _)| m.as_str()).collect();
        covered.sort_unstable();
        assert_eq!(covered, ["family", "given"]);
        let address = r.of("Patient").find("address").expect("address");
        assert_eq!(address.covers.len(), 4, "{:?}", address.covers);
        // Resource-level parameters apply to every type.
        assert!(r.of("Binary").find("_tag").is_some());
        assert!(
            r.of("Binary").find("_text").is_none(),
            "Binary is no DomainResource"
        );
        assert_eq!(
            r.of("Patient").find("_id").map(|p| p.kind),
            Some(Kind::Token)
        );
        assert!(r.of("NoSuchType").params.is_empty());
        // Every alias reads keys some parameter writes.
        for ty in R4_RESOURCE_TYPES {
            let tp = r.of(ty);
            for p in &tp.params {
                if let Source::Alias { of, .. } = &p.source {
                    let owner = tp.find(of).expect("the aliased parameter");
                    assert_eq!(owner.source, Source::Own, "{ty}.{} -> {of}", p.code);
                    assert_eq!(owner.kind, p.kind, "{ty}.{}", p.code);
                }
            }
        }
    }

    #[test]
    fn the_fields_read_are_named_for_each_type() {
        let r = registry();
        let fields = r
            .of("Patient")
            .fields
            .as_ref()
            .expect("Patient reads named fields");
        for f in [
            "name",
            "birthDate",
            "gender",
            "identifier",
            "meta",
            "address",
            "deceased",
        ] {
            assert!(fields.iter().any(|x| x == f), "{f} in {fields:?}");
        }
        assert!(!fields.iter().any(|x| x == "text"), "{fields:?}");
    }
}
