//! The result parameters of R4 search: `_sort` on any parameter with
//! values (several keys, both directions, matches without a value last,
//! stable keyset paging in that order), `_total`, `_summary` and
//! `_elements` on the matches, and `_list`. Expected orders are written
//! out by hand from the data below.

mod common;

use axum::http::{Method, StatusCode};
use common::{TestServer, match_refs, refs_of_mode};
use serde_json::{Value, json};

fn ids(bundle: &Value) -> Vec<String> {
    match_refs(bundle)
        .into_iter()
        .map(|r| r.rsplit('/').next().unwrap_or("").to_owned())
        .collect()
}

/// Five patients: (id, family, given, birthDate or none).
const PEOPLE: [(&str, &str, &str, Option<&str>); 5] = [
    ("a", "Zeta", "Ann", Some("1990-03-01")),
    ("b", "Álvarez", "Bo", Some("1970-01-01")),
    ("c", "Mills", "Cy", None),
    ("d", "mills", "Ada", Some("2001-07-30")),
    ("e", "Baker", "Eve", Some("1970-01-01")),
];

async fn seed(s: &TestServer) {
    for (id, family, given, birth) in PEOPLE {
        let mut body = json!({"resourceType": "Patient", "id": id,
            "name": [{"family": family, "given": [given]}]});
        if let Some(b) = birth {
            body["birthDate"] = json!(b);
        }
        s.put_resource(body).await;
    }
}

#[tokio::test]
async fn sort_by_parameters_in_both_directions_with_missing_values_last() {
    let s = TestServer::new();
    seed(&s).await;
    // Dates ascending, ties by id; no birthDate last.
    let r = s.get("/Patient?_sort=birthdate").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(ids(&r.body), ["b", "e", "a", "d", "c"]);
    // Descending: still missing last.
    let r = s.get("/Patient?_sort=-birthdate").await;
    assert_eq!(ids(&r.body), ["d", "a", "b", "e", "c"]);
    // Strings sort case- and accent-insensitively (Álvarez before Baker).
    let r = s.get("/Patient?_sort=family").await;
    assert_eq!(ids(&r.body), ["b", "e", "c", "d", "a"]);
    // Several keys: date descending, then family descending.
    let r = s.get("/Patient?_sort=-birthdate,-family").await;
    assert_eq!(ids(&r.body), ["d", "a", "e", "b", "c"]);
    // A repeated _sort adds keys in order.
    let r = s.get("/Patient?_sort=birthdate&_sort=-family").await;
    assert_eq!(ids(&r.body), ["e", "b", "a", "d", "c"]);
    // `name` sorts by family first (the parameter covering it).
    let r = s.get("/Patient?_sort=name").await;
    assert_eq!(ids(&r.body), ["b", "e", "c", "d", "a"]);
    // -_id and -_lastUpdated are keys like any other.
    let r = s.get("/Patient?_sort=-_id").await;
    assert_eq!(ids(&r.body), ["e", "d", "c", "b", "a"]);
}

/// The sort values come from the matches' bodies when they are few out
/// of many resources, and from a scan of the keys otherwise: both give
/// the same order.
#[tokio::test]
async fn few_and_many_matches_sort_alike() {
    let s = TestServer::new();
    seed(&s).await;
    for i in 0..300 {
        s.put_resource(json!({"resourceType": "Patient", "id": format!("x{i:03}"),
            "name": [{"family": "Other"}], "birthDate": format!("19{:02}", i % 100)}))
            .await;
    }
    // 2 matches of 305: read from the bodies.
    let few = s.get("/Patient?family=mills&_sort=-birthdate").await;
    assert_eq!(ids(&few.body), ["d", "c"]);
    let few = s.get("/Patient?_id=a,b,e&_sort=birthdate,family").await;
    assert_eq!(ids(&few.body), ["b", "e", "a"]);
    // All of them: from the keys; the first five by family are the same.
    let many = s.get("/Patient?_sort=family&_count=5").await;
    assert_eq!(many.body["total"], 305);
    assert_eq!(ids(&many.body), ["b", "e", "c", "d", "x000"]);
}

#[tokio::test]
async fn paging_follows_the_sort_order_without_repeats_or_gaps() {
    let s = TestServer::new();
    seed(&s).await;
    let pages = s.pages("/Patient?_sort=-birthdate,family&_count=2").await;
    assert_eq!(pages.len(), 3);
    let seen: Vec<String> = pages.iter().flat_map(ids).collect();
    assert_eq!(seen, ["d", "a", "b", "e", "c"]);
    // A page token from another search is refused, not misread.
    let next = pages[0]["link"]
        .as_array()
        .and_then(|l| l.iter().find(|x| x["relation"] == "next"))
        .and_then(|x| x["url"].as_str())
        .expect("next")
        .to_owned();
    let token = next.split("_page=").nth(1).expect("a token");
    let other = s.get(&format!("/Patient?_page={token}")).await;
    assert_eq!(other.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn sort_keys_that_cannot_sort_are_refused_when_strict_and_warned_otherwise() {
    let s = TestServer::new();
    seed(&s).await;
    let strict = [("prefer", "handling=strict")];
    for bad in ["colour", "_score", "", "birthdate,,family"] {
        let r = s
            .call(
                Method::GET,
                &format!("/Patient?_sort={bad}"),
                &strict,
                Vec::new(),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let lax = s.get("/Patient?_sort=colour").await;
    assert_eq!(lax.status, StatusCode::OK);
    assert_eq!(refs_of_mode(&lax.body, "outcome").len(), 1);
    assert_eq!(ids(&lax.body).len(), 5);
    let too_many = s
        .get(&format!("/Patient?_sort={}", ["family"; 9].join(",")))
        .await;
    assert_eq!(too_many.status, StatusCode::BAD_REQUEST);
}

/// Over several types, a sort parameter one type lacks sorts that type's
/// matches last; over that type alone it is an unknown parameter.
#[tokio::test]
async fn a_sort_key_some_types_lack_sorts_them_last() {
    let s = TestServer::new();
    seed(&s).await;
    s.put_resource(
        json!({"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "x"}}),
    )
    .await;
    let r = s.get("/?_type=Patient,Observation&_sort=-birthdate").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        match_refs(&r.body),
        [
            "Patient/d",
            "Patient/a",
            "Patient/b",
            "Patient/e",
            "Observation/o",
            "Patient/c"
        ]
    );
    let strict = s
        .call(
            Method::GET,
            "/Observation?_sort=birthdate",
            &[("prefer", "handling=strict")],
            Vec::new(),
        )
        .await;
    assert_eq!(strict.status, StatusCode::BAD_REQUEST);
    assert!(strict.diagnostics().contains("birthdate"));
    let lax = s.get("/Observation?_sort=birthdate").await;
    assert_eq!(lax.status, StatusCode::OK);
    assert_eq!(refs_of_mode(&lax.body, "outcome").len(), 1);
}

#[tokio::test]
async fn total_none_leaves_the_total_out() {
    let s = TestServer::new();
    seed(&s).await;
    let r = s.get("/Patient?_total=none").await;
    assert!(r.body.get("total").is_none());
    assert_eq!(ids(&r.body).len(), 5);
    for t in ["accurate", "estimate"] {
        let r = s.get(&format!("/Patient?_total={t}&family=mills")).await;
        assert_eq!(r.body["total"], 2, "{t}");
    }
    assert_eq!(
        s.get("/Patient?_total=some").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn summary_and_elements_cut_the_matches_but_not_the_included() {
    let s = TestServer::new();
    s.put_resource(json!({"resourceType": "Organization", "id": "o", "name": "Clinic"}))
        .await;
    s.put_resource(json!({"resourceType": "Patient", "id": "p", "gender": "other",
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">p</div>"},
        "birthDate": "1999", "managingOrganization": {"reference": "Organization/o"}}))
        .await;
    let subsetted = |r: &Value| {
        r["meta"]["tag"]
            .as_array()
            .is_some_and(|t| t.iter().any(|x| x["code"] == "SUBSETTED"))
    };
    let r = s
        .get("/Patient?_elements=gender&_include=Patient:organization")
        .await;
    let entries = r.body["entry"].as_array().expect("entries").clone();
    let m = &entries[0]["resource"];
    assert_eq!(m["gender"], "other");
    assert!(m.get("birthDate").is_none() && m.get("text").is_none());
    assert!(subsetted(m));
    // The include still saw the whole match, and is itself whole.
    let inc = &entries[1]["resource"];
    assert_eq!(inc["name"], "Clinic");
    assert!(!subsetted(inc));

    let r = s.get("/Patient?_summary=text").await;
    let m = &r.body["entry"][0]["resource"];
    assert!(m.get("text").is_some() && m.get("gender").is_none() && subsetted(m));
    let r = s.get("/Patient?_summary=data").await;
    let m = &r.body["entry"][0]["resource"];
    assert!(m.get("text").is_none() && m["gender"] == "other" && subsetted(m));
    let r = s.get("/Patient?_summary=false").await;
    assert!(!subsetted(&r.body["entry"][0]["resource"]));
    assert_eq!(
        s.get("/Patient?_summary=text&_elements=gender")
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        s.get("/Patient?_elements=a.b").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn list_restricts_matches_to_the_lists_entries() {
    let s = TestServer::new();
    seed(&s).await;
    s.put_resource(
        json!({"resourceType": "List", "id": "l", "status": "current", "mode": "working",
        "entry": [
            {"item": {"reference": "Patient/a"}},
            {"item": {"reference": "http://vigil.test/Patient/d"}},
            {"item": {"reference": "Patient/e"}, "deleted": true},
            {"item": {"reference": "Organization/a"}}
        ]}),
    )
    .await;
    let r = s.get("/Patient?_list=l&_sort=_id").await;
    assert_eq!(ids(&r.body), ["a", "d"]);
    let r = s.get("/Patient?_list=l&family=mills").await;
    assert_eq!(ids(&r.body), ["d"]);
    assert_eq!(
        s.get("/Patient?_list=nope").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get("/Patient?_list=$current-problems").await.status,
        StatusCode::BAD_REQUEST
    );
}
