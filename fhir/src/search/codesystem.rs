//! Subsumption in a CodeSystem stored on this server, for the token
//! modifiers `:below` (the code and every code under it) and `:above`
//! (the code and every code it is under):
//! `Condition?code:below=http://acme.org/cs|diabetes`.
//!
//! The CodeSystem is the one whose `url` is the value's system. Its
//! hierarchy is the nesting of `concept` and the `parent` and `child`
//! properties of its concepts (R4 `hierarchyMeaning` `is-a`; nesting is
//! read as is-a whatever it says, as other servers do). A code the
//! CodeSystem lacks stands for itself. A system with no CodeSystem here
//! needs a terminology service this server does not have: 400.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::lookup::live_by_url;
use super::valueset::{Member, array};
use crate::app::App;
use crate::http::outcome::FhirError;

/// Most codes a `:below` or `:above` may stand for.
pub const SUBSUMED_CODES_MAX: usize = 1_000;
/// Most concepts of a CodeSystem read.
const CONCEPTS_MAX: usize = 100_000;
/// Deepest nesting of concepts read.
const DEPTH_MAX: usize = 32;

/// Which way to walk from the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    /// The code and its descendants (`:below`).
    Below,
    /// The code and its ancestors (`:above`).
    Above,
}

/// The codes `system|code` stands for under `dir` (the code among them),
/// as members of the system.
pub(super) fn codes(app: &App, value: &str, dir: Direction) -> Result<BTreeSet<Member>, FhirError> {
    let (system, code) = value
        .split_once('|')
        .filter(|(s, c)| !s.is_empty() && !c.is_empty())
        .ok_or_else(|| {
            FhirError::invalid(format!(
                "{value:?}: :below and :above on a token take system|code"
            ))
        })?;
    let cs = find(app, system)?;
    // parent -> children, from nesting and from properties.
    let mut children: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut seen = 0usize;
    walk(array(cs.get("concept")), None, &mut children, &mut seen, 0)?;
    let parents = |c: &str| -> Vec<String> {
        children
            .iter()
            .filter(|(_, kids)| kids.contains(c))
            .map(|(p, _)| p.clone())
            .collect()
    };
    let mut out = BTreeSet::from([code.to_owned()]);
    let mut todo = vec![code.to_owned()];
    while let Some(c) = todo.pop() {
        let next: Vec<String> = match dir {
            Direction::Below => children.get(&c).into_iter().flatten().cloned().collect(),
            Direction::Above => parents(&c),
        };
        for n in next {
            if out.insert(n.clone()) {
                if out.len() > SUBSUMED_CODES_MAX {
                    return Err(FhirError::invalid(format!(
                        "{value}: more than {SUBSUMED_CODES_MAX} codes are {} it",
                        match dir {
                            Direction::Below => "below",
                            Direction::Above => "above",
                        }
                    )));
                }
                todo.push(n);
            }
        }
    }
    Ok(out.into_iter().map(|c| (system.to_owned(), c)).collect())
}

fn walk(
    concepts: &[Value],
    parent: Option<&str>,
    children: &mut BTreeMap<String, BTreeSet<String>>,
    seen: &mut usize,
    depth: usize,
) -> Result<(), FhirError> {
    if depth > DEPTH_MAX {
        return Err(FhirError::invalid("a CodeSystem's concepts nest too deep"));
    }
    for c in concepts {
        *seen += 1;
        if *seen > CONCEPTS_MAX {
            return Err(FhirError::invalid(format!(
                "a CodeSystem with more than {CONCEPTS_MAX} concepts needs a terminology service"
            )));
        }
        let Some(code) = c.get("code").and_then(Value::as_str) else {
            continue;
        };
        if let Some(p) = parent {
            children
                .entry(p.to_owned())
                .or_default()
                .insert(code.to_owned());
        }
        for prop in array(c.get("property")) {
            let Some(other) = prop.get("valueCode").and_then(Value::as_str) else {
                continue;
            };
            match prop.get("code").and_then(Value::as_str) {
                Some("parent") => {
                    children
                        .entry(other.to_owned())
                        .or_default()
                        .insert(code.to_owned());
                }
                Some("child") => {
                    children
                        .entry(code.to_owned())
                        .or_default()
                        .insert(other.to_owned());
                }
                _ => {}
            }
        }
        walk(
            array(c.get("concept")),
            Some(code),
            children,
            seen,
            depth + 1,
        )?;
    }
    Ok(())
}

/// The CodeSystem whose url is `system`; 400 when there is none or several.
fn find(app: &App, system: &str) -> Result<Value, FhirError> {
    let mut found = live_by_url(app, "CodeSystem", system)?;
    match found.len() {
        1 => Ok(found.remove(0).1),
        0 => Err(FhirError::invalid(format!(
            "no CodeSystem {system} on this server: :below and :above need one (this server has no terminology service)"
        ))),
        n => Err(FhirError::invalid(format!(
            "{n} CodeSystems are {system}; :below and :above need exactly one"
        ))),
    }
}
