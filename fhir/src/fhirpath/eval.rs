//! Evaluation: every node of the grammar on a collection — paths,
//! literals, variables, operators, calls.

use std::cell::Cell;

use serde_json::Value;

use super::FhirPathError;
use super::compare::{collections_equal, collections_equivalent, compare, item_equals};
use super::ctx::{
    Env, Out, boolean, bools, is_type, members, resource_type, single, single_integer, union,
};
use super::functions::call;
use super::math::arithmetic;
use super::parse::{Literal, Node};
use super::value::{Item, Temporal};

/// Evaluates `root` on `resource`.
pub(crate) fn evaluate<'a>(root: &Node, resource: &'a Value) -> Out<'a> {
    let steps = Cell::new(0);
    let top = Item::Node(resource, resource_type(resource));
    let env = Env {
        resource,
        this: Some(&top),
        index: None,
        total: None,
        steps: &steps,
        eval,
    };
    let focus = vec![top.clone()];
    eval(root, &focus, &env)
}

/// Evaluates `root` with `focus` as the input and `$this`, and `resource`
/// as `%resource` (a composite search parameter's components, evaluated
/// on each item of the parameter's own expression).
pub(crate) fn evaluate_on<'a>(root: &Node, resource: &'a Value, focus: &Item<'a>) -> Out<'a> {
    let steps = Cell::new(0);
    let env = Env {
        resource,
        this: Some(focus),
        index: None,
        total: None,
        steps: &steps,
        eval,
    };
    eval(root, std::slice::from_ref(focus), &env)
}

pub(super) fn eval<'a>(n: &Node, focus: &[Item<'a>], env: &Env<'a, '_>) -> Out<'a> {
    env.step(focus.len())?;
    Ok(match n {
        Node::Literal(l) => vec![literal(l)?],
        Node::Empty => Vec::new(),
        Node::Ident(name) => {
            // A type name at the start selects the context when it is of
            // that type.
            let mut out = Vec::new();
            let mut matched_type = false;
            for it in focus {
                if let Item::Node(v, _) = it
                    && let Some(t) = resource_type(v)
                    && (t == name.as_str() || name == "Resource" || name == "DomainResource")
                {
                    out.push(it.clone());
                    matched_type = true;
                }
            }
            if matched_type {
                out
            } else {
                members(focus, name)
            }
        }
        Node::Member(target, name) => {
            let t = eval(target, focus, env)?;
            members(&t, name)
        }
        Node::Index(target, idx) => {
            let t = eval(target, focus, env)?;
            let i = eval(idx, focus, env)?;
            match single_integer(&i)? {
                Some(i) if i >= 0 => t.into_iter().nth(i as usize).into_iter().collect(),
                _ => Vec::new(),
            }
        }
        Node::Negate(target, negative) => {
            let t = eval(target, focus, env)?;
            let Some(one) = single(&t)? else {
                return Ok(Vec::new());
            };
            if !negative {
                return Ok(vec![one]);
            }
            match one.system() {
                Some(Item::Integer(i)) => i.checked_neg().map(Item::Integer).into_iter().collect(),
                Some(Item::Decimal(d)) => vec![Item::Decimal(-d)],
                Some(Item::Quantity(v, u)) => vec![Item::Quantity(-v, u)],
                _ => {
                    return Err(FhirPathError::execution(
                        "unary minus on a value that is not a number",
                    ));
                }
            }
        }
        Node::Var(v) => match v.as_str() {
            "this" => env.this.cloned().into_iter().collect(),
            "index" => env.index.map(Item::Integer).into_iter().collect(),
            _ => env.total.map(<[Item]>::to_vec).unwrap_or_default(),
        },
        Node::Env(name) => match name.as_str() {
            "resource" | "context" | "rootResource" => {
                vec![Item::Node(env.resource, resource_type(env.resource))]
            }
            "ucum" => vec![Item::String("http://unitsofmeasure.org".into())],
            "sct" => vec![Item::String("http://snomed.info/sct".into())],
            "loinc" => vec![Item::String("http://loinc.org".into())],
            other => {
                if let Some(vs) = other.strip_prefix("vs-") {
                    vec![Item::String(format!("http://hl7.org/fhir/ValueSet/{vs}"))]
                } else if let Some(ext) = other.strip_prefix("ext-") {
                    vec![Item::String(format!(
                        "http://hl7.org/fhir/StructureDefinition/{ext}"
                    ))]
                } else {
                    return Err(FhirPathError::execution(format!(
                        "unknown variable %{other}"
                    )));
                }
            }
        },
        Node::TypeOp(target, is, ty) => {
            let t = eval(target, focus, env)?;
            if *is {
                match single(&t)? {
                    None => Vec::new(),
                    Some(one) => vec![Item::Boolean(is_type(&one, ty))],
                }
            } else {
                match single(&t)? {
                    Some(one) if is_type(&one, ty) => vec![one],
                    _ => Vec::new(),
                }
            }
        }
        Node::Binary(op, a, b) => {
            let out = binary(op, a, b, focus, env)?;
            env.step(out.len())?;
            out
        }
        Node::Call(target, name, args) => {
            let input = match target {
                Some(t) => eval(t, focus, env)?,
                None => focus.to_vec(),
            };
            let out = call(name, input, args, focus, env)?;
            env.step(out.len())?;
            out
        }
    })
}

pub(super) fn literal<'a>(l: &Literal) -> Result<Item<'a>, FhirPathError> {
    Ok(match l {
        Literal::Boolean(b) => Item::Boolean(*b),
        Literal::String(s) => Item::String(s.clone()),
        Literal::Integer(i) => Item::Integer(*i),
        Literal::Decimal(d) => Item::Decimal(
            d.parse()
                .map_err(|_| FhirPathError::execution(format!("{d} is not a decimal")))?,
        ),
        Literal::Temporal(s) => Item::Temporal(
            Temporal::parse(s, false)
                .ok_or_else(|| FhirPathError::execution(format!("@{s} is not a date or time")))?,
        ),
        Literal::Quantity(n, u) => Item::Quantity(
            n.parse()
                .map_err(|_| FhirPathError::execution(format!("{n} is not a number")))?,
            u.clone(),
        ),
    })
}

pub(super) fn binary<'a>(
    op: &str,
    a: &Node,
    b: &Node,
    focus: &[Item<'a>],
    env: &Env<'a, '_>,
) -> Out<'a> {
    // Boolean operators may not need their right side.
    if matches!(op, "and" | "or" | "implies") {
        let l = boolean(&eval(a, focus, env)?)?;
        match (op, l) {
            ("and", Some(false)) => return Ok(bools(Some(false))),
            ("or", Some(true)) => return Ok(bools(Some(true))),
            ("implies", Some(false)) => return Ok(bools(Some(true))),
            _ => {}
        }
        let r = boolean(&eval(b, focus, env)?)?;
        return Ok(bools(match op {
            "and" => match (l, r) {
                (Some(true), Some(true)) => Some(true),
                (_, Some(false)) => Some(false),
                _ => None,
            },
            "or" => match (l, r) {
                (Some(false), Some(false)) => Some(false),
                (_, Some(true)) => Some(true),
                _ => None,
            },
            _ => match (l, r) {
                (Some(true), r) => r,
                (None, Some(true)) => Some(true),
                _ => None,
            },
        }));
    }
    let l = eval(a, focus, env)?;
    let r = eval(b, focus, env)?;
    Ok(match op {
        "xor" => bools(boolean(&l)?.zip(boolean(&r)?).map(|(p, q)| p != q)),
        "|" => union(l, &r),
        "=" => bools(collections_equal(&l, &r)),
        "!=" => bools(collections_equal(&l, &r).map(|e| !e)),
        "~" => bools(Some(collections_equivalent(&l, &r))),
        "!~" => bools(Some(!collections_equivalent(&l, &r))),
        "<" | ">" | "<=" | ">=" => {
            let (Some(x), Some(y)) = (single(&l)?, single(&r)?) else {
                return Ok(Vec::new());
            };
            bools(compare(&x, &y)?.map(|o| match op {
                "<" => o.is_lt(),
                ">" => o.is_gt(),
                "<=" => o.is_le(),
                _ => o.is_ge(),
            }))
        }
        "in" | "contains" => {
            let (item, coll) = if op == "in" { (&l, &r) } else { (&r, &l) };
            match single(item)? {
                None => Vec::new(),
                Some(x) => bools(Some(coll.iter().any(|y| item_equals(&x, y) == Some(true)))),
            }
        }
        "&" => {
            let p = single(&l)?.and_then(|i| i.render()).unwrap_or_default();
            let q = single(&r)?.and_then(|i| i.render()).unwrap_or_default();
            vec![Item::String(p + &q)]
        }
        _ => arithmetic(op, &l, &r)?,
    })
}
