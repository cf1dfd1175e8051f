//! Resource bodies: parsing, what the engine stores, what clients get.
//!
//! The engine is the source of truth for a version's number and time, so
//! the stored JSON is the client's JSON with `id` set and `meta.versionId`
//! and `meta.lastUpdated` removed; they are put back on every read. So a
//! byte-identical resource makes no new version whatever meta the client
//! echoes, and every other field keeps its exact value: numbers are kept as
//! written (`1.50` stays `1.50`) and key order is preserved.

use serde_json::{Map, Value};

use crate::instant::format_instant;
use crate::outcome::FhirError;
use crate::types::{is_resource_type, is_valid_id};

/// Parses a request body that must be one FHIR resource.
pub fn parse(bytes: &[u8]) -> Result<Map<String, Value>, FhirError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        FhirError::invalid(format!(
            "malformed JSON at line {} column {}: {e}",
            e.line(),
            e.column()
        ))
    })?;
    let Value::Object(map) = value else {
        return Err(FhirError::invalid("the body is not a JSON object"));
    };
    match map.get("resourceType") {
        Some(Value::String(t)) if is_resource_type(t) => Ok(map),
        Some(Value::String(t)) => Err(FhirError::invalid(format!(
            "resourceType {t:?} is not an R4 resource type"
        ))),
        _ => Err(FhirError::invalid("the resource has no resourceType")),
    }
}

/// The resource's type (present: [`parse`] checked it).
pub fn type_of(map: &Map<String, Value>) -> &str {
    map.get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The resource's `id`, if it has a string one.
pub fn id_of(map: &Map<String, Value>) -> Option<&str> {
    map.get("id").and_then(Value::as_str)
}

/// Checks an id from a URL or a body.
pub fn check_id(id: &str) -> Result<(), FhirError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(FhirError::invalid(format!(
            "{:?} is not a valid id (1-64 of A-Z a-z 0-9 - .)",
            id.chars().take(80).collect::<String>()
        )))
    }
}

/// The bytes the engine stores for `map` under `id`.
pub fn to_stored(mut map: Map<String, Value>, id: &str) -> Vec<u8> {
    if map.contains_key("id") {
        map.insert("id".into(), Value::String(id.into()));
    } else {
        let at = usize::from(map.contains_key("resourceType")).min(map.len());
        map.shift_insert(at, "id".into(), Value::String(id.into()));
    }
    let empty_meta = match map.get_mut("meta") {
        Some(Value::Object(meta)) => {
            meta.shift_remove("versionId");
            meta.shift_remove("lastUpdated");
            meta.is_empty()
        }
        _ => false,
    };
    if empty_meta {
        map.shift_remove("meta");
    }
    serde_json::to_vec(&Value::Object(map)).unwrap_or_default()
}

/// The JSON a client gets for a stored version: `meta.versionId` and
/// `meta.lastUpdated` first in `meta`, `meta` right after `id`.
pub fn render(stored: &[u8], version: u64, last_updated_us: u64) -> Result<Vec<u8>, FhirError> {
    let mut map = render_map(stored, version, last_updated_us)?;
    Ok(serde_json::to_vec(&Value::Object(std::mem::take(&mut map))).unwrap_or_default())
}

/// Like [`render`], as a JSON object (for bundles).
pub fn render_map(
    stored: &[u8],
    version: u64,
    last_updated_us: u64,
) -> Result<Map<String, Value>, FhirError> {
    let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(stored) else {
        return Err(FhirError::internal(
            "a stored resource is not a JSON object",
        ));
    };
    let mut meta = match map.shift_remove("meta") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    meta.shift_insert(0, "versionId".into(), Value::String(version.to_string()));
    meta.shift_insert(
        1,
        "lastUpdated".into(),
        Value::String(format_instant(last_updated_us)),
    );
    let at = map
        .keys()
        .position(|k| k == "id")
        .map_or(map.len().min(1), |i| i + 1);
    map.shift_insert(at, "meta".into(), Value::Object(meta));
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_bytes_drop_server_meta_and_keep_everything_else() {
        let body = br#"{"resourceType":"Observation","meta":{"versionId":"9","lastUpdated":"2020-01-01T00:00:00Z","profile":["p"]},"valueQuantity":{"value":1.50},"status":"final"}"#;
        let stored = to_stored(parse(body).expect("parses"), "o1");
        assert_eq!(
            std::str::from_utf8(&stored).expect("utf8"),
            r#"{"resourceType":"Observation","id":"o1","meta":{"profile":["p"]},"valueQuantity":{"value":1.50},"status":"final"}"#
        );
        let shown = render(&stored, 3, 0).expect("renders");
        assert_eq!(
            std::str::from_utf8(&shown).expect("utf8"),
            r#"{"resourceType":"Observation","id":"o1","meta":{"versionId":"3","lastUpdated":"1970-01-01T00:00:00.000000Z","profile":["p"]},"valueQuantity":{"value":1.50},"status":"final"}"#
        );
    }

    #[test]
    fn bad_bodies_are_explained() {
        let e = parse(b"{\n  \"resourceType\": \"Patient\",\n  oops\n}").expect_err("malformed");
        assert!(
            e.diagnostics.contains("line 3 column 3"),
            "{}",
            e.diagnostics
        );
        assert!(parse(br#"{"resourceType":"Patients"}"#).is_err());
        assert!(parse(br#"[1]"#).is_err());
        assert!(parse(br#"{"id":"x"}"#).is_err());
    }
}
