//! # vigil
//!
//! The operator's commands, as a library the `vigil` binary (`main.rs`,
//! `ops.rs`) and the cross-crate tests call: [`up`] (a local DR cluster),
//! [`drill`] (a disaster, measured), [`bench`] (a load generator),
//! [`status`] (`vigil status`), [`quarantine`] (what a rejoin set aside,
//! and its re-application). The FHIR server is `vigil-fhir`'s; nothing
//! here serves a client.

pub mod bench;
pub mod drill;
pub mod quarantine;
pub mod status;
pub mod up;
