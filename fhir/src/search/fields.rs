//! Parses only the top-level fields of a JSON object that a caller names,
//! skipping the rest without building it.
//!
//! A replica indexes resources it did not parse itself (the leader's HTTP
//! path hands its parse to the engine; a follower, a rebuild and a restore
//! read bodies from the log). The search keys come from a few top-level
//! fields, while most of a body is narrative, addresses and extensions:
//! building all of it as a `serde_json::Value` was most of the follower's
//! key extraction. Skipped values are still scanned and checked, so a body
//! that is not valid JSON is refused here as it is by a full parse.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

/// What [`parse_fields`] found.
#[derive(Debug, PartialEq)]
pub enum Fields {
    /// The body is an object: its fields whose names are wanted, each as a
    /// full parse would give it (for a repeated name, the last, as
    /// `serde_json` keeps).
    Object(Map<String, Value>),
    /// The body is valid JSON but not an object, or it uses the name
    /// [`NUMBER_TOKEN`]: let a full parse settle it (bodies in the store are
    /// always objects, so this path is never the hot one).
    NotObject,
}

/// The name `serde_json` (with `arbitrary_precision`) gives the one field
/// of the map it presents a number as.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Parses `body`, keeping the top-level fields named in `wanted`. `None`
/// when `body` is not one valid JSON value. The whole body is checked to be
/// UTF-8 first: `serde_json` skips a string without checking it.
pub fn parse_fields(body: &[u8], wanted: &[&str]) -> Option<Fields> {
    let text = std::str::from_utf8(body).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let fields = Wanted(wanted).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(fields)
}

struct Wanted<'w>(&'w [&'w str]);

/// Whether a field is wanted: named, or a choice element of a named one
/// (`valueQuantity` for `value`: the name, then an upper-case letter).
pub fn wanted(names: &[&str], field: &str) -> bool {
    names.iter().any(|w| names_field(w, field))
}

/// [`wanted`] for owned names.
pub fn wanted_name(names: &[String], field: &str) -> bool {
    names.iter().any(|w| names_field(w, field))
}

fn names_field(name: &str, field: &str) -> bool {
    field
        .strip_prefix(name)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_uppercase()))
}

impl<'de> DeserializeSeed<'de> for Wanted<'_> {
    type Value = Fields;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Fields, D::Error> {
        d.deserialize_any(self)
    }
}

/// Answers `NotObject` for every JSON value but an object.
macro_rules! not_object {
    ($($name:ident: $ty:ty),*) => {
        $(fn $name<E: serde::de::Error>(self, _: $ty) -> Result<Fields, E> {
            Ok(Fields::NotObject)
        })*
    };
}

impl<'de> Visitor<'de> for Wanted<'_> {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let mut out = Map::new();
        let mut number = false;
        while let Some(Name(name)) = map.next_key()? {
            if name == NUMBER_TOKEN {
                number = true;
                map.next_value::<IgnoredAny>()?;
            } else if wanted(self.0, &name) {
                let v: Value = map.next_value()?;
                out.insert(name.into_owned(), v);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(match number {
            true => Fields::NotObject,
            false => Fields::Object(out),
        })
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Fields, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Fields::NotObject)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Fields, E> {
        Ok(Fields::NotObject)
    }

    not_object!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64,
        visit_str: &str, visit_borrowed_str: &'de str, visit_string: String);
}

/// A field name, borrowed from the body unless it holds escapes.
struct Name<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a full parse keeps of the wanted fields. Its `NotObject` is
    /// for valid JSON that is not an object.
    fn full(body: &str, wanted: &[&str]) -> Option<Fields> {
        match serde_json::from_str::<Value>(body).ok()? {
            Value::Object(m) => Some(Fields::Object(
                m.into_iter()
                    .filter(|(k, _)| super::wanted(wanted, k))
                    .collect(),
            )),
            _ => Some(Fields::NotObject),
        }
    }

    #[test]
    fn keeps_exactly_the_wanted_fields_as_a_full_parse_does() {
        let wanted = ["name", "gender", "birthDate", "a\"b", "value"];
        for body in [
            r#"{"resourceType":"Patient","name":[{"family":"Łukasz","given":["A\u0042"]}],"text":{"div":"<div>x</div>"},"gender":"female","birthDate":"1970-01-01","n":1.50}"#,
            // Escaped names, a repeated name (the last wins), nesting.
            r#"{"gen\u0064er":"male","a\"b":{"x":[1,2,{"y":null}]},"gender":"other","deep":{"name":"no"}}"#,
            r#"{"valueQuantity":{"value":1},"valued":2,"value":3}"#,
            r#"{}"#,
            r#"  {"name" : true }  "#,
        ] {
            assert_eq!(
                parse_fields(body.as_bytes(), &wanted),
                full(body, &wanted),
                "{body}"
            );
        }
    }

    #[test]
    fn a_body_that_is_not_an_object_or_not_json_is_told_apart() {
        for body in ["[1,{\"a\":2}]", "\"s\"", "1.5", "-3", "true", "null"] {
            assert_eq!(
                parse_fields(body.as_bytes(), &["a"]),
                Some(Fields::NotObject)
            );
            assert_eq!(full(body, &["a"]), Some(Fields::NotObject));
        }
        // serde_json's own name for a number: left to a full parse.
        let odd = r#"{"a":1,"$serde_json::private::Number":"2"}"#;
        assert_eq!(
            parse_fields(odd.as_bytes(), &["a"]),
            Some(Fields::NotObject)
        );
        for body in [
            "{\"a\":1",
            "{\"a\":1} x",
            "{\"skip\":[1,}",
            "{\"skip\":\"\\q\"}",
            "",
            "{\"a\":1,}",
        ] {
            assert!(parse_fields(body.as_bytes(), &["a"]).is_none(), "{body}");
            assert!(full(body, &["a"]).is_none(), "{body}");
        }
        // Invalid UTF-8 in a field that is skipped (found by fuzzing).
        let bad = b"{\"skip\":\"\xf0x\",\"a\":1}";
        assert!(parse_fields(bad, &["a"]).is_none());
        assert!(serde_json::from_slice::<Value>(bad).is_err());
    }
}
