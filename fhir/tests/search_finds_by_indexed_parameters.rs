//! Guards search: each indexed parameter kind (token, string, reference,
//! date with prefixes), `_id`, `_lastUpdated`, `_sort`, exact totals,
//! stable paging while writes continue, and unknown parameters (a warning,
//! or 400 under `Prefer: handling=strict`); POST `_search` agrees with GET.

mod common;

use axum::http::{Method, StatusCode};
use common::{TestServer, match_refs};
use serde_json::{Value, json};

/// The ids of a searchset's matches, in the Bundle's order.
fn ids(bundle: &Value) -> Vec<String> {
    match_refs(bundle)
        .into_iter()
        .map(|r| r.rsplit('/').next().unwrap_or("").to_owned())
        .collect()
}

async fn seed(s: &TestServer) {
    for (id, family, given, gender, birth, mrn) in [
        ("p1", "Lemke", "Abram", "male", "1970-05-01", "1"),
        ("p2", "Lemon", "Aleta", "female", "1985-11-30", "2"),
        ("p3", "Walsh", "Alyce", "female", "2001-01-15", "3"),
    ] {
        let body = json!({"resourceType": "Patient", "id": id, "name": [{"family": family, "given": [given]}],
            "gender": gender, "birthDate": birth, "identifier": [{"system": "urn:mrn", "value": mrn}]});
        assert_eq!(
            s.put(&format!("/Patient/{id}"), &body).await.status,
            StatusCode::CREATED
        );
    }
    // The same identifier value in another system, and no system at all.
    for (id, identifier) in [
        ("p4", json!({"system": "urn:other", "value": "2"})),
        ("p5", json!({"value": "2"})),
    ] {
        let body = json!({"resourceType": "Patient", "id": id, "identifier": [identifier]});
        assert_eq!(
            s.put(&format!("/Patient/{id}"), &body).await.status,
            StatusCode::CREATED
        );
    }
    // A name with only text and a prefix: `name` keys of its own.
    let body = json!({"resourceType": "Patient", "id": "p6",
        "name": [{"text": "Dr Ilse Vogel", "prefix": ["Dr"]}]});
    assert_eq!(
        s.put("/Patient/p6", &body).await.status,
        StatusCode::CREATED
    );
    // A subject that is not a Patient: `subject` finds it, `patient` not.
    let body = json!({"resourceType": "Observation", "id": "o4", "status": "amended",
        "code": {"coding": [{"system": "urn:x", "code": "x"}]},
        "subject": {"reference": "Group/g1"}});
    assert_eq!(
        s.put("/Observation/o4", &body).await.status,
        StatusCode::CREATED
    );
    for (id, subject, code, date, status) in [
        (
            "o1",
            "Patient/p1",
            "8867-4",
            "2024-03-05T10:00:00Z",
            "final",
        ),
        ("o2", "Patient/p1", "29463-7", "2024-03-06", "final"),
        (
            "o3",
            "Patient/p2",
            "8867-4",
            "2024-04-01T08:30:00+02:00",
            "preliminary",
        ),
    ] {
        let body = json!({"resourceType": "Observation", "id": id, "status": status,
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": subject}, "effectiveDateTime": date});
        assert_eq!(
            s.put(&format!("/Observation/{id}"), &body).await.status,
            StatusCode::CREATED
        );
    }
}

#[tokio::test]
async fn every_parameter_kind_matches() {
    let s = TestServer::new();
    seed(&s).await;
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("/Patient?family=lem", vec!["p1", "p2"]),
        ("/Patient?family=LEMKE", vec!["p1"]),
        ("/Patient?given=al", vec!["p2", "p3"]),
        ("/Patient?name=walsh", vec!["p3"]),
        // `name` reads the `family` and `given` keys and its own (text, prefix).
        ("/Patient?name=aly", vec!["p3"]),
        ("/Patient?name=a", vec!["p1", "p2", "p3"]),
        ("/Patient?name=le", vec!["p1", "p2"]),
        ("/Patient?name=dr", vec!["p6"]),
        ("/Patient?name=dr%20ilse", vec!["p6"]),
        ("/Patient?name=ilse", vec![]),
        ("/Patient?gender=female&family=lem", vec!["p2"]),
        ("/Patient?identifier=urn:mrn|2", vec!["p2"]),
        ("/Patient?identifier=3", vec!["p3"]),
        ("/Patient?identifier=urn:mrn|", vec!["p1", "p2", "p3"]),
        ("/Patient?identifier=urn:other|", vec!["p4"]),
        ("/Patient?identifier=2", vec!["p2", "p4", "p5"]),
        ("/Patient?identifier=|2", vec!["p5"]),
        ("/Patient?identifier=urn:other|2", vec!["p4"]),
        ("/Patient?identifier=urn:mrn|22", vec![]),
        ("/Observation?subject=p1", vec!["o1", "o2"]),
        ("/Observation?subject=p", vec![]),
        ("/Patient?birthdate=1985", vec!["p2"]),
        ("/Patient?birthdate=gt1980-01-01", vec!["p2", "p3"]),
        ("/Patient?birthdate=le1985-11-30", vec!["p1", "p2"]),
        ("/Patient?birthdate=ne1985-11-30", vec!["p1", "p3"]),
        ("/Patient?_id=p1,p3", vec!["p1", "p3"]),
        ("/Patient?gender=male,female&_id=p2", vec!["p2"]),
        ("/Observation?subject=Patient/p1", vec!["o1", "o2"]),
        ("/Observation?patient=p2", vec!["o3"]),
        ("/Observation?patient=Patient/p2", vec!["o3"]),
        ("/Observation?subject=g1", vec!["o4"]),
        ("/Observation?subject=Group/g1", vec!["o4"]),
        ("/Observation?patient=g1", vec![]),
        ("/Observation?patient=Group/g1", vec![]),
        (
            "/Observation?code=http://loinc.org|8867-4",
            vec!["o1", "o3"],
        ),
        ("/Observation?code=29463-7", vec!["o2"]),
        ("/Observation?status=final", vec!["o1", "o2"]),
        ("/Observation?date=2024-03", vec!["o1", "o2"]),
        ("/Observation?date=ge2024-03-06", vec!["o2", "o3"]),
        ("/Observation?date=lt2024-03-06", vec!["o1"]),
        ("/Observation?date=2024-04-01T06:30:00Z", vec!["o3"]),
        ("/Observation?subject=Patient/p1&code=8867-4", vec!["o1"]),
        ("/Observation?code=nothing", vec![]),
    ];
    for (uri, want) in cases {
        let r = s.get(uri).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.diagnostics());
        assert_eq!(r.body["type"], "searchset");
        let mut got = ids(&r.body);
        got.sort();
        assert_eq!(got, want, "{uri}");
        assert_eq!(r.body["total"], want.len(), "{uri}: total is exact");
    }
    // Updates move resources between results; deletes drop them.
    let mut p1 = s.get("/Patient/p1").await.body;
    p1["name"][0]["family"] = json!("Smith");
    s.put("/Patient/p1", &p1).await;
    s.delete("/Patient/p2").await;
    assert!(ids(&s.get("/Patient?family=lem").await.body).is_empty());
    assert_eq!(ids(&s.get("/Patient?family=smi").await.body), vec!["p1"]);
    // POST _search gives the same answer as GET.
    let post = s
        .call(
            Method::POST,
            "/Observation/_search",
            &[("content-type", "application/x-www-form-urlencoded")],
            b"code=8867-4&status=final".to_vec(),
        )
        .await;
    assert_eq!(ids(&post.body), vec!["o1"]);
}

#[tokio::test]
async fn last_updated_sort_paging_and_unknown_parameters() {
    let s = TestServer::new();
    for i in 0..7 {
        s.put(
            &format!("/Basic/b{i}"),
            &json!({"resourceType": "Basic", "id": format!("b{i}"), "code": {"text": "b"}}),
        )
        .await;
    }
    let all = s.get("/Basic?_sort=-_lastUpdated&_count=3").await;
    assert_eq!(all.body["total"], 7);
    assert_eq!(ids(&all.body), vec!["b6", "b5", "b4"]);
    let asc = s.get("/Basic?_sort=_lastUpdated").await;
    assert_eq!(
        ids(&asc.body),
        (0..7).map(|i| format!("b{i}")).collect::<Vec<_>>()
    );
    let first_time = asc.body["entry"][0]["resource"]["meta"]["lastUpdated"]
        .as_str()
        .expect("time")
        .to_owned();
    let after = s.get(&format!("/Basic?_lastUpdated=gt{first_time}")).await;
    assert_eq!(after.body["total"], 6);

    // Stable paging: a write between pages neither repeats nor skips.
    let mut seen = Vec::new();
    let mut url = "/Basic?_count=2".to_owned();
    let mut pages = 0;
    loop {
        let r = s.get(&url).await;
        seen.extend(ids(&r.body));
        pages += 1;
        s.put(
            "/Basic/a-new",
            &json!({"resourceType": "Basic", "id": "a-new"}),
        )
        .await;
        let next = r.body["link"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["relation"] == "next"))
            .cloned();
        match next {
            Some(n) => {
                url = n["url"]
                    .as_str()
                    .expect("url")
                    .trim_start_matches("http://vigil.test")
                    .to_owned()
            }
            None => break,
        }
        assert!(pages < 10);
    }
    assert_eq!(
        seen,
        (0..7).map(|i| format!("b{i}")).collect::<Vec<_>>(),
        "ids sort after a-new: no repeats, no skips"
    );
    // And back with previous.
    let last = s.get(&url).await;
    let prev = last.body["link"]
        .as_array()
        .and_then(|l| l.iter().find(|x| x["relation"] == "previous"))
        .cloned()
        .expect("previous");
    let back = s
        .get(
            prev["url"]
                .as_str()
                .expect("url")
                .trim_start_matches("http://vigil.test"),
        )
        .await;
    assert_eq!(ids(&back.body), vec!["b4", "b5"]);

    // Unknown parameters: a warning outcome entry, or 400 when strict.
    let lax = s.get("/Basic?colour=red").await;
    assert_eq!(lax.status, StatusCode::OK);
    let outcome = lax.body["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .cloned()
        .expect("outcome");
    assert_eq!(outcome["resource"]["issue"][0]["severity"], "warning");
    let strict = s
        .call(
            Method::GET,
            "/Basic?colour=red",
            &[("prefer", "handling=strict")],
            Vec::new(),
        )
        .await;
    assert_eq!(strict.status, StatusCode::BAD_REQUEST);
    assert!(strict.diagnostics().contains("colour"));
    let strict_sort = s
        .call(
            Method::GET,
            "/Basic?_sort=colour",
            &[("prefer", "handling=strict")],
            Vec::new(),
        )
        .await;
    assert_eq!(strict_sort.status, StatusCode::BAD_REQUEST);
    assert!(strict_sort.diagnostics().contains("colour"));
    assert_eq!(
        s.get("/Basic?_lastUpdated=sa20x0").await.status,
        StatusCode::BAD_REQUEST
    );
}

/// R4 lets a client ask for the total alone: `_count=0` (what fhirpy's
/// `.count()` sends) and `_summary=count` answer the total, no entries and
/// no next link; a `_count` that is not a whole number is a 400.
#[tokio::test]
async fn count_zero_and_summary_count_give_the_total_alone() {
    let s = TestServer::new();
    seed(&s).await;
    for q in [
        "/Patient?_count=0",
        "/Patient?_summary=count",
        "/Patient?gender=female&_count=0",
    ] {
        let r = s.get(q).await;
        assert_eq!(r.status, StatusCode::OK, "{q}");
        // The same search without the count gives the total to expect.
        let plain = if q.contains("female") {
            "/Patient?gender=female"
        } else {
            "/Patient"
        };
        let want = s.get(plain).await.body["total"].clone();
        assert!(want.as_u64().is_some_and(|n| n > 0), "{plain} finds some");
        assert_eq!(r.body["total"], want, "{q}");
        assert!(ids(&r.body).is_empty(), "{q}: no entries");
        let links = r.body["link"].as_array().expect("links");
        assert!(
            links.iter().all(|l| l["relation"] != "next"),
            "{q}: no next page"
        );
    }
    let bad = s.get("/Patient?_count=lots").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.body["resourceType"], "OperationOutcome");
}
