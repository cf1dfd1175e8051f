//! `_summary` and `_elements` on read, vread and a search's matches
//! (included resources stay whole): the resource cut to
//! what the client asked for, tagged `SUBSETTED` in `meta.tag` (R4
//! search.html#summary and #elements).
//!
//! `_elements=a,b` keeps those top-level elements (a choice element by its
//! base name: `value` keeps `valueQuantity`), with `resourceType`, `id`
//! and `meta`. `_summary=text` keeps `text`, `id` and `meta`;
//! `_summary=data` drops `text`; `_summary=false` is the whole resource.
//! `_summary=true` keeps the top-level elements marked `isSummary` in the
//! snapshot of the type's base StructureDefinition
//! (`http://hl7.org/fhir/StructureDefinition/[type]`) stored on this
//! server, as R4's ValueSets and CodeSystems are for `:in` and `:below`
//! (load the R4 definitions, `profiles-resources.json`); without it the
//! request is refused with a 400 that says so and offers `_elements`,
//! never answered with guessed elements.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value, json};
use vigil_engine::Current;

use crate::app::App;
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
    /// The summary elements of the resource's type (`_summary=true`),
    /// made [`Subset::Elements`] by [`for_type`] before it is applied.
    Summary,
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
        (Some("true"), None) => Ok(Subset::Summary),
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
            // Not resolved to a type's elements: only what every type keeps.
            Subset::Summary => matches!(k, "resourceType" | "id" | "meta"),
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

/// Most top-level elements a summary keeps.
const SUMMARY_ELEMENTS_MAX: usize = 200;

/// `subset` for a resource of `ty`: [`Subset::Summary`] becomes the
/// type's summary elements; 400 when the base StructureDefinition is not
/// stored here.
pub fn for_type<'s>(
    app: &App,
    ty: &str,
    subset: &'s Subset,
) -> Result<std::borrow::Cow<'s, Subset>, FhirError> {
    use std::borrow::Cow;
    match subset {
        Subset::Summary => Ok(Cow::Owned(Subset::Elements(
            summary_elements(app, ty)?.to_vec(),
        ))),
        other => Ok(Cow::Borrowed(other)),
    }
}

/// The summary elements of `ty`, read from its stored base
/// StructureDefinition (remembered per version of it).
fn summary_elements(app: &App, ty: &str) -> Result<Arc<Vec<String>>, FhirError> {
    type Known = Mutex<HashMap<(String, String, u64), Arc<Vec<String>>>>;
    static KNOWN: OnceLock<Known> = OnceLock::new();
    let url = format!("http://hl7.org/fhir/StructureDefinition/{ty}");
    let missing = || {
        FhirError::invalid(format!(
            "_summary=true needs the base StructureDefinition {url} with its snapshot stored on this server (load the R4 definitions, profiles-resources.json); or ask for the elements you need with _elements"
        ))
    };
    let store = app.store()?;
    let ids: Vec<String> = store
        .lookup(
            &crate::search::keys::uri_key("StructureDefinition", "url", &url),
            16,
        )?
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    let id = match ids.as_slice() {
        [id] => id.clone(),
        [] => return Err(missing()),
        _ => {
            return Err(FhirError::invalid(format!(
                "{} StructureDefinitions are {url}; _summary=true needs exactly one",
                ids.len()
            )));
        }
    };
    let Current::Live(sd) = store.get("StructureDefinition", &id)? else {
        return Err(missing());
    };
    let known = KNOWN.get_or_init(Default::default);
    let cache_key = (store.dir().display().to_string(), id.clone(), sd.version);
    if let Some(e) = known
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&cache_key)
    {
        return Ok(e.clone());
    }
    let sd: Value = serde_json::from_slice(&sd.body)
        .map_err(|_| FhirError::internal(format!("StructureDefinition/{id} is not JSON")))?;
    let elements = sd
        .pointer("/snapshot/element")
        .and_then(Value::as_array)
        .ok_or_else(missing)?;
    let mut names: Vec<String> = elements
        .iter()
        .filter(|e| e.get("isSummary").and_then(Value::as_bool) == Some(true))
        .filter_map(|e| e.get("path").and_then(Value::as_str))
        .filter_map(|p| p.strip_prefix(ty)?.strip_prefix('.'))
        .filter(|rest| !rest.contains('.'))
        .map(|name| name.trim_end_matches("[x]").to_owned())
        .collect();
    names.sort();
    names.dedup();
    names.truncate(SUMMARY_ELEMENTS_MAX);
    let names = Arc::new(names);
    let mut known = known.lock().unwrap_or_else(|p| p.into_inner());
    if known.len() >= 4 * crate::types::R4_RESOURCE_TYPES.len() {
        known.clear();
    }
    known.insert(cache_key, names.clone());
    Ok(names)
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
