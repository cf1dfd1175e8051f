//! `GET /metadata`: a CapabilityStatement listing exactly what is
//! implemented.

use std::sync::Arc;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::app::App;
use crate::http::json_response;
use crate::http::outcome::FhirError;
use crate::search::registry::{Kind, registry};
use crate::types::R4_RESOURCE_TYPES;

/// The type-level interactions every resource type supports.
const INTERACTIONS: &[&str] = &[
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
];

/// The Bulk Data server CapabilityStatement this server instantiates.
pub const BULK_DATA_CAPABILITY: &str =
    "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data";

/// The CapabilityStatement as JSON, with the custom parameters in force;
/// with a token endpoint, the SMART `security` that names it.
pub fn statement(
    base: &str,
    custom: &crate::search::custom::Active,
    token_endpoint: Option<&str>,
) -> Value {
    let resources: Vec<Value> = R4_RESOURCE_TYPES
        .iter()
        .map(|ty| {
            let params: Vec<Value> = registry()
                .of(ty)
                .params
                .iter()
                .filter(|p| p.is_searchable())
                .chain(custom.of(ty))
                .map(|p| json!({"name": p.code, "definition": p.url, "type": p.kind.name()}))
                .collect();
            let interactions: Vec<Value> =
                INTERACTIONS.iter().map(|c| json!({"code": c})).collect();
            let includes: Vec<String> = std::iter::once("*".to_owned())
                .chain(
                    registry()
                        .of(ty)
                        .params
                        .iter()
                        .filter(|p| p.kind == Kind::Reference && p.expr.is_some())
                        .map(|p| format!("{ty}:{}", p.code)),
                )
                .collect();
            let mut resource = json!({
                "type": ty,
                "interaction": interactions,
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "not-supported",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "searchInclude": includes,
                "searchParam": params,
            });
            if *ty == "Patient"
                && let Some(r) = resource.as_object_mut()
            {
                r.insert(
                    "operation".to_owned(),
                    json!([{"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}]),
                );
            }
            resource
        })
        .collect();
    let mut rest = json!({
        "mode": "server",
        "resource": resources,
        "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}, {"code": "search-system"}],
        // Bulk Data Access: [base]/$export, Patient/$export, Group/[id]/$export.
        "operation": [
            {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"},
            {"name": "patient-export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"},
            {"name": "group-export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"},
        ],
    });
    if let Some(token) = token_endpoint {
        rest["security"] = json!({
            "service": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "SMART-on-FHIR",
            }]}],
            "extension": [{
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [{"url": "token", "valueUri": token}],
            }],
        });
    }
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "instantiates": [BULK_DATA_CAPABILITY],
        "date": "2026-11-26",
        "kind": "instance",
        "software": {"name": "Vigil", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Vigil FHIR R4 server", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [rest],
    })
}

/// `GET /metadata`.
///
/// The statement carries a weak ETag of its content (it changes only with
/// the build and the base URL) and `Last-Modified` from its `date`, so a
/// client may revalidate with `If-None-Match` (304). `mode=terminology`
/// asks for a TerminologyCapabilities, which this server does not claim:
/// 400 with an OperationOutcome saying so; `mode=full` and `mode=normative`
/// are the statement itself.
pub async fn metadata(
    State(app): State<Arc<App>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    match q.get("mode").map(String::as_str) {
        None | Some("full" | "normative") => {}
        Some("terminology") => {
            return FhirError::invalid(
                "mode=terminology: this server has no terminology service, so no TerminologyCapabilities",
            )
            .into_response();
        }
        Some(other) => {
            return FhirError::invalid(format!(
                "mode={other} is not a capability mode (full, normative, terminology)"
            ))
            .into_response();
        }
    }
    let custom = app
        .store()
        .map(|s| crate::search::keys::custom_of(&s))
        .unwrap_or_default();
    let token = crate::http::smart::token_endpoint(&app);
    let st = statement(&app.base, &custom, token.as_deref());
    let body = serde_json::to_vec(&st).unwrap_or_default();
    let mut h = std::hash::DefaultHasher::new();
    body.hash(&mut h);
    let tag = format!("W/\"{:016x}\"", h.finish());
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        json_response(StatusCode::OK, body)
    };
    let hs = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&tag) {
        hs.insert(header::ETAG, v);
    }
    if let Some(date) = st.get("date").and_then(Value::as_str)
        && let Some(us) =
            crate::instant::parse_interval(date).and_then(|(start, _)| u64::try_from(start).ok())
        && let Ok(v) = HeaderValue::from_str(&crate::http::http_date(us))
    {
        hs.insert(header::LAST_MODIFIED, v);
    }
    resp
}
