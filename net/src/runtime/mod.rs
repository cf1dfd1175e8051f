//! The decisions of [`crate::proto`], carried out with quinn and tokio.
//!
//! - [`transport`] — framed messages on QUIC streams, shared by all below.
//! - [`node`] — the replication node: a leader's sessions, a follower's
//!   connection, the log head fed by the writer, synchronous waits.
//! - [`replicated`] — `Replicated`, the one face to the layer above: a
//!   write's admission, commit, synchronous wait or `max_lag` record, and
//!   lease check.
//! - [`durable_wait`] — callers parked until a follower holds their LSN.
//! - [`cluster`] — automatic failover on a data node.
//! - [`witness`] — the witness's server and a data node's client of it.
//! - [`etcd`] — etcd as the coordinator instead: the witness's requests
//!   answered from etcd keys, and a small client of etcd's JSON gateway.
//! - [`tls`] — the cluster's certificates and the QUIC configurations.
//! - [`error`] — `NetError`, why the runtime could not start or run.

pub mod cluster;
pub mod durable_wait;
pub mod error;
pub mod etcd;
pub mod node;
pub mod replicated;
pub mod tls;
pub mod transport;
pub mod witness;
