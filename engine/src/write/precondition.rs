//! What must hold of a resource for its operation to apply: its own module
//! because both a batch and the error a failed condition raises name it.

use std::fmt;

/// A condition on a resource's current version that must hold for its
/// operation (and so its whole batch) to be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precondition {
    /// No condition.
    #[default]
    None,
    /// The newest version, live or deleted, must be exactly this one.
    Version(u64),
    /// The resource must never have existed (no version at all).
    Absent,
}

impl fmt::Display for Precondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Precondition::None => f.write_str("anything"),
            Precondition::Version(v) => write!(f, "version {v}"),
            Precondition::Absent => f.write_str("no resource"),
        }
    }
}
