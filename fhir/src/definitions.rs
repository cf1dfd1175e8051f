//! The R4 element definitions, from the official R4 JSON Schema built in
//! (`data/fhir.schema.json.zst`): for each resource and datatype, its
//! elements, each one's type and whether it repeats (a JSON array).
//! FHIRPath Patch reads them to know whether `add` appends to a list and
//! how to build an anonymous (backbone) value from parts.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

const SCHEMA: &[u8] = include_bytes!("../data/fhir.schema.json.zst");

/// One element of a type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Its type: a datatype, resource or backbone definition
    /// (`HumanName`, `Patient_Contact`), or a primitive (`date`,
    /// `boolean`).
    pub ty: String,
    /// Whether it repeats (its JSON is an array).
    pub array: bool,
}

/// Every type's elements.
#[derive(Debug, Default)]
pub struct Definitions {
    types: HashMap<String, HashMap<String, Element>>,
    /// Per type, the elements the schema marks required (complex ones:
    /// the schema cannot require a primitive, whose value may stand in
    /// its `_element`).
    required: HashMap<String, Vec<String>>,
}

impl Definitions {
    /// The element `name` of type `ty` (`Patient`, `contact`).
    pub fn element(&self, ty: &str, name: &str) -> Option<&Element> {
        self.types.get(ty)?.get(name)
    }

    /// Whether `name` is the base name of a choice element of `ty`
    /// (`value` of Observation: `valueQuantity`, `valueString`, …).
    pub fn has_choice(&self, ty: &str, name: &str) -> bool {
        self.types.get(ty).is_some_and(|els| {
            els.keys().any(|k| {
                k.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()))
            })
        })
    }

    /// The elements of `ty` the schema marks required, `resourceType`
    /// left out.
    pub fn required(&self, ty: &str) -> &[String] {
        self.required.get(ty).map_or(&[], Vec::as_slice)
    }

    /// The type at a path of element names from a resource type
    /// (`Patient`, `[contact, name]` → `HumanName`); `None` when a step
    /// is not an element there.
    pub fn type_at<'s>(&'s self, ty: &'s str, path: &[&str]) -> Option<&'s str> {
        let mut at = ty;
        for name in path {
            at = self.element(at, name)?.ty.as_str();
        }
        Some(at)
    }

    fn from_schema(schema: &Value) -> Self {
        let mut types = HashMap::new();
        let mut required = HashMap::new();
        let Some(defs) = schema.get("definitions").and_then(Value::as_object) else {
            return Self { types, required };
        };
        for (name, def) in defs {
            let names: Vec<String> = def
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter(|n| *n != "resourceType")
                .map(str::to_owned)
                .collect();
            if !names.is_empty() {
                required.insert(name.clone(), names);
            }
            let Some(props) = def.get("properties").and_then(Value::as_object) else {
                continue;
            };
            let mut elements = HashMap::with_capacity(props.len());
            for (p, spec) in props {
                let array = spec.get("type").and_then(Value::as_str) == Some("array");
                let item = if array {
                    spec.get("items").unwrap_or(spec)
                } else {
                    spec
                };
                let ty = match item.get("$ref").and_then(Value::as_str) {
                    Some(r) => r.rsplit('/').next().unwrap_or(r).to_owned(),
                    // A choice element's primitive form is written inline:
                    // its name's suffix says which primitive it is.
                    None => [
                        ("Integer", "integer"),
                        ("PositiveInt", "positiveInt"),
                        ("UnsignedInt", "unsignedInt"),
                        ("Decimal", "decimal"),
                        ("Boolean", "boolean"),
                    ]
                    .iter()
                    .find(|(suffix, _)| p.ends_with(suffix))
                    .map(|(_, t)| (*t).to_owned())
                    .unwrap_or_else(|| {
                        match item.get("type").and_then(Value::as_str) {
                            Some("boolean") => "boolean".to_owned(),
                            Some("number") => "decimal".to_owned(),
                            _ => "string".to_owned(),
                        }
                    }),
                };
                elements.insert(p.clone(), Element { ty, array });
            }
            types.insert(name.clone(), elements);
        }
        Self { types, required }
    }
}

/// One step of a walk into a resource's JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk<'a> {
    /// Into an element (`_name`, a primitive's extension side, counts as
    /// `name`).
    Key(&'a str),
    /// Into an array's item.
    Index(usize),
}

/// The FHIR type of the node `steps` lead to in the resource `root`: from
/// its `resourceType` along the element names (a contained or nested
/// resource starts over at its own type); `None` when a step is not an
/// element of the type it is taken from, or not in the document.
pub fn type_of_node<'a>(root: &Value, steps: impl IntoIterator<Item = Walk<'a>>) -> Option<String> {
    let mut ty = root.get("resourceType")?.as_str()?.to_owned();
    let mut node = root;
    for s in steps {
        match s {
            Walk::Key(k) => {
                let name = k.strip_prefix('_').unwrap_or(k);
                ty = r4().element(&ty, name)?.ty.clone();
                node = node.get(k)?;
            }
            Walk::Index(i) => node = node.get(i)?,
        }
        if let Some(rt) = node.get("resourceType").and_then(Value::as_str) {
            ty = rt.to_owned();
        }
    }
    Some(ty)
}

/// The official R4 JSON Schema, read on first use (`None` only if the
/// built-in copy were damaged, which a test rules out).
pub fn schema() -> Option<&'static Value> {
    static SCHEMA_JSON: OnceLock<Option<Value>> = OnceLock::new();
    SCHEMA_JSON
        .get_or_init(|| {
            zstd::decode_all(SCHEMA)
                .ok()
                .and_then(|json| serde_json::from_slice::<Value>(&json).ok())
        })
        .as_ref()
}

/// The R4 definitions, read from the built-in schema on first use.
pub fn r4() -> &'static Definitions {
    static R4: OnceLock<Definitions> = OnceLock::new();
    R4.get_or_init(|| schema().map(Definitions::from_schema).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_know_their_type_and_whether_they_repeat() {
        assert!(schema().is_some(), "the built-in schema reads");
        let d = r4();
        let el = |ty, name| d.element(ty, name).cloned().expect("an element");
        assert_eq!(
            el("Patient", "contact"),
            Element {
                ty: "Patient_Contact".into(),
                array: true
            }
        );
        assert_eq!(
            el("Patient", "birthDate"),
            Element {
                ty: "date".into(),
                array: false
            }
        );
        assert_eq!(el("Patient_Contact", "name").ty, "HumanName");
        assert!(el("HumanName", "given").array);
        assert_eq!(el("Patient", "deceasedBoolean").ty, "boolean");
        assert_eq!(
            d.type_at("Patient", &["contact", "name"]),
            Some("HumanName")
        );
        assert_eq!(d.type_at("Patient", &["nope"]), None);
    }
}
