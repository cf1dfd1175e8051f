//! Compartments: which resources belong to a patient's record, from the
//! official R4 Patient CompartmentDefinition (`fhir/data/`, built in).
//! A resource of type T is in `Patient/[id]`'s compartment when one of the
//! parameters the definition lists for T refers to `Patient/[id]`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

/// The definition built into the binary.
const PATIENT: &str = include_str!("../../data/compartment-patient-r4.json");

/// One compartment definition: for each resource type, the parameters
/// that link a resource to the compartment's owner (types with none are
/// never in it).
#[derive(Debug, Default)]
pub struct Compartment {
    /// The type of the owner (`Patient`).
    pub code: String,
    members: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
struct Definition {
    code: String,
    resource: Vec<Member>,
}

#[derive(Deserialize)]
struct Member {
    code: String,
    #[serde(default)]
    param: Vec<String>,
}

impl Compartment {
    fn from_json(text: &str) -> Compartment {
        let Ok(d) = serde_json::from_str::<Definition>(text) else {
            return Compartment::default();
        };
        Compartment {
            code: d.code,
            members: d
                .resource
                .into_iter()
                .filter(|m| !m.param.is_empty())
                .map(|m| (m.code, m.param))
                .collect(),
        }
    }

    /// The parameters that put a resource of `ty` in the compartment
    /// (empty: never in it).
    pub fn params_of(&self, ty: &str) -> &[String] {
        self.members.get(ty).map_or(&[], Vec::as_slice)
    }

    /// Every type that can be in the compartment, in name order.
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.members.keys().map(String::as_str)
    }
}

/// The compartment whose owner is of type `owner`, if this server has its
/// definition (R4 defines five; the Patient compartment is built in).
pub fn compartment(owner: &str) -> Option<&'static Compartment> {
    static PATIENT_COMPARTMENT: OnceLock<Compartment> = OnceLock::new();
    (owner == "Patient")
        .then(|| PATIENT_COMPARTMENT.get_or_init(|| Compartment::from_json(PATIENT)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::registry::registry;

    #[test]
    fn the_patient_compartment_names_parameters_every_type_has() {
        let c = compartment("Patient").expect("built in");
        assert_eq!(c.code, "Patient");
        assert_eq!(c.types().count(), 66);
        assert_eq!(c.params_of("Observation"), ["subject", "performer"]);
        assert!(c.params_of("Organization").is_empty());
        // Every parameter it names is a searchable parameter of its type.
        for ty in c.types() {
            for p in c.params_of(ty) {
                let def = registry().of(ty).find(p);
                assert!(def.is_some_and(|d| d.is_searchable()), "{ty}.{p}");
            }
        }
        assert!(compartment("Encounter").is_none());
    }
}
