//! # vigil-net
//!
//! Replication of Vigil's log to a follower in another region: frames
//! shipped byte for byte over QUIC with mutual TLS, acknowledged as
//! received, durable and applied.
//!
//! The protocol is decided by sans-I/O state machines ([`leader`],
//! [`follower`]): `(state, event, now) -> actions`, with no sockets, clocks
//! or tasks inside, so a seeded simulator drives them in tests exactly as
//! [`node`] drives them with quinn and tokio in production. [`wire`] holds
//! the messages and their bytes, [`tls`] the cluster's certificates.

pub mod cluster;
pub mod durable_wait;
pub mod eligibility;
pub mod enforce;
pub mod follower;
pub mod leader;
pub mod lease;
pub mod node;
pub mod relay;
pub mod status;
pub mod tls;
pub mod wire;
pub mod witness;
