//! The codes of a ValueSet stored on this server, for the token modifiers
//! `:in` and `:not-in` (`Condition?code:in=http://acme.org/vs/diabetes`).
//!
//! A ValueSet is named by its canonical `url` (optionally `|version`) or
//! as `ValueSet/[id]`. Its codes are those of its `expansion.contains`
//! (nested too) when it has one, else those its `compose.include` lists
//! (`concept`), less those `compose.exclude` lists; an include of a whole
//! code system (`system` alone) stands for every code of that system.
//! What needs a terminology service to know (an include by `filter` or
//! by another `valueSet`, an exclude of a whole system) is refused with a
//! 400 that says so, never answered with a guess.

use std::collections::BTreeSet;

use serde_json::Value;
use vigil_engine::Current;

use super::lookup::live_by_url;
use crate::app::App;
use crate::http::outcome::FhirError;

/// Most codes one ValueSet may hold for `:in`.
pub const VALUESET_CODES_MAX: usize = 1_000;

/// One member of a value set: a `(system, code)`, or every code of a
/// system (`code` empty).
pub(super) type Member = (String, String);

/// The members of the ValueSet `name` (canonical URL or `ValueSet/[id]`).
pub(super) fn members(app: &App, name: &str) -> Result<BTreeSet<Member>, FhirError> {
    let vs = find(app, name)?;
    let mut out = BTreeSet::new();
    if let Some(contains) = vs.pointer("/expansion/contains") {
        expansion(contains, &mut out, 0)?;
    } else {
        let compose = vs.get("compose").ok_or_else(|| {
            FhirError::invalid(format!(
                "the ValueSet {name} has neither expansion nor compose"
            ))
        })?;
        for inc in array(compose.get("include")) {
            include(name, inc, &mut out)?;
        }
        for exc in array(compose.get("exclude")) {
            let mut gone = BTreeSet::new();
            include(name, exc, &mut gone)?;
            if gone.iter().any(|(_, c)| c.is_empty()) {
                return Err(needs_terminology(name, "an exclude of a whole code system"));
            }
            out.retain(|m| !gone.contains(m));
        }
    }
    if out.len() > VALUESET_CODES_MAX {
        return Err(FhirError::invalid(format!(
            "the ValueSet {name} holds more than {VALUESET_CODES_MAX} codes"
        )));
    }
    Ok(out)
}

/// The items of a JSON array member (none when it is absent or not one).
pub(super) fn array(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn needs_terminology(name: &str, what: &str) -> FhirError {
    FhirError::invalid(format!(
        "the ValueSet {name} uses {what}, which needs a terminology service this server does not have"
    ))
}

fn text(v: &Value, field: &str) -> String {
    v.get(field)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

fn expansion(contains: &Value, out: &mut BTreeSet<Member>, depth: usize) -> Result<(), FhirError> {
    if depth > 16 {
        return Err(FhirError::invalid("a ValueSet's expansion nests too deep"));
    }
    for c in array(Some(contains)) {
        let code = text(c, "code");
        if !code.is_empty() {
            out.insert((text(c, "system"), code));
        }
        if out.len() > VALUESET_CODES_MAX {
            return Ok(());
        }
        if let Some(inner) = c.get("contains") {
            expansion(inner, out, depth + 1)?;
        }
    }
    Ok(())
}

fn include(name: &str, inc: &Value, out: &mut BTreeSet<Member>) -> Result<(), FhirError> {
    if inc.get("filter").is_some() {
        return Err(needs_terminology(name, "a filter"));
    }
    if inc.get("valueSet").is_some() {
        return Err(needs_terminology(name, "another ValueSet"));
    }
    let system = text(inc, "system");
    let concepts = array(inc.get("concept"));
    if concepts.is_empty() {
        if system.is_empty() {
            return Err(FhirError::invalid(format!(
                "the ValueSet {name} has an include with no system and no concepts"
            )));
        }
        out.insert((system.clone(), String::new()));
    }
    for c in concepts {
        let code = text(c, "code");
        if !code.is_empty() {
            out.insert((system.clone(), code));
        }
    }
    Ok(())
}

/// The ValueSet resource `name` names; 400 when there is none or several.
fn find(app: &App, name: &str) -> Result<Value, FhirError> {
    let mut found: Vec<Value> = match name.strip_prefix("ValueSet/") {
        Some(id) => match app.store()?.get("ValueSet", id)? {
            Current::Live(r) => vec![serde_json::from_slice(&r.body).map_err(|_| {
                FhirError::internal(format!("ValueSet/{id} is not stored as JSON"))
            })?],
            _ => Vec::new(),
        },
        None => {
            let (url, version) = match name.split_once('|') {
                Some((u, v)) => (u, Some(v)),
                None => (name, None),
            };
            live_by_url(app, "ValueSet", url)?
                .into_iter()
                .map(|(_, body)| body)
                .filter(|b| {
                    version.is_none_or(|v| b.get("version").and_then(Value::as_str) == Some(v))
                })
                .collect()
        }
    };
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(FhirError::invalid(format!(
            "no ValueSet {name} on this server"
        ))),
        n => Err(FhirError::invalid(format!(
            "{n} ValueSets are {name}; name a version (url|version)"
        ))),
    }
}
