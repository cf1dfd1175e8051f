//! # vigil-fhir
//!
//! Vigil's FHIR R4 layer. Today it holds [`synth`], the generator of
//! realistic FHIR resources that tests, benchmarks and demos use instead
//! of real patient data. The REST server and the `vigil` binary come next
//! (see ARCHITECTURE.md).

pub mod synth;
