//! The engine's figures for docs/BENCHMARKS.md, measured against this
//! machine's own fdatasync latency.
//!
//! `cargo bench -p vigil-tests --bench engine` runs everything (a few
//! minutes, about 3 GB of temporary disk). `VIGIL_BENCH_SCALE=0.1` shrinks
//! every workload for a quick look. Data: the project's own generator;
//! the Synthea sample in ../shared/data/synthea-r4 is measured too when
//! present. Set `VIGIL_BENCH_DIR` to put stores on another disk.
//! `VIGIL_BENCH_ONLY=disk` runs only what a nearly full disk costs a
//! commit (the reserve check, segments without preallocation);
//! `VIGIL_BENCH_ONLY=encryption` only what encryption at rest costs
//! (interleaved pairs, a key file as the KEK): 64 committers, bulk ingest,
//! and the open of an encrypted 1 GB store.

use std::fs::OpenOptions;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vigil_engine::{Batch, DictionaryPolicy, Op, Options, Store};
use vigil_fhir::synth::{Rng, patient_record};

fn scale() -> f64 {
    std::env::var("VIGIL_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0)
}

fn scaled(n: u64) -> u64 {
    ((n as f64 * scale()) as u64).max(1)
}

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("VIGIL_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).expect("bench dir"),
        None => tempfile::tempdir().expect("tempdir"),
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64
}

/// A pool of realistic resources from the generator.
fn pool(n: usize, seed: u64) -> Vec<(String, String, Vec<u8>)> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        out.extend(patient_record(&mut rng, 60));
    }
    out.truncate(n);
    out
}

/// fdatasync after a 512-byte write, `(p50 us, p99 us, per second)`:
/// appending (the file grows) or into preallocated space, as the log does.
fn fdatasync_baseline(dir: &std::path::Path, preallocated: bool) -> (f64, f64, f64) {
    use std::os::unix::fs::FileExt;
    let path = dir.join("fsync.probe");
    let _ = std::fs::remove_file(&path);
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("probe");
    let n = scaled(3000);
    if preallocated {
        rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, n * 512 + 4096)
            .expect("fallocate");
        f.sync_all().expect("sync");
    }
    let buf = vec![b'x'; 512];
    let mut lat = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        f.write_all_at(&buf, i * 512).expect("write");
        f.sync_data().expect("fdatasync");
        lat.push(t.elapsed().as_nanos() as u64);
    }
    lat.sort_unstable();
    let mean = lat.iter().sum::<u64>() as f64 / lat.len() as f64;
    (pct(&lat, 0.5) / 1e3, pct(&lat, 0.99) / 1e3, 1e9 / mean)
}

fn commits(
    clients: usize,
    seconds: f64,
    resources: &Arc<Vec<(String, String, Vec<u8>)>>,
) -> (f64, f64, f64) {
    commits_with(clients, seconds, resources, Options::default())
}

fn commits_with(
    clients: usize,
    seconds: f64,
    resources: &Arc<Vec<(String, String, Vec<u8>)>>,
    opts: Options,
) -> (f64, f64, f64) {
    let dir = bench_dir();
    let store = Arc::new(Store::open_with(dir.path(), opts).expect("open"));
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (store, stop, next, resources) =
                (store.clone(), stop.clone(), next.clone(), resources.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let (ty, _, body) = &resources[i % resources.len()];
                    let t = Instant::now();
                    store
                        .commit(Batch::one(Op::put(
                            ty.clone(),
                            format!("r{i}"),
                            body.clone(),
                        )))
                        .expect("commit");
                    lat.push(t.elapsed().as_nanos() as u64);
                }
                lat
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("client"))
        .collect();
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    (
        lat.len() as f64 / elapsed,
        pct(&lat, 0.5) / 1e3,
        pct(&lat, 0.99) / 1e3,
    )
}

/// Ingests `n` resources in batches of 100 from `threads` threads; returns
/// (resources/s, raw JSON bytes).
fn ingest(
    store: &Arc<Store>,
    n: u64,
    threads: u64,
    resources: &Arc<Vec<(String, String, Vec<u8>)>>,
    id_base: u64,
) -> (f64, u64) {
    let start = Instant::now();
    let per = n / threads;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (store, resources) = (store.clone(), resources.clone());
            std::thread::spawn(move || {
                let mut raw = 0u64;
                let mut i = 0;
                while i < per {
                    let mut b = Batch::new();
                    for _ in 0..100.min(per - i) {
                        let k = id_base + t * per + i;
                        let (ty, _, body) = &resources[(k as usize) % resources.len()];
                        raw += body.len() as u64;
                        b.push(Op::put(ty.clone(), format!("r{k}"), body.clone()));
                        i += 1;
                    }
                    store.commit(b).expect("batch");
                }
                raw
            })
        })
        .collect();
    let raw: u64 = handles.into_iter().map(|h| h.join().expect("ingest")).sum();
    ((per * threads) as f64 / start.elapsed().as_secs_f64(), raw)
}

fn reads(store: &Arc<Store>, ids: u64, seconds: f64, versioned: bool) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..2u64)
        .map(|t| {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = Rng::new(t + 11);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let k = rng.below(ids);
                    let ty = "Observation";
                    // Types vary in the pool; look up by the type the pool used.
                    let _ = ty;
                    let id = format!("r{k}");
                    let found = if versioned {
                        store
                            .get_version(TYPE_OF.get().expect("types")[k as usize].as_str(), &id, 1)
                            .is_ok()
                    } else {
                        store
                            .get(TYPE_OF.get().expect("types")[k as usize].as_str(), &id)
                            .is_ok()
                    };
                    assert!(found);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let n: u64 = handles.into_iter().map(|h| h.join().expect("reader")).sum();
    n as f64 / start.elapsed().as_secs_f64()
}

static TYPE_OF: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

fn synthea_resources() -> Option<Vec<(String, String, Vec<u8>)>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/synthea-r4");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).ok()? {
        let p = e.ok()?.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
        for entry in v["entry"].as_array()? {
            let r = &entry["resource"];
            let ty = r["resourceType"].as_str()?.to_owned();
            let id = r["id"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("x{}", out.len()));
            out.push((ty, id, serde_json::to_vec(r).ok()?));
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Bytes of log per byte of raw JSON: `(whole store, steady state)`. The
/// whole store includes what was written before a dictionary was trained;
/// the steady state is the second half, written with the dictionary (or
/// without one, under `DictionaryPolicy::Off`).
fn footprint(resources: &[(String, String, Vec<u8>)], dict: DictionaryPolicy) -> (f64, f64) {
    let dir = bench_dir();
    let store = Store::open_with(
        dir.path(),
        Options {
            dictionary: dict,
            ..Options::default()
        },
    )
    .expect("open");
    let write = |part: &[(String, String, Vec<u8>)], tag: &str| -> u64 {
        let mut raw = 0u64;
        for chunk in part.chunks(100) {
            let mut b = Batch::new();
            for (i, (ty, id, body)) in chunk.iter().enumerate() {
                raw += body.len() as u64;
                b.push(Op::put(ty.clone(), format!("{id}-{tag}{i}"), body.clone()));
            }
            store.commit(b).expect("batch");
        }
        raw
    };
    let (first, second) = resources.split_at(resources.len() / 2);
    let raw1 = write(first, "a");
    if dict != DictionaryPolicy::Off {
        let t = Instant::now();
        while store.stats().expect("stats").dictionaries == 0 {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "no dictionary was trained"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let before = store.stats().expect("stats").log_bytes;
    let raw2 = write(second, "b");
    let after = store.stats().expect("stats").log_bytes;
    (
        after as f64 / (raw1 + raw2) as f64,
        (after - before) as f64 / raw2 as f64,
    )
}

/// What a nearly full disk costs a commit, in interleaved rounds: the
/// reserve check (a statvfs per commit group) against none, and segments
/// written without preallocation (when the disk has no room for them: the
/// file grows with each frame, so each fdatasync also writes metadata)
/// against preallocated ones. Small segments (4 MiB) so that rotations,
/// and with them the preallocation, are part of what is measured.
fn disk_costs(resources: &Arc<Vec<(String, String, Vec<u8>)>>) {
    let secs = (5.0 * scale().min(1.0)).max(0.5);
    let base = Options {
        segment_bytes: 4 * 1024 * 1024,
        ..Options::default()
    };
    let configs: [(&str, Options, bool); 3] = [
        (
            "preallocated, reserve checked (default)",
            base.clone(),
            false,
        ),
        (
            "preallocated, no reserve check",
            Options {
                disk_reserve_bytes: 0,
                ..base.clone()
            },
            false,
        ),
        ("not preallocated (disk nearly full)", base, true),
    ];
    for clients in [1usize, 16] {
        for round in 0..3 {
            // Each configuration runs first in one round: the first run of
            // a round meets the previous store's writeback.
            for k in 0..configs.len() {
                let (name, opts, full) = &configs[(round + k) % configs.len()];
                if *full {
                    vigil_engine::failpoint::arm_no_space("log.preallocate", u32::MAX);
                }
                let (rate, p50, p99) = commits_with(clients, secs, resources, opts.clone());
                vigil_engine::failpoint::disarm_all();
                println!(
                    "disk costs, round {}, {clients:>2} committers, {name:<42}: {rate:>8.0}/s  p50 {p50:>6.0} us  p99 {p99:>6.0} us",
                    round + 1
                );
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if std::env::var("VIGIL_BENCH_ONLY").is_ok_and(|v| v == "disk") {
        disk_costs(&Arc::new(pool(50_000, 1)));
        return;
    }
    if std::env::var("VIGIL_BENCH_ONLY").is_ok_and(|v| v == "encryption") {
        encryption_costs(&Arc::new(pool(50_000, 1)));
        return;
    }
    let probe = bench_dir();
    println!("# Vigil engine benchmark (scale {})", scale());
    println!(
        "machine: {} cores; {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::env::consts::ARCH
    );
    let (a50, a99, arate) = fdatasync_baseline(probe.path(), false);
    println!("fdatasync after a 512 B append: p50 {a50:.0} us, p99 {a99:.0} us, {arate:.0}/s");
    let (f50, f99, frate) = fdatasync_baseline(probe.path(), true);
    println!(
        "fdatasync after a 512 B write into preallocated space (as the log writes): p50 {f50:.0} us, p99 {f99:.0} us, {frate:.0}/s  <- the limit for 1 committer"
    );

    let resources = Arc::new(pool(50_000, 1));
    let mean = resources.iter().map(|r| r.2.len()).sum::<usize>() / resources.len();
    println!(
        "generated resources: {} distinct, mean {} bytes of JSON",
        resources.len(),
        mean
    );

    let secs = 5.0 * scale().min(1.0);
    for clients in [1usize, 16, 64] {
        let (rate, p50, p99) = commits(clients, secs.max(0.5), &resources);
        let vs = if clients == 1 {
            format!(" ({:.0}% of the fdatasync limit)", 100.0 * rate / frate)
        } else {
            String::new()
        };
        println!(
            "durable single-resource commits, {clients:>2} committers: {rate:>8.0}/s  p50 {p50:>6.0} us  p99 {p99:>6.0} us{vs}"
        );
    }

    disk_costs(&resources);

    // Bulk ingest into the store that the read benchmark then uses.
    let n = scaled(1_000_000);
    let dir = bench_dir();
    let store = Arc::new(Store::open(dir.path()).expect("open"));
    let types: Vec<String> = (0..n)
        .map(|k| resources[(k as usize) % resources.len()].0.clone())
        .collect();
    let _ = TYPE_OF.set(types);
    let (rate, raw) = ingest(&store, n, 2, &resources, 0);
    let st = store.stats().expect("stats");
    println!(
        "bulk ingest, batches of 100, 2 threads: {rate:.0} resources/s ({n} resources, {:.1} MB raw JSON)",
        raw as f64 / 1e6
    );
    println!(
        "store: {} versions, log {:.1} MB ({:.1}% of raw JSON), index {:.1} MB",
        st.versions,
        st.log_bytes as f64 / 1e6,
        100.0 * st.log_bytes as f64 / raw as f64,
        st.index_bytes as f64 / 1e6
    );
    println!(
        "reads, 2 threads, current version: {:.0}/s",
        reads(&store, n, secs.max(0.5), false)
    );
    println!(
        "reads, 2 threads, one version (vread): {:.0}/s",
        reads(&store, n, secs.max(0.5), true)
    );
    drop(store);

    let sample: Vec<_> = resources.iter().take(20_000).cloned().collect();
    let mut sets = vec![("generator", sample)];
    if let Some(s) = synthea_resources() {
        sets.push(("Synthea sample", s));
    }
    for (name, set) in sets {
        let raw: usize = set.iter().map(|r| r.2.len()).sum();
        let (with_all, with) = footprint(&set, DictionaryPolicy::default());
        let (_, without) = footprint(&set, DictionaryPolicy::Off);
        println!(
            "log bytes / raw JSON, {name}, {} resources ({:.1} MB): {:.1}% with a dictionary ({:.1}% over the whole store, training included), {:.1}% without",
            set.len(),
            raw as f64 / 1e6,
            100.0 * with,
            100.0 * with_all,
            100.0 * without
        );
    }

    // Open time of a store with about 1 GB of log.
    let target = scaled(1_000_000_000);
    let dir = bench_dir();
    {
        let store = Arc::new(Store::open(dir.path()).expect("open"));
        let mut base = 0;
        let start = Instant::now();
        while store.stats().expect("stats").log_bytes < target {
            ingest(&store, 200_000.min(scaled(200_000)), 2, &resources, base);
            base += 200_000;
        }
        let log = store.stats().expect("stats").log_bytes;
        println!(
            "built a {:.2} GB log in {:.1} s",
            log as f64 / 1e9,
            start.elapsed().as_secs_f64()
        );
        Arc::try_unwrap(store)
            .expect("sole owner")
            .close()
            .expect("close");
    }
    let t = Instant::now();
    let store = Store::open(dir.path()).expect("open");
    let full = t.elapsed().as_secs_f64();
    let log = store.stats().expect("stats").log_bytes;
    store.close().expect("close");
    let t = Instant::now();
    let store = Store::open_with(
        dir.path(),
        Options {
            verify_on_open: false,
            ..Options::default()
        },
    )
    .expect("open");
    let quick = t.elapsed().as_secs_f64();
    store.close().expect("close");
    std::fs::remove_file(dir.path().join("index.redb")).expect("delete index");
    let t = Instant::now();
    let store = Store::open(dir.path()).expect("open");
    let rebuild = t.elapsed().as_secs_f64();
    assert!(store.open_report().index_rebuilt);
    store.close().expect("close");
    println!(
        "open, {:.2} GB log, index present: {full:.2} s checking every frame ({:.0} MB/s), {quick:.3} s checking the newest segments",
        log as f64 / 1e9,
        log as f64 / 1e6 / full
    );
    println!(
        "open, index deleted (rebuild): {rebuild:.2} s = {:.0} MB/s of log",
        log as f64 / 1e6 / rebuild
    );
}

/// Encryption at rest on and off, in interleaved pairs within one run:
/// 64 committers, bulk ingest (2 threads, batches of 100), then the open
/// of an encrypted store of about 1 GB of log (scaled).
fn encryption_costs(resources: &Arc<Vec<(String, String, Vec<u8>)>>) {
    use vigil_engine::crypt::Kek;
    use vigil_engine::crypt::keyfile::KeyFile;
    let keys = tempfile::tempdir().expect("tempdir");
    let path = keys.path().join("bench.key");
    KeyFile::create(&path, "bench").expect("key file");
    let kek: Arc<dyn Kek> = Arc::new(KeyFile::load(&path).expect("key file"));
    let with = |on: bool| Options {
        kek: on.then(|| kek.clone()),
        ..Options::default()
    };
    let secs = (5.0 * scale().min(1.0)).max(0.5);
    println!("# encryption at rest: interleaved pairs (off, on)");
    for round in 1..=3 {
        for on in [false, true] {
            let (rate, p50, p99) = commits_with(64, secs, resources, with(on));
            println!(
                "encryption {}, round {round}, 64 committers: {rate:>8.0}/s  p50 {p50:>6.0} us  p99 {p99:>6.0} us",
                if on { "on " } else { "off" }
            );
        }
    }
    let n = scaled(300_000);
    for round in 1..=3 {
        for on in [false, true] {
            let dir = bench_dir();
            let store = Arc::new(Store::open_with(dir.path(), with(on)).expect("open"));
            let (rate, _) = ingest(&store, n, 2, resources, 0);
            println!(
                "encryption {}, round {round}, bulk ingest of {n}: {rate:>8.0} resources/s",
                if on { "on " } else { "off" }
            );
        }
    }
    let target = scaled(1_000_000_000);
    let dir = bench_dir();
    {
        let store = Arc::new(Store::open_with(dir.path(), with(true)).expect("open"));
        let mut base = 0;
        while store.stats().expect("stats").log_bytes < target {
            ingest(&store, 200_000.min(scaled(200_000)), 2, resources, base);
            base += 200_000;
        }
        Arc::try_unwrap(store)
            .expect("sole owner")
            .close()
            .expect("close");
    }
    for (name, verify_on_open) in [
        ("checking every frame", true),
        ("checking the newest segments", false),
    ] {
        let t = Instant::now();
        let store = Store::open_with(
            dir.path(),
            Options {
                verify_on_open,
                ..with(true)
            },
        )
        .expect("open");
        let took = t.elapsed().as_secs_f64();
        let st = store.stats().expect("stats");
        let keys = store.data_keys().map_or(0, |k| k.len());
        store.close().expect("close");
        println!(
            "open of an encrypted store, {:.2} GB log, {keys} data keys, {name}: {took:.3} s",
            st.log_bytes as f64 / 1e9
        );
    }
}
