//! Guards search beyond one type: system search (`GET [base]?`,
//! `POST [base]/_search`, `_type`) and compartment search
//! (`Patient/[id]/[type]`, `Patient/[id]/*`, by GET and POST) from the
//! official Patient CompartmentDefinition, with paging across types;
//! chains, `_has` (nested too), `_include` and `_revinclude` (`*`,
//! `:iterate`).

mod common;

use axum::http::{Method, StatusCode};
use common::{TestServer, match_refs, refs_of_mode};
use serde_json::{Value, json};

fn refs(bundle: &Value) -> Vec<String> {
    let mut out = match_refs(bundle);
    out.sort();
    out
}

async fn seed(s: &TestServer) {
    let tag = json!({"tag": [{"system": "urn:t", "code": "drill"}]});
    s.put_resource(
        json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Lemke"}], "meta": tag}),
    )
    .await;
    s.put_resource(json!({"resourceType": "Patient", "id": "p2", "name": [{"family": "Walsh"}]}))
        .await;
    s.put_resource(
        json!({"resourceType": "Organization", "id": "o1", "name": "Lemke Clinic", "meta": tag}),
    )
    .await;
    s.put_resource(json!({"resourceType": "Observation", "id": "a", "status": "final",
        "code": {"coding": [{"system": "urn:c", "code": "x"}]}, "subject": {"reference": "Patient/p1"}, "meta": tag})).await;
    // In p1's compartment as its performer, not its subject.
    s.put_resource(json!({"resourceType": "Observation", "id": "b", "status": "final",
        "code": {"coding": [{"system": "urn:c", "code": "y"}]}, "subject": {"reference": "Patient/p2"},
        "performer": [{"reference": "Patient/p1"}]})).await;
    s.put_resource(json!({"resourceType": "Observation", "id": "c", "status": "final",
        "code": {"coding": [{"system": "urn:c", "code": "x"}]}, "subject": {"reference": "Patient/p2"}})).await;
    s.put_resource(
        json!({"resourceType": "Encounter", "id": "e1", "status": "finished",
        "class": {"code": "AMB"}, "subject": {"reference": "Patient/p1"}}),
    )
    .await;
    // Its `link` puts a Patient in another patient's compartment.
    s.put_resource(json!({"resourceType": "Patient", "id": "p3", "link": [{"other": {"reference": "Patient/p1"}, "type": "seealso"}]})).await;
}

async fn found(s: &TestServer, q: &str) -> Vec<String> {
    let r = s.get(q).await;
    assert_eq!(r.status, StatusCode::OK, "{q}: {:?}", r.body);
    assert_eq!(
        r.body["total"].as_u64(),
        Some(refs(&r.body).len() as u64),
        "{q}: one page"
    );
    refs(&r.body)
}

async fn form(s: &TestServer, path: &str, body: &str) -> Vec<String> {
    let r = s
        .call(
            Method::POST,
            path,
            &[("content-type", "application/x-www-form-urlencoded")],
            body.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{path}: {:?}", r.body);
    refs(&r.body)
}

#[tokio::test]
async fn system_search_spans_types_and_takes_type() {
    let s = TestServer::new();
    seed(&s).await;
    assert_eq!(
        found(&s, "/?_tag=drill").await,
        ["Observation/a", "Organization/o1", "Patient/p1"]
    );
    assert_eq!(
        found(&s, "/?_tag=drill&_type=Patient,Organization").await,
        ["Organization/o1", "Patient/p1"]
    );
    assert_eq!(found(&s, "/?_type=Encounter").await, ["Encounter/e1"]);
    // `_type` repeated; `_id` across types.
    assert_eq!(
        found(&s, "/?_type=Patient&_type=Encounter&_id=p2,e1").await,
        ["Encounter/e1", "Patient/p2"]
    );
    // A parameter only some of the types have: the others cannot match.
    assert_eq!(
        found(&s, "/?_type=Patient,Organization&name=lemke").await,
        ["Organization/o1", "Patient/p1"]
    );
    assert_eq!(
        found(&s, "/?_type=Patient,Observation&family=walsh").await,
        ["Patient/p2"]
    );
    assert_eq!(
        form(&s, "/_search", "_tag=drill&_type=Observation").await,
        ["Observation/a"]
    );
    // Without `_type`, every type; `_count` pages across types.
    let all = found(&s, "/?_count=100").await;
    assert_eq!(all.len(), 8, "{all:?}");
    let mut paged = Vec::new();
    let mut next = Some("/?_count=3".to_owned());
    while let Some(url) = next.take() {
        let r = s.get(url.trim_start_matches("http://localhost")).await;
        assert_eq!(r.status, StatusCode::OK, "{url}");
        assert_eq!(r.body["total"], 8);
        paged.extend(refs(&r.body));
        next = r.body["link"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["relation"] == "next"))
            .and_then(|x| x["url"].as_str())
            .map(|u| {
                u.split_once("/?")
                    .map_or(u.to_owned(), |(_, q)| format!("/?{q}"))
            });
    }
    paged.sort();
    assert_eq!(paged, all);
}

#[tokio::test]
async fn compartment_search_follows_the_compartment_definition() {
    let s = TestServer::new();
    seed(&s).await;
    assert_eq!(
        found(&s, "/Patient/p1/Observation").await,
        ["Observation/a", "Observation/b"]
    );
    assert_eq!(
        found(&s, "/Patient/p1/Observation?code=x").await,
        ["Observation/a"]
    );
    assert_eq!(
        found(&s, "/Patient/p2/Observation").await,
        ["Observation/b", "Observation/c"]
    );
    assert_eq!(
        found(&s, "/Patient/p1/*").await,
        [
            "Encounter/e1",
            "Observation/a",
            "Observation/b",
            "Patient/p3"
        ]
    );
    assert_eq!(
        found(&s, "/Patient/p1/*?_type=Encounter,Organization").await,
        ["Encounter/e1"]
    );
    assert_eq!(
        form(&s, "/Patient/p1/_search", "_type=Observation&code=y").await,
        ["Observation/b"]
    );
    assert_eq!(
        form(&s, "/Patient/p1/Observation/_search", "status=final").await,
        ["Observation/a", "Observation/b"]
    );
    assert!(found(&s, "/Patient/nobody/*").await.is_empty());
    for (q, says) in [
        ("/Patient/p1/Organization", "not in the Patient compartment"),
        ("/Encounter/e1/*", "compartment is not supported"),
        ("/Patient/p1/Observation?_type=Patient", "_type"),
        ("/?_type=Nope", "Nope"),
    ] {
        let r = s.get(q).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
        assert!(r.diagnostics().contains(says), "{q}: {}", r.diagnostics());
    }
    // A type the server does not know, in the path: not found.
    assert_eq!(
        s.get("/Patient/p1/Nope").await.status,
        StatusCode::NOT_FOUND
    );
    // Strict: a parameter no searched type has is refused.
    let r = s
        .call(
            Method::GET,
            "/?_type=Patient,Encounter&colour=red",
            &[("prefer", "handling=strict")],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

/// Adds a patient managed by o1 and an Observation about it (code x).
async fn seed_more(s: &TestServer) {
    s.put_resource(
        json!({"resourceType": "Patient", "id": "p4", "name": [{"family": "Kuphal"}],
        "managingOrganization": {"reference": "Organization/o1"}}),
    )
    .await;
    s.put_resource(json!({"resourceType": "Observation", "id": "d", "status": "final",
        "code": {"coding": [{"system": "urn:c", "code": "x"}]}, "subject": {"reference": "Patient/p4"}})).await;
}

#[tokio::test]
async fn chains_and_has_follow_references_through_the_index() {
    let s = TestServer::new();
    seed(&s).await;
    seed_more(&s).await;
    assert_eq!(
        found(&s, "/Observation?subject:Patient.name=walsh").await,
        ["Observation/b", "Observation/c"]
    );
    // Without a type: every target type that has the parameter.
    assert_eq!(
        found(&s, "/Observation?subject.name=lemke").await,
        ["Observation/a"]
    );
    // Two hops.
    assert_eq!(
        found(&s, "/Observation?patient.organization.name=lemke").await,
        ["Observation/d"]
    );
    assert_eq!(
        found(&s, "/Patient?_has:Observation:subject:code=y").await,
        ["Patient/p2"]
    );
    assert_eq!(
        found(&s, "/Patient?_has:Observation:performer:code=y").await,
        ["Patient/p1"]
    );
    // Nested: organizations managing a patient with an Observation of code x.
    assert_eq!(
        found(
            &s,
            "/Organization?_has:Patient:organization:_has:Observation:subject:code=x"
        )
        .await,
        ["Organization/o1"]
    );
    let strict = [("prefer", "handling=strict")];
    for (q, says) in [
        ("/Observation?status.name=x", "only references chain"),
        ("/Observation?subject:Nope.name=x", ":Nope"),
        (
            "/Patient?_has:Observation:code:code=x",
            "no reference parameter",
        ),
        ("/Patient?_has:Nope:subject:code=x", "Nope"),
        (
            "/Observation?subject.organization.partof.partof.partof.name=x",
            "more than 4",
        ),
    ] {
        let r = s.call(Method::GET, q, &strict, Vec::new()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
        assert!(r.diagnostics().contains(says), "{q}: {}", r.diagnostics());
    }
}

/// The `Type/id` of the included entries, sorted.
fn included(bundle: &Value) -> Vec<String> {
    let mut out = refs_of_mode(bundle, "include");
    out.sort();
    out
}

#[tokio::test]
async fn includes_add_what_matches_refer_to_and_what_refers_to_them() {
    let s = TestServer::new();
    seed(&s).await;
    seed_more(&s).await;
    let get = |q: &'static str| {
        let s = &s;
        async move {
            let r = s.get(q).await;
            assert_eq!(r.status, StatusCode::OK, "{q}: {:?}", r.body);
            r.body
        }
    };
    let b = get("/Observation?_id=a&_include=Observation:subject").await;
    assert_eq!(
        (refs(&b), included(&b)),
        (
            vec!["Observation/a".to_owned()],
            vec!["Patient/p1".to_owned()]
        )
    );
    assert_eq!(b["total"], 1, "includes are not counted");
    let b = get("/Patient?_id=p1&_revinclude=Observation:subject").await;
    assert_eq!(included(&b), ["Observation/a"]);
    let b = get("/Patient?_id=p1&_revinclude=Observation:*").await;
    assert_eq!(included(&b), ["Observation/a", "Observation/b"]);
    let b = get("/Observation?_id=b&_include=Observation:*").await;
    assert_eq!(included(&b), ["Patient/p1", "Patient/p2"]);
    let b = get("/Observation?_id=b&_include=Observation:performer:Patient").await;
    assert_eq!(included(&b), ["Patient/p1"]);
    // Without :iterate the organization of the included patient is not
    // added; with it, it is.
    let b =
        get("/Observation?_id=d&_include=Observation:subject&_include=Patient:organization").await;
    assert_eq!(included(&b), ["Patient/p4"]);
    let b = get(
        "/Observation?_id=d&_include=Observation:subject&_include:iterate=Patient:organization",
    )
    .await;
    assert_eq!(included(&b), ["Organization/o1", "Patient/p4"]);
    for q in [
        "/Observation?_include=Nope:subject",
        "/Observation?_include=Observation:status",
        "/Observation?_include=Observation",
    ] {
        let r = s
            .call(Method::GET, q, &[("prefer", "handling=strict")], Vec::new())
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
    }
}

/// A batch's GET entries search at every level and read history.
#[tokio::test]
async fn batch_entries_search_every_level_and_read_history() {
    let s = TestServer::new();
    seed(&s).await;
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "?_type=Patient,Organization&_tag=drill"}},
        {"request": {"method": "GET", "url": "Patient/p1/*"}},
        {"request": {"method": "GET", "url": "Patient/p1/Observation?code=x"}},
        {"request": {"method": "GET", "url": "Patient/p1/_history"}},
        {"request": {"method": "GET", "url": "Observation/_history?_count=2"}},
        {"request": {"method": "HEAD", "url": "_history"}},
        {"request": {"method": "GET", "url": "Patient/nobody/_history"}},
        {"request": {"method": "GET", "url": "Encounter/e1/*"}}]});
    let r = s.post("/", &batch).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let e = |i: usize| r.body["entry"][i].clone();
    assert_eq!(refs(&e(0)["resource"]), ["Organization/o1", "Patient/p1"]);
    assert_eq!(
        refs(&e(1)["resource"]),
        [
            "Encounter/e1",
            "Observation/a",
            "Observation/b",
            "Patient/p3"
        ]
    );
    assert_eq!(refs(&e(2)["resource"]), ["Observation/a"]);
    assert_eq!(e(3)["resource"]["type"], "history");
    assert_eq!(e(3)["resource"]["entry"].as_array().map(Vec::len), Some(1));
    assert_eq!(e(4)["resource"]["entry"].as_array().map(Vec::len), Some(2));
    assert!(
        e(5)["response"]["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("200"))
    );
    assert!(e(5).get("resource").is_none(), "HEAD: no resource");
    assert!(
        e(6)["response"]["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("404"))
    );
    assert!(
        e(7)["response"]["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("400"))
    );
}
