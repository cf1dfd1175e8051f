//! Every decision of replication and failover, as pure state machines.
//!
//! - [`wire`] — the messages and their bytes (pinned by golden files).
//! - [`leader`] / [`follower`] — one replication session, each side.
//! - [`lease`] — leadership: the `Voter`, epoch allocation, the `Elector`.
//! - [`eligibility`] — `max_lag` as a promise: when a follower may be
//!   promoted.
//! - [`enforce`] — a leader's enforcement of `max_lag` at the witness.
//! - [`standing`] — what a follower under failover does with what it knows
//!   of its leader (rejoin, reseed, stand for promotion again).
//! - [`witness`] — the witness's whole logic (`decide`) and its durable
//!   state.
//! - [`coordination`] — the same decisions kept in etcd: what to write
//!   for one request, and whether a write whose answer was lost was made.
//!
//! **Boundary:** no tokio and no quinn here (std files are allowed: a
//! decision that must survive a crash is made durable before it is
//! answered). Time comes in as an argument.

pub mod coordination;
pub mod eligibility;
pub mod enforce;
pub mod follower;
pub mod leader;
pub mod lease;
pub mod standing;
pub mod wire;
pub mod witness;
