//! The REST behaviours of issue 24, over real HTTP on real `vigil_node`
//! processes, the same checks on a standalone server and on a follower
//! (whose writes are forwarded to its leader and whose reads are its
//! own): batch and transaction entries that read, search and patch;
//! narrative references rewritten; system and compartment search;
//! If-Match on any well-formed ETag; Preference-Applied and X-Request-Id;
//! trailing slashes, HEAD, `_pretty`, `_summary`/`_elements`, JSON for
//! `Accept: application/json`; CORS preflights; the CapabilityStatement's
//! ETag and `mode=terminology`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use vigil_fhir::config::CorsConfig;
use vigil_fhir::config::replication::ReplicationConfig;
use vigil_testkit::http::{Reply, request, request_with};
use vigil_testkit::until;
use vigil_tests::NodeProcess;

const BIN: &str = env!("CARGO_BIN_EXE_vigil_node");
const APP: &str = "https://app.example";

fn write_config(
    dir: &std::path::Path,
    node: &str,
    replication: Option<ReplicationConfig>,
) -> PathBuf {
    vigil_tests::write_node_config(dir, node, replication, |c| {
        c.cors = CorsConfig {
            allowed_origins: vec![APP.into()],
            ..CorsConfig::default()
        };
    })
    .expect("write config")
}

fn json_of(r: &Reply) -> Value {
    serde_json::from_str(&r.body).unwrap_or(Value::Null)
}

fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Reply {
    let text = body.map(Value::to_string);
    request_with(addr, method, path, text.as_deref(), headers).expect("request")
}

/// Reads `path` until `ok` holds (a follower serves what it has applied).
fn eventually(addr: SocketAddr, path: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    until(path, Duration::from_secs(20), || {
        let r = request(addr, "GET", path, None).expect("read");
        last = json_of(&r);
        r.status == 200 && ok(&last)
    });
    last
}

/// Every check, on one node; `tag` keeps ids apart between the nodes.
fn check_rest_api(addr: SocketAddr, tag: &str) {
    // A transaction: urn:uuid references in elements and narrative.
    let pat = format!("urn:uuid:3f0a3c6e-0b7a-4c34-9d52-5b1f2e8a9c1{}", tag.len());
    let div = format!(
        "<div xmlns=\"http://www.w3.org/1999/xhtml\"><a href=\"{pat}\">the patient</a> <img src=\"{pat}\"/></div>"
    );
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": pat, "resource": {"resourceType": "Patient", "name": [{"family": format!("Rest{tag}")}],
            "identifier": [{"system": "urn:rest", "value": tag}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:0b5c1d2e-0000-4000-8000-00000000000a", "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "t"},
            "code": {"coding": [{"system": "urn:c", "code": "x"}]}, "subject": {"reference": pat},
            "text": {"status": "generated", "div": div}},
         "request": {"method": "POST", "url": "Observation"}}]});
    let r = send(addr, "POST", "/", Some(&tx), &[]);
    assert_eq!(r.status, 200, "{tag}: {}", r.body);
    let out = json_of(&r);
    let loc = |i: usize| {
        out["entry"][i]["response"]["location"]
            .as_str()
            .and_then(|l| l.split("/_history").next())
            .expect("a location")
            .to_owned()
    };
    let (patient, obs) = (loc(0), loc(1));
    let pid = patient.rsplit('/').next().expect("id").to_owned();
    let stored = eventually(addr, &format!("/{obs}"), |_| true);
    assert_eq!(stored["subject"]["reference"], patient.as_str(), "{tag}");
    let div = stored["text"]["div"].as_str().expect("narrative");
    assert!(
        div.contains(&format!("href=\"{patient}\"")) && div.contains(&format!("src=\"{patient}\"")),
        "{tag}: {div}"
    );
    assert!(!div.contains("urn:uuid"), "{tag}: {div}");

    // A batch that searches, reads and patches; a bad entry fails alone.
    let patch = json!([{"op": "add", "path": "/gender", "value": "female"}]);
    let b64 = base64_of(patch.to_string().as_bytes());
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": format!("Patient?identifier=urn:rest|{tag}")}},
        {"request": {"method": "GET", "url": patient}},
        {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": b64},
         "request": {"method": "PATCH", "url": patient}},
        {"request": {"method": "TRACE", "url": patient}}]});
    let r = send(addr, "POST", "/", Some(&batch), &[]);
    assert_eq!(r.status, 200, "{tag}: {}", r.body);
    let out = json_of(&r);
    let status = |i: usize| {
        out["entry"][i]["response"]["status"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    assert!(status(0).starts_with("200"), "{tag}: {out}");
    assert_eq!(out["entry"][0]["resource"]["type"], "searchset", "{tag}");
    assert!(status(1).starts_with("200"), "{tag}: {out}");
    assert_eq!(out["entry"][1]["resource"]["id"], pid.as_str(), "{tag}");
    assert!(status(2).starts_with("200"), "{tag}: {out}");
    assert!(
        status(3).starts_with("400") || status(3).starts_with("405"),
        "{tag}: {out}"
    );
    eventually(addr, &format!("/{patient}"), |p| p["gender"] == "female");

    // System and compartment search.
    let sys = eventually(
        addr,
        &format!("/?_type=Patient,Observation&_id={pid}"),
        |b| b["total"] == 1,
    );
    assert_eq!(sys["entry"][0]["resource"]["id"], pid.as_str(), "{tag}");
    let comp = eventually(addr, &format!("/Patient/{pid}/*"), |b| b["total"] == 1);
    assert_eq!(
        comp["entry"][0]["fullUrl"]
            .as_str()
            .map(|u| u.ends_with(&obs)),
        Some(true),
        "{tag}"
    );
    let r = request_with(
        addr,
        "POST",
        &format!("/Patient/{pid}/Observation/_search"),
        Some("code=x"),
        &[("content-type", "application/x-www-form-urlencoded")],
    )
    .expect("post search");
    assert_eq!(json_of(&r)["total"], 1, "{tag}: {}", r.body);

    // If-Match: a well-formed ETag that does not match is 412; a
    // malformed one 400.
    let body = json!({"resourceType": "Patient", "id": pid, "gender": "male"});
    let path = format!("/{patient}");
    assert_eq!(
        send(
            addr,
            "PUT",
            &path,
            Some(&body),
            &[("if-match", "W/\"outdated\"")]
        )
        .status,
        412,
        "{tag}"
    );
    assert_eq!(
        send(addr, "PUT", &path, Some(&body), &[("if-match", "garbage")]).status,
        400,
        "{tag}"
    );

    // Prefer is acknowledged; a request id is echoed or made.
    let r = send(
        addr,
        "POST",
        "/Patient",
        Some(&json!({"resourceType": "Patient"})),
        &[("prefer", "return=minimal"), ("x-request-id", "trace-24")],
    );
    assert_eq!(r.status, 201, "{tag}");
    assert_eq!(
        r.header("preference-applied"),
        Some("return=minimal"),
        "{tag}"
    );
    assert_eq!(r.header("x-request-id"), Some("trace-24"), "{tag}");
    assert!(
        request(addr, "GET", "/metadata", None)
            .expect("get")
            .header("x-request-id")
            .is_some(),
        "{tag}"
    );

    // Trailing slash, HEAD, _pretty, subsets, plain JSON.
    assert_eq!(
        request(addr, "GET", "/Patient/", None).expect("get").status,
        200,
        "{tag}"
    );
    let head = request(addr, "HEAD", &path, None).expect("head");
    assert_eq!(head.status, 200, "{tag}");
    assert!(
        head.body.is_empty() && head.header("etag").is_some(),
        "{tag}"
    );
    let pretty = request(addr, "GET", &format!("{path}?_pretty=true"), None).expect("get");
    assert!(pretty.body.contains("\n  "), "{tag}");
    let sub =
        json_of(&request(addr, "GET", &format!("{path}?_elements=gender"), None).expect("get"));
    assert!(
        sub["meta"]["tag"]
            .as_array()
            .is_some_and(|t| t.iter().any(|x| x["code"] == "SUBSETTED")),
        "{tag}: {sub}"
    );
    assert!(sub.get("name").is_none(), "{tag}: {sub}");
    let plain =
        request_with(addr, "GET", &path, None, &[("accept", "application/json")]).expect("get");
    assert!(
        plain
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{tag}"
    );

    // CORS: an allowed origin's preflight is answered, another refused.
    let pre = |origin: &str| {
        request_with(
            addr,
            "OPTIONS",
            &path,
            None,
            &[
                ("origin", origin),
                ("access-control-request-method", "PUT"),
                (
                    "access-control-request-headers",
                    "authorization, content-type, if-match",
                ),
            ],
        )
        .expect("options")
    };
    let ok = pre(APP);
    assert_eq!(ok.status, 204, "{tag}");
    assert_eq!(ok.header("access-control-allow-origin"), Some(APP), "{tag}");
    let refused = pre("https://evil.example");
    assert_eq!(refused.status, 403, "{tag}");
    assert_eq!(refused.header("access-control-allow-origin"), None, "{tag}");

    // The CapabilityStatement: ETag, 304, no TerminologyCapabilities.
    let meta = request(addr, "GET", "/metadata", None).expect("metadata");
    let etag = meta.header("etag").expect("an ETag").to_owned();
    assert!(meta.header("last-modified").is_some(), "{tag}");
    assert_eq!(
        request_with(addr, "GET", "/metadata", None, &[("if-none-match", &etag)])
            .expect("get")
            .status,
        304,
        "{tag}"
    );
    assert_eq!(
        request(addr, "GET", "/metadata?mode=terminology", None)
            .expect("get")
            .status,
        400,
        "{tag}"
    );
}

fn base64_of(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn the_rest_api_behaves_alike_on_a_standalone_server_and_a_follower() {
    let dir = tempfile::tempdir().expect("dir");
    let standalone =
        NodeProcess::start(BIN, &write_config(dir.path(), "s", None)).expect("standalone");
    check_rest_api(standalone.http, "s");

    let (leader, follower) =
        vigil_tests::leader_follower_configs(dir.path()).expect("cluster settings");
    let leader =
        NodeProcess::start(BIN, &write_config(dir.path(), "a", Some(leader))).expect("leader");
    let follower =
        NodeProcess::start(BIN, &write_config(dir.path(), "b", Some(follower))).expect("follower");
    // A follower forwards writes once it has reached its leader (before,
    // it answers 503 with Retry-After).
    until(
        "the follower reached its leader",
        Duration::from_secs(30),
        || {
            // A write goes through once it has.
            request(
                follower.http,
                "POST",
                "/Patient",
                Some(r#"{"resourceType":"Patient"}"#),
            )
            .is_ok_and(|r| r.status == 201)
        },
    );
    check_rest_api(follower.http, "follower");
    // What the follower forwarded is the leader's.
    let on_leader = json_of(
        &request(
            leader.http,
            "GET",
            "/Patient?identifier=urn:rest|follower",
            None,
        )
        .expect("get"),
    );
    assert_eq!(on_leader["total"], 1, "{on_leader}");
}
