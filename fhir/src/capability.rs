//! `GET /metadata`: a CapabilityStatement listing exactly what is
//! implemented.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use crate::app::App;
use crate::http::json_response;
use crate::search::params::{Kind, params_of};
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

/// The CapabilityStatement as JSON.
pub fn statement(base: &str) -> Value {
    let resources: Vec<Value> = R4_RESOURCE_TYPES
        .iter()
        .map(|ty| {
            let mut params = vec![
                json!({"name": "_id", "type": "token"}),
                json!({"name": "_lastUpdated", "type": "date"}),
            ];
            params.extend(params_of(ty).into_iter().map(|p| {
                let kind = match p.kind {
                    Kind::Token => "token",
                    Kind::String => "string",
                    Kind::Reference => "reference",
                    Kind::Date => "date",
                };
                json!({"name": p.name, "type": kind})
            }));
            let interactions: Vec<Value> =
                INTERACTIONS.iter().map(|c| json!({"code": c})).collect();
            json!({
                "type": ty,
                "interaction": interactions,
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "not-supported",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "searchParam": params,
            })
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-26",
        "kind": "instance",
        "software": {"name": "Vigil", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Vigil FHIR R4 server", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
            // Bulk Data Access: [base]/$export, Patient/$export, Group/[id]/$export.
            "operation": [
                {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"},
                {"name": "patient-export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"},
                {"name": "group-export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"},
            ],
        }],
    })
}

/// `GET /metadata`.
pub async fn metadata(State(app): State<Arc<App>>) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::to_vec(&statement(&app.base)).unwrap_or_default(),
    )
}
