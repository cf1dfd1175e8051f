//! Arbitrary bytes as the body of a FHIR request (a resource, a Bundle, a
//! JSON Patch, a search form), sent through the real router over one
//! store: the server must answer every input with a status below 500,
//! never panic, and never allocate without bound.
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

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config {
            data: dir.path().join("data"),
            max_body_bytes: 1 << 20,
            ..Config::default()
        };
        let app = Arc::new(App::open(config).expect("store"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        World { rt, app, _dir: dir }
    })
}

const TARGETS: &[(&str, &str, &str)] = &[
    ("POST", "/", "application/fhir+json"),
    ("POST", "/Patient", "application/fhir+json"),
    ("PUT", "/Patient/fuzz", "application/fhir+json"),
    ("PATCH", "/Patient/fuzz", "application/json-patch+json"),
    (
        "POST",
        "/Observation/_search",
        "application/x-www-form-urlencoded",
    ),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let (method, uri, ct) = TARGETS[pick as usize % TARGETS.len()];
    let w = world();
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", ct)
        .body(Body::from(body.to_vec()))
        .expect("request");
    let status =
        w.rt.block_on(router(w.app.clone()).oneshot(req))
            .expect("infallible")
            .status();
    assert!(status.as_u16() < 500, "{method} {uri} answered {status}");
});
