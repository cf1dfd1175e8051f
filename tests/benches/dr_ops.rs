//! DR operations figures for docs/BENCHMARKS.md: backup, verify and
//! restore throughput (MB of log per second) and bulk `$export`
//! throughput (resources per second, kick-off to manifest, through a real
//! `vigil_node` process).
//!
//! `cargo bench -p vigil-tests --bench dr_ops`; `VIGIL_BENCH_MB` sets the
//! store size (default 256 MB of raw JSON).

use std::time::{Duration, Instant};

use vigil_engine::{Batch, Op, RestoreTarget, Store};
use vigil_fhir::app::App;
use vigil_fhir::config::Config;
use vigil_fhir::synth::{Rng, patient_record};
use vigil_testkit::http::{request, request_with};
use vigil_tests::NodeProcess;

fn dir_bytes(d: &std::path::Path) -> u64 {
    std::fs::read_dir(d.join("wal"))
        .map(|it| {
            it.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mb: u64 = std::env::var("VIGIL_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let tmp = tempfile::tempdir().expect("dir");
    let data = tmp.path().join("data");
    let cfg = Config {
        data: data.clone(),
        http: "127.0.0.1:0".parse().expect("addr"),
        export_dir: Some(tmp.path().join("exports")),
        ..Config::default()
    };
    let (mut raw, mut resources) = (0u64, 0u64);
    {
        let store =
            Store::open_with(&data, App::store_options(&cfg).expect("options")).expect("open");
        let mut rng = Rng::new(11);
        while raw < mb * 1_000_000 {
            let mut b = Batch::new();
            for _ in 0..10 {
                for (ty, id, body) in patient_record(&mut rng, 60) {
                    raw += body.len() as u64;
                    resources += 1;
                    b.push(Op::put(ty, id, body));
                }
            }
            store.commit(b).expect("commit");
        }
        store.close().expect("close");
    }
    let log_mb = dir_bytes(&data) as f64 / 1e6;
    println!(
        "store: {resources} resources, {:.0} MB raw JSON, {log_mb:.0} MB of log (preallocation included)",
        raw as f64 / 1e6
    );
    let bak = tmp.path().join("backup");
    let t = Instant::now();
    let r = vigil_engine::backup(&data, &bak, &mut |_| {}).expect("backup");
    let s = t.elapsed().as_secs_f64();
    let copied = r.bytes_copied as f64 / 1e6;
    println!(
        "backup: {copied:.0} MB of log in {s:.2} s = {:.0} MB/s",
        copied / s
    );
    let t = Instant::now();
    let r2 = vigil_engine::backup(&data, &bak, &mut |_| {}).expect("again");
    println!(
        "incremental backup with nothing new: {} bytes copied in {:.3} s",
        r2.bytes_copied,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    vigil_engine::verify_backup(&bak, &mut |_| {}).expect("verify");
    let s = t.elapsed().as_secs_f64();
    println!(
        "verify: {copied:.0} MB in {s:.2} s = {:.0} MB/s",
        copied / s
    );
    let restored = tmp.path().join("restored");
    let t = Instant::now();
    vigil_engine::restore(&bak, &restored, RestoreTarget::Latest, &mut |_| {}).expect("restore");
    let s = t.elapsed().as_secs_f64();
    println!(
        "restore (log): {copied:.0} MB in {s:.2} s = {:.0} MB/s",
        copied / s
    );
    let t = Instant::now();
    let st = Store::open_with(&restored, App::store_options(&cfg).expect("options"))
        .expect("open restored");
    let n = st.stats().expect("stats").versions;
    st.close().expect("close");
    println!(
        "restore (index build on first open): {n} versions in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    // Export through a real server process.
    let config = tmp.path().join("node.toml");
    let c = Config {
        data: data.clone(),
        http: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        log_level: "warn".into(),
        export_dir: Some(tmp.path().join("exports")),
        ..Config::default()
    };
    std::fs::write(&config, c.to_toml().expect("toml")).expect("config");
    let node = NodeProcess::start(env!("CARGO_BIN_EXE_vigil_node"), &config).expect("node");
    let t = Instant::now();
    let r = request_with(
        node.http,
        "GET",
        "/$export",
        None,
        &[
            ("Prefer", "respond-async"),
            ("Accept", "application/fhir+json"),
        ],
    )
    .expect("kick-off");
    assert_eq!(r.status, 202, "{}", r.body);
    let loc = r.header("content-location").expect("location").to_owned();
    let path = loc
        .split_once("/$export-status/")
        .map(|(_, id)| format!("/$export-status/{id}"))
        .expect("status url");
    let manifest: serde_json::Value = loop {
        std::thread::sleep(Duration::from_millis(500));
        let r = request(node.http, "GET", &path, None).expect("poll");
        if r.status == 200 {
            break serde_json::from_str(&r.body).expect("manifest");
        }
        assert!(
            r.status == 202 || r.status == 429,
            "{} {}",
            r.status,
            r.body
        );
    };
    let s = t.elapsed().as_secs_f64();
    let exported: u64 = manifest["output"]
        .as_array()
        .expect("output")
        .iter()
        .map(|o| o["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(exported, resources, "every resource exported once");
    println!(
        "export: {exported} resources in {s:.2} s (kick-off to manifest, polling every 0.5 s) = {:.0} resources/s",
        exported as f64 / s
    );
}
