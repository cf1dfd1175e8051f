//! FHIRPath Patch (R4 fhirpatch.html): a `Parameters` resource whose
//! `operation` parameters each `add`, `insert`, `delete`, `replace` or
//! `move` an element found by a FHIRPath `path`.
//!
//! [`read`] checks the document's shape (400 with what is wrong); [`apply`]
//! runs the operations in order on a resource's JSON (422 when a path
//! finds nothing, several things where one is needed, or an index is out
//! of range). Paths are evaluated by [`crate::fhirpath`] on the resource
//! as it is before each operation; the nodes it returns are located in the
//! JSON by identity, then changed. Whether an added element repeats, and
//! the shape of an anonymous (backbone) value given as parts, come from
//! the R4 definitions ([`crate::definitions`]). Elements left empty by a
//! delete are removed (FHIR JSON has no empty objects or arrays).

use axum::http::StatusCode;
use serde_json::{Map, Value};

use crate::fhirpath::{Expr, Item};
use crate::http::outcome::FhirError;

/// Most operations in one patch.
pub const OPERATIONS_MAX: usize = 1000;
/// Deepest nesting of parts in an anonymous value.
pub const PARTS_DEPTH_MAX: usize = 16;

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Adds element `name` with `value` to the element at `path`.
    Add,
    /// Inserts `value` at `index` into the list at `path`.
    Insert,
    /// Deletes the element at `path` (nothing when there is none).
    Delete,
    /// Replaces the element at `path` with `value`.
    Replace,
    /// Moves the item at `source` of the list at `path` to `destination`.
    Move,
}

/// A value to write: JSON as given by a `value[x]`, or an anonymous
/// element given as parts (each an element name and its value).
#[derive(Debug, Clone, PartialEq)]
pub enum PatchValue {
    /// A `value[x]`'s JSON.
    Json(Value),
    /// `part`s: element names and their values, in order.
    Parts(Vec<(String, PatchValue)>),
}

/// One operation, checked.
#[derive(Debug, Clone)]
pub struct Operation {
    /// What it does.
    pub kind: Kind,
    /// The FHIRPath `path`, as written.
    pub path: String,
    expr: Expr,
    /// `name` (add).
    pub name: Option<String>,
    /// `value` (add, insert, replace).
    pub value: Option<PatchValue>,
    /// `index` (insert).
    pub index: Option<usize>,
    /// `source` (move).
    pub source: Option<usize>,
    /// `destination` (move).
    pub destination: Option<usize>,
}

/// Whether a body is a FHIRPath Patch document (a `Parameters` resource).
pub fn is_fhirpath_patch(doc: &Value) -> bool {
    doc.get("resourceType").and_then(Value::as_str) == Some("Parameters")
}

fn shape(i: usize, msg: impl std::fmt::Display) -> FhirError {
    FhirError::invalid(format!("Parameters.parameter[{i}]: {msg}"))
}

fn unprocessable(msg: String) -> FhirError {
    FhirError::new(StatusCode::UNPROCESSABLE_ENTITY, "processing", msg)
}

/// The one `value[x]` of a parameter or part, if it has one.
fn value_x(o: &Map<String, Value>) -> Result<Option<Value>, String> {
    let mut found = o.iter().filter(|(k, _)| {
        k.strip_prefix("value")
            .is_some_and(|t| t.starts_with(|c: char| c.is_ascii_uppercase()))
    });
    match (found.next(), found.next()) {
        (None, _) => Ok(None),
        (Some((_, v)), None) => Ok(Some(v.clone())),
        (Some(_), Some(_)) => Err("has more than one value[x]".into()),
    }
}

/// The value of a part: its `value[x]`, or its own parts.
fn value_of(part: &Map<String, Value>, depth: usize) -> Result<Option<PatchValue>, String> {
    if let Some(v) = value_x(part)? {
        if part.contains_key("part") {
            return Err("has both a value[x] and parts".into());
        }
        return Ok(Some(PatchValue::Json(v)));
    }
    let Some(parts) = part.get("part") else {
        return Ok(None);
    };
    if depth >= PARTS_DEPTH_MAX {
        return Err(format!("nests parts deeper than {PARTS_DEPTH_MAX}"));
    }
    let parts = parts.as_array().ok_or("part is not an array")?;
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        let p = p.as_object().ok_or("a part is not an object")?;
        let name = p
            .get("name")
            .and_then(Value::as_str)
            .ok_or("a part has no name")?;
        let v = value_of(p, depth + 1)?.ok_or_else(|| format!("part {name:?} has no value"))?;
        out.push((name.to_owned(), v));
    }
    Ok(Some(PatchValue::Parts(out)))
}

/// Reads a FHIRPath Patch document: every parameter an `operation` with a
/// known `type`, a `path` that parses, and the parts its type needs.
pub fn read(doc: &Value) -> Result<Vec<Operation>, FhirError> {
    if !is_fhirpath_patch(doc) {
        return Err(FhirError::invalid(
            "a FHIRPath Patch is a Parameters resource",
        ));
    }
    let params = match doc.get("parameter") {
        None => return Ok(Vec::new()),
        Some(Value::Array(p)) => p,
        Some(_) => return Err(FhirError::invalid("Parameters.parameter is not an array")),
    };
    if params.len() > OPERATIONS_MAX {
        return Err(FhirError::invalid(format!(
            "the patch has {} operations, at most {OPERATIONS_MAX} are allowed",
            params.len()
        )));
    }
    params
        .iter()
        .enumerate()
        .map(|(i, p)| operation(i, p))
        .collect()
}

fn operation(i: usize, p: &Value) -> Result<Operation, FhirError> {
    let p = p.as_object().ok_or_else(|| shape(i, "is not an object"))?;
    if p.get("name").and_then(Value::as_str) != Some("operation") {
        return Err(shape(i, "is not named \"operation\""));
    }
    let parts = p
        .get("part")
        .and_then(Value::as_array)
        .ok_or_else(|| shape(i, "has no parts"))?;
    let mut by_name: Map<String, Value> = Map::new();
    for part in parts {
        let part = part
            .as_object()
            .ok_or_else(|| shape(i, "a part is not an object"))?;
        let name = part
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| shape(i, "a part has no name"))?;
        if by_name
            .insert(name.to_owned(), Value::Object(part.clone()))
            .is_some()
        {
            return Err(shape(i, format!("part {name:?} appears twice")));
        }
    }
    let text = |name: &str| -> Result<Option<String>, FhirError> {
        match by_name.get(name).and_then(Value::as_object) {
            None => Ok(None),
            Some(o) => match value_x(o).map_err(|e| shape(i, format!("{name} {e}")))? {
                Some(Value::String(s)) => Ok(Some(s)),
                _ => Err(shape(i, format!("{name} is not a string"))),
            },
        }
    };
    let number = |name: &str| -> Result<Option<usize>, FhirError> {
        match by_name.get(name).and_then(Value::as_object) {
            None => Ok(None),
            Some(o) => match value_x(o).map_err(|e| shape(i, format!("{name} {e}")))? {
                Some(Value::Number(n)) => n
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| shape(i, format!("{name} is not a non-negative integer"))),
                _ => Err(shape(i, format!("{name} is not an integer"))),
            },
        }
    };
    let kind = match text("type")?.as_deref() {
        Some("add") => Kind::Add,
        Some("insert") => Kind::Insert,
        Some("delete") => Kind::Delete,
        Some("replace") => Kind::Replace,
        Some("move") => Kind::Move,
        Some(other) => {
            return Err(shape(
                i,
                format!("type {other:?} is not add, insert, delete, replace or move"),
            ));
        }
        None => return Err(shape(i, "has no type")),
    };
    let path = text("path")?.ok_or_else(|| shape(i, "has no path"))?;
    let expr = Expr::parse(&path).map_err(|e| shape(i, format!("path {path:?}: {e}")))?;
    let value = match by_name.get("value").and_then(Value::as_object) {
        Some(o) => value_of(o, 0).map_err(|e| shape(i, format!("value {e}")))?,
        None => None,
    };
    let op = Operation {
        kind,
        path,
        expr,
        name: text("name")?,
        value,
        index: number("index")?,
        source: number("source")?,
        destination: number("destination")?,
    };
    let needs: &[(&str, bool)] = match kind {
        Kind::Add => &[("name", op.name.is_some()), ("value", op.value.is_some())],
        Kind::Insert => &[("index", op.index.is_some()), ("value", op.value.is_some())],
        Kind::Replace => &[("value", op.value.is_some())],
        Kind::Move => &[
            ("source", op.source.is_some()),
            ("destination", op.destination.is_some()),
        ],
        Kind::Delete => &[],
    };
    if let Some((missing, _)) = needs.iter().find(|(_, present)| !present) {
        return Err(shape(i, format!("a {kind:?} needs {missing}")));
    }
    Ok(op)
}

/// A step from a node to one inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// The steps from `root` to the node at `target` (by identity).
fn locate(root: &Value, target: *const Value, path: &mut Vec<Step>) -> bool {
    if std::ptr::eq(root, target) {
        return true;
    }
    match root {
        Value::Object(o) => o.iter().any(|(k, v)| {
            path.push(Step::Key(k.clone()));
            let found = locate(v, target, path);
            if !found {
                path.pop();
            }
            found
        }),
        Value::Array(a) => a.iter().enumerate().any(|(i, v)| {
            path.push(Step::Index(i));
            let found = locate(v, target, path);
            if !found {
                path.pop();
            }
            found
        }),
        _ => false,
    }
}

/// The steps to every node `op`'s path selects.
fn select(resource: &Value, op: &Operation) -> Result<Vec<Vec<Step>>, FhirError> {
    let items = op
        .expr
        .evaluate(resource)
        .map_err(|e| unprocessable(format!("the path {:?} fails: {e}", op.path)))?;
    let mut out = Vec::with_capacity(items.len());
    for item in &items {
        let Item::Node(node, _) = item else {
            return Err(unprocessable(format!(
                "the path {:?} gives a value, not an element of the resource",
                op.path
            )));
        };
        let mut steps = Vec::new();
        if !locate(resource, *node, &mut steps) {
            return Err(unprocessable(format!(
                "the path {:?} gives something outside the resource",
                op.path
            )));
        }
        out.push(steps);
    }
    Ok(out)
}

fn at_mut<'v>(root: &'v mut Value, steps: &[Step]) -> Option<&'v mut Value> {
    steps.iter().try_fold(root, |v, s| match s {
        Step::Key(k) => v.get_mut(k.as_str()),
        Step::Index(i) => v.get_mut(*i),
    })
}

/// The FHIR type of the node at `steps` ([`crate::definitions::type_of_node`]).
fn type_at(root: &Value, steps: &[Step]) -> Option<String> {
    use crate::definitions::{Walk, type_of_node};
    type_of_node(
        root,
        steps.iter().map(|s| match s {
            Step::Key(k) => Walk::Key(k),
            Step::Index(i) => Walk::Index(*i),
        }),
    )
}

/// A value's JSON, an anonymous one built as type `ty` (its repeating
/// elements as arrays).
fn build(value: &PatchValue, ty: &str) -> Value {
    match value {
        PatchValue::Json(v) => v.clone(),
        PatchValue::Parts(parts) => {
            let mut o = Map::new();
            for (name, v) in parts {
                let el = crate::definitions::r4().element(ty, name);
                let child = build(v, el.map_or("", |e| e.ty.as_str()));
                if el.is_some_and(|e| e.array) {
                    if let Value::Array(a) = o
                        .entry(name.clone())
                        .or_insert_with(|| Value::Array(Vec::new()))
                    {
                        a.push(child);
                    }
                } else {
                    o.insert(name.clone(), child);
                }
            }
            Value::Object(o)
        }
    }
}

/// The one node `op` needs, or 422.
fn one(found: Vec<Vec<Step>>, op: &Operation, what: &str) -> Result<Vec<Step>, FhirError> {
    let n = found.len();
    let mut it = found.into_iter();
    match (it.next(), n) {
        (Some(steps), 1) => Ok(steps),
        (None, _) => Err(unprocessable(format!(
            "no content found at {} when {what}",
            op.path
        ))),
        _ => Err(unprocessable(format!(
            "{} finds {n} elements; {what} needs exactly one",
            op.path
        ))),
    }
}

/// The list at `op`'s path: the array whose items it selects.
fn list(found: Vec<Vec<Step>>, op: &Operation, what: &str) -> Result<Vec<Step>, FhirError> {
    let mut parent: Option<Vec<Step>> = None;
    for mut steps in found {
        if !matches!(steps.last(), Some(Step::Index(_))) {
            return Err(unprocessable(format!(
                "{} is not a list; {what} needs one",
                op.path
            )));
        }
        steps.pop();
        if parent.as_ref().is_some_and(|p| *p != steps) {
            return Err(unprocessable(format!(
                "{} finds items of several lists; {what} needs one",
                op.path
            )));
        }
        parent = Some(steps);
    }
    parent.ok_or_else(|| unprocessable(format!("no list found at {} when {what}", op.path)))
}

/// Removes the node at `steps`, and every object or array that is left
/// empty above it.
fn remove(root: &mut Value, steps: &[Step]) {
    let Some((last, parent)) = steps.split_last() else {
        return;
    };
    if let Some(p) = at_mut(root, parent) {
        match (p, last) {
            (Value::Object(o), Step::Key(k)) => {
                o.shift_remove(k.as_str());
            }
            (Value::Array(a), Step::Index(i)) if *i < a.len() => {
                a.remove(*i);
            }
            _ => return,
        }
    }
    let empty = at_mut(root, parent).is_some_and(|p| match p {
        Value::Object(o) => o.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    });
    if empty && !parent.is_empty() {
        remove(root, parent);
    }
}

/// Runs `ops` in order on `resource`; on an error the resource may be
/// half patched (callers patch a copy and drop it).
pub fn apply(resource: &mut Value, ops: &[Operation]) -> Result<(), FhirError> {
    for op in ops {
        apply_one(resource, op)?;
    }
    Ok(())
}

fn apply_one(resource: &mut Value, op: &Operation) -> Result<(), FhirError> {
    let found = select(resource, op)?;
    match op.kind {
        Kind::Add => {
            let target = one(found, op, "adding")?;
            let name = op.name.as_deref().unwrap_or("");
            let ty = type_at(resource, &target).unwrap_or_default();
            let el = crate::definitions::r4().element(&ty, name).cloned();
            let Some(el) = el else {
                return Err(unprocessable(format!(
                    "{ty} has no element {name:?} (add at {})",
                    op.path
                )));
            };
            let value = op.value.as_ref().map_or(Value::Null, |v| build(v, &el.ty));
            let Some(Value::Object(o)) = at_mut(resource, &target) else {
                return Err(unprocessable(format!(
                    "{} is not an element that holds others (add)",
                    op.path
                )));
            };
            match (o.get_mut(name), el.array) {
                (Some(Value::Array(a)), true) => a.push(value),
                (None, true) => {
                    o.insert(name.to_owned(), Value::Array(vec![value]));
                }
                (None, false) => {
                    o.insert(name.to_owned(), value);
                }
                _ => {
                    return Err(unprocessable(format!(
                        "{}.{name} already has a value; use replace",
                        op.path
                    )));
                }
            }
        }
        Kind::Insert => {
            let at = list(found, op, "inserting")?;
            let ty = type_at(resource, &at).unwrap_or_default();
            let value = op.value.as_ref().map_or(Value::Null, |v| build(v, &ty));
            let index = op.index.unwrap_or(0);
            let Some(Value::Array(a)) = at_mut(resource, &at) else {
                return Err(unprocessable(format!("{} is not a list", op.path)));
            };
            if index > a.len() {
                return Err(unprocessable(format!(
                    "index {index} is beyond the {} items of {}",
                    a.len(),
                    op.path
                )));
            }
            a.insert(index, value);
        }
        Kind::Delete => match found.len() {
            0 => {}
            1 if found[0].is_empty() => {
                return Err(unprocessable(format!(
                    "{} is the resource itself; a patch changes its elements",
                    op.path
                )));
            }
            1 => remove(resource, &found[0]),
            n => {
                return Err(unprocessable(format!(
                    "{} finds {n} elements; delete takes one",
                    op.path
                )));
            }
        },
        Kind::Replace => {
            let target = one(found, op, "replacing")?;
            if target.is_empty() {
                return Err(unprocessable(format!(
                    "{} is the resource itself; a patch changes its elements",
                    op.path
                )));
            }
            let ty = type_at(resource, &target).unwrap_or_default();
            let value = op.value.as_ref().map_or(Value::Null, |v| build(v, &ty));
            if let Some(slot) = at_mut(resource, &target) {
                *slot = value;
            }
        }
        Kind::Move => {
            let at = list(found, op, "moving")?;
            let (from, to) = (op.source.unwrap_or(0), op.destination.unwrap_or(0));
            let Some(Value::Array(a)) = at_mut(resource, &at) else {
                return Err(unprocessable(format!("{} is not a list", op.path)));
            };
            if from >= a.len() || to >= a.len() {
                return Err(unprocessable(format!(
                    "move from {from} to {to} is outside the {} items of {}",
                    a.len(),
                    op.path
                )));
            }
            let item = a.remove(from);
            a.insert(to, item);
        }
    }
    Ok(())
}
