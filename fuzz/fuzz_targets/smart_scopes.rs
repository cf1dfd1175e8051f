//! Arbitrary text as SMART scopes and a request path, and arbitrary bytes
//! as a JWKS document: reading them must never panic; a grant narrowed to
//! what is allowed never allows more than either side.
#![no_main]

use axum::http::Method;
use libfuzzer_sys::fuzz_target;
use vigil_fhir::http::jwks;
use vigil_fhir::http::scopes::{Access, Scopes};

fuzz_target!(|data: &[u8]| {
    let _ = jwks::parse(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (a, rest) = text.split_once('\n').unwrap_or((text, ""));
    let (b, path) = rest.split_once('\n').unwrap_or((rest, "/Patient/1"));
    let (a, b) = (Scopes::parse(a), Scopes::parse(b));
    let both = Scopes::within(&a, &b);
    for method in [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ] {
        if both.allows(&method, path) {
            assert!(
                a.allows(&method, path) && b.allows(&method, path),
                "{method} {path}"
            );
        }
    }
    for ty in ["*", "Patient", "Observation"] {
        for access in [
            Access::Create,
            Access::Read,
            Access::Update,
            Access::Delete,
            Access::Search,
        ] {
            if both.allows_type(ty, access) {
                assert!(a.allows_type(ty, access) && b.allows_type(ty, access));
            }
        }
    }
});
