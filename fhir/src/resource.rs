//! Resource bodies: parsing, what the engine stores, what clients get.
//!
//! The engine is the source of truth for a version's number and time, so
//! the stored JSON is the client's JSON with `id` set and `meta.versionId`
//! and `meta.lastUpdated` removed; they are put back on every read. So a
//! byte-identical resource makes no new version whatever meta the client
//! echoes, and every other field keeps its exact value: numbers are kept as
//! written (`1.50` stays `1.50`) and key order is preserved.

use std::borrow::Cow;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::http::outcome::FhirError;
use crate::instant::format_instant;
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
    to_stored_in(&mut map, id)
}

/// Like [`to_stored`], setting `id` and dropping server meta in `map`
/// itself (calling it again with another id gives that id's bytes).
pub fn to_stored_in(map: &mut Map<String, Value>, id: &str) -> Vec<u8> {
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
    serde_json::to_vec(&*map).unwrap_or_default()
}

/// Like [`to_stored_in`], with the numbers that had an exponent in the
/// client's text (`originals`, from [`crate::numbers::exponents`]) spelled
/// as the client wrote them.
pub fn to_stored_exact(map: &mut Map<String, Value>, id: &str, originals: &[String]) -> Vec<u8> {
    crate::numbers::restore(to_stored_in(map, id), originals)
}

/// The JSON a client gets for a stored version: `meta.versionId` and
/// `meta.lastUpdated` first in `meta`, `meta` right after `id` — the same
/// bytes as serializing [`render_map`]. Only the top level and `meta` are
/// parsed; every other member is copied as the raw text it is stored as
/// (this runs on every read and write response).
pub fn render(stored: &[u8], version: u64, last_updated_us: u64) -> Result<Vec<u8>, FhirError> {
    let not_object = || FhirError::internal("a stored resource is not a JSON object");
    let members: Members<'_> = serde_json::from_slice(stored).map_err(|_| not_object())?;
    let mut meta = Map::new();
    let mut top: Vec<(Cow<'_, str>, &RawValue)> = Vec::with_capacity(members.0.len());
    for (k, v) in members.0 {
        if k == "meta" {
            // As render_map: a meta that is not an object is replaced.
            if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(v.get()) {
                meta = m;
            }
        } else {
            top.push((k, v));
        }
    }
    meta.shift_insert(0, "versionId".into(), Value::String(version.to_string()));
    meta.shift_insert(
        1,
        "lastUpdated".into(),
        Value::String(format_instant(last_updated_us)),
    );
    let at = top
        .iter()
        .position(|(k, _)| k == "id")
        .map_or(top.len().min(1), |i| i + 1);
    let meta = serde_json::to_string(&meta).map_err(|e| FhirError::internal(e.to_string()))?;
    let mut out = Vec::with_capacity(stored.len() + meta.len() + 16);
    out.push(b'{');
    let put = |i: usize, k: &str, v: &str, out: &mut Vec<u8>| {
        if i > 0 {
            out.push(b',');
        }
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, k);
        out.push(b':');
        out.extend_from_slice(v.as_bytes());
    };
    let mut i = 0;
    for (n, (k, v)) in top.iter().enumerate() {
        if n == at {
            put(i, "meta", &meta, &mut out);
            i += 1;
        }
        put(i, k, v.get(), &mut out);
        i += 1;
    }
    if at >= top.len() {
        put(i, "meta", &meta, &mut out);
    }
    out.push(b'}');
    Ok(out)
}

/// A JSON object's members in order, values left as raw text.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Members<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(8));
                while let Some(k) = m.next_key::<Key<'de>>()? {
                    out.push((k.0, m.next_value::<&'de RawValue>()?));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// An object key, borrowed unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Key<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(Visit)
    }
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

/// The current live version of the internal record `ty`/`id` (an export
/// or reindex job), read as `T`, with its version; `None` when there is
/// none. A body that does not read as `T` is an internal error.
pub fn read_record<T: serde::de::DeserializeOwned>(
    store: &vigil_engine::Store,
    ty: &str,
    id: &str,
) -> Result<Option<(T, u64)>, FhirError> {
    match store.get(ty, id)? {
        vigil_engine::Current::Live(v) => {
            let record: T = serde_json::from_slice(&v.body)
                .map_err(|e| FhirError::internal(format!("{ty}/{id} unreadable: {e}")))?;
            Ok(Some((record, v.version)))
        }
        _ => Ok(None),
    }
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
    fn render_gives_the_bytes_of_render_map() {
        for body in [
            r#"{"resourceType":"Patient","id":"p","name":[{"family":"Ünï\"q\u0001"}],"x":1.50,"y":12345678901234567890.10}"#,
            r#"{"resourceType":"Patient","id":"p","meta":{"profile":["a"],"tag":[{"code":"t"}]},"active":true}"#,
            r#"{"resourceType":"Patient","active":false,"id":"p","meta":{"source":"s"}}"#,
            r#"{"resourceType":"Patient","meta":"not an object","id":"p"}"#,
            r#"{"resourceType":"Patient"}"#,
            r#"{"id":"p"}"#,
            r#"{}"#,
            r#"{"resourceType":"Patient","id":"p","we\u00efrd key":{"a":[1,{"b":null}]}}"#,
        ] {
            let fast = render(body.as_bytes(), 7, 1_700_000_000_123_456).expect("renders");
            let slow = serde_json::to_vec(&Value::Object(
                render_map(body.as_bytes(), 7, 1_700_000_000_123_456).expect("renders"),
            ))
            .expect("serializes");
            assert_eq!(
                String::from_utf8_lossy(&fast),
                String::from_utf8_lossy(&slow),
                "{body}"
            );
        }
        assert!(render(b"[1]", 1, 0).is_err());
        assert!(render(b"{\"a\":", 1, 0).is_err());
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
