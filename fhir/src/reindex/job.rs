//! A reindex job as the log records it, and the one a client's
//! SearchParameter write brings (`plan`). Below the application: it
//! reads the store and the custom parameters in force, nothing else.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use vigil_engine::{Action, Batch, Op, Precondition, Store};

use crate::http::outcome::FhirError;
use crate::search::custom::{self, DEFINING_TYPE};

/// The internal resource type holding reindex jobs.
pub const JOB_TYPE: &str = "VigilReindexJob";

/// A reindex job, as recorded in the log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Job {
    /// Always [`JOB_TYPE`].
    #[serde(rename = "resourceType")]
    pub resource_type: String,
    /// The job id.
    pub id: String,
    /// `in-progress` or `completed`.
    pub status: String,
    /// What started it: `SearchParameter/[id]` or `$reindex`.
    pub reason: String,
    /// The types to rekey, in order.
    pub types: Vec<String>,
    /// The type being rekeyed (an index into `types`; `types.len()` when done).
    pub at: usize,
    /// The last id rekeyed in that type.
    pub after: Option<String>,
    /// Resources rekeyed so far.
    pub done: u64,
    /// Live resources of its types when it started (the goal; writes
    /// meanwhile change it a little).
    pub total: u64,
    /// When it started and when it last moved (microseconds since the epoch).
    pub started_us: u64,
    /// When it last moved.
    pub updated_us: u64,
}

impl Job {
    pub(super) fn new(store: &Store, reason: String, types: Vec<String>) -> Result<Job, FhirError> {
        let mut total = 0;
        for t in &types {
            total += store.live_count(t)?;
        }
        let now = crate::instant::now_us_u64();
        Ok(Job {
            resource_type: JOB_TYPE.into(),
            id: crate::ids::new_id(),
            status: "in-progress".into(),
            reason,
            types,
            at: 0,
            after: None,
            done: 0,
            total,
            started_us: now,
            updated_us: now,
        })
    }

    pub(super) fn op(&self) -> Result<Op, FhirError> {
        let body = serde_json::to_vec(self).map_err(|e| FhirError::internal(e.to_string()))?;
        Ok(Op::put(JOB_TYPE, self.id.clone(), body))
    }

    /// What `/status` and `GET /$reindex/[id]` show.
    pub fn view(&self) -> Value {
        let elapsed_s = (self.updated_us.saturating_sub(self.started_us)) as f64 / 1e6;
        json!({
            "id": self.id,
            "status": self.status,
            "reason": self.reason,
            "types": self.types,
            "type": self.types.get(self.at),
            "done": self.done,
            "total": self.total,
            "percent": match self.total {
                0 => 100.0,
                t => (self.done as f64 * 100.0 / t as f64).min(100.0),
            },
            "seconds": elapsed_s,
            "rate_per_s": match elapsed_s > 0.0 {
                true => (self.done as f64 / elapsed_s).round(),
                false => 0.0,
            },
        })
    }
}

/// Checks the SearchParameter writes of a client's batch and appends the
/// reindex job they need, if any (then `true`): a definition that cannot
/// be in force is a 400, nothing written. Called by [`crate::app::commit`]
/// for every client write.
pub(crate) fn plan(store: &Store, batch: &mut Batch) -> Result<bool, FhirError> {
    if !batch.ops.iter().any(|o| o.resource_type == DEFINING_TYPE) {
        return Ok(false);
    }
    let active = crate::search::keys::custom_of(store);
    let mut types: Vec<String> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    for op in batch
        .ops
        .iter()
        .filter(|o| o.resource_type == DEFINING_TYPE)
    {
        let mut touched = active.bases_of(&op.id);
        if let Action::Put(body) = &op.action {
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| FhirError::invalid(format!("SearchParameter/{}: {e}", op.id)))?;
            let new = custom::check_write(&active, &op.id, &v)
                .map_err(|why| FhirError::invalid(format!("SearchParameter/{}: {why}", op.id)))?;
            touched.extend(new);
        }
        if !touched.is_empty() {
            reasons.push(format!("SearchParameter/{}", op.id));
        }
        types.extend(touched);
    }
    types.sort();
    types.dedup();
    if types.is_empty() {
        return Ok(false);
    }
    let job = Job::new(store, reasons.join(", "), types)?;
    batch.push(job.op()?.expect(Precondition::Absent));
    Ok(true)
}
