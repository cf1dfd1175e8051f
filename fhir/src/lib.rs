//! # vigil-fhir
//!
//! Vigil's FHIR R4 REST server on the engine (`server::router`), the
//! `vigil` binary's library half, and [`synth`], the generator of realistic
//! resources that tests, benchmarks and demos use instead of patient data.

pub mod admin;
pub mod auth;
pub mod bench;
pub mod capability;
pub mod conditional;
pub mod config;
pub mod disk;
pub mod drill;
pub mod drill_chart;
pub mod export;
pub mod fields;
pub mod history;
pub mod http;
pub mod ids;
pub mod instant;
pub mod interactions;
pub mod negotiate;
pub mod outcome;
pub mod params;
pub mod patch;
pub mod quarantine;
pub mod replication;
pub mod resource;
pub mod search;
pub mod server;
pub mod status_cmd;
pub mod synth;
pub mod transaction;
pub mod types;
pub mod up;
