//! `_summary` and `_elements` on read, vread and a search's matches
//! (included resources stay whole): the resource cut to
//! what the client asked for, tagged `SUBSETTED` in `meta.tag` (R4
//! search.html#summary and #elements).
//!
//! `_elements=a,b` keeps those top-level elements (a choice element by its
//! base name: `value` keeps `valueQuantity`), with `resourceType`, `id`
//! and `meta`. `_summary=text` keeps `text`, `id` and `meta`;
//! `_summary=data` drops `text`; `_summary=false` is the whole resource.
//! `_summary=true` needs each element's summary flag from the R4 type
//! model, which this server does not hold yet: it is refused with a 400
//! that says so and offers `_elements`, never answered with the wrong
//! elements.

use serde_json::{Map, Value, json};

use crate::http::outcome::FhirError;

/// Most names `_elements` may list.
pub const ELEMENTS_MAX: usize = 100;

/// What part of a resource a read returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Subset {
    /// All of it.
    #[default]
    Full,
    /// These top-level elements.
    Elements(Vec<String>),
    /// `text`, `id`, `meta`.
    Text,
    /// All but `text`.
    Data,
}

/// The subset a query asks for; 400 for a value that is not one.
pub fn parse(summary: Option<&str>, elements: Option<&str>) -> Result<Subset, FhirError> {
    match (summary, elements) {
        (Some(_), Some(_)) => Err(FhirError::invalid(
            "_summary and _elements cannot be combined",
        )),
        (Some("false") | None, None) => Ok(Subset::Full),
        (Some("text"), None) => Ok(Subset::Text),
        (Some("data"), None) => Ok(Subset::Data),
        (Some("true"), None) => Err(FhirError::invalid(
            "_summary=true needs the R4 elements' summary flags, which this server does not have yet; ask for the elements you need with _elements",
        )),
        (Some("count"), None) => Err(FhirError::invalid(
            "_summary=count applies to searches, not to a read",
        )),
        (Some(other), None) => Err(FhirError::invalid(format!(
            "_summary={other} is not one of true, text, data, count, false"
        ))),
        (None, Some(list)) => {
            let names: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect();
            if names.is_empty() || names.len() > ELEMENTS_MAX {
                return Err(FhirError::invalid(format!(
                    "_elements lists 1 to {ELEMENTS_MAX} element names"
                )));
            }
            if let Some(bad) = names.iter().find(|n| {
                !n.starts_with(|c: char| c.is_ascii_alphabetic())
                    || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            }) {
                return Err(FhirError::invalid(format!(
                    "_elements: {bad:?} is not a top-level element name"
                )));
            }
            Ok(Subset::Elements(names))
        }
    }
}

/// Cuts `resource` to `subset` and tags it `SUBSETTED`; `Full` leaves it.
pub fn apply(resource: &mut Map<String, Value>, subset: &Subset) {
    let keep = |k: &str| -> bool {
        match subset {
            Subset::Full => true,
            Subset::Text => matches!(k, "resourceType" | "id" | "meta" | "text"),
            Subset::Data => k != "text",
            Subset::Elements(names) => {
                matches!(k, "resourceType" | "id" | "meta")
                    || names.iter().any(|n| {
                        k == n
                            || k.strip_prefix(n.as_str()).is_some_and(|rest| {
                                rest.starts_with(|c: char| c.is_ascii_uppercase())
                            })
                    })
            }
        }
    };
    if *subset == Subset::Full {
        return;
    }
    resource.retain(|k, _| keep(k));
    let meta = resource
        .entry("meta")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(m) = meta {
        let tags = m.entry("tag").or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(t) = tags {
            t.push(json!({
                "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                "code": "SUBSETTED",
                "display": "As requested, resource is not fully detailed"
            }));
        }
    }
}

/// The rendered JSON of a resource, cut to `subset` (unchanged for `Full`).
pub fn apply_to_bytes(rendered: Vec<u8>, subset: &Subset) -> Result<Vec<u8>, FhirError> {
    if *subset == Subset::Full {
        return Ok(rendered);
    }
    let mut map: Map<String, Value> = serde_json::from_slice(&rendered)
        .map_err(|_| FhirError::internal("a rendered resource is not a JSON object"))?;
    apply(&mut map, subset);
    serde_json::to_vec(&map).map_err(|e| FhirError::internal(e.to_string()))
}
