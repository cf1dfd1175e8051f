//! Errors as FHIR OperationOutcome responses with the right HTTP status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The FHIR JSON media type, without parameters.
pub const FHIR_JSON_TYPE: &str = "application/fhir+json";
/// The media type of every FHIR JSON response.
pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// One OperationOutcome issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// `fatal`, `error`, `warning` or `information`.
    pub severity: &'static str,
    /// The issue type (`invalid`, `required`, …).
    pub code: &'static str,
    /// What is wrong, for a person.
    pub diagnostics: String,
    /// The FHIRPath of the element it is about.
    pub expression: Option<String>,
}

impl Issue {
    /// The issue as OperationOutcome JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v =
            json!({"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics});
        if let Some(e) = &self.expression {
            v["expression"] = json!([e]);
        }
        v
    }
}

/// An error a request ends with: an HTTP status and one OperationOutcome
/// issue (severity `error` unless said otherwise), or several.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {diagnostics}")]
pub struct FhirError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The OperationOutcome issue type (`invalid`, `not-found`, `conflict`…).
    pub code: &'static str,
    /// What went wrong, for a person.
    pub diagnostics: String,
    /// Seconds for a `Retry-After` header, when the client should retry.
    pub retry_after: Option<u32>,
    /// The issues, when there are several (each problem of an invalid
    /// resource); empty: the one issue `code` and `diagnostics` make.
    pub issues: Vec<Issue>,
}

impl FhirError {
    /// An error with this status, issue type and message.
    pub fn new(status: StatusCode, code: &'static str, diagnostics: impl Into<String>) -> Self {
        Self {
            status,
            code,
            diagnostics: diagnostics.into(),
            retry_after: None,
            issues: Vec::new(),
        }
    }

    /// The same error reported as these issues.
    pub fn with_issues(mut self, issues: Vec<Issue>) -> Self {
        self.issues = issues;
        self
    }

    /// Each issue's expression with its first step (the resource type)
    /// replaced by `prefix` (`Bundle.entry[3].resource`).
    pub fn within(mut self, prefix: &str) -> Self {
        for i in &mut self.issues {
            if let Some(e) = &mut i.expression {
                let rest = e.find(['.', '[']).map_or("", |at| &e[at..]);
                *e = format!("{prefix}{rest}");
            }
        }
        self
    }

    /// The same error with a `Retry-After` of `secs` seconds.
    pub fn with_retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// 503 `transient` with `Retry-After: secs`: the one way to say "not
    /// now, try again" (failover in progress, writes stalled, the store
    /// reopening), so every such answer tells the client when.
    pub fn unavailable(msg: impl Into<String>, secs: u32) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "transient", msg).with_retry_after(secs)
    }

    /// 400 `invalid`.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", msg)
    }

    /// 404 `not-found`.
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", msg)
    }

    /// 410 `deleted`.
    pub fn gone(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "deleted", msg)
    }

    /// 412 `conflict` (a failed If-Match or conditional create).
    pub fn precondition(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::PRECONDITION_FAILED, "conflict", msg)
    }

    /// 500 `exception`.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "exception", msg)
    }

    /// The OperationOutcome body.
    pub fn outcome(&self) -> serde_json::Value {
        if self.issues.is_empty() {
            return outcome_json("error", self.code, &self.diagnostics);
        }
        json!({
            "resourceType": "OperationOutcome",
            "issue": self.issues.iter().map(Issue::to_json).collect::<Vec<_>>(),
        })
    }
}

/// An OperationOutcome with one issue.
pub fn outcome_json(severity: &str, code: &str, diagnostics: &str) -> serde_json::Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}]
    })
}

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.outcome()).unwrap_or_default();
        let mut resp = (self.status, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// Retry-After on a write refused for a full disk: freeing space is an
/// operator's (or a retention job's) work, not a moment's.
const DISK_FULL_RETRY_AFTER_S: u32 = 30;

impl From<vigil_net::runtime::replicated::CommitError> for FhirError {
    fn from(e: vigil_net::runtime::replicated::CommitError) -> Self {
        use vigil_net::runtime::replicated::CommitError;
        match e {
            CommitError::Store(e) => e.into(),
            CommitError::Task(why) => FhirError::internal(format!("commit task failed: {why}")),
            // Every other refusal is replication saying "not now".
            other => FhirError::unavailable(other.to_string(), 1),
        }
    }
}

impl From<vigil_engine::Error> for FhirError {
    fn from(e: vigil_engine::Error) -> Self {
        use vigil_engine::Error as E;
        match &e {
            E::VersionConflict { .. } => {
                FhirError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            E::ResourceTooLarge { .. } | E::BatchTooLarge { .. } => {
                FhirError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-costly", e.to_string())
            }
            E::Invalid { .. } | E::EmptyBatch => FhirError::invalid(e.to_string()),
            E::ReadOnly => FhirError::unavailable(
                "this node is a follower and its leader is not known yet; retry",
                1,
            ),
            // 507: the server cannot store the representation (RFC 4918).
            // A refused write left the store usable; an fsync that failed
            // for space stopped it until it is reopened.
            _ if e.is_disk_full() => {
                let what = if e.is_fatal() {
                    "the write was not acknowledged and the store stopped; it reopens once space is freed"
                } else {
                    "nothing was written; retry once space is freed"
                };
                FhirError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "no-store",
                    format!("the disk is full on this node; {what}: {e}"),
                )
                .with_retry_after(DISK_FULL_RETRY_AFTER_S)
            }
            E::Poisoned(_) | E::Fsync { .. } | E::Closed => {
                FhirError::unavailable(e.to_string(), 5)
            }
            _ => FhirError::internal(e.to_string()),
        }
    }
}
