//! The search parameters this server indexes, and how each is found in a
//! resource. `CapabilityStatement` lists exactly these.

/// How a parameter's values are matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `system|code` codes, identifiers, and plain codes.
    Token,
    /// Names: case-insensitive "starts with".
    String,
    /// `Type/id` references.
    Reference,
    /// Dates, dateTimes and periods, with comparison prefixes.
    Date,
}

/// One indexed parameter: its name, kind, and the JSON paths holding it.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// The name used in URLs.
    pub name: &'static str,
    /// How it matches.
    pub kind: Kind,
    /// Dotted paths from the resource root; arrays are walked.
    pub paths: &'static [&'static str],
}

const fn p(name: &'static str, kind: Kind, paths: &'static [&'static str]) -> Param {
    Param { name, kind, paths }
}

/// `identifier`, which every type that has one supports.
pub const IDENTIFIER: Param = p("identifier", Kind::Token, &["identifier"]);

const PATIENT: &[Param] = &[
    p(
        "name",
        Kind::String,
        &[
            "name.family",
            "name.given",
            "name.text",
            "name.prefix",
            "name.suffix",
        ],
    ),
    p("family", Kind::String, &["name.family"]),
    p("given", Kind::String, &["name.given"]),
    p("birthdate", Kind::Date, &["birthDate"]),
    p("gender", Kind::Token, &["gender"]),
];
const OBSERVATION: &[Param] = &[
    p("subject", Kind::Reference, &["subject"]),
    p("patient", Kind::Reference, &["subject"]),
    p("code", Kind::Token, &["code"]),
    p(
        "date",
        Kind::Date,
        &["effectiveDateTime", "effectivePeriod", "effectiveInstant"],
    ),
    p("status", Kind::Token, &["status"]),
];
const CONDITION: &[Param] = &[
    p("subject", Kind::Reference, &["subject"]),
    p("patient", Kind::Reference, &["subject"]),
    p("code", Kind::Token, &["code"]),
    p(
        "date",
        Kind::Date,
        &["onsetDateTime", "onsetPeriod", "recordedDate"],
    ),
    p("status", Kind::Token, &["clinicalStatus"]),
];
const ENCOUNTER: &[Param] = &[
    p("subject", Kind::Reference, &["subject"]),
    p("patient", Kind::Reference, &["subject"]),
    p("code", Kind::Token, &["type"]),
    p("date", Kind::Date, &["period"]),
    p("status", Kind::Token, &["status"]),
];
const PROCEDURE: &[Param] = &[
    p("subject", Kind::Reference, &["subject"]),
    p("patient", Kind::Reference, &["subject"]),
    p("code", Kind::Token, &["code"]),
    p(
        "date",
        Kind::Date,
        &["performedDateTime", "performedPeriod"],
    ),
    p("status", Kind::Token, &["status"]),
];
const DIAGNOSTIC_REPORT: &[Param] = &[
    p("subject", Kind::Reference, &["subject"]),
    p("patient", Kind::Reference, &["subject"]),
    p("code", Kind::Token, &["code"]),
    p(
        "date",
        Kind::Date,
        &["effectiveDateTime", "effectivePeriod"],
    ),
    p("status", Kind::Token, &["status"]),
];
const MEDICATION_REQUEST: &[Param] = &[
    p("subject", Kind::Reference, &["subject"]),
    p("patient", Kind::Reference, &["subject"]),
    p("code", Kind::Token, &["medicationCodeableConcept"]),
    p("date", Kind::Date, &["authoredOn"]),
    p("status", Kind::Token, &["status"]),
];
const IMMUNIZATION: &[Param] = &[
    p("subject", Kind::Reference, &["patient"]),
    p("patient", Kind::Reference, &["patient"]),
    p("code", Kind::Token, &["vaccineCode"]),
    p("date", Kind::Date, &["occurrenceDateTime"]),
    p("status", Kind::Token, &["status"]),
];

/// Types without an `identifier` element.
const NO_IDENTIFIER: &[&str] = &[
    "Binary",
    "Bundle",
    "CapabilityStatement",
    "CompartmentDefinition",
    "ConceptMap",
    "GraphDefinition",
    "ImplementationGuide",
    "MessageDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Parameters",
    "SearchParameter",
    "StructureDefinition",
    "StructureMap",
    "TerminologyCapabilities",
    "CodeSystem",
    "ValueSet",
    "NamingSystem",
    "Linkage",
];

/// The parameters indexed for `resource_type` (besides `_id` and `_lastUpdated`).
pub fn params_of(resource_type: &str) -> Vec<Param> {
    let mut out = Vec::new();
    if !NO_IDENTIFIER.contains(&resource_type) {
        out.push(IDENTIFIER);
    }
    out.extend_from_slice(match resource_type {
        "Patient" => PATIENT,
        "Observation" => OBSERVATION,
        "Condition" => CONDITION,
        "Encounter" => ENCOUNTER,
        "Procedure" => PROCEDURE,
        "DiagnosticReport" => DIAGNOSTIC_REPORT,
        "MedicationRequest" => MEDICATION_REQUEST,
        "Immunization" => IMMUNIZATION,
        _ => &[],
    });
    out
}

/// The parameter `name` of `resource_type`, if indexed.
pub fn find(resource_type: &str, name: &str) -> Option<Param> {
    params_of(resource_type)
        .into_iter()
        .find(|p| p.name == name)
}

/// The parameter among `params` (those of one type, as [`params_of`]
/// lists them) whose keys already hold `param`'s values at `path`, if
/// any. `param` then writes no keys for that path and
/// its search reads the holder's keys as well: each would otherwise repeat
/// the holder's keys row for row (a Patient's `name` repeats `family` and
/// `given`; `patient` repeats `subject`). The holder has the same kind and
/// `path` as its only path, and is either a parameter `param` gathers
/// several paths into, or listed before `param` (so two parameters with the
/// same one path do not hold each other's).
pub fn holder(params: &[Param], param: &Param, path: &str) -> Option<Param> {
    let at = params.iter().position(|q| q.name == param.name)?;
    params.iter().enumerate().find_map(|(i, q)| {
        let holds = q.name != param.name
            && q.kind == param.kind
            && q.paths == [path]
            && (param.paths.len() > 1 || i < at);
        holds.then_some(*q)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_paths_are_held_by_one_parameter_each() {
        let name_of = |ty: &str, name: &str| {
            params_of(ty)
                .into_iter()
                .find(|p| p.name == name)
                .expect("a parameter of the type")
        };
        let patient = params_of("Patient");
        let name = name_of("Patient", "name");
        assert_eq!(
            holder(&patient, &name, "name.family").map(|p| p.name),
            Some("family")
        );
        assert_eq!(
            holder(&patient, &name, "name.given").map(|p| p.name),
            Some("given")
        );
        assert!(holder(&patient, &name, "name.text").is_none());
        let family = name_of("Patient", "family");
        assert!(
            holder(&patient, &family, "name.family").is_none(),
            "not held back by name"
        );
        for ty in [
            "Observation",
            "Condition",
            "Immunization",
            "MedicationRequest",
        ] {
            let patient = name_of(ty, "patient");
            let subject = name_of(ty, "subject");
            let path = patient.paths[0];
            assert_eq!(
                holder(&params_of(ty), &patient, path).map(|p| p.name),
                Some("subject"),
                "{ty}"
            );
            assert!(
                holder(&params_of(ty), &subject, path).is_none(),
                "{ty}: subject holds its own"
            );
        }
        // No holder holds another's values in turn: one scan each.
        for ty in crate::types::R4_RESOURCE_TYPES {
            for p in params_of(ty) {
                for path in p.paths {
                    if let Some(h) = holder(&params_of(ty), &p, path) {
                        assert!(
                            holder(&params_of(ty), &h, path).is_none(),
                            "{ty} {}",
                            p.name
                        );
                    }
                }
            }
        }
    }
}
