//! Validation of a resource against the R4 base definitions.
//!
//! Two layers. The official R4 JSON Schema (built in, see
//! [`crate::definitions`]) checked by the `jsonschema` crate gives element
//! names, JSON types, primitive formats (its regexes) and the codes of
//! required bindings; a validator is compiled per resource type on first
//! use. Then what the schema does not say and clients get wrong: empty
//! objects, arrays and strings; reference formats; `_element` primitive
//! extensions that do not line up with their values; contained resources
//! without an id or with their own contained. A problem inside a nested
//! resource (contained, a Bundle entry, a Parameters resource) is found
//! again by that resource's own type's validator, so it is named exactly.
//!
//! Every problem has a FHIRPath `expression` (`Patient.name[0].given`).
//! At most [`PROBLEMS_MAX`] are reported.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use serde_json::Value;

use crate::definitions;
use crate::http::outcome::{FhirError, Issue};
use crate::types::{is_resource_type, is_valid_id};

/// Most problems reported for one resource.
pub const PROBLEMS_MAX: usize = 100;
/// Deepest nesting of resources inside resources that is checked.
pub const NESTING_MAX: usize = 8;

/// What a write does about problems (setting `validation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// An invalid resource is refused (400), nothing written.
    #[default]
    Strict,
    /// It is stored; its problems come back as warnings.
    Lenient,
    /// Not checked.
    Off,
}

/// One problem: where (FHIRPath) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The FHIRPath of the element, from the resource's type.
    pub expression: String,
    /// What is wrong, for a person.
    pub message: String,
}

type Validators = RwLock<HashMap<String, Arc<jsonschema::Validator>>>;

/// The compiled validator of `ty` (compiled on first use).
fn validator(ty: &str) -> Option<Arc<jsonschema::Validator>> {
    static CACHE: OnceLock<Validators> = OnceLock::new();
    let cache = CACHE.get_or_init(|| RwLock::new(HashMap::new()));
    if let Some(v) = cache.read().ok()?.get(ty) {
        return Some(v.clone());
    }
    let defs = definitions::schema()?.get("definitions")?;
    defs.get(ty)?;
    let schema = serde_json::json!({
        "$schema": "http://json-schema.org/draft-06/schema#",
        "$ref": format!("#/definitions/{ty}"),
        "definitions": defs,
    });
    let compiled = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft6)
        .build(&schema)
        .ok()?;
    let compiled = Arc::new(compiled);
    cache.write().ok()?.insert(ty.to_owned(), compiled.clone());
    Some(compiled)
}

/// One validator for every type: the whole R4 schema (its `oneOf` over
/// the resource types), compiled once. Valid resources, the common case,
/// pass it alone; the per-type validators, whose errors name the
/// problems, are compiled only for types that had an invalid write.
fn whole() -> Option<&'static jsonschema::Validator> {
    static WHOLE: OnceLock<Option<jsonschema::Validator>> = OnceLock::new();
    WHOLE
        .get_or_init(|| {
            jsonschema::options()
                .with_draft(jsonschema::Draft::Draft6)
                .build(definitions::schema()?)
                .ok()
        })
        .as_ref()
}

/// Reads the schema and compiles [`whole`] now (a server calls it on a
/// thread of its own at start, so the first write does not wait).
pub fn warm() {
    let _ = whole();
}

/// A step into a JSON document (a key borrowed from it while walking,
/// owned when read from a pointer).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step<'a> {
    Key(Cow<'a, str>),
    Index(usize),
}

/// The steps of a JSON Pointer.
fn pointer_steps(pointer: &str) -> Vec<Step<'static>> {
    pointer
        .split('/')
        .skip(1)
        .map(|s| {
            let s = s.replace("~1", "/").replace("~0", "~");
            match s.parse::<usize>() {
                Ok(i) => Step::Index(i),
                Err(_) => Step::Key(Cow::Owned(s)),
            }
        })
        .collect()
}

/// `Type.a[0].b` for the steps from a resource of type `ty`.
fn expression(ty: &str, steps: &[Step<'_>]) -> String {
    let mut out = ty.to_owned();
    for s in steps {
        match s {
            Step::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn at<'v>(root: &'v Value, steps: &[Step<'_>]) -> Option<&'v Value> {
    steps.iter().try_fold(root, |v, s| match s {
        Step::Key(k) => v.get(k.as_ref()),
        Step::Index(i) => v.get(*i),
    })
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

/// The FHIR type of the element at `steps` (for messages).
fn type_of_element(root: &Value, steps: &[Step<'_>]) -> Option<String> {
    definitions::type_of_node(
        root,
        steps.iter().map(|s| match s {
            Step::Key(k) => definitions::Walk::Key(k),
            Step::Index(i) => definitions::Walk::Index(*i),
        }),
    )
}

/// Every problem of `resource` (a JSON object with a `resourceType`).
pub fn problems(resource: &Value) -> Vec<Problem> {
    let mut out = Vec::new();
    check(resource, "", 0, &mut out);
    out.truncate(PROBLEMS_MAX);
    out
}

/// Checks the resource at `root`, naming problems from `prefix` (empty:
/// from its own type).
fn check(root: &Value, prefix: &str, depth: usize, out: &mut Vec<Problem>) {
    let Some(ty) = root.get("resourceType").and_then(Value::as_str) else {
        out.push(Problem {
            expression: prefix.to_owned(),
            message: "a resource needs a resourceType".into(),
        });
        return;
    };
    if !is_resource_type(ty) {
        out.push(Problem {
            expression: prefix.to_owned(),
            message: format!("{ty:?} is not an R4 resource type"),
        });
        return;
    }
    let name = |steps: &[Step<'_>]| {
        if prefix.is_empty() {
            expression(ty, steps)
        } else {
            let e = expression(ty, steps);
            format!("{prefix}{}", &e[ty.len()..])
        }
    };
    // The fast path: most writes are valid, and `is_valid` stops early.
    let valid = whole().is_some_and(|w| w.is_valid(root));
    if let Some(v) = (!valid).then(|| validator(ty)).flatten() {
        let mut nested_seen: Vec<Vec<Step<'static>>> = Vec::new();
        for e in v.iter_errors(root) {
            if out.len() >= PROBLEMS_MAX {
                return;
            }
            let mut steps = pointer_steps(&e.instance_path().to_string());
            // A missing element is named by its own path.
            if let jsonschema::error::ValidationErrorKind::Required { property } = e.kind()
                && let Some(p) = property.as_str()
            {
                steps.push(Step::Key(Cow::Owned(p.to_owned())));
            }
            // A resource inside this one: checked on its own below.
            if let Some(nested) = nested_prefix(root, &steps) {
                if !nested_seen.contains(&nested) {
                    nested_seen.push(nested);
                }
                continue;
            }
            if null_with_extension(root, &steps, e.instance()) {
                continue;
            }
            let message = describe(root, &steps, &e);
            out.push(Problem {
                expression: name(&steps),
                message,
            });
        }
        for steps in nested_seen {
            if let Some(inner) = at(root, &steps) {
                if depth >= NESTING_MAX {
                    out.push(Problem {
                        expression: name(&steps),
                        message: format!("resources nest deeper than {NESTING_MAX}"),
                    });
                } else {
                    check(inner, &name(&steps), depth + 1, out);
                }
            }
        }
    }
    let mut steps = Vec::new();
    beyond_schema(root, ty, &mut steps, &name, out);
}

/// Whether a schema complaint is about a `null` that FHIR JSON allows: a
/// value of a primitive array whose `_k` entry carries its extensions, or
/// an entry of `_k` for a value that has none.
fn null_with_extension(root: &Value, steps: &[Step<'_>], instance: &Value) -> bool {
    let (Some(Step::Index(i)), Some(Step::Key(k))) = (
        steps.last(),
        steps.len().checked_sub(2).and_then(|n| steps.get(n)),
    ) else {
        return false;
    };
    if !instance.is_null() {
        return false;
    }
    let Some(parent) = at(root, &steps[..steps.len() - 2]) else {
        return false;
    };
    match k.strip_prefix('_') {
        Some(_) => true,
        None => parent
            .get(format!("_{k}").as_str())
            .and_then(|x| x.get(*i))
            .is_some_and(|x| !x.is_null()),
    }
}

/// The steps to the outermost resource nested in `root` on the way to
/// `steps` (not `root` itself), if any: it is checked whole on its own,
/// the resources inside it included.
fn nested_prefix(root: &Value, steps: &[Step<'static>]) -> Option<Vec<Step<'static>>> {
    (1..=steps.len())
        .find(|&n| {
            at(root, &steps[..n])
                .and_then(|v| v.get("resourceType"))
                .is_some()
        })
        .map(|n| steps[..n].to_vec())
}

fn describe(root: &Value, steps: &[Step<'_>], e: &jsonschema::ValidationError<'_>) -> String {
    use jsonschema::error::ValidationErrorKind as K;
    let value = e.instance();
    match e.kind() {
        K::AdditionalProperties { unexpected } => {
            let ty = type_of_element(root, steps).unwrap_or_default();
            format!(
                "{} {} not an element of {ty}",
                unexpected
                    .iter()
                    .map(|u| format!("{u:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if unexpected.len() == 1 { "is" } else { "are" }
            )
        }
        K::Pattern { .. } => {
            let ty = type_of_element(root, steps).unwrap_or_else(|| "value".into());
            format!("{} is not a valid {ty}", short(value))
        }
        K::Enum { options } => format!(
            "{} is not one of the codes allowed here ({})",
            short(value),
            options
                .as_array()
                .map(|o| o.iter().map(short).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        ),
        K::Required { .. } => "is required (R4 gives it at least one value)".to_owned(),
        K::Type { kind } => format!("{} is not of JSON type {kind:?}", short(value)),
        K::Constant { expected_value } => {
            format!("{} should be {}", short(value), short(expected_value))
        }
        _ => e.to_string(),
    }
}

fn problem(out: &mut Vec<Problem>, expression: String, message: impl Into<String>) {
    if out.len() < PROBLEMS_MAX {
        out.push(Problem {
            expression,
            message: message.into(),
        });
    }
}

/// What the schema does not check, walking the resource with its types.
fn beyond_schema<'v>(
    node: &'v Value,
    ty: &str,
    steps: &mut Vec<Step<'v>>,
    name: &dyn Fn(&[Step<'_>]) -> String,
    out: &mut Vec<Problem>,
) {
    match node {
        Value::Number(n) if matches!(ty, "integer" | "positiveInt" | "unsignedInt") => {
            let whole = n
                .as_i64()
                .map(|v| (v, true))
                .or_else(|| n.as_u64().map(|_| (1, true)));
            let why = match (whole, ty) {
                (None, _) => Some(format!("{n} is not a whole number ({ty})")),
                (Some((v, _)), "positiveInt") if v < 1 => {
                    Some(format!("{n} is not a positiveInt (1 or more)"))
                }
                (Some((v, _)), "unsignedInt") if v < 0 => {
                    Some(format!("{n} is not an unsignedInt (0 or more)"))
                }
                _ => None,
            };
            if let Some(why) = why {
                problem(out, name(steps), why);
            }
        }
        Value::String(s) if s.is_empty() => problem(
            out,
            name(steps),
            "an empty string is not a value; leave the element out",
        ),
        Value::Array(items) => {
            if items.is_empty() {
                problem(out, name(steps), "an empty array; leave the element out");
            }
            for (i, x) in items.iter().enumerate() {
                steps.push(Step::Index(i));
                beyond_schema(x, ty, steps, name, out);
                steps.pop();
            }
        }
        Value::Object(o) => {
            if o.is_empty() {
                problem(out, name(steps), "an empty object; leave the element out");
                return;
            }
            // A nested resource is checked whole by `check`.
            if !steps.is_empty() && o.contains_key("resourceType") {
                return;
            }
            // Extension.url is 1..1, which the schema leaves out (it is
            // an attribute in XML).
            if ty == "Extension" && !o.contains_key("url") {
                steps.push(Step::Key("url".into()));
                problem(out, name(steps), "an extension needs its url");
                steps.pop();
            }
            if ty == "Reference"
                && let Some(Value::String(r)) = o.get("reference")
                && let Err(why) = reference_format(r)
            {
                steps.push(Step::Key("reference".into()));
                problem(out, name(steps), why);
                steps.pop();
            }
            let mut choices: Vec<&str> = Vec::new();
            for k in o.keys() {
                if let Some(base) = choice_of(ty, k) {
                    if choices.contains(&base) {
                        problem(
                            out,
                            name(steps),
                            format!("{base}[x] has more than one type here; it takes one"),
                        );
                    }
                    choices.push(base);
                }
            }
            for (k, v) in o {
                if out.len() >= PROBLEMS_MAX {
                    return;
                }
                if let Some(base) = k.strip_prefix('_') {
                    primitive_extension(o, k, base, v, steps, name, out);
                }
                if k == "contained" {
                    contained(v, steps, name, out);
                }
                let child = definitions::r4()
                    .element(ty, k.strip_prefix('_').unwrap_or(k))
                    .map(|e| {
                        if k.starts_with('_') {
                            "Element"
                        } else {
                            e.ty.as_str()
                        }
                    })
                    .unwrap_or("");
                steps.push(Step::Key(Cow::Borrowed(k)));
                beyond_schema(v, child, steps, name, out);
                steps.pop();
            }
        }
        _ => {}
    }
}

/// FHIR datatypes a choice element (`value[x]`) may take, as suffixes.
const CHOICE_TYPES: &[&str] = &[
    "Base64Binary",
    "Boolean",
    "Canonical",
    "Code",
    "Date",
    "DateTime",
    "Decimal",
    "Id",
    "Instant",
    "Integer",
    "Markdown",
    "Oid",
    "PositiveInt",
    "String",
    "Time",
    "UnsignedInt",
    "Uri",
    "Url",
    "Uuid",
    "Address",
    "Age",
    "Annotation",
    "Attachment",
    "CodeableConcept",
    "Coding",
    "ContactPoint",
    "Count",
    "Distance",
    "Duration",
    "HumanName",
    "Identifier",
    "Money",
    "Period",
    "Quantity",
    "Range",
    "Ratio",
    "Reference",
    "SampledData",
    "Signature",
    "Timing",
    "ContactDetail",
    "Contributor",
    "DataRequirement",
    "Expression",
    "ParameterDefinition",
    "RelatedArtifact",
    "TriggerDefinition",
    "UsageContext",
    "Dosage",
    "Meta",
];

/// The choice element a member of type `ty` is a form of (`deceased` for
/// `deceasedBoolean`), when it is one.
fn choice_of<'k>(ty: &str, key: &'k str) -> Option<&'k str> {
    if !key.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    CHOICE_TYPES.iter().find_map(|t| {
        let base = key.strip_suffix(t)?;
        (!base.is_empty() && definitions::r4().element(ty, key).is_some()).then_some(base)
    })
}

/// `_k` beside `k`: as an array, one entry (or null) per value.
fn primitive_extension<'v>(
    o: &serde_json::Map<String, Value>,
    k: &'v str,
    base: &str,
    v: &Value,
    steps: &mut Vec<Step<'v>>,
    name: &dyn Fn(&[Step<'_>]) -> String,
    out: &mut Vec<Problem>,
) {
    match (v, o.get(base)) {
        // Trailing entries without extensions may be left out (official
        // examples do); more entries than values may not.
        (Value::Array(ext), Some(Value::Array(values))) if ext.len() > values.len() => {
            steps.push(Step::Key(Cow::Borrowed(k)));
            problem(
                out,
                name(steps),
                format!(
                    "{k} has {} entries but {base} has only {}: one (or null) per value",
                    ext.len(),
                    values.len()
                ),
            );
            steps.pop();
        }
        (Value::Array(_), Some(other)) if !other.is_array() => {
            steps.push(Step::Key(Cow::Borrowed(k)));
            problem(
                out,
                name(steps),
                format!("{k} is an array but {base} is not"),
            );
            steps.pop();
        }
        (Value::Object(_), Some(Value::Array(_))) => {
            steps.push(Step::Key(Cow::Borrowed(k)));
            problem(
                out,
                name(steps),
                format!("{base} is an array, so {k} must be one"),
            );
            steps.pop();
        }
        _ => {}
    }
}

/// Contained resources: each has an id and no contained of its own.
fn contained(
    v: &Value,
    steps: &mut Vec<Step<'_>>,
    name: &dyn Fn(&[Step<'_>]) -> String,
    out: &mut Vec<Problem>,
) {
    let Value::Array(items) = v else {
        return;
    };
    for (i, c) in items.iter().enumerate() {
        steps.push(Step::Key("contained".into()));
        steps.push(Step::Index(i));
        if c.get("id").and_then(Value::as_str).is_none() {
            problem(
                out,
                name(steps),
                "a contained resource needs an id (dom-3 refers to it by #id)",
            );
        }
        if c.get("contained").is_some() {
            problem(
                out,
                name(steps),
                "a contained resource cannot contain others (dom-2)",
            );
        }
        steps.pop();
        steps.pop();
    }
}

/// Whether a reference is one of R4's forms: `#id` (contained),
/// `Type/id`, `Type/id/_history/vid`, an absolute URL, or a URN.
fn reference_format(r: &str) -> Result<(), String> {
    if let Some(local) = r.strip_prefix('#') {
        return if local.is_empty() || is_valid_id(local) {
            Ok(())
        } else {
            Err(format!(
                "{r:?} is not a reference to a contained resource (#id)"
            ))
        };
    }
    if r.starts_with("urn:uuid:") || r.starts_with("urn:oid:") || r.contains("://") {
        return if r.chars().any(char::is_whitespace) {
            Err(format!("{r:?} holds whitespace"))
        } else {
            Ok(())
        };
    }
    let parts: Vec<&str> = r.split('/').collect();
    let ok = match parts.as_slice() {
        // A bare id: not one of R4's forms, but official examples use
        // it (`patient-container-example` refers to "1"), so it stays
        // accepted; a bare type name is refused.
        [one] => is_valid_id(one) && !is_resource_type(one),
        [ty, id] => is_resource_type(ty) && is_valid_id(id),
        [ty, id, "_history", v] => {
            is_resource_type(ty) && is_valid_id(id) && !v.is_empty() && is_valid_id(v)
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{r:?} is not a reference: Type/id, Type/id/_history/version, #id, an absolute URL or a URN"
        ))
    }
}

/// Checks a resource under `mode`: problems refuse it (strict: 400 with
/// one issue per problem, each with its expression), or come back as
/// warnings (lenient), or are not looked for (off).
pub fn check_resource(mode: Mode, resource: &Value) -> Result<Vec<Problem>, FhirError> {
    if mode == Mode::Off {
        return Ok(Vec::new());
    }
    let found = problems(resource);
    if found.is_empty() || mode == Mode::Lenient {
        return Ok(found);
    }
    Err(refusal(&found))
}

/// [`check_resource`] on a resource held as a map (put back as it was).
pub fn check_map(
    mode: Mode,
    map: &mut serde_json::Map<String, Value>,
) -> Result<Vec<Problem>, FhirError> {
    if mode == Mode::Off {
        return Ok(Vec::new());
    }
    let v = Value::Object(std::mem::take(map));
    let r = check_resource(mode, &v);
    if let Value::Object(m) = v {
        *map = m;
    }
    r
}

/// Header a lenient write's response carries: how many problems the
/// stored resource has, and the first (the rest: `$validate`).
pub const WARNINGS_HEADER: &str = "x-validation-warnings";

/// `resp` with [`WARNINGS_HEADER`] when there are warnings.
pub fn with_warnings(
    mut resp: axum::response::Response,
    found: &[Problem],
) -> axum::response::Response {
    if let Some(first) = found.first() {
        let text = format!(
            "{} problems; the first: {}: {}",
            found.len(),
            first.expression,
            first.message
        );
        let text: String = text
            .chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control())
            .take(500)
            .collect();
        if let Ok(v) = axum::http::HeaderValue::from_str(&text) {
            resp.headers_mut().insert(WARNINGS_HEADER, v);
        }
    }
    resp
}

/// The 400 that refuses a resource with these problems.
pub fn refusal(found: &[Problem]) -> FhirError {
    let first = found.first().map_or(String::new(), |p| {
        format!("{}: {}", p.expression, p.message)
    });
    let summary = if found.len() == 1 {
        format!("the resource is not valid R4: {first}")
    } else {
        format!(
            "the resource is not valid R4 ({} problems; the first: {first})",
            found.len()
        )
    };
    FhirError::invalid(summary).with_issues(issues("error", found))
}

/// OperationOutcome issues for problems, with this severity.
pub fn issues(severity: &'static str, found: &[Problem]) -> Vec<Issue> {
    found
        .iter()
        .map(|p| Issue {
            severity,
            code: "invalid",
            diagnostics: p.message.clone(),
            expression: Some(p.expression.clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_forms() {
        for ok in [
            "Patient/1",
            "Patient/1/_history/2",
            "#c1",
            "#",
            "urn:uuid:3c4b7e1a-0000-4000-8000-000000000000",
            "http://example.org/fhir/Patient/1",
        ] {
            assert!(reference_format(ok).is_ok(), "{ok}");
        }
        for bad in [
            "Patient",
            "Nope/1",
            "Patient/",
            "Patient/a b",
            "a/b/c",
            "#a b",
            "http://x/a b",
        ] {
            assert!(reference_format(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pointers_become_fhirpath() {
        assert_eq!(
            expression("Patient", &pointer_steps("/name/0/given/1")),
            "Patient.name[0].given[1]"
        );
        assert_eq!(expression("Patient", &pointer_steps("")), "Patient");
    }
}

/// `$validate`: `POST [type]/$validate` and `POST [type]/[id]/$validate`
/// with the resource, or a `Parameters` holding it as `resource` and a
/// `mode` (`create`, `update`, `delete`; R4 resource-validate). Always
/// checked in full whatever `validation` says; the answer is 200 with an
/// OperationOutcome of every problem (or one `information` issue when
/// there is none), 4xx only when the request itself is wrong.
pub mod operation {
    use std::sync::Arc;

    use axum::body::Bytes;
    use axum::extract::rejection::BytesRejection;
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::Response;
    use serde_json::{Value, json};

    use super::{issues, problems};
    use crate::app::App;
    use crate::http::json_response;
    use crate::http::outcome::FhirError;

    /// What `$validate` checks the resource for.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Mode {
        /// As a create (also when no mode is given).
        Create,
        /// As an update of the instance.
        Update,
        /// Whether the instance may be deleted.
        Delete,
    }

    /// `POST [type]/$validate`.
    pub async fn type_level(
        State(app): State<Arc<App>>,
        Path(ty): Path<String>,
        headers: HeaderMap,
        bytes: Result<Bytes, BytesRejection>,
    ) -> Result<Response, FhirError> {
        run(&app, &ty, None, &headers, bytes)
    }

    /// `POST [type]/[id]/$validate`.
    pub async fn instance_level(
        State(app): State<Arc<App>>,
        Path((ty, id)): Path<(String, String)>,
        headers: HeaderMap,
        bytes: Result<Bytes, BytesRejection>,
    ) -> Result<Response, FhirError> {
        crate::resource::check_id(&id)?;
        run(&app, &ty, Some(&id), &headers, bytes)
    }

    /// The resource and mode of a `$validate` body.
    fn read(body: Value) -> Result<(Option<Value>, Mode), FhirError> {
        if body.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
            return Ok((Some(body), Mode::Create));
        }
        let params = body
            .get("parameter")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut resource = None;
        let mut mode = Mode::Create;
        for p in params {
            match p.get("name").and_then(Value::as_str) {
                Some("resource") => {
                    resource = Some(p.get("resource").cloned().ok_or_else(|| {
                        FhirError::invalid("the resource parameter holds no resource")
                    })?);
                }
                Some("mode") => {
                    mode = match p.get("valueCode").and_then(Value::as_str) {
                        Some("create") => Mode::Create,
                        Some("update") => Mode::Update,
                        Some("delete") => Mode::Delete,
                        other => {
                            return Err(FhirError::invalid(format!(
                                "mode {other:?} is not create, update or delete"
                            )));
                        }
                    };
                }
                Some("profile") => {
                    return Err(FhirError::new(
                        StatusCode::BAD_REQUEST,
                        "not-supported",
                        "profiles are not supported: $validate checks the R4 base definitions",
                    ));
                }
                other => {
                    return Err(FhirError::invalid(format!(
                        "$validate takes resource, mode and profile, not {other:?}"
                    )));
                }
            }
        }
        Ok((resource, mode))
    }

    fn run(
        app: &App,
        ty: &str,
        id: Option<&str>,
        headers: &HeaderMap,
        bytes: Result<Bytes, BytesRejection>,
    ) -> Result<Response, FhirError> {
        crate::types::check_type(ty)?;
        crate::http::negotiate::check_content_type(headers)?;
        let bytes = crate::http::body(bytes, app.config.max_body_bytes)?;
        let body: Value = serde_json::from_slice(&bytes).map_err(|e| {
            FhirError::invalid(format!(
                "malformed JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            ))
        })?;
        let (resource, mode) = read(body)?;
        let mut found = Vec::new();
        match mode {
            Mode::Delete => {
                let id = id.ok_or_else(|| {
                    FhirError::invalid(
                        "mode delete validates an instance: POST [type]/[id]/$validate",
                    )
                })?;
                crate::interactions::live_version(app, ty, id)?;
            }
            Mode::Create | Mode::Update => {
                let resource = resource
                    .ok_or_else(|| FhirError::invalid("$validate needs the resource to check"))?;
                let rt = resource
                    .get("resourceType")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if rt != ty {
                    return Err(FhirError::invalid(format!(
                        "the resource is a {rt:?} but the URL names {ty}"
                    )));
                }
                if mode == Mode::Update {
                    let id = id.ok_or_else(|| {
                        FhirError::invalid(
                            "mode update validates an instance: POST [type]/[id]/$validate",
                        )
                    })?;
                    if resource.get("id").and_then(Value::as_str) != Some(id) {
                        found.push(super::Problem {
                            expression: format!("{ty}.id"),
                            message: format!(
                                "an update of {ty}/{id} needs the id {id:?} in the resource"
                            ),
                        });
                    }
                }
                found.extend(problems(&resource));
            }
        }
        let outcome = if found.is_empty() {
            json!({"resourceType": "OperationOutcome", "issue": [
                {"severity": "information", "code": "informational", "diagnostics": "no problems found"}]})
        } else {
            json!({"resourceType": "OperationOutcome",
                   "issue": issues("error", &found).iter().map(crate::http::outcome::Issue::to_json).collect::<Vec<_>>()})
        };
        Ok(json_response(
            StatusCode::OK,
            serde_json::to_vec(&outcome).unwrap_or_default(),
        ))
    }
}
