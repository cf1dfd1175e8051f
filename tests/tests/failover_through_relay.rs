//! Automatic failover between real processes: two `vigil_node` data nodes
//! and a `vigil_witness`, every link through its own UDP relay so a test
//! can cut any of them. A client writes all along and logs every write it
//! got acknowledged; after each disaster the checks are DESIGN.md's: no
//! acknowledged write lost (synchronous mode), lost ones only in the
//! deposed leader's quarantine (asynchronous), one leader, no versionId
//! issued twice for different content.

use std::time::{Duration, Instant};

use vigil_net::relay::Faults;
use vigil_testkit::http::request;
use vigil_testkit::{http::status, until};
use vigil_tests::dr::{
    Bins, CUT, Dr, Writer, all_present, both_crash_and_restart, caught_up, first_ack_after, leads,
    switch_over,
};

const BINS: Bins = Bins {
    node: env!("CARGO_BIN_EXE_vigil_node"),
    witness: env!("CARGO_BIN_EXE_vigil_witness"),
};
/// Lease in the tests: short, so drills take seconds.
const LEASE_MS: u64 = 1_000;

/// PUTs a minimal Patient `id` through `node` and expects `status`.
fn put_patient(node: std::net::SocketAddr, id: &str, status: u16) {
    let body = format!(r#"{{"resourceType":"Patient","id":"{id}"}}"#);
    let r = request(node, "PUT", &format!("/Patient/{id}"), Some(&body)).expect("put");
    assert_eq!(r.status, status, "{}", r.body);
}

#[test]
fn killing_the_leader_promotes_the_follower_and_the_old_leader_rejoins() {
    let dr = Dr::new(BINS, 0, LEASE_MS);
    let (_w, a, b) = dr.start_all();
    let writer = Writer::start(vec![b.http, a.http], "k");
    until("writes flow", Duration::from_secs(20), || {
        writer.acked_count() > 50
    });
    let before = writer.acked_count();
    let _ = a.child.kill9();
    // From here a is dead: what is acknowledged later was sent to b.
    let killed = Instant::now();
    until("the follower promotes", Duration::from_secs(20), || {
        leads(b.http)
    });
    writer.resumed_after(killed);
    let writer_refused = writer.refused();
    let acked = writer.finish();
    let rto = first_ack_after(&acked, killed);
    assert!(acked.len() > before, "writes resumed after the failover");
    eprintln!(
        "RTO (kill -9 to first acknowledged write through the survivor): {:?}; {} requests refused meanwhile",
        rto, writer_refused
    );
    all_present(b.http, &acked);
    let st = status(b.http);
    assert_eq!(st["leadership"]["role"], "leader");
    assert!(st["leadership"]["epoch"].as_u64() >= Some(2), "{st}");
    let t = &st["leadership"]["transitions"];
    assert!(
        t.as_array()
            .is_some_and(|t| t.iter().any(|t| t["kind"] == "promoted")),
        "the promotion is recorded: {t}"
    );

    // The old leader comes back: it rejoins as a follower on its own.
    let a = dr.start("a");
    caught_up(a.http);
    assert!(!leads(a.http) && leads(b.http), "b still leads, a follows");
    // Synchronous mode: whatever a had to cut was never acknowledged.
    let q = vigil_fhir::quarantine::list(&dr.data("a")).expect("quarantine");
    for f in &q {
        let text = std::fs::read_to_string(f.path.join("versions.ndjson")).unwrap_or_default();
        for w in &acked {
            assert!(
                !text.contains(&format!("\"id\":\"{}\"", w.id)),
                "an acknowledged write ({}) was cut into quarantine",
                w.id
            );
        }
    }
    // The same endpoint: a write through a is forwarded to b.
    put_patient(a.http, "after", 201);
    all_present(a.http, &acked[..acked.len().min(200)]);
}

#[test]
fn a_partitioned_leader_fences_itself_and_rejoins_with_its_lost_writes_in_quarantine() {
    let dr = Dr::new(BINS, 60_000, LEASE_MS);
    let (_w, a, b) = dr.start_all();
    let writer = Writer::start(vec![a.http], "p");
    until("writes flow", Duration::from_secs(20), || {
        writer.acked_count() > 30
    });
    // Cut a off from b and from the witness; the client still reaches a.
    dr.to_a.set(CUT);
    dr.to_b.set(CUT);
    dr.a_to_w.set(CUT);
    let cut = Instant::now();
    until("b promotes", Duration::from_secs(20), || leads(b.http));
    let promoted = Instant::now();
    let acked = writer.finish();
    // At most one node acknowledged at any time: a's last acknowledged
    // write precedes b's promotion.
    let last_on_a = acked.iter().map(|w| w.at).max().expect("acked");
    assert!(
        last_on_a < promoted,
        "a acknowledged a write after b was promoted"
    );
    assert!(
        last_on_a < cut + Duration::from_millis(LEASE_MS + 200),
        "a stopped acknowledging within its lease"
    );
    let r = request(
        a.http,
        "PUT",
        "/Patient/fenced",
        Some(r#"{"resourceType":"Patient","id":"fenced"}"#),
    )
    .expect("put");
    assert_eq!(
        r.status, 503,
        "the fenced leader refuses writes: {}",
        r.body
    );
    // b writes in its epoch.
    put_patient(b.http, "on-b", 201);
    // Heal: a learns the new epoch, steps down, cuts what b lacks into
    // quarantine, and follows.
    dr.to_a.set(Faults::default());
    dr.to_b.set(Faults::default());
    dr.a_to_w.set(Faults::default());
    caught_up(a.http);
    assert!(leads(b.http) && !leads(a.http));
    // Every acknowledged write is on b, or in a's quarantine.
    let q = vigil_fhir::quarantine::list(&dr.data("a")).expect("quarantine");
    let cut_text: String = q
        .iter()
        .map(|f| std::fs::read_to_string(f.path.join("versions.ndjson")).unwrap_or_default())
        .collect();
    for w in &acked {
        let r = request(b.http, "GET", &format!("/Patient/{}", w.id), None).expect("read");
        if r.status != 200 {
            assert!(
                cut_text.contains(&format!("\"id\":\"{}\"", w.id)),
                "acknowledged write {} is neither on the new leader nor in quarantine",
                w.id
            );
        }
    }
    let r = request(a.http, "GET", "/Patient/on-b", None).expect("read");
    assert_eq!(r.status, 200, "a follows b's history now");
    // The operator resubmits what was cut: each lost write becomes a new
    // version on the leader; nothing is overwritten.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let url = format!("http://{}", b.http);
    for f in q.iter().filter(|f| f.versions > 0) {
        let report = rt
            .block_on(vigil::quarantine::reapply(&f.path, &url, None, None))
            .expect("reapply");
        assert_eq!(report.len(), f.versions);
        for r in &report {
            assert_eq!(r.outcome, "applied", "{r:?}");
            let v = r.new_version.as_deref().expect("a new version");
            assert_ne!(v, r.lost_version, "the lost versionId is not reissued");
        }
    }
    let q = vigil_fhir::quarantine::list(&dr.data("a")).expect("quarantine");
    assert!(q.iter().all(|f| f.reapplied || f.versions == 0), "{q:?}");
    for w in &acked {
        let r = request(b.http, "GET", &format!("/Patient/{}", w.id), None).expect("read");
        assert_eq!(r.status, 200, "{} is on the leader after the reapply", w.id);
    }
}

#[test]
fn a_forced_promotion_without_the_witness_tells_the_loss_window_and_leads() {
    let dr = Dr::new(BINS, 0, LEASE_MS);
    let (w, a, b) = dr.start_all();
    put_patient(a.http, "f1", 201);
    // The leader's ask is refused while it is alive.
    let r = request(b.http, "POST", "/admin/promote?force=true", None).expect("promote");
    assert_eq!(r.status, 409, "{}", r.body);
    // Region and witness lost together: no automatic promotion.
    drop(w);
    let _ = a.child.kill9();
    std::thread::sleep(Duration::from_millis(4 * LEASE_MS));
    assert!(!leads(b.http), "no promotion without the witness");
    let r = request(b.http, "GET", "/admin/promote", None).expect("estimate");
    assert_eq!(r.status, 200, "{}", r.body);
    let est: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(est["lsns"], 0, "synchronous: nothing to lose: {est}");
    let r = request(b.http, "POST", "/admin/promote", None).expect("promote");
    assert_eq!(r.status, 400, "force=true is required: {}", r.body);
    let r = request(b.http, "POST", "/admin/promote?force=true", None).expect("promote");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(leads(b.http));
    put_patient(b.http, "f2", 201);
    let r = request(b.http, "GET", "/Patient/f1", None).expect("read");
    assert_eq!(r.status, 200, "{}", r.body);
    let st = status(b.http);
    let t = &st["leadership"]["transitions"];
    assert!(
        t.as_array().is_some_and(|t| t
            .iter()
            .any(|t| t["reason"].as_str().is_some_and(|r| r.contains("forced")))),
        "{t}"
    );
}

#[test]
fn switchover_and_back_lose_nothing_and_reuse_no_version() {
    let dr = Dr::new(BINS, 0, LEASE_MS);
    let (_w, a, b) = dr.start_all();
    let r = request(
        a.http,
        "PUT",
        "/Patient/x",
        Some(r#"{"resourceType":"Patient","id":"x","active":true}"#),
    )
    .expect("put");
    assert_eq!(r.status, 201, "{}", r.body);
    let writer = Writer::start(vec![a.http, b.http], "s");
    until("writes flow", Duration::from_secs(20), || {
        writer.acked_count() > 30
    });
    // Over to b.
    switch_over(a.http, "b", &writer);
    assert!(leads(b.http) && !leads(a.http));
    // x changes on b: a new version number, never one a used.
    let r = request(
        b.http,
        "PUT",
        "/Patient/x",
        Some(r#"{"resourceType":"Patient","id":"x","active":false}"#),
    )
    .expect("put");
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    let on_b = v["meta"]["versionId"].as_str().expect("version").to_owned();
    assert_ne!(on_b, "2", "epoch 2's versions have their own numbers");
    // And back to a, asked through a (a follower passes it to its leader).
    caught_up(a.http);
    switch_over(a.http, "a", &writer);
    let acked = writer.finish();
    caught_up(b.http);
    all_present(a.http, &acked);
    all_present(b.http, &acked);
    // No quarantine on either side: nothing was cut.
    for n in ["a", "b"] {
        let q = vigil_fhir::quarantine::list(&dr.data(n)).expect("quarantine");
        assert!(q.iter().all(|f| f.versions == 0), "{n}: {q:?}");
    }
    // x's history: every version number distinct.
    let r = request(a.http, "GET", "/Patient/x/_history", None).expect("history");
    let h: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    let versions: Vec<&str> = h["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["resource"]["meta"]["versionId"].as_str())
        .collect();
    let mut uniq = versions.clone();
    uniq.sort_unstable();
    uniq.dedup();
    assert_eq!(uniq.len(), versions.len(), "{versions:?}");
}

#[test]
fn without_witness_or_follower_nobody_promotes_and_the_leader_serves() {
    let dr = Dr::new(BINS, 60_000, LEASE_MS);
    let (w, a, b) = dr.start_all();
    // Witness down: the leader renews through the follower and serves.
    drop(w);
    std::thread::sleep(Duration::from_millis(3 * LEASE_MS));
    assert!(
        leads(a.http),
        "the leader keeps its lease through the follower"
    );
    assert!(!leads(b.http), "no promotion without the witness");
    put_patient(a.http, "w1", 201);
    // Witness back, follower cut off: the leader serves through the
    // witness, the follower cannot promote (the leader's lease holds).
    let _w = dr.witness();
    // A restarted witness promises nothing for one lease; let the leader
    // renew through it first (cut at once, the leader would have no
    // majority in that window and the follower could rightly take over).
    until(
        "the leader renews through the restarted witness",
        Duration::from_secs(20),
        || status(a.http)["leadership"]["witness_reachable"] == true,
    );
    std::thread::sleep(Duration::from_millis(2 * LEASE_MS));
    dr.to_a.set(CUT);
    dr.to_b.set(CUT);
    std::thread::sleep(Duration::from_millis(4 * LEASE_MS));
    assert!(
        leads(a.http),
        "the leader keeps its lease through the witness"
    );
    assert!(!leads(b.http), "the cut-off follower does not promote");
    put_patient(a.http, "w2", 201);
    dr.to_a.set(Faults::default());
    dr.to_b.set(Faults::default());
    caught_up(b.http);
    let r = request(b.http, "GET", "/Patient/w2", None).expect("read");
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn both_data_nodes_restarted_at_once_lose_nothing_and_elect_one_leader() {
    let dr = Dr::new(BINS, 0, LEASE_MS);
    let (_w, a, b) = dr.start_all();
    both_crash_and_restart(&dr, a, b, LEASE_MS);
}

#[test]
fn an_export_survives_the_leader_being_killed_mid_way() {
    export_survives_a_kill(Dr::new(BINS, 0, LEASE_MS), None);
}

/// The same with the files on object storage (a real S3 server on
/// loopback): nothing shared between the nodes' machines; afterwards the
/// job's objects are exactly the files of its manifest.
#[test]
fn an_export_to_object_storage_survives_the_leader_being_killed_mid_way() {
    let s3 = vigil_testkit::s3::S3Server::start();
    s3.create_bucket("vigil-exports");
    let mut dr = Dr::new(BINS, 0, LEASE_MS);
    for node in ["a", "b"] {
        dr.configure(node, |c| {
            c.export_dir = None;
            c.export_url = Some("s3://vigil-exports/dr".into());
        });
    }
    dr.node_env(s3.env());
    export_survives_a_kill(dr, Some(&s3));
}

fn export_survives_a_kill(dr: Dr, s3: Option<&vigil_testkit::s3::S3Server>) {
    use vigil_fhir::synth::{Rng, transaction_bundle};
    let (_w, a, b) = dr.start_all();
    let mut rng = Rng::new(7);
    let mut total = 0;
    // Enough that the export (3-resource chunks, each recorded in the
    // replicated log) runs a few seconds: it is caught mid-way.
    for _ in 0..60 {
        let bundle = transaction_bundle(&mut rng, 40).to_string();
        let r = request(a.http, "POST", "/", Some(&bundle)).expect("bundle");
        assert_eq!(r.status, 200, "{}", r.body);
        let resp: serde_json::Value = serde_json::from_str(&r.body).expect("json");
        total += resp["entry"].as_array().map_or(0, Vec::len);
    }
    let async_ = [
        ("Prefer", "respond-async"),
        ("Accept", "application/fhir+json"),
    ];
    let r = vigil_testkit::http::request_with(a.http, "GET", "/$export", None, &async_)
        .expect("kick-off");
    assert_eq!(r.status, 202, "{}", r.body);
    let loc = r
        .header("content-location")
        .expect("Content-Location")
        .to_owned();
    let path = loc
        .split_once("/$export-status/")
        .map(|(_, id)| format!("/$export-status/{id}"))
        .expect("status url");
    // Wait until the export is under way, then kill the leader.
    let progress = loop {
        let r = request(a.http, "GET", &path, None).expect("poll");
        if r.status == 202
            && let Some(p) = r.header("x-progress")
            && !p.starts_with("0 of")
            && p.contains(" of ")
        {
            break p.to_owned();
        }
        assert!(
            r.status == 202 || r.status == 429,
            "finished before the kill: {} {}",
            r.status,
            r.body
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = a.child.kill9();
    let killed = Instant::now();
    // The new leader takes the job over once its lease ran out and ends it.
    let mut manifest = serde_json::Value::Null;
    until(
        "the export completes on the new leader",
        Duration::from_secs(60),
        || {
            let r = request(b.http, "GET", &path, None).expect("poll");
            if r.status == 200 {
                manifest = serde_json::from_str(&r.body).expect("manifest");
            }
            r.status == 200
        },
    );
    // Timed to the manifest: reading the files back below is the
    // client's part, not the takeover's.
    let took = killed.elapsed();
    let mut seen = std::collections::BTreeMap::new();
    for o in manifest["output"].as_array().expect("output") {
        let url = o["url"].as_str().expect("url");
        let file = url
            .split_once("/$export-file/")
            .map(|(_, f)| format!("/$export-file/{f}"))
            .expect("file url");
        let r = request(b.http, "GET", &file, None).expect("file");
        assert_eq!(r.status, 200, "{}", r.body);
        for line in r.body.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("ndjson");
            *seen
                .entry(format!(
                    "{}/{}",
                    v["resourceType"].as_str().unwrap_or(""),
                    v["id"].as_str().unwrap_or("")
                ))
                .or_insert(0) += 1;
        }
    }
    eprintln!("killed at progress {progress}; resumed and finished on b {took:?} after the kill");
    // Takeover within the export lease (2 s) + 5 s, after the promotion.
    assert!(
        took < Duration::from_secs(2 + 5) + Duration::from_millis(5 * LEASE_MS),
        "took {took:?}"
    );
    assert_eq!(
        seen.len(),
        total,
        "every resource of the snapshot (killed at {progress})"
    );
    assert!(
        seen.values().all(|n| *n == 1),
        "no duplicates (killed at {progress})"
    );
    // On object storage: the job's objects are the manifest's files, each
    // whole (a chunk rewritten after the kill replaced, never doubled).
    if let Some(s3) = s3 {
        let id = path.rsplit('/').next().expect("job id");
        let settings = s3.settings();
        let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let loc = vigil_net::archive::Location::parse_with("s3://vigil-exports/dr", &pairs)
            .expect("location");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut stored: Vec<String> = rt
            .block_on(loc.list(&format!("{id}/")))
            .expect("list")
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n.ends_with(".ndjson"))
            .collect();
        stored.sort();
        let mut named: Vec<String> = manifest["output"]
            .as_array()
            .expect("output")
            .iter()
            .map(|o| {
                let url = o["url"].as_str().expect("url");
                format!("{id}/{}", url.rsplit('/').next().expect("file"))
            })
            .collect();
        named.sort();
        assert_eq!(stored, named, "the objects are the manifest's files");
    }
}
