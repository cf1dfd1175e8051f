//! # vigil-fhir
//!
//! Vigil's FHIR R4 REST server on the engine (`server::router`), and
//! [`synth`], the generator of realistic resources that tests, benchmarks
//! and demos use instead of patient data. The commands (`vigil serve`, `up`,
//! `drill`, `bench`, …) are the `vigil` crate's.

pub mod admin;
pub mod app;
pub mod archiving;
pub mod capability;
pub mod conditional;
pub mod config;
pub mod definitions;
pub mod disk;
pub mod export;
pub mod fhirpatch;
pub mod fhirpath;
pub mod history;
pub mod http;
pub mod ids;
pub mod instant;
pub mod interactions;
pub mod keywatch;
pub mod numbers;
pub mod patch;
pub mod quarantine;
pub mod references;
pub mod reindex;
pub mod replication;
pub mod resource;
pub mod search;
pub mod server;
pub mod subset;
pub mod synth;
pub mod transaction;
pub mod types;
pub mod validate;
