//! What callers commit: batches of operations, and what each one did.

use crate::error::{Error, Result};
use crate::limits::{BATCH_BYTES_MAX, BATCH_OPS_MAX, ID_BYTES_MAX, TYPE_BYTES_MAX};
use crate::log::record::OpKind;
use crate::write::precondition::Precondition;

/// What an operation does to its resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Writes a new live version with this JSON body (creating the resource
    /// if it never existed). A body byte-identical to the current live
    /// version writes nothing.
    Put(Vec<u8>),
    /// Writes a tombstone version. Deleting a deleted or unknown resource
    /// writes nothing.
    Delete,
    /// Writes a rekey record: the resource's current live version gets
    /// the keys the extractor's definitions give it as of this record (see
    /// [`crate::KeyExtractor::defining_type`]). No version is written;
    /// takes no precondition.
    Rekey,
}

/// One operation of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// The resource type, e.g. `Patient`.
    pub resource_type: String,
    /// The resource id.
    pub id: String,
    /// What to do.
    pub action: Action,
    /// What must hold first.
    pub expect: Precondition,
    /// The search keys of a put's body, if the caller extracted them
    /// already (see [`Op::with_keys`]); `None`: the store extracts them.
    pub keys: Option<Vec<Vec<u8>>>,
}

impl Op {
    /// An unconditional put.
    pub fn put(resource_type: impl Into<String>, id: impl Into<String>, body: Vec<u8>) -> Self {
        Self {
            resource_type: resource_type.into(),
            id: id.into(),
            action: Action::Put(body),
            expect: Precondition::None,
            keys: None,
        }
    }

    /// An unconditional delete.
    pub fn delete(resource_type: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            resource_type: resource_type.into(),
            id: id.into(),
            action: Action::Delete,
            expect: Precondition::None,
            keys: None,
        }
    }

    /// A rekey of a resource's search keys ([`Action::Rekey`]).
    pub fn rekey(resource_type: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            resource_type: resource_type.into(),
            id: id.into(),
            action: Action::Rekey,
            expect: Precondition::None,
            keys: None,
        }
    }

    /// Gives a put's search keys, extracted by the caller from a form of
    /// the body it has parsed already, so the store does not parse the
    /// body again. They must be exactly what the store's
    /// [`KeyExtractor`](crate::KeyExtractor) gives for the body, in any
    /// order (the index must equal a rebuild from the log); debug builds
    /// check it on every commit.
    pub fn with_keys(mut self, keys: Vec<Vec<u8>>) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Adds a precondition.
    pub fn expect(mut self, expect: Precondition) -> Self {
        self.expect = expect;
        self
    }

    fn body_len(&self) -> u64 {
        match &self.action {
            Action::Put(b) => b.len() as u64,
            Action::Delete | Action::Rekey => 0,
        }
    }
}

/// A set of operations applied atomically: all, or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// The operations, applied in order (several may touch one resource).
    pub ops: Vec<Op>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an operation.
    pub fn push(&mut self, op: Op) -> &mut Self {
        self.ops.push(op);
        self
    }

    /// A batch of one operation.
    pub fn one(op: Op) -> Self {
        Self { ops: vec![op] }
    }

    /// Checks names and sizes against the limits, before anything is queued.
    pub(crate) fn validate(&self, resource_bytes_max: u64) -> Result<()> {
        if self.ops.is_empty() {
            return Err(Error::EmptyBatch);
        }
        if self.ops.len() > BATCH_OPS_MAX {
            return Err(Error::BatchTooLarge {
                what: "operation count",
                actual: self.ops.len() as u64,
                limit: BATCH_OPS_MAX as u64,
            });
        }
        let mut total = 0u64;
        for op in &self.ops {
            validate_name("resource type", &op.resource_type, TYPE_BYTES_MAX)?;
            validate_name("resource id", &op.id, ID_BYTES_MAX)?;
            if op.action == Action::Rekey && op.expect != Precondition::None {
                return Err(Error::Invalid {
                    what: "rekey",
                    value: format!("{}/{}", op.resource_type, op.id),
                    reason: "a rekey takes no precondition".into(),
                });
            }
            let len = op.body_len();
            if len > resource_bytes_max {
                return Err(Error::ResourceTooLarge {
                    resource_type: op.resource_type.clone(),
                    id: op.id.clone(),
                    bytes: len,
                    limit: resource_bytes_max,
                });
            }
            total += len;
        }
        if total > BATCH_BYTES_MAX {
            return Err(Error::BatchTooLarge {
                what: "body bytes",
                actual: total,
                limit: BATCH_BYTES_MAX,
            });
        }
        Ok(())
    }
}

/// Type names and ids: 1..=max bytes of printable ASCII other than `/`, so
/// that they can stand in paths and URLs unescaped.
pub(crate) fn validate_name(what: &'static str, value: &str, max: usize) -> Result<()> {
    let reason = if value.is_empty() {
        Some("is empty".to_owned())
    } else if value.len() > max {
        Some(format!("is {} bytes, at most {max} allowed", value.len()))
    } else if !value.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
        Some("may hold only printable ASCII without '/'".to_owned())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::Invalid {
            what,
            value: value.chars().take(80).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

/// What one operation of a committed batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpOutcome {
    /// A new version was written.
    Written {
        /// Create (first version), update or delete.
        kind: OpKind,
        /// The new version number.
        version: u64,
        /// Its LSN.
        lsn: u64,
        /// Its timestamp (microseconds since the Unix epoch).
        last_updated_us: u64,
    },
    /// A put whose body equals the current live version: nothing written.
    Unchanged {
        /// The current version.
        version: u64,
        /// Its timestamp.
        last_updated_us: u64,
    },
    /// A delete of a resource that is already deleted: nothing written.
    AlreadyDeleted {
        /// The tombstone version.
        version: u64,
    },
    /// A delete of a resource that never existed: nothing written.
    NotFound,
    /// A rekey record was written at `lsn`.
    Rekeyed {
        /// Its LSN.
        lsn: u64,
    },
}

/// The result of a committed batch, one outcome per operation, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Per-operation outcomes, in the batch's order.
    pub outcomes: Vec<OpOutcome>,
    /// The LSN of the last record written, or `None` if nothing was written.
    pub last_lsn: Option<u64>,
}
