//! Arbitrary bytes as a search's query string, at every level (type,
//! system, compartment), run through the real router over a store holding
//! a few resources: every parameter, modifier, prefix and value the
//! official definitions allow is reachable. The server must answer below
//! 500, never panic, and never scan without bound. The first byte picks
//! the path; the rest is the query.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;
use vigil_fhir::app::App;
use vigil_fhir::config::Config;
use vigil_fhir::server::router;

struct World {
    rt: tokio::runtime::Runtime,
    app: Arc<App>,
    _dir: tempfile::TempDir,
}

const SEED: &[(&str, &str)] = &[
    (
        "/Patient/p1",
        r#"{"resourceType":"Patient","id":"p1","name":[{"family":"Chalmers","given":["Peter"]}],"birthDate":"1974-12-25","gender":"male","telecom":[{"system":"phone","value":"555"}],"identifier":[{"system":"urn:mrn","value":"1","type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0203","code":"MR"}]}}]}"#,
    ),
    (
        "/Observation/o1",
        r#"{"resourceType":"Observation","id":"o1","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}]},"subject":{"reference":"Patient/p1"},"effectivePeriod":{"start":"2016-03-01"},"valueQuantity":{"value":72.5,"system":"http://unitsofmeasure.org","code":"kg"}}"#,
    ),
    (
        "/RiskAssessment/r1",
        r#"{"resourceType":"RiskAssessment","id":"r1","status":"final","subject":{"reference":"Patient/p1"},"prediction":[{"probabilityDecimal":0.5}]}"#,
    ),
    (
        "/ValueSet/v1",
        r#"{"resourceType":"ValueSet","id":"v1","status":"active","url":"http://acme.org/fhir/ValueSet/a"}"#,
    ),
];

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config {
            data: dir.path().join("data"),
            ..Config::default()
        };
        let app = Arc::new(App::open(config).expect("store"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        for (path, body) in SEED {
            let req = Request::builder()
                .method("PUT")
                .uri(*path)
                .header("content-type", "application/fhir+json")
                .body(Body::from(body.as_bytes().to_vec()))
                .expect("request");
            let status = rt
                .block_on(router(app.clone()).oneshot(req))
                .expect("infallible")
                .status();
            assert!(status.is_success(), "seeding {path}: {status}");
        }
        World { rt, app, _dir: dir }
    })
}

const PATHS: &[&str] = &[
    "/Patient",
    "/Observation",
    "/RiskAssessment",
    "/ValueSet",
    "/",
    "/Patient/p1/*",
    "/Patient/p1/Observation",
    "/Patient/p1/$everything",
    "/Patient/$everything",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, query)) = data.split_first() else {
        return;
    };
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    let path = PATHS[pick as usize % PATHS.len()];
    // Only what a URI can carry: a query the HTTP layer itself would
    // refuse never reaches search.
    let Ok(uri) = format!("{path}?{query}").parse::<axum::http::Uri>() else {
        return;
    };
    let w = world();
    let req = Request::builder()
        .method("GET")
        .uri(uri)
        .body(Body::empty())
        .expect("request");
    let status =
        w.rt.block_on(router(w.app.clone()).oneshot(req))
            .expect("infallible")
            .status();
    assert!(
        status.as_u16() < 500,
        "GET {path}?{query} answered {status}"
    );
});
