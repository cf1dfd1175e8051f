//! The write path: what callers commit ([`batch`]), the single writer
//! thread and its group commit (`writer`), and the timestamps it assigns
//! (`clock`).
//!
//! **Invariant:** an acknowledged commit is durable; a batch is all or
//! nothing; versions per resource increase; LSNs strictly increase.
//! **Boundary:** the only code that writes the log.

pub(crate) mod batch;
pub(crate) mod clock;
pub(crate) mod precondition;
pub(crate) mod writer;
