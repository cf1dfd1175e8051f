//! HTTP as every handler speaks it: errors as OperationOutcomes
//! ([`outcome`]), content negotiation ([`negotiate`]), bearer-token
//! authorisation ([`auth`]), the request id and `Preference-Applied`
//! ([`context`]), CORS ([`cors`]), and here the small shared pieces: ETags,
//! `Prefer`, bodies, resource responses.

pub mod auth;
pub mod context;
pub mod cors;
pub mod jwks;
pub mod negotiate;
pub mod outcome;
pub mod scopes;
pub mod smart;
pub mod tokens;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::http::outcome::{FHIR_JSON, FhirError, outcome_json};

/// The `W/"n"` ETag of version `n`.
pub fn etag(version: u64) -> String {
    format!("W/\"{version}\"")
}

/// Parses `W/"n"` (or `"n"`, or `n`) to a version number.
pub fn parse_etag(value: &str) -> Option<u64> {
    let v = value.trim();
    let v = v.strip_prefix("W/").unwrap_or(v);
    v.trim_matches('"').parse().ok()
}

/// The version an `If-Match` header requires, if any (see
/// [`if_match_value`]).
pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>, FhirError> {
    match headers.get(header::IF_MATCH).map(|v| v.to_str()) {
        None => Ok(None),
        Some(Ok(v)) => if_match_value(v).map(Some),
        Some(Err(_)) => Err(FhirError::invalid("If-Match is not readable text")),
    }
}

/// The version an `If-Match` value requires. A well-formed entity tag
/// that names no version of a resource (`W/"outdated-version"`) can never
/// match: 412, as HTTP says for any If-Match that does not match. A value
/// that is not an entity tag, `*`, or a list of several tags: 400.
pub fn if_match_value(v: &str) -> Result<u64, FhirError> {
    if let Some(n) = parse_etag(v) {
        return Ok(n);
    }
    let t = v.trim();
    if t == "*" {
        return Err(FhirError::invalid(
            "If-Match: * is not supported: send the ETag of the version to update, like W/\"3\"",
        ));
    }
    let opaque = t.strip_prefix("W/").unwrap_or(t);
    let well_formed = opaque.len() >= 2
        && opaque.starts_with('"')
        && opaque.ends_with('"')
        && !opaque[1..opaque.len() - 1].contains('"');
    if well_formed {
        Err(FhirError::precondition(format!(
            "If-Match {t} names no version of this resource (versions are W/\"1\", W/\"2\", ...)"
        )))
    } else {
        Err(FhirError::invalid(format!(
            "If-Match {t:?} is not an entity tag like W/\"3\""
        )))
    }
}

/// Microseconds since the epoch as an HTTP date.
pub fn http_date(us: u64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_micros(us))
}

/// What the client asked for in `Prefer: return=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Return {
    /// The resource (the default).
    Representation,
    /// No body.
    Minimal,
    /// An OperationOutcome.
    Outcome,
}

/// Reads `Prefer: return=…`: what the handlers return.
pub fn prefer_return(headers: &HeaderMap) -> Return {
    prefer_return_asked(headers).unwrap_or(Return::Representation)
}

/// The `return=` preference sent, when it is one this server knows (the
/// first `return=` counts).
pub fn prefer_return_asked(headers: &HeaderMap) -> Option<Return> {
    let prefer = preferences(headers).find_map(|p| p.strip_prefix("return="));
    match prefer? {
        "minimal" => Some(Return::Minimal),
        "OperationOutcome" => Some(Return::Outcome),
        "representation" => Some(Return::Representation),
        _ => None,
    }
}

impl Return {
    /// The preference as `Preference-Applied` states it.
    pub fn preference(self) -> &'static str {
        match self {
            Return::Representation => "return=representation",
            Return::Minimal => "return=minimal",
            Return::Outcome => "return=OperationOutcome",
        }
    }
}

/// Every preference of every `Prefer` header, trimmed (`return=minimal`,
/// `handling=strict`, `respond-async`).
fn preferences(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Whether the preference `token` (`respond-async`) was sent.
pub fn prefers(headers: &HeaderMap, token: &str) -> bool {
    preferences(headers).any(|p| p == token)
}

/// Whether `Prefer: handling=strict` was sent.
pub fn prefer_strict(headers: &HeaderMap) -> bool {
    prefers(headers, "handling=strict")
}

/// The request body, or 413 when it exceeds the configured limit.
pub fn body(bytes: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, FhirError> {
    match bytes {
        Ok(b) => Ok(b),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(FhirError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-costly",
            format!("the request body exceeds the limit of {limit} bytes"),
        )),
        Err(e) => Err(FhirError::invalid(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

/// A JSON response with the FHIR media type.
pub fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    resp
}

/// What a resource response carries besides its body.
pub struct VersionMeta<'a> {
    /// The resource type.
    pub resource_type: &'a str,
    /// The id.
    pub id: &'a str,
    /// The version.
    pub version: u64,
    /// Its time.
    pub last_updated_us: u64,
}

/// A response for one resource version: ETag, Last-Modified, optionally
/// Location, and the body `Prefer` asks for.
pub fn resource_response(
    status: StatusCode,
    base: &str,
    meta: &VersionMeta<'_>,
    rendered: Vec<u8>,
    ret: Return,
    location: bool,
) -> Response {
    let body = match ret {
        Return::Representation => rendered,
        Return::Minimal => Vec::new(),
        Return::Outcome => serde_json::to_vec(&outcome_json(
            "information",
            "informational",
            &format!(
                "{}/{} is at version {}",
                meta.resource_type, meta.id, meta.version
            ),
        ))
        .unwrap_or_default(),
    };
    let mut resp = if body.is_empty() {
        status.into_response()
    } else {
        json_response(status, body)
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag(meta.version)) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&http_date(meta.last_updated_us)) {
        h.insert(header::LAST_MODIFIED, v);
    }
    if location
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{base}/{}/{}/_history/{}",
            meta.resource_type, meta.id, meta.version
        ))
    {
        h.insert(header::LOCATION, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_roundtrip() {
        assert_eq!(parse_etag(&etag(7)), Some(7));
        assert_eq!(parse_etag("\"3\""), Some(3));
        assert_eq!(parse_etag("W/\"x\""), None);
    }

    #[test]
    fn prefer_is_read_from_any_header_value() {
        let mut h = HeaderMap::new();
        h.insert(
            "prefer",
            HeaderValue::from_static("handling=strict, return=minimal"),
        );
        assert_eq!(prefer_return(&h), Return::Minimal);
        assert!(prefer_strict(&h));
    }
}
