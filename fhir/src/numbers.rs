//! Numbers exactly as written. `serde_json` (with `arbitrary_precision`)
//! keeps every digit of a number but rewrites its exponent: `1E-22` comes
//! back as `1e-22` and `1E5` as `1e+5`. FHIR says a decimal is kept as
//! written, so the bytes Vigil stores and serves get the client's spelling
//! back: [`exponents`] lists the numbers with an exponent in a JSON text,
//! in document order, and [`restore`] puts them back into JSON that was
//! serialized from it.
//!
//! [`restore`] replaces a number only by an original that `serde_json`
//! writes exactly as that number: so it can change a spelling, never a
//! value, whatever was added, dropped or moved in between. Numbers without
//! an exponent are already kept as written; a text with no exponent costs
//! one scan.

/// Most numbers with an exponent one text restores (beyond it, the rest
/// keep `serde_json`'s spelling).
pub const EXPONENTS_MAX: usize = 100_000;

/// The byte ranges of the numbers with an exponent in a JSON text,
/// outside strings, in order.
fn exponent_spans(json: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    i += if json[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                let mut exponent = false;
                while i < json.len()
                    && matches!(json[i], b'-' | b'+' | b'.' | b'0'..=b'9' | b'e' | b'E')
                {
                    exponent |= matches!(json[i], b'e' | b'E');
                    i += 1;
                }
                if exponent && out.len() < EXPONENTS_MAX {
                    out.push((start, i));
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// The numbers with an exponent in `json`, as written, in document order
/// (empty, and no allocation, when there are none).
pub fn exponents(json: &[u8]) -> Vec<String> {
    exponent_spans(json)
        .into_iter()
        .map(|(s, e)| String::from_utf8_lossy(&json[s..e]).into_owned())
        .collect()
}

/// How `serde_json` writes the number `text`.
fn normalized(text: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .filter(serde_json::Value::is_number)
        .map(|v| v.to_string())
}

/// `json` (serialized by `serde_json` from a document whose numbers with
/// an exponent were `originals`, in order) with those numbers spelled as
/// they were. Each number of `json` takes the next original, in order,
/// that `serde_json` writes exactly as it; one with none keeps its
/// spelling.
pub fn restore(json: Vec<u8>, originals: &[String]) -> Vec<u8> {
    if originals.is_empty() {
        return json;
    }
    let spans = exponent_spans(&json);
    if spans.is_empty() {
        return json;
    }
    let normal: Vec<Option<String>> = originals.iter().map(|o| normalized(o)).collect();
    let mut out = Vec::with_capacity(json.len());
    let (mut copied, mut next) = (0, 0);
    for (s, e) in spans {
        let Ok(token) = std::str::from_utf8(&json[s..e]) else {
            continue;
        };
        let Some(k) = (next..originals.len()).find(|&k| normal[k].as_deref() == Some(token)) else {
            continue;
        };
        out.extend_from_slice(&json[copied..s]);
        out.extend_from_slice(originals[k].as_bytes());
        copied = e;
        next = k + 1;
    }
    out.extend_from_slice(&json[copied..]);
    out
}

/// A Bundle (search, history, transaction response) serialized with
/// the numbers of its resources spelled as stored: when the text holds a
/// number with an exponent, `stored(type, id, version)` gives each
/// resource's stored body (every object with `meta.versionId`, in
/// document order), whose numbers are the originals.
pub fn bundle_bytes(
    bundle: &serde_json::Value,
    stored: impl Fn(&str, &str, u64) -> Option<Vec<u8>>,
) -> Vec<u8> {
    let json = serde_json::to_vec(bundle).unwrap_or_default();
    if exponent_spans(&json).is_empty() {
        return json;
    }
    let mut versions = Vec::new();
    versioned(bundle, &mut versions);
    let mut originals = Vec::new();
    for (ty, id, v) in versions {
        if let Some(body) = stored(ty, id, v) {
            originals.extend(exponents(&body));
        }
    }
    restore(json, &originals)
}

/// Every resource in `v` that carries `meta.versionId`, in order.
fn versioned<'v>(v: &'v serde_json::Value, out: &mut Vec<(&'v str, &'v str, u64)>) {
    use serde_json::Value;
    match v {
        Value::Object(o) => {
            let ty = o.get("resourceType").and_then(Value::as_str);
            let id = o.get("id").and_then(Value::as_str);
            let version = o
                .get("meta")
                .and_then(|m| m.get("versionId"))
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok());
            if let (Some(ty), Some(id), Some(version)) = (ty, id, version) {
                out.push((ty, id, version));
                return;
            }
            o.values().for_each(|x| versioned(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| versioned(x, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(text).expect("json");
        let out = restore(
            serde_json::to_vec(&v).expect("json"),
            &exponents(text.as_bytes()),
        );
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn exponents_come_back_as_written() {
        for text in [
            r#"{"a":1E-22,"b":[1e5,1E+5,-2.50E07],"c":"1E5 in a string","d":0.000}"#,
            r#"[1E5,1e5,1e+5,1E+5]"#,
            r#"{"s":"a \"quoted\" 1E5","n":6.0221E23}"#,
            "1E400",
        ] {
            assert_eq!(round_trip(text), text);
        }
    }

    #[test]
    fn a_changed_document_keeps_values_and_never_swaps_one() {
        let originals = exponents(br#"{"a":1E5,"b":2E5}"#);
        // `a` dropped, a new number added in front: `b` still finds its
        // own spelling, the new one keeps serde_json's.
        let out = restore(br#"{"x":3e+5,"b":2e+5}"#.to_vec(), &originals);
        assert_eq!(out, br#"{"x":3e+5,"b":2E5}"#);
        assert_eq!(restore(b"[1e+5]".to_vec(), &[]), b"[1e+5]");
    }
}
