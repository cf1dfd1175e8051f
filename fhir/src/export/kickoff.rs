//! What a kick-off asks for (Bulk Data Access IG v2): the parameters of
//! `$export` read from a GET query (a parameter repeated or its values
//! comma-separated) or a POST `Parameters` body, checked before anything
//! is started.
//!
//! Under `Prefer: handling=strict` a parameter this server does not
//! support (an unknown name, an unknown `_type`, an `_elements` name that
//! is no element, an `includeAssociatedData` value other than
//! `LatestProvenanceResources`, `organizeOutputBy`) is a 400; otherwise
//! it is left out and named by an OperationOutcome in the job's `error`
//! file (the IG's lenient handling). A malformed value (`_since` that is
//! no instant or lies in the future, an `_outputFormat` other than NDJSON,
//! a `_typeFilter` that is no search of its type, a `patient` that is no
//! Patient reference) is a 400 either way.

use serde_json::Value;

use crate::http::outcome::FhirError;

/// Most values of one kick-off (types, elements, patients, filters).
pub const VALUES_MAX: usize = 1_000;

/// The `includeAssociatedData` value this server supports.
pub const LATEST_PROVENANCE: &str = "LatestProvenanceResources";

/// A kick-off's parameters, checked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Request {
    /// Only resources changed after this instant (µs).
    pub since_us: Option<u64>,
    /// Types asked for (`_type`), empty for every type.
    pub types: Vec<String>,
    /// `_elements`: `Type.element` or `element`.
    pub elements: Vec<String>,
    /// Patient ids (`patient`), empty for every patient.
    pub patients: Vec<String>,
    /// `_typeFilter`s: `Type?query`.
    pub type_filters: Vec<String>,
    /// Whether the newest Provenance of each exported resource is added.
    pub latest_provenance: bool,
    /// What lenient handling left out, one sentence each.
    pub warnings: Vec<String>,
}

/// Where the kick-off was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `[base]/$export`.
    System,
    /// `[base]/Patient/$export`.
    Patient,
    /// `[base]/Group/[id]/$export`.
    Group,
}

impl Level {
    /// As recorded in a job: `system`, `patient` or `group`.
    pub fn name(self) -> &'static str {
        match self {
            Level::System => "system",
            Level::Patient => "patient",
            Level::Group => "group",
        }
    }
}

/// The (name, value) pairs of a POST kick-off's `Parameters` body, each
/// value as the string a GET query would carry (`patient`: its
/// reference).
pub fn pairs_of_parameters(body: &Value) -> Result<Vec<(String, String)>, FhirError> {
    if body.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(FhirError::invalid(
            "a POST $export takes a Parameters resource as its body",
        ));
    }
    let params = match body.get("parameter") {
        None => return Ok(Vec::new()),
        Some(Value::Array(p)) => p,
        Some(_) => return Err(FhirError::invalid("Parameters.parameter must be an array")),
    };
    let mut pairs = Vec::with_capacity(params.len());
    for (i, p) in params.iter().enumerate() {
        let at = |msg: String| FhirError::invalid(format!("Parameters.parameter[{i}]: {msg}"));
        let name = p
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| at("has no name".into()))?;
        let values: Vec<(&String, &Value)> = p
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.starts_with("value"))
            .collect();
        let value = match values.as_slice() {
            [(_, Value::String(s))] => s.clone(),
            [(k, v)] if k.as_str() == "valueReference" => v
                .get("reference")
                .and_then(Value::as_str)
                .ok_or_else(|| at(format!("{name}: valueReference has no reference")))?
                .to_owned(),
            [(k, _)] => return Err(at(format!("{name}: {k} is not a value this takes"))),
            [] => return Err(at(format!("{name} has no value"))),
            _ => return Err(at(format!("{name} has more than one value"))),
        };
        pairs.push((name.to_owned(), value));
    }
    Ok(pairs)
}

/// Reads and checks the parameters; `now_us` bounds `_since`. `filter_ok`
/// checks one `_typeFilter` query against its type (the server's search
/// parser).
pub fn read(
    pairs: &[(String, String)],
    level: Level,
    strict: bool,
    now_us: u64,
    filter_ok: impl Fn(&str, &str) -> Result<(), FhirError>,
) -> Result<Request, FhirError> {
    let mut r = Request::default();
    let mut seen_single: Vec<&str> = Vec::new();
    let lenient = |r: &mut Request, msg: String| -> Result<(), FhirError> {
        if strict {
            Err(FhirError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "not-supported",
                msg,
            ))
        } else {
            r.warnings.push(msg);
            Ok(())
        }
    };
    for (name, value) in pairs {
        let single = matches!(name.as_str(), "_outputFormat" | "_since");
        if single {
            if seen_single.contains(&name.as_str()) {
                return Err(FhirError::invalid(format!("{name} may be given once")));
            }
            seen_single.push(name);
        }
        let values = || {
            value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        match name.as_str() {
            "_format" | "_pretty" => {}
            "_outputFormat" => {
                if !matches!(
                    value.as_str(),
                    "application/fhir+ndjson" | "application/ndjson" | "ndjson"
                ) {
                    return Err(FhirError::invalid(format!(
                        "_outputFormat {value:?} is not supported; use application/fhir+ndjson"
                    )));
                }
            }
            "_since" => r.since_us = Some(since(value, now_us)?),
            "_type" => {
                for t in values() {
                    if !crate::types::is_resource_type(&t) {
                        lenient(&mut r, format!("_type {t:?} is not an R4 resource type"))?;
                    } else if !r.types.contains(&t) {
                        r.types.push(t);
                    }
                }
            }
            "_elements" => {
                for e in values() {
                    match element_problem(&e) {
                        Some(p) => lenient(&mut r, p)?,
                        None => r.elements.push(e),
                    }
                }
            }
            "patient" => {
                if level == Level::System {
                    return Err(FhirError::invalid(
                        "patient applies to Patient and Group level exports ([base]/Patient/$export, [base]/Group/[id]/$export)",
                    ));
                }
                for p in values() {
                    let id = p
                        .strip_prefix("Patient/")
                        .filter(|id| crate::types::is_valid_id(id))
                        .ok_or_else(|| {
                            FhirError::invalid(format!(
                                "patient {p:?} is not a reference to a Patient (Patient/[id])"
                            ))
                        })?;
                    r.patients.push(id.to_owned());
                }
            }
            "_typeFilter" => {
                // One filter per value: a filter's own query holds commas
                // only inside values, never between filters, so values are
                // split only where a new `Type?` starts.
                for f in split_filters(value) {
                    let (ty, query) = f.split_once('?').ok_or_else(|| {
                        FhirError::invalid(format!(
                            "_typeFilter {f:?} is not a search (Type?parameters)"
                        ))
                    })?;
                    if !crate::types::is_resource_type(ty) {
                        return Err(FhirError::invalid(format!(
                            "_typeFilter {f:?}: {ty:?} is not an R4 resource type"
                        )));
                    }
                    filter_ok(ty, query).map_err(|e| {
                        FhirError::invalid(format!("_typeFilter {f:?}: {}", e.diagnostics))
                    })?;
                    r.type_filters.push(f);
                }
            }
            "includeAssociatedData" => {
                for v in values() {
                    if v == LATEST_PROVENANCE {
                        r.latest_provenance = true;
                    } else {
                        lenient(
                            &mut r,
                            format!(
                                "includeAssociatedData {v:?} is not supported (this server supports {LATEST_PROVENANCE})"
                            ),
                        )?;
                    }
                }
            }
            "organizeOutputBy" => lenient(
                &mut r,
                format!(
                    "organizeOutputBy={value} is not supported; output files hold one resource type each"
                ),
            )?,
            other => lenient(
                &mut r,
                format!("{other} is not a parameter of $export this server supports"),
            )?,
        }
        let n = r.types.len() + r.elements.len() + r.patients.len() + r.type_filters.len();
        if n > VALUES_MAX {
            return Err(FhirError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "too-costly",
                format!("a kick-off takes at most {VALUES_MAX} values"),
            ));
        }
    }
    // A filter on a type the export leaves out would filter nothing.
    if !r.types.is_empty() {
        for f in &r.type_filters {
            let ty = f.split('?').next().unwrap_or("");
            if !r.types.iter().any(|t| t == ty) {
                return Err(FhirError::invalid(format!(
                    "_typeFilter {f:?} is for a type _type leaves out"
                )));
            }
        }
    }
    Ok(r)
}

/// `_since` as µs: 400 when it is no instant or lies after `now_us`.
fn since(value: &str, now_us: u64) -> Result<u64, FhirError> {
    let (from, _) = crate::instant::parse_interval(value)
        .ok_or_else(|| FhirError::invalid(format!("_since {value:?} is not an instant")))?;
    let from = u64::try_from(from).unwrap_or(0);
    if from > now_us {
        return Err(FhirError::invalid(format!(
            "_since {value:?} lies in the future"
        )));
    }
    Ok(from)
}

/// Why an `_elements` name names no element (`None` when it does).
fn element_problem(e: &str) -> Option<String> {
    let (ty, name) = match e.split_once('.') {
        Some((ty, name)) => (Some(ty), name),
        None => (None, e),
    };
    if name.is_empty() || name.contains('.') {
        return Some(format!(
            "_elements {e:?}: only top-level elements (element or Type.element) can be chosen"
        ));
    }
    match ty {
        Some(ty) if !crate::types::is_resource_type(ty) => Some(format!(
            "_elements {e:?}: {ty:?} is not an R4 resource type"
        )),
        Some(ty) if !is_element(ty, name) => {
            Some(format!("_elements {e:?}: {ty} has no element {name}"))
        }
        None if !crate::types::R4_RESOURCE_TYPES
            .iter()
            .any(|ty| is_element(ty, name)) =>
        {
            Some(format!(
                "_elements {e:?}: no resource type has an element {name}"
            ))
        }
        _ => None,
    }
}

/// Whether `ty` has the top-level element `name` (a choice by its base
/// name: `value` for `valueQuantity`).
fn is_element(ty: &str, name: &str) -> bool {
    let d = crate::definitions::r4();
    d.element(ty, name).is_some() || d.has_choice(ty, name)
}

/// `_typeFilter` values: one per `Type?…`, also when several are written
/// comma-separated in one value.
fn split_filters(value: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in value.split(',') {
        let starts_filter = part
            .split_once('?')
            .is_some_and(|(ty, _)| crate::types::is_resource_type(ty.trim()));
        match out.last_mut() {
            Some(last) if !starts_filter => {
                last.push(',');
                last.push_str(part);
            }
            _ => out.push(part.trim().to_owned()),
        }
    }
    out.retain(|f| !f.is_empty());
    out
}

/// The top-level element names `_elements` keeps for resources of `ty`
/// (`None`: the resource stays whole, as no name applies to its type),
/// with the type's mandatory elements.
pub fn elements_for(elements: &[String], ty: &str) -> Option<Vec<String>> {
    let mut names: Vec<String> = elements
        .iter()
        .filter_map(|e| match e.split_once('.') {
            Some((t, name)) => (t == ty).then(|| name.to_owned()),
            None => Some(e.clone()),
        })
        .collect();
    if names.is_empty() {
        return None;
    }
    names.extend(crate::definitions::r4().required(ty).iter().cloned());
    names.sort();
    names.dedup();
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    fn ok(_: &str, _: &str) -> Result<(), FhirError> {
        Ok(())
    }

    #[test]
    fn repeated_and_comma_separated_types_are_one_list() {
        let r = read(
            &pairs(&[("_type", "Patient,Observation"), ("_type", "Condition")]),
            Level::System,
            true,
            1,
            ok,
        )
        .expect("reads");
        assert_eq!(r.types, ["Patient", "Observation", "Condition"]);
    }

    #[test]
    fn strict_refuses_what_lenient_names_as_a_warning() {
        let p = pairs(&[("_type", "Patient,Nope"), ("organizeOutputBy", "Patient")]);
        let e = read(&p, Level::System, true, 1, ok).expect_err("strict refuses");
        assert!(e.diagnostics.contains("Nope"), "{}", e.diagnostics);
        let r = read(&p, Level::System, false, 1, ok).expect("lenient reads");
        assert_eq!(r.types, ["Patient"]);
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
    }

    #[test]
    fn since_in_the_future_or_malformed_is_refused() {
        let now = 1_700_000_000_000_000;
        let r = |s: &str| read(&pairs(&[("_since", s)]), Level::System, false, now, ok);
        assert!(r("2020-01-01T00:00:00Z").is_ok());
        assert!(r("3020-01-01T00:00:00Z").is_err());
        assert!(r("yesterday").is_err());
    }

    #[test]
    fn type_filters_split_where_a_type_starts() {
        assert_eq!(
            split_filters("Observation?code=a,b,Patient?gender=male"),
            ["Observation?code=a,b", "Patient?gender=male"]
        );
    }

    #[test]
    fn elements_keep_the_mandatory_ones_of_their_type() {
        let e = vec!["Observation.id".to_owned(), "meta".to_owned()];
        let obs = elements_for(&e, "Observation").expect("applies");
        assert!(obs.contains(&"code".to_owned()), "{obs:?}");
        assert_eq!(
            elements_for(&["Patient.name".to_owned()], "Observation"),
            None
        );
        assert!(element_problem("Patient.nope").is_some());
        assert!(element_problem("Observation.value").is_none());
        assert!(element_problem("name").is_none());
    }

    #[test]
    fn parameters_become_pairs() {
        let body = serde_json::json!({"resourceType": "Parameters", "parameter": [
            {"name": "_type", "valueString": "Patient"},
            {"name": "patient", "valueReference": {"reference": "Patient/1"}},
        ]});
        assert_eq!(
            pairs_of_parameters(&body).expect("reads"),
            pairs(&[("_type", "Patient"), ("patient", "Patient/1")])
        );
        assert!(pairs_of_parameters(&serde_json::json!({"resourceType": "Patient"})).is_err());
        let two = serde_json::json!({"resourceType": "Parameters", "parameter": [
            {"name": "_type", "valueString": "Patient", "valueCode": "x"}]});
        assert!(pairs_of_parameters(&two).is_err());
    }
}
