//! Content negotiation: JSON only, said clearly.

use axum::http::{HeaderMap, StatusCode, header};

use crate::http::outcome::FhirError;

/// Checks `_format` and `Accept`: JSON (or anything) is fine; a request
/// that accepts only XML (or another type) gets 406.
pub fn check_accept(headers: &HeaderMap, format: Option<&str>) -> Result<(), FhirError> {
    if let Some(f) = format {
        return match f {
            "json" | "application/json" | "application/fhir+json" => Ok(()),
            other => Err(FhirError::new(
                StatusCode::NOT_ACCEPTABLE,
                "not-supported",
                format!(
                    "_format={other} is not supported; this server speaks application/fhir+json"
                ),
            )),
        };
    }
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let ok = accept.split(',').any(|part| {
        let mt = part.split(';').next().unwrap_or("").trim();
        matches!(
            mt,
            "" | "*/*" | "application/*" | "application/json" | "application/fhir+json"
        )
    });
    if ok {
        Ok(())
    } else {
        Err(FhirError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not-supported",
            format!("cannot answer in {accept}; this server speaks application/fhir+json"),
        ))
    }
}

/// Checks a request body's `Content-Type`: FHIR JSON or JSON (a missing
/// one is taken as JSON); XML and others get 415.
pub fn check_content_type(headers: &HeaderMap) -> Result<(), FhirError> {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    let mt = ct.split(';').next().unwrap_or("").trim();
    if matches!(mt, "application/fhir+json" | "application/json") {
        Ok(())
    } else {
        Err(FhirError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            format!("Content-Type {ct} is not supported; send application/fhir+json"),
        ))
    }
}

/// Requires the request body's `Content-Type` to be `media` (parameters
/// allowed); otherwise 415 saying what `what` takes.
pub fn require_content_type(headers: &HeaderMap, media: &str, what: &str) -> Result<(), FhirError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.split(';').next().unwrap_or("").trim() == media {
        Ok(())
    } else {
        Err(FhirError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            format!("{what} takes {media}, not {ct:?}"),
        ))
    }
}
