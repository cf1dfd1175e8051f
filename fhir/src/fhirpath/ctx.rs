//! What evaluation and the functions share: the environment (resource,
//! `$this`, `$index`, `$total`, the step budget and the evaluator itself),
//! navigation of the resource (paths, choice elements), singletons,
//! Booleans, type tests, lambdas, unions.

use std::cell::Cell;

use serde_json::Value;

use super::FhirPathError;
use super::compare::item_equals;
use super::limits::{ITEMS_MAX, STEPS_MAX};
use super::parse::{Node, TypeName};
use super::value::{Item, TemporalKind};

pub(super) type Out<'a> = Result<Vec<Item<'a>>, FhirPathError>;

/// What one evaluation shares: the resource, the variables of the
/// innermost lambda, and the step budget.
pub(super) struct Env<'a, 'e> {
    /// `%resource`.
    pub(super) resource: &'a Value,
    /// `$this` of the innermost lambda.
    pub(super) this: Option<&'e Item<'a>>,
    /// `$index` of the innermost lambda.
    pub(super) index: Option<i64>,
    /// `$total` of `aggregate`.
    pub(super) total: Option<&'e [Item<'a>]>,
    /// Steps taken, against [`STEPS_MAX`].
    pub(super) steps: &'e Cell<u64>,
    /// The evaluator (`eval::eval`), so that the functions evaluate their
    /// arguments without depending on the module that calls them.
    pub(super) eval: EvalFn,
}

/// The evaluator's signature.
pub(super) type EvalFn = for<'a, 'f> fn(&Node, &[Item<'a>], &Env<'a, 'f>) -> Out<'a>;

/// Evaluates `n` on `focus` with the environment's evaluator.
pub(super) fn run<'a>(n: &Node, focus: &[Item<'a>], env: &Env<'a, '_>) -> Out<'a> {
    (env.eval)(n, focus, env)
}

impl<'a, 'e> Env<'a, 'e> {
    pub(super) fn with_this<'f>(&'f self, this: &'f Item<'a>, index: i64) -> Env<'a, 'f>
    where
        'e: 'f,
    {
        Env {
            resource: self.resource,
            this: Some(this),
            index: Some(index),
            total: self.total,
            steps: self.steps,
            eval: self.eval,
        }
    }

    pub(super) fn step(&self, n: usize) -> Result<(), FhirPathError> {
        let s = self.steps.get() + 1 + n as u64;
        self.steps.set(s);
        if s > STEPS_MAX {
            return Err(FhirPathError::execution(format!(
                "more than {STEPS_MAX} steps"
            )));
        }
        if n > ITEMS_MAX {
            return Err(FhirPathError::execution(format!(
                "a collection of more than {ITEMS_MAX} items"
            )));
        }
        Ok(())
    }
}

pub(super) fn resource_type(v: &Value) -> Option<&str> {
    match v {
        Value::Object(o) => field(o, "resourceType").and_then(Value::as_str),
        _ => None,
    }
}

/// A member of an object, by a linear scan: FHIR objects have few
/// members, and comparing their names costs less than hashing one.
pub(super) fn field<'v>(o: &'v serde_json::Map<String, Value>, name: &str) -> Option<&'v Value> {
    o.iter().find(|(k, _)| k.as_str() == name).map(|(_, v)| v)
}

/// The FHIR primitive type names, as a choice element's suffix writes
/// them (capitalised).
pub(super) const PRIMITIVES: [&str; 20] = [
    "Boolean",
    "Integer",
    "Decimal",
    "String",
    "Uri",
    "Url",
    "Canonical",
    "Code",
    "Id",
    "Markdown",
    "Base64Binary",
    "Instant",
    "Date",
    "DateTime",
    "Time",
    "Oid",
    "Uuid",
    "PositiveInt",
    "UnsignedInt",
    "Integer64",
];

/// The FHIR type a choice element's suffix names (`DateTime` ->
/// `dateTime`, `Quantity` stays).
pub(super) fn choice_type(suffix: &str) -> &str {
    match PRIMITIVES.iter().position(|p| *p == suffix) {
        Some(i) => PRIMITIVE_NAMES[i],
        None => suffix,
    }
}

/// [`PRIMITIVES`] as FHIR names them.
const PRIMITIVE_NAMES: [&str; 20] = [
    "boolean",
    "integer",
    "decimal",
    "string",
    "uri",
    "url",
    "canonical",
    "code",
    "id",
    "markdown",
    "base64Binary",
    "instant",
    "date",
    "dateTime",
    "time",
    "oid",
    "uuid",
    "positiveInt",
    "unsignedInt",
    "integer64",
];

/// Pushes `v` (flattening an array) as nodes of type `ty`.
pub(super) fn push_node<'a>(out: &mut Vec<Item<'a>>, v: &'a Value, ty: Option<&'a str>) {
    match v {
        Value::Array(items) => {
            for i in items {
                let t = resource_type(i).or(ty);
                out.push(Item::Node(i, t));
            }
        }
        Value::Null => {}
        _ => out.push(Item::Node(v, resource_type(v).or(ty))),
    }
}

/// The members named `name` of every item (choice elements matched by
/// prefix).
pub(super) fn members<'a>(focus: &[Item<'a>], name: &str) -> Vec<Item<'a>> {
    let mut out = Vec::new();
    for it in focus {
        let Some(Value::Object(o)) = it.node() else {
            continue;
        };
        // One pass: the member itself, or else its choices (`valueQuantity`
        // for `value`).
        let mut choices: Vec<(&'a Value, &'a str)> = Vec::new();
        let mut exact = None;
        for (k, v) in o {
            match k.strip_prefix(name) {
                Some("") => {
                    exact = Some(v);
                    break;
                }
                Some(suffix) if suffix.starts_with(|c: char| c.is_ascii_uppercase()) => {
                    choices.push((v, suffix));
                }
                _ => {}
            }
        }
        match exact {
            Some(v) => push_node(&mut out, v, None),
            None => {
                for (v, suffix) in choices {
                    push_node(&mut out, v, Some(choice_type(suffix)));
                }
            }
        }
    }
    out
}

/// The one item of `c`, `None` when empty, an error when more.
pub(super) fn single<'a>(c: &[Item<'a>]) -> Result<Option<Item<'a>>, FhirPathError> {
    match c {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        _ => Err(FhirPathError::execution(format!(
            "a collection of {} items where one is required",
            c.len()
        ))),
    }
}

pub(super) fn single_integer(c: &[Item]) -> Result<Option<i64>, FhirPathError> {
    match single(c)?.and_then(|i| i.system()) {
        None => Ok(None),
        Some(Item::Integer(i)) => Ok(Some(i)),
        Some(_) => Err(FhirPathError::execution("an integer is required")),
    }
}

pub(super) fn single_string(c: &[Item]) -> Result<Option<String>, FhirPathError> {
    match single(c)?.and_then(|i| i.system()) {
        None => Ok(None),
        Some(Item::String(s)) => Ok(Some(s)),
        Some(_) => Err(FhirPathError::execution("a string is required")),
    }
}

/// A collection as a Boolean: empty is `None`, one Boolean is its value,
/// one other item is `true`, more is an error.
pub(super) fn boolean(c: &[Item]) -> Result<Option<bool>, FhirPathError> {
    match single(c)? {
        None => Ok(None),
        Some(i) => match i.system() {
            Some(Item::Boolean(b)) => Ok(Some(b)),
            _ => Ok(Some(true)),
        },
    }
}

pub(super) fn bools<'a>(b: Option<bool>) -> Vec<Item<'a>> {
    b.map(Item::Boolean).into_iter().collect()
}

pub(super) fn is_type(item: &Item, ty: &TypeName) -> bool {
    let ns = ty.namespace.as_deref();
    let name = ty.name.as_str();
    match item {
        Item::Node(v, t) => {
            if ns == Some("System") {
                return false;
            }
            if let Some(t) = t {
                if *t == name {
                    return true;
                }
                // Profiles of primitives: code, id, uri… are strings.
                return false;
            }
            match v {
                Value::Bool(_) => name == "boolean",
                Value::String(_) => name == "string",
                Value::Number(n) => {
                    if n.to_string().contains(['.', 'e', 'E']) {
                        name == "decimal"
                    } else {
                        name == "integer"
                    }
                }
                Value::Object(o) => {
                    (name == "Quantity" && o.get("value").is_some_and(Value::is_number))
                        || (name == "Resource" || name == "DomainResource")
                            && o.contains_key("resourceType")
                }
                _ => false,
            }
        }
        Item::Resolved(t) => t == name || name == "Resource" || name == "DomainResource",
        other => {
            if ns == Some("FHIR") {
                return false;
            }
            matches!(
                (other, name),
                (Item::Boolean(_), "Boolean")
                    | (Item::String(_), "String")
                    | (Item::Integer(_), "Integer")
                    | (Item::Decimal(_), "Decimal")
                    | (Item::Quantity(..), "Quantity")
            ) || matches!(other, Item::Temporal(t) if matches!((t.kind, name),
                (TemporalKind::Date, "Date") | (TemporalKind::DateTime, "DateTime") | (TemporalKind::Time, "Time")))
        }
    }
}

/// Evaluates a lambda argument on each item of `input` with `$this` and
/// `$index` bound.
pub(super) fn per_item<'a>(
    arg: &Node,
    input: &[Item<'a>],
    env: &Env<'a, '_>,
    mut f: impl FnMut(usize, &Item<'a>, Vec<Item<'a>>) -> Result<(), FhirPathError>,
) -> Result<(), FhirPathError> {
    for (k, it) in input.iter().enumerate() {
        let sub = env.with_this(it, k as i64);
        let r = run(arg, std::slice::from_ref(it), &sub)?;
        f(k, it, r)?;
    }
    Ok(())
}

pub(super) fn type_arg(args: &[Node]) -> Result<TypeName, FhirPathError> {
    match args.first() {
        Some(Node::Ident(name)) => Ok(TypeName {
            namespace: None,
            name: name.clone(),
        }),
        Some(Node::Member(ns, name)) => match ns.as_ref() {
            Node::Ident(n) => Ok(TypeName {
                namespace: Some(n.clone()),
                name: name.clone(),
            }),
            _ => Err(FhirPathError::Semantic("a type name is required".into())),
        },
        _ => Err(FhirPathError::Semantic("a type name is required".into())),
    }
}

pub(super) fn union<'a>(mut l: Vec<Item<'a>>, r: &[Item<'a>]) -> Vec<Item<'a>> {
    l.extend(r.iter().cloned());
    distinct(l)
}

pub(super) fn distinct<'a>(c: Vec<Item<'a>>) -> Vec<Item<'a>> {
    // Items equal only when their keys are equal, so a hash set of keys
    // does the work in linear time; equal keys are confirmed with `=`.
    let mut seen: std::collections::HashMap<String, Vec<usize>> = std::collections::HashMap::new();
    let mut out: Vec<Item<'a>> = Vec::with_capacity(c.len());
    for i in c {
        let key = distinct_key(&i);
        let same = seen.entry(key).or_default();
        if !same.iter().any(|&k| item_equals(&out[k], &i) == Some(true)) {
            same.push(out.len());
            out.push(i);
        }
    }
    out
}

/// A key equal for items `=` can call equal (numbers by value, strings
/// as they are, temporals by their parts, nodes by their JSON).
fn distinct_key(i: &Item) -> String {
    match i.system() {
        Some(Item::Boolean(b)) => format!("b{b}"),
        Some(Item::Integer(n)) => format!("n{}", n as f64),
        Some(Item::Decimal(d)) => format!("n{d}"),
        Some(Item::String(s)) => format!("s{s}"),
        Some(Item::Temporal(t)) => format!("t{:?}", t.sort_parts()),
        Some(Item::Quantity(..)) => "q".to_owned(),
        _ => match i {
            Item::Node(v, _) => format!("j{v}"),
            Item::Resolved(t) => format!("r{t}"),
            _ => String::new(),
        },
    }
}
