//! Guards the R4 REST contract of create, read, vread, update and delete:
//! exact status codes, Location/ETag/Last-Modified, server-assigned ids and
//! meta, If-Match/If-None-Match, Prefer, and content kept exactly.

mod common;

use axum::http::{Method, StatusCode};
use common::TestServer;
use serde_json::json;

#[tokio::test]
async fn create_read_update_delete_follow_the_spec() {
    let s = TestServer::new();
    // Raw bytes: a Rust float literal would lose the written precision.
    let created = s
        .call(
            Method::POST,
            "/Patient",
            &[("content-type", "application/fhir+json")],
            br#"{"resourceType":"Patient","id":"ignored","name":[{"family":"Lemke"}],"extension":[{"url":"http://example.org/weight","valueDecimal":1.50},{"url":"http://example.org/big","valueDecimal":12345678901234567890.000}]}"#.to_vec(),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = created.body["id"].as_str().expect("id").to_owned();
    assert_ne!(id, "ignored", "the server assigns the id on create");
    assert_eq!(created.header("etag"), Some("W/\"1\""));
    assert!(created.header("last-modified").is_some());
    assert_eq!(
        created.header("location").expect("location"),
        format!("http://vigil.test/Patient/{id}/_history/1")
    );
    assert_eq!(created.body["meta"]["versionId"], "1");
    let text = String::from_utf8_lossy(&created.raw).into_owned();
    assert!(
        text.contains("\"valueDecimal\":1.50"),
        "decimals keep their precision: {text}"
    );
    assert!(
        text.contains("\"valueDecimal\":12345678901234567890.000"),
        "and their size: {text}"
    );

    let read = s.get(&format!("/Patient/{id}")).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body, created.body);
    let not_modified = s
        .get_with(&format!("/Patient/{id}"), &[("if-none-match", "W/\"1\"")])
        .await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    // If-Modified-Since: not modified since its Last-Modified; modified
    // since an hour before; an unreadable date is ignored; If-None-Match
    // decides when both are sent.
    let last_modified = created.header("last-modified").expect("last-modified");
    let since = |h: &'static str, v: String| (h, v);
    let hour_before = httpdate::fmt_http_date(
        httpdate::parse_http_date(last_modified).expect("an HTTP date")
            - std::time::Duration::from_secs(3600),
    );
    let hour_after = httpdate::fmt_http_date(
        httpdate::parse_http_date(last_modified).expect("an HTTP date")
            + std::time::Duration::from_secs(3600),
    );
    for (headers, want) in [
        (
            vec![since("if-modified-since", last_modified.to_owned())],
            StatusCode::NOT_MODIFIED,
        ),
        (
            vec![since("if-modified-since", hour_after.clone())],
            StatusCode::NOT_MODIFIED,
        ),
        (
            vec![since("if-modified-since", hour_before)],
            StatusCode::OK,
        ),
        (
            vec![since("if-modified-since", "yesterday".into())],
            StatusCode::OK,
        ),
        (
            vec![
                since("if-modified-since", hour_after),
                since("if-none-match", "W/\"7\"".into()),
            ],
            StatusCode::OK,
        ),
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = s.get_with(&format!("/Patient/{id}"), &h).await;
        assert_eq!(r.status, want, "{headers:?}");
    }

    // Update: 200, new version; identical content: no new version.
    let mut body = read.body.clone();
    body["active"] = json!(true);
    let updated = s.put(&format!("/Patient/{id}"), &body).await;
    assert_eq!(updated.status, StatusCode::OK);
    assert_eq!(updated.body["meta"]["versionId"], "2");
    let same = s.put(&format!("/Patient/{id}"), &updated.body).await;
    assert_eq!(same.status, StatusCode::OK);
    assert_eq!(
        same.body["meta"]["versionId"], "2",
        "byte-identical content makes no new version"
    );

    // If-Match: a stale version gives 412 and writes nothing.
    let stale = s
        .call(
            Method::PUT,
            &format!("/Patient/{id}"),
            &[
                ("content-type", "application/fhir+json"),
                ("if-match", "W/\"1\""),
            ],
            serde_json::to_vec(&body).expect("json"),
        )
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(stale.body["resourceType"], "OperationOutcome");
    assert_eq!(
        s.get(&format!("/Patient/{id}")).await.body["meta"]["versionId"],
        "2"
    );

    // A well-formed ETag that names no version never matches: 412 (on
    // PUT, PATCH and DELETE alike); a value that is no ETag at all: 400.
    for (method, etag, want) in [
        (
            Method::PUT,
            "W/\"outdated-version\"",
            StatusCode::PRECONDITION_FAILED,
        ),
        (Method::PUT, "\"abc\"", StatusCode::PRECONDITION_FAILED),
        (
            Method::PATCH,
            "W/\"outdated-version\"",
            StatusCode::PRECONDITION_FAILED,
        ),
        (
            Method::DELETE,
            "W/\"outdated-version\"",
            StatusCode::PRECONDITION_FAILED,
        ),
        (Method::PUT, "outdated-version", StatusCode::BAD_REQUEST),
        (Method::PUT, "W/\"unclosed", StatusCode::BAD_REQUEST),
    ] {
        let (ct, body) = if method == Method::PATCH {
            ("application/json-patch+json", b"[]".to_vec())
        } else {
            (
                "application/fhir+json",
                serde_json::to_vec(&body).expect("json"),
            )
        };
        let r = s
            .call(
                method.clone(),
                &format!("/Patient/{id}"),
                &[("content-type", ct), ("if-match", etag)],
                body,
            )
            .await;
        assert_eq!(r.status, want, "{method} If-Match {etag}");
        assert_eq!(r.body["resourceType"], "OperationOutcome");
        assert_eq!(
            s.get(&format!("/Patient/{id}")).await.body["meta"]["versionId"],
            "2",
            "{method} If-Match {etag} wrote nothing"
        );
    }

    // vread.
    assert_eq!(
        s.get(&format!("/Patient/{id}/_history/1")).await.body["meta"]["versionId"],
        "1"
    );
    assert_eq!(
        s.get(&format!("/Patient/{id}/_history/9")).await.status,
        StatusCode::NOT_FOUND
    );

    // Delete: 200 with an OperationOutcome, then 410; vread of the tombstone 410.
    let deleted = s.delete(&format!("/Patient/{id}")).await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(deleted.body["resourceType"], "OperationOutcome");
    assert_eq!(
        s.get(&format!("/Patient/{id}")).await.status,
        StatusCode::GONE
    );
    assert_eq!(
        s.get(&format!("/Patient/{id}/_history/3")).await.status,
        StatusCode::GONE
    );
    assert_eq!(
        s.delete(&format!("/Patient/{id}")).await.status,
        StatusCode::OK,
        "deleting again is fine"
    );
    assert_eq!(
        s.delete("/Patient/never").await.status,
        StatusCode::OK,
        "deleting the unknown is fine"
    );
    assert_eq!(s.get("/Patient/never").await.status, StatusCode::NOT_FOUND);

    // Update after delete: a new live version.
    let revived = s.put(&format!("/Patient/{id}"), &body).await;
    assert_eq!(revived.status, StatusCode::OK);
    assert_eq!(revived.body["meta"]["versionId"], "4");
}

#[tokio::test]
async fn update_as_create_and_prefer() {
    let s = TestServer::new();
    let r = s
        .put(
            "/Observation/obs-1",
            &json!({"resourceType": "Observation", "id": "obs-1", "status": "final", "code": {"text": "weight"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "a client-chosen id creates");
    assert!(r.header("location").is_some());
    let minimal = s
        .call(
            Method::POST,
            "/Observation",
            &[
                ("content-type", "application/fhir+json"),
                ("prefer", "return=minimal"),
            ],
            br#"{"resourceType":"Observation","status":"final","code":{"text":"t"}}"#.to_vec(),
        )
        .await;
    assert_eq!(minimal.status, StatusCode::CREATED);
    assert!(minimal.raw.is_empty());
    assert!(minimal.header("location").is_some());
    let oo = s
        .call(
            Method::POST,
            "/Observation",
            &[
                ("content-type", "application/fhir+json"),
                ("prefer", "return=OperationOutcome"),
            ],
            br#"{"resourceType":"Observation","status":"final","code":{"text":"t"}}"#.to_vec(),
        )
        .await;
    assert_eq!(oo.body["resourceType"], "OperationOutcome");
    let mismatch = s
        .put(
            "/Observation/obs-1",
            &json!({"resourceType": "Observation", "id": "other"}),
        )
        .await;
    assert_eq!(mismatch.status, StatusCode::BAD_REQUEST);
    let no_id = s
        .put(
            "/Observation/obs-1",
            &json!({"resourceType": "Observation"}),
        )
        .await;
    assert_eq!(no_id.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn conditional_create_returns_the_match() {
    let s = TestServer::new();
    let body =
        br#"{"resourceType":"Patient","identifier":[{"system":"urn:mrn","value":"42"}]}"#.to_vec();
    let h = [
        ("content-type", "application/fhir+json"),
        ("if-none-exist", "identifier=urn:mrn|42"),
    ];
    let first = s.call(Method::POST, "/Patient", &h, body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let second = s.call(Method::POST, "/Patient", &h, body.clone()).await;
    assert_eq!(
        second.status,
        StatusCode::OK,
        "one match: returned, nothing created"
    );
    assert_eq!(second.body["id"], first.body["id"]);
    s.post("/Patient", &serde_json::from_slice(&body).expect("json"))
        .await;
    let many = s.call(Method::POST, "/Patient", &h, body).await;
    assert_eq!(
        many.status,
        StatusCode::PRECONDITION_FAILED,
        "several matches"
    );
}

/// HTTP semantics clients rely on: a trailing slash names the same
/// collection or resource; every response carries an `X-Request-Id` (the
/// client's when usable, else a new one, also on errors); a write that
/// honoured `Prefer: return=…` says so in `Preference-Applied`.
#[tokio::test]
async fn trailing_slashes_request_ids_and_preference_applied() {
    let s = TestServer::new();
    let p = json!({"resourceType": "Patient", "id": "slash", "gender": "other"});
    assert_eq!(
        s.put("/Patient/slash", &p).await.status,
        StatusCode::CREATED
    );
    let listed = s.get("/Patient/").await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["resourceType"], "Bundle");
    assert_eq!(listed.body["total"], 1);
    let read = s.get("/Patient/slash/").await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["id"], "slash");

    let mine = s
        .get_with("/Patient/slash", &[("x-request-id", "trace-42.a_b:c")])
        .await;
    assert_eq!(mine.header("x-request-id"), Some("trace-42.a_b:c"));
    let made = s.get("/Patient/slash").await;
    let id = made.header("x-request-id").expect("an id is generated");
    assert!(id.len() >= 32, "a UUID: {id}");
    let other = s.get("/Patient/slash").await;
    assert_ne!(other.header("x-request-id"), Some(id), "one per request");
    let missing = s
        .get_with("/Patient/nobody", &[("x-request-id", "bad id with spaces")])
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let replaced = missing
        .header("x-request-id")
        .expect("errors carry one too");
    assert_ne!(replaced, "bad id with spaces", "an unusable id is replaced");

    let minimal = s
        .call(
            Method::PUT,
            "/Patient/slash",
            &[
                ("content-type", "application/fhir+json"),
                ("prefer", "return=minimal"),
            ],
            serde_json::to_vec(
                &json!({"resourceType": "Patient", "id": "slash", "gender": "male"}),
            )
            .expect("json"),
        )
        .await;
    assert_eq!(minimal.status, StatusCode::OK);
    assert_eq!(minimal.header("preference-applied"), Some("return=minimal"));
    // The first return= counts, for the body and for what is said back:
    // an unknown one gives the representation and claims nothing.
    let unknown_first = s
        .call(
            Method::PUT,
            "/Patient/slash",
            &[
                ("content-type", "application/fhir+json"),
                ("prefer", "return=bogus, return=minimal"),
            ],
            serde_json::to_vec(&p).expect("json"),
        )
        .await;
    assert_eq!(unknown_first.status, StatusCode::OK);
    assert_eq!(
        unknown_first.body["resourceType"], "Patient",
        "the representation"
    );
    assert_eq!(unknown_first.header("preference-applied"), None);
    let plain = s.put("/Patient/slash", &p).await;
    assert_eq!(plain.status, StatusCode::OK);
    assert_eq!(
        plain.header("preference-applied"),
        None,
        "nothing asked, nothing said"
    );
}

/// The CapabilityStatement revalidates (ETag, Last-Modified, 304 on
/// If-None-Match); `mode=terminology`, which this server does not claim,
/// is a 400 OperationOutcome; HEAD answers wherever GET does, without a
/// body.
#[tokio::test]
async fn metadata_revalidates_and_head_answers_like_get() {
    let s = TestServer::new();
    let m = s.get("/metadata").await;
    assert_eq!(m.status, StatusCode::OK);
    let etag = m.header("etag").expect("an ETag").to_owned();
    assert!(etag.starts_with("W/\""), "{etag}");
    assert!(m.header("last-modified").is_some());
    assert_eq!(
        s.get("/metadata").await.header("etag"),
        Some(etag.as_str()),
        "stable"
    );
    let again = s
        .get_with("/metadata", &[("if-none-match", etag.as_str())])
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert_eq!(s.get("/metadata?mode=full").await.status, StatusCode::OK);
    let term = s.get("/metadata?mode=terminology").await;
    assert_eq!(term.status, StatusCode::BAD_REQUEST);
    assert_eq!(term.body["resourceType"], "OperationOutcome");
    assert!(
        term.diagnostics().contains("terminology"),
        "{}",
        term.diagnostics()
    );

    let p = json!({"resourceType": "Patient", "id": "h1"});
    assert_eq!(s.put("/Patient/h1", &p).await.status, StatusCode::CREATED);
    for uri in [
        "/Patient/h1",
        "/Patient?_id=h1",
        "/Patient/h1/_history/1",
        "/metadata",
    ] {
        let get = s.get(uri).await;
        let head = s.call(Method::HEAD, uri, &[], Vec::new()).await;
        assert_eq!(head.status, get.status, "HEAD {uri}");
        assert_eq!(head.body, serde_json::Value::Null, "HEAD {uri} has no body");
        assert_eq!(
            head.header("content-type"),
            get.header("content-type"),
            "HEAD {uri}"
        );
    }
}

/// `_pretty=true` indents the same JSON; a client that accepts only
/// `application/json` gets its responses labelled so (R4 allows both).
#[tokio::test]
async fn pretty_and_plain_json_are_honoured() {
    let s = TestServer::new();
    let p = json!({"resourceType": "Patient", "id": "pj", "name": [{"family": "Lemke"}]});
    assert_eq!(s.put("/Patient/pj", &p).await.status, StatusCode::CREATED);
    for uri in ["/Patient/pj", "/Patient?_id=pj", "/Patient/nobody"] {
        let compact = s.get(uri).await;
        let sep = if uri.contains('?') { '&' } else { '?' };
        let pretty = s.get(&format!("{uri}{sep}_pretty=true")).await;
        assert_eq!(pretty.status, compact.status, "{uri}");
        assert!(!compact.raw.contains(&b'\n'), "{uri}: compact by default");
        assert!(
            pretty.raw.windows(3).any(|w| w == b"\n  "),
            "{uri}: indented"
        );
        let strip_ids = |mut v: serde_json::Value| {
            // A search Bundle's id and self link differ per request.
            if let Some(o) = v.as_object_mut() {
                o.remove("id");
                o.remove("link");
                o.remove("meta");
            }
            v
        };
        assert_eq!(
            strip_ids(pretty.body),
            strip_ids(compact.body),
            "{uri}: same JSON"
        );
    }
    let plain = s
        .get_with("/Patient/pj", &[("accept", "application/json")])
        .await;
    assert_eq!(plain.status, StatusCode::OK);
    assert_eq!(
        plain.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let fhir = s
        .get_with(
            "/Patient/pj",
            &[("accept", "application/fhir+json, application/json;q=0.9")],
        )
        .await;
    assert!(
        fhir.header("content-type")
            .is_some_and(|c| c.starts_with("application/fhir+json")),
        "the FHIR type when accepted"
    );
}

/// `_elements` and `_summary` on read and vread cut the resource and tag
/// it SUBSETTED; values that are not one (and `_summary=true` while the
/// type's base StructureDefinition is not stored) are a 400 OperationOutcome.
#[tokio::test]
async fn summary_and_elements_subset_reads() {
    let s = TestServer::new();
    let p = json!({"resourceType": "Observation", "id": "o1", "status": "final",
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">72 kg</div>"},
        "code": {"text": "weight"}, "valueQuantity": {"value": 72, "unit": "kg"},
        "subject": {"reference": "Patient/p1"}});
    assert_eq!(
        s.put("/Observation/o1", &p).await.status,
        StatusCode::CREATED
    );
    let subsetted = |b: &serde_json::Value| {
        b["meta"]["tag"]
            .as_array()
            .is_some_and(|t| t.iter().any(|x| x["code"] == "SUBSETTED"))
    };
    for uri in ["/Observation/o1", "/Observation/o1/_history/1"] {
        let el = s.get(&format!("{uri}?_elements=status,value")).await;
        assert_eq!(el.status, StatusCode::OK, "{uri}");
        let keys = keys_of(&el.body);
        assert_eq!(
            keys,
            ["resourceType", "id", "meta", "status", "valueQuantity"],
            "{uri}"
        );
        assert!(subsetted(&el.body), "{uri}");
        assert_eq!(el.body["meta"]["versionId"], "1");

        let text = s.get(&format!("{uri}?_summary=text")).await;
        let keys = keys_of(&text.body);
        assert_eq!(keys, ["resourceType", "id", "meta", "text"], "{uri}");
        let data = s.get(&format!("{uri}?_summary=data")).await;
        assert!(
            data.body.get("text").is_none() && data.body.get("code").is_some(),
            "{uri}"
        );
        assert!(subsetted(&data.body));
        let full = s.get(&format!("{uri}?_summary=false")).await;
        assert!(
            !subsetted(&full.body) && full.body.get("text").is_some(),
            "{uri}"
        );

        for bad in [
            "_summary=true",
            "_summary=bogus",
            "_elements=a.b",
            "_summary=text&_elements=status",
        ] {
            let r = s.get(&format!("{uri}?{bad}")).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}?{bad}");
            assert_eq!(r.body["resourceType"], "OperationOutcome");
        }
    }
    // What is stored is untouched.
    let whole = s.get("/Observation/o1").await;
    assert!(whole.body.get("text").is_some() && !subsetted(&whole.body));
}

/// `_summary=true` keeps the elements the stored base StructureDefinition
/// marks `isSummary` (top level; a choice by its base name), on reads and
/// on a search's matches. The definition here is a hand-written excerpt of
/// R4's Observation (its summary flags as the R4 specification gives them).
#[tokio::test]
async fn summary_true_keeps_the_summary_elements_of_the_stored_definition() {
    let s = TestServer::new();
    let o = json!({"resourceType": "Observation", "id": "o1", "status": "final",
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">72 kg</div>"},
        "code": {"text": "weight"}, "valueQuantity": {"value": 72, "unit": "kg"},
        "note": [{"text": "after lunch"}], "subject": {"reference": "Patient/p1"}});
    assert_eq!(
        s.put("/Observation/o1", &o).await.status,
        StatusCode::CREATED
    );
    let r = s.get("/Observation/o1?_summary=true").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.diagnostics().contains("StructureDefinition/Observation"),
        "{}",
        r.diagnostics()
    );

    let el = |path: &str, summary: bool| json!({"id": path, "path": path, "isSummary": summary});
    let sd = json!({"resourceType": "StructureDefinition", "id": "Observation",
        "url": "http://hl7.org/fhir/StructureDefinition/Observation", "name": "Observation",
        "status": "active", "kind": "resource", "abstract": false, "type": "Observation",
        "snapshot": {"element": [
            el("Observation", false), el("Observation.id", true), el("Observation.meta", true),
            el("Observation.text", false), el("Observation.status", true),
            el("Observation.code", true), el("Observation.subject", true),
            el("Observation.value[x]", true), el("Observation.note", false),
            el("Observation.component.code", true)]}});
    assert_eq!(
        s.put("/StructureDefinition/Observation", &sd).await.status,
        StatusCode::CREATED
    );
    for uri in [
        "/Observation/o1?_summary=true",
        "/Observation/o1/_history/1?_summary=true",
    ] {
        let r = s.get(uri).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.body);
        let mut keys = keys_of(&r.body);
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "code",
                "id",
                "meta",
                "resourceType",
                "status",
                "subject",
                "valueQuantity"
            ],
            "{uri}"
        );
        assert!(r.body["meta"]["tag"][0]["code"] == "SUBSETTED", "{uri}");
    }
    let r = s.get("/Observation?_summary=true").await;
    let m = &r.body["entry"][0]["resource"];
    assert!(
        m.get("note").is_none() && m.get("text").is_none() && m.get("code").is_some(),
        "{m}"
    );
}

/// The top-level member names of a JSON object, in order.
fn keys_of(v: &serde_json::Value) -> Vec<&str> {
    v.as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn numbers_come_back_exactly_as_written_with_their_exponents() {
    let s = TestServer::new();
    let text = r#"{"resourceType":"Observation","status":"final","code":{"text":"tiny"},"valueQuantity":{"value":1E-22,"unit":"mol"},"component":[{"code":{"text":"a"},"valueQuantity":{"value":6.0221E+23}},{"code":{"text":"b"},"valueQuantity":{"value":1e5}},{"code":{"text":"c"},"valueQuantity":{"value":2.50}}]}"#;
    let spelled = ["1E-22", "6.0221E+23", "1e5", "2.50"];
    let keeps = |what: &str, raw: &[u8]| {
        let raw = String::from_utf8_lossy(raw);
        for n in spelled {
            assert!(
                raw.contains(&format!(":{n}")),
                "{what}: {n} is not in {raw}"
            );
        }
    };
    let created = s
        .call(
            Method::POST,
            "/Observation",
            &[("content-type", "application/fhir+json")],
            text.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    keeps("create", &created.raw);
    let id = created.body["id"].as_str().expect("id").to_owned();
    keeps("read", &s.get(&format!("/Observation/{id}")).await.raw);
    keeps(
        "vread",
        &s.get(&format!("/Observation/{id}/_history/1")).await.raw,
    );
    keeps(
        "history",
        &s.get(&format!("/Observation/{id}/_history")).await.raw,
    );
    keeps(
        "search",
        &s.get("/Observation?value-quantity=lt1e-21").await.raw,
    );
    keeps("system search", &s.get("/?_type=Observation").await.raw);
    // In a transaction: stored as written, and answered so.
    let bundle = format!(
        r#"{{"resourceType":"Bundle","type":"transaction","entry":[{{"resource":{text},"request":{{"method":"POST","url":"Observation"}}}}]}}"#
    );
    let r = s
        .call(
            Method::POST,
            "/",
            &[("content-type", "application/fhir+json")],
            bundle.into_bytes(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    keeps("transaction response", &r.raw);
    let loc = r.body["entry"][0]["response"]["location"]
        .as_str()
        .expect("location");
    let tid = loc.split('/').nth(1).expect("id");
    keeps(
        "read of a transaction's write",
        &s.get(&format!("/Observation/{tid}")).await.raw,
    );
}
