//! # vigil-net
//!
//! Replication of Vigil's log to a follower in another region: frames
//! shipped byte for byte over QUIC with mutual TLS, acknowledged as
//! received, durable and applied; leadership by leases at a witness or in etcd.
//!
//! - [`proto`] decides everything: sans-I/O state machines
//!   (`(state, event, now) -> actions`, no sockets, clocks or tasks; no
//!   tokio and no quinn, which `tests/proto_is_pure.rs` checks), so a seeded
//!   simulator drives them in tests exactly as [`runtime`] drives them
//!   with quinn and tokio in production.
//! - [`runtime`] carries the decisions out: the framed QUIC transport, the
//!   replication node, the witness server, automatic failover on a data
//!   node, the cluster's certificates.
//! - [`archive`] is the continuous log archive on object storage (S3,
//!   Azure Blob, Google Cloud Storage, a directory) and the restore from it.
//! - [`status`] is what `/status` shows; [`relay`] the UDP relay for fault
//!   injection, [`tcp_relay`] its TCP counterpart (links to etcd).

pub mod archive;
pub mod proto;
pub mod relay;
pub mod runtime;
pub mod status;
pub mod tcp_relay;
