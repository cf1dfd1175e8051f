//! `vigil bench`: a load generator in the manner of pgbench, against any
//! FHIR server's URL. Workloads: single-resource create, update, read,
//! search, and transaction-bundle ingest. Prints throughput and latency
//! percentiles, a progress line every second, and JSON with `--json`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde_json::{Value, json};

use vigil_fhir::synth::{Rng, patient, transaction_bundle};

/// Most concurrent clients.
pub const CLIENTS_MAX: usize = 4096;
/// Resources preloaded for the read, update and search workloads.
pub const PRELOAD: usize = 2000;
/// Longest a single request may take before it counts as failed.
pub const REQUEST_TIMEOUT_MS: u64 = 30_000;

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// POST one Patient per request.
    Create,
    /// PUT a changed Patient (a new version) per request.
    Update,
    /// GET one Patient per request.
    Read,
    /// GET Patient?family=… per request.
    Search,
    /// POST a Synthea-like transaction Bundle per request.
    Transaction,
    /// GET Observation?subject:Patient.identifier=… (a one-hop chain) per
    /// request, over data already loaded (`transaction` loads it).
    Chain,
    /// GET Patient?_has:Observation:subject:encounter=… (a reverse chain)
    /// per request, over data already loaded.
    Has,
    /// GET Patient?_id=…&_revinclude=Observation:subject per request,
    /// over data already loaded.
    Revinclude,
    /// PUT a custom SearchParameter on Observation (its display texts) and
    /// follow the reindex job it starts over the Observations already
    /// loaded, to its end: the rate is versions rekeyed per second.
    Reindex,
    /// POST the Bundles (`.json` or `.json.zst`) of the directory `--from`
    /// names, in name order: those whose name starts with `0-` (Synthea's
    /// organizations and practitioners) one after another first, then the
    /// rest over `--clients` clients, largest first; each once. The rate is entries per
    /// second over the whole load, and an entry that fails counts as an
    /// error.
    Bundles,
    /// Kick off one bulk `$export` (`GET /$export?` + `--query`) and poll
    /// its status until the manifest: the rate is resources exported per
    /// second, kick-off to manifest.
    Export,
    /// Page through one search (`--query`, `Type?params`) with
    /// `_count=1000`, following `next` to the end: the rate is matches
    /// returned per second (to set beside an export's `_typeFilter`).
    Pages,
}

/// The custom SearchParameter the reindex workload writes.
const REINDEX_PARAMETER: &str = "bench-code-display";

/// Matches sampled from loaded data for the chain, `_has` and
/// `_revinclude` workloads: Patients with their record number, and the
/// encounters their Observations name.
#[derive(Debug, Default)]
struct Sample {
    patients: Vec<(String, String)>,
    encounters: Vec<String>,
}

/// Most matches sampled of each kind.
const SAMPLE_MAX: usize = 1000;

/// The system of the record numbers the generator writes.
const MRN_SYSTEM: &str = "http://hospital.smarthealthit.org";

/// How long to run.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// For this long.
    Duration(Duration),
    /// Until this many requests completed.
    Count(u64),
}

/// A benchmark's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The server's base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// The workload.
    pub workload: Workload,
    /// Concurrent clients.
    pub clients: usize,
    /// When to stop.
    pub stop: Stop,
    /// Resources per transaction Bundle.
    pub bundle_size: usize,
    /// A bearer token to send, if the server needs one.
    pub token: Option<String>,
    /// Requests per second across all clients (paced), or as fast as
    /// possible when `None`.
    pub rate: Option<f64>,
    /// The directory of Bundles the `bundles` workload posts.
    pub from: Option<std::path::PathBuf>,
    /// The export workload's kick-off query, or the pages workload's
    /// search.
    pub query: Option<String>,
    /// A `Prefer` header the bundles workload sends (`return=minimal`).
    pub prefer: Option<String>,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The workload.
    pub workload: Workload,
    /// Concurrent clients.
    pub clients: usize,
    /// Requests that succeeded (2xx).
    pub requests: u64,
    /// Requests that failed (non-2xx or transport error).
    pub errors: u64,
    /// Resources written or read by the successful requests.
    pub resources: u64,
    /// Wall time of the measured phase, seconds.
    pub seconds: f64,
    /// Successful requests per second.
    pub requests_per_second: f64,
    /// Resources per second.
    pub resources_per_second: f64,
    /// Latency percentiles in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// The slowest request.
    pub max_ms: f64,
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A setting is out of range.
    #[error("bench: {0}")]
    Invalid(String),
    /// The server refused or failed the setup requests.
    #[error("bench setup failed: {0}")]
    Setup(String),
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Ctx {
    client: HttpClient,
    url: String,
    token: Option<String>,
    /// A `Prefer` header for the bundles workload's posts.
    prefer: Option<String>,
}

impl Ctx {
    /// A GET whose JSON body is returned.
    async fn get_json(&self, path: &str) -> Result<Value, String> {
        let (status, body) = self.exchange(Method::GET, path, None).await?;
        if status != 200 {
            return Err(format!("GET {path} answered {status}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("GET {path}: {e}"))
    }

    /// One request (FHIR JSON, with the token if any) and its status and
    /// whole body, within [`REQUEST_TIMEOUT_MS`]. Every request of the
    /// benchmark goes through it, and the body is always read to its end
    /// so the connection is reused.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), String> {
        self.exchange_with(method, path, body, &[])
            .await
            .map(|(status, _, body)| (status, body))
    }

    /// [`Ctx::exchange`] with more request headers, answering the
    /// response's headers too.
    async fn exchange_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<(u16, hyper::HeaderMap, Bytes), String> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url))
            .header("accept", "application/fhir+json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if body.is_some() {
            req = req.header("content-type", "application/fhir+json");
        }
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        let fut = async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, headers, bytes))
        };
        tokio::time::timeout(Duration::from_millis(REQUEST_TIMEOUT_MS), fut)
            .await
            .map_err(|_| format!("no answer in {REQUEST_TIMEOUT_MS} ms"))?
    }

    /// Patients and encounters of the loaded data, for the search
    /// workloads that need real values.
    async fn sample(&self) -> Result<Sample, String> {
        let mut out = Sample::default();
        let pats = self
            .get_json(&format!(
                "/Patient?_count={SAMPLE_MAX}&_elements=identifier"
            ))
            .await?;
        for e in pats["entry"].as_array().map_or(&[][..], Vec::as_slice) {
            let r = &e["resource"];
            let mrn = r["identifier"].as_array().and_then(|ids| {
                ids.iter()
                    .find(|i| i["system"] == MRN_SYSTEM)
                    .and_then(|i| i["value"].as_str())
            });
            if let (Some(id), Some(mrn)) = (r["id"].as_str(), mrn) {
                out.patients.push((id.to_owned(), mrn.to_owned()));
            }
        }
        let obs = self
            .get_json(&format!(
                "/Observation?_count={SAMPLE_MAX}&_elements=encounter"
            ))
            .await?;
        for e in obs["entry"].as_array().map_or(&[][..], Vec::as_slice) {
            if let Some(r) = e["resource"]["encounter"]["reference"].as_str() {
                out.encounters.push(r.to_owned());
            }
        }
        if out.patients.is_empty() || out.encounters.is_empty() {
            return Err(
                "no generated patients with observations: load data first (--workload transaction)"
                    .into(),
            );
        }
        Ok(out)
    }

    /// POSTs a Bundle to `/`: how many of its entries succeeded and how
    /// many failed (all of them when the Bundle as a whole failed; the
    /// first failure is printed).
    async fn post_bundle(&self, name: &str, body: Vec<u8>) -> (u64, u64) {
        /// What the answer is read for: each entry's status, nothing else
        /// (the client shares the machine with the server it measures).
        #[derive(serde::Deserialize)]
        struct Answer {
            #[serde(default)]
            entry: Vec<AnswerEntry>,
        }
        #[derive(serde::Deserialize)]
        struct AnswerEntry {
            #[serde(default)]
            response: Option<AnswerResponse>,
        }
        #[derive(serde::Deserialize)]
        struct AnswerResponse {
            #[serde(default)]
            status: String,
        }
        let entries_of = |body: &[u8]| -> u64 {
            serde_json::from_slice::<Answer>(body).map_or(0, |b| b.entry.len() as u64)
        };
        let headers: Vec<(&str, &str)> =
            self.prefer.iter().map(|p| ("prefer", p.as_str())).collect();
        let sent = body.clone();
        match self
            .exchange_with(Method::POST, "/", Some(body), &headers)
            .await
        {
            Ok((200, _, bytes)) => {
                let Ok(answer) = serde_json::from_slice::<Answer>(&bytes) else {
                    eprintln!("{name}: the answer is not a Bundle");
                    return (0, entries_of(&sent));
                };
                let bad = answer
                    .entry
                    .iter()
                    .filter(|e| {
                        !e.response
                            .as_ref()
                            .is_some_and(|r| r.status.starts_with('2'))
                    })
                    .count() as u64;
                if bad > 0 {
                    eprintln!("{name}: {bad} entries failed");
                }
                (answer.entry.len() as u64 - bad, bad)
            }
            Ok((status, _, bytes)) => {
                let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
                eprintln!("{name}: {status} {}", v["issue"][0]["diagnostics"]);
                (0, entries_of(&sent))
            }
            Err(e) => {
                eprintln!("{name}: {e}");
                (0, entries_of(&sent))
            }
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<u16, String> {
        self.exchange(method, path, body)
            .await
            .map(|(status, _)| status)
    }
}

fn patient_body(rng: &mut Rng, id: &str, n: u64) -> Vec<u8> {
    let mut p = patient(rng, id);
    p["extension"][0]["valueCode"] = json!(if n.is_multiple_of(2) { "F" } else { "M" });
    p["telecom"][0]["value"] = json!(format!("555-{:07}", n % 10_000_000));
    serde_json::to_vec(&p).unwrap_or_default()
}

/// Runs one benchmark.
pub async fn run(s: Settings) -> Result<Report, BenchError> {
    if s.clients == 0 || s.clients > CLIENTS_MAX {
        return Err(BenchError::Invalid(format!(
            "--clients must be 1..={CLIENTS_MAX}"
        )));
    }
    if s.bundle_size == 0 || s.bundle_size > vigil_engine::limits::BATCH_OPS_MAX {
        return Err(BenchError::Invalid(
            "--bundle-size must be 1..=10000".into(),
        ));
    }
    if s.rate.is_some_and(|r| !(r > 0.0 && r <= 1e7)) {
        return Err(BenchError::Invalid("--rate must be 0..=10000000".into()));
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(s.clients)
        .build(connector);
    let ctx = Arc::new(Ctx {
        client,
        url: s.url.trim_end_matches('/').to_owned(),
        token: s.token.clone(),
        prefer: s.prefer.clone(),
    });
    if s.workload == Workload::Reindex {
        return reindex(&ctx).await;
    }
    if s.workload == Workload::Export {
        return export(&ctx, s.query.as_deref().unwrap_or("")).await;
    }
    if s.workload == Workload::Pages {
        let q = s.query.as_deref().ok_or_else(|| {
            BenchError::Setup("the pages workload needs --query Type?params".into())
        })?;
        return pages(&ctx, q).await;
    }
    if s.workload == Workload::Bundles {
        let dir = s
            .from
            .as_deref()
            .ok_or_else(|| BenchError::Setup("the bundles workload needs --from DIR".into()))?;
        return bundles(ctx, dir, s.clients).await;
    }

    if matches!(
        s.workload,
        Workload::Read | Workload::Update | Workload::Search
    ) {
        eprintln!("preloading {PRELOAD} patients…");
        let mut rng = Rng::new(7);
        for i in 0..PRELOAD {
            let id = format!("bench-{i}");
            let status = ctx
                .send(
                    Method::PUT,
                    &format!("/Patient/{id}"),
                    Some(patient_body(&mut rng, &id, 0)),
                )
                .await
                .map_err(BenchError::Setup)?;
            if !(200..300).contains(&status) {
                return Err(BenchError::Setup(format!(
                    "PUT /Patient/{id} answered {status}"
                )));
            }
        }
    }

    let sample = Arc::new(match s.workload {
        Workload::Chain | Workload::Has | Workload::Revinclude => {
            eprintln!("sampling loaded patients and encounters…");
            ctx.sample().await.map_err(BenchError::Setup)?
        }
        _ => Sample::default(),
    });

    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop_flag = Arc::new(AtomicBool::new(false));
    let limit = match s.stop {
        Stop::Count(n) => n,
        Stop::Duration(_) => u64::MAX,
    };
    let start = Instant::now();
    let s_clients = s.clients;
    let mut tasks = Vec::with_capacity(s.clients);
    for c in 0..s.clients {
        let (ctx, done, errors, stop_flag, sample) = (
            ctx.clone(),
            done.clone(),
            errors.clone(),
            stop_flag.clone(),
            sample.clone(),
        );
        let (workload, bundle_size) = (s.workload, s.bundle_size);
        // Paced clients share the rate evenly, offset from each other.
        let interval = s
            .rate
            .map(|r| Duration::from_secs_f64(s.clients as f64 / r));
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(1000 + c as u64);
            let mut lat: Vec<u32> = Vec::new();
            let mut n = 0u64;
            let mut next_at = interval
                .map(|i| tokio::time::Instant::now() + i.mul_f64(c as f64 / s_clients as f64));
            while !stop_flag.load(Ordering::Relaxed) {
                if let (Some(at), Some(i)) = (next_at.as_mut(), interval) {
                    tokio::time::sleep_until(*at).await;
                    *at += i;
                }
                let ticket = done.fetch_add(1, Ordering::Relaxed);
                if ticket >= limit {
                    break;
                }
                n += 1;
                let k = rng.below(PRELOAD as u64);
                let (method, path, body) = match workload {
                    Workload::Create => (
                        Method::POST,
                        "/Patient".to_owned(),
                        Some(patient_body(&mut rng, "x", n)),
                    ),
                    Workload::Update => {
                        let id = format!("bench-{k}");
                        let body = patient_body(&mut rng, &id, n + c as u64 * 1_000_000);
                        (Method::PUT, format!("/Patient/{id}"), Some(body))
                    }
                    Workload::Read => (Method::GET, format!("/Patient/bench-{k}"), None),
                    Workload::Search => {
                        let family = ["Lem", "Wal", "Kup", "Mon", "Blo", "Lit"][(k % 6) as usize];
                        (
                            Method::GET,
                            format!("/Patient?family={family}&_count=10"),
                            None,
                        )
                    }
                    Workload::Transaction => {
                        let b = transaction_bundle(&mut rng, bundle_size.saturating_sub(1));
                        (
                            Method::POST,
                            "/".to_owned(),
                            Some(serde_json::to_vec(&b).unwrap_or_default()),
                        )
                    }
                    Workload::Chain => {
                        let (_, mrn) = &sample.patients[rng.below(sample.patients.len() as u64) as usize];
                        (
                            Method::GET,
                            format!("/Observation?subject:Patient.identifier={MRN_SYSTEM}|{mrn}&_count=10"),
                            None,
                        )
                    }
                    Workload::Has => {
                        let e = &sample.encounters[rng.below(sample.encounters.len() as u64) as usize];
                        (
                            Method::GET,
                            format!("/Patient?_has:Observation:subject:encounter={e}"),
                            None,
                        )
                    }
                    Workload::Revinclude => {
                        let (pid, _) = &sample.patients[rng.below(sample.patients.len() as u64) as usize];
                        (
                            Method::GET,
                            format!("/Patient?_id={pid}&_revinclude=Observation:subject"),
                            None,
                        )
                    }
                    Workload::Reindex | Workload::Bundles | Workload::Export | Workload::Pages => break,
                };
                let t = Instant::now();
                match ctx.send(method, &path, body).await {
                    Ok(status) if (200..300).contains(&status) => {
                        lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat
        }));
    }
    // Progress once a second; stop at the deadline.
    let deadline = match s.stop {
        Stop::Duration(d) => Some(start + d),
        Stop::Count(_) => None,
    };
    let mut last = 0u64;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = done.load(Ordering::Relaxed).min(limit);
        eprintln!(
            "  {:>5.1}s  {now:>9} requests  {:>8.0}/s  {} errors",
            start.elapsed().as_secs_f64(),
            now.saturating_sub(last) as f64,
            errors.load(Ordering::Relaxed)
        );
        last = now;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            stop_flag.store(true, Ordering::Relaxed);
            break;
        }
        if now >= limit || tasks.iter().all(|t| t.is_finished()) {
            break;
        }
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap_or_default());
    }
    let seconds = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        lat[((lat.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0
    };
    let requests = lat.len() as u64;
    let per = if s.workload == Workload::Transaction {
        s.bundle_size as u64
    } else {
        1
    };
    Ok(Report {
        workload: s.workload,
        clients: s.clients,
        requests,
        errors: errors.load(Ordering::Relaxed),
        resources: requests * per,
        seconds,
        requests_per_second: requests as f64 / seconds,
        resources_per_second: (requests * per) as f64 / seconds,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        p999_ms: pct(0.999),
        max_ms: lat.last().map_or(0.0, |m| *m as f64 / 1000.0),
    })
}

/// The reindex workload: one SearchParameter write, then the job it
/// starts, followed on `/status` with a progress line every second.
async fn reindex(ctx: &Ctx) -> Result<Report, BenchError> {
    let started = Instant::now();
    let sp = json!({
        "resourceType": "SearchParameter",
        "id": REINDEX_PARAMETER,
        "url": format!("http://example.org/fhir/SearchParameter/{REINDEX_PARAMETER}"),
        "name": REINDEX_PARAMETER,
        "status": "active",
        "description": "The display texts of an Observation's code (vigil bench)",
        "code": REINDEX_PARAMETER,
        "base": ["Observation"],
        "type": "string",
        "expression": "Observation.code.coding.display",
    });
    let path = format!("/SearchParameter/{REINDEX_PARAMETER}");
    let status = ctx
        .send(Method::PUT, &path, serde_json::to_vec(&sp).ok())
        .await
        .map_err(BenchError::Setup)?;
    if !(200..300).contains(&status) {
        return Err(BenchError::Setup(format!("PUT {path} answered {status}")));
    }
    let deadline = started + Duration::from_secs(3600);
    let mut shown = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let st = ctx.get_json("/status").await.map_err(BenchError::Setup)?;
        let job = st["reindex"][0].clone();
        let done = job["done"].as_u64().unwrap_or(0);
        let finished = job["status"] == "completed";
        if shown.elapsed() >= Duration::from_secs(1) || finished {
            shown = Instant::now();
            eprintln!(
                "reindex {}: {done} of {} ({:.1}%), {:.0} versions/s",
                job["status"].as_str().unwrap_or("?"),
                job["total"],
                job["percent"].as_f64().unwrap_or(0.0),
                job["rate_per_s"].as_f64().unwrap_or(0.0)
            );
        }
        if finished {
            // Rekeys are indexed after they are committed: a search waits
            // until everything acknowledged is, so the time ends there.
            let q = format!("/Observation?{REINDEX_PARAMETER}:missing=false&_count=0");
            ctx.get_json(&q).await.map_err(BenchError::Setup)?;
            let seconds = started.elapsed().as_secs_f64();
            return Ok(one(Workload::Reindex, done, seconds));
        }
        if Instant::now() > deadline {
            return Err(BenchError::Setup(
                "the reindex did not finish in an hour".into(),
            ));
        }
    }
}

/// How often the export workload polls (the server answers 429 to
/// polls closer than 0.5 s).
const EXPORT_POLL: Duration = Duration::from_millis(500);

/// A report of one timed operation over `resources`.
fn one(workload: Workload, resources: u64, seconds: f64) -> Report {
    let ms = seconds * 1000.0;
    Report {
        workload,
        clients: 1,
        requests: 1,
        errors: 0,
        resources,
        seconds,
        requests_per_second: 1.0 / seconds,
        resources_per_second: resources as f64 / seconds,
        p50_ms: ms,
        p99_ms: ms,
        p999_ms: ms,
        max_ms: ms,
    }
}

/// One bulk export, kick-off to manifest.
async fn export(ctx: &Ctx, query: &str) -> Result<Report, BenchError> {
    let setup = BenchError::Setup;
    let started = Instant::now();
    let path = if query.is_empty() {
        "/$export".to_owned()
    } else {
        format!("/$export?{}", query.trim_start_matches('?'))
    };
    let (status, headers, body) = ctx
        .exchange_with(Method::GET, &path, None, &[("prefer", "respond-async")])
        .await
        .map_err(setup)?;
    if status != 202 {
        return Err(setup(format!(
            "GET {path} answered {status}: {}",
            String::from_utf8_lossy(&body)
        )));
    }
    let poll = headers
        .get("content-location")
        .and_then(|v| v.to_str().ok())
        .and_then(|l| l.split_once("/$export-status/"))
        .map(|(_, id)| format!("/$export-status/{id}"))
        .ok_or_else(|| setup("the kick-off named no status URL".into()))?;
    let deadline = started + Duration::from_secs(3600);
    loop {
        tokio::time::sleep(EXPORT_POLL).await;
        let (status, headers, body) = ctx
            .exchange_with(Method::GET, &poll, None, &[])
            .await
            .map_err(setup)?;
        match status {
            200 => {
                let seconds = started.elapsed().as_secs_f64();
                let m: Value = serde_json::from_slice(&body)
                    .map_err(|e| setup(format!("the manifest: {e}")))?;
                let resources: u64 = m["output"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|o| o["count"].as_u64())
                    .sum();
                // Leave no files behind.
                let _ = ctx.send(Method::DELETE, &poll, None).await;
                return Ok(one(Workload::Export, resources, seconds));
            }
            202 | 429 => {
                if let Some(p) = headers.get("x-progress").and_then(|v| v.to_str().ok()) {
                    eprintln!("export: {p}");
                }
            }
            other => {
                return Err(setup(format!(
                    "GET {poll} answered {other}: {}",
                    String::from_utf8_lossy(&body)
                )));
            }
        }
        if Instant::now() > deadline {
            return Err(setup("the export did not finish in an hour".into()));
        }
    }
}

/// Most pages the pages workload follows.
const PAGES_MAX: usize = 100_000;

/// One search paged through to its end.
async fn pages(ctx: &Ctx, query: &str) -> Result<Report, BenchError> {
    let setup = BenchError::Setup;
    let started = Instant::now();
    let sep = if query.contains('?') { '&' } else { '?' };
    let mut path = format!("/{}{sep}_count=1000", query.trim_start_matches('/'));
    let mut matches = 0u64;
    for _ in 0..PAGES_MAX {
        let page = ctx.get_json(&path).await.map_err(setup)?;
        matches += page["entry"].as_array().map_or(0, |e| {
            e.iter().filter(|e| e["search"]["mode"] == "match").count()
        }) as u64;
        let next = page["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
            .and_then(|l| l["url"].as_str());
        match next {
            Some(url) => {
                path = match url.strip_prefix(&ctx.url) {
                    Some(p) => p.to_owned(),
                    None => url
                        .find("://")
                        .and_then(|i| url[i + 3..].find('/').map(|j| url[i + 3 + j..].to_owned()))
                        .ok_or_else(|| setup(format!("a next link {url} has no path")))?,
                };
            }
            None => {
                let seconds = started.elapsed().as_secs_f64();
                return Ok(one(Workload::Pages, matches, seconds));
            }
        }
    }
    Err(setup(format!("more than {PAGES_MAX} pages")))
}

/// Most Bundle files the bundles workload reads.
const BUNDLE_FILES_MAX: usize = 100_000;

/// Reads the Bundles of `dir` (`.json`, or `.json.zst` decompressed):
/// their names and bytes, in name order.
fn read_bundles(dir: &std::path::Path) -> Result<Vec<(String, Vec<u8>)>, BenchError> {
    let setup = |what: String| BenchError::Setup(what);
    let mut names: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| setup(format!("cannot list {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.to_string_lossy();
            n.ends_with(".json") || n.ends_with(".json.zst")
        })
        .take(BUNDLE_FILES_MAX + 1)
        .collect();
    if names.len() > BUNDLE_FILES_MAX {
        return Err(setup(format!(
            "{} holds more than {BUNDLE_FILES_MAX} Bundles",
            dir.display()
        )));
    }
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for p in names {
        let raw = std::fs::read(&p).map_err(|e| setup(format!("{}: {e}", p.display())))?;
        let bytes = if p.to_string_lossy().ends_with(".zst") {
            zstd::decode_all(raw.as_slice())
                .map_err(|e| setup(format!("{}: not zstd: {e}", p.display())))?
        } else {
            raw
        };
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push((name, bytes));
    }
    if out.is_empty() {
        return Err(setup(format!(
            "{} holds no .json or .json.zst",
            dir.display()
        )));
    }
    Ok(out)
}

/// The bundles workload (see [`Workload::Bundles`]).
async fn bundles(
    ctx: Arc<Ctx>,
    dir: &std::path::Path,
    clients: usize,
) -> Result<Report, BenchError> {
    let files = read_bundles(dir)?;
    let (first, rest): (Vec<_>, Vec<_>) = files.into_iter().partition(|(n, _)| n.starts_with("0-"));
    let (first_len, total) = (first.len(), first.len() + rest.len());
    eprintln!(
        "posting {total} Bundles from {}: {} first, then {} over {clients} clients",
        dir.display(),
        first.len(),
        rest.len()
    );
    let started = Instant::now();
    let mut lat = Vec::new();
    let (mut entries, mut failed) = (0u64, 0u64);
    for (name, body) in first {
        let t = Instant::now();
        let (ok, bad) = ctx.post_bundle(&name, body).await;
        lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
        entries += ok;
        failed += bad;
    }
    // Largest last in the queue, which is taken from its end: the largest
    // go first, so the clients finish together instead of one client
    // posting a large Bundle alone at the end.
    let mut rest = rest;
    rest.sort_by_key(|(name, body)| (body.len(), name.clone()));
    let queue = Arc::new(std::sync::Mutex::new(rest));
    let posted = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients.max(1) {
        let (ctx, queue, posted) = (ctx.clone(), queue.clone(), posted.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut ok, mut bad) = (Vec::new(), 0u64, 0u64);
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop());
                let Some((name, body)) = next else { break };
                let t = Instant::now();
                let (o, b) = ctx.post_bundle(&name, body).await;
                lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                ok += o;
                bad += b;
                posted.fetch_add(1, Ordering::Relaxed);
            }
            (lat, ok, bad)
        }));
    }
    // Progress on its own task: the time ends when the last client does.
    let progress = {
        let posted = posted.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                eprintln!(
                    "  {:>5.1}s  {} of {total} Bundles",
                    started.elapsed().as_secs_f64(),
                    first_len + posted.load(Ordering::Relaxed) as usize
                );
            }
        })
    };
    for t in tasks {
        let (l, o, b) = t.await.unwrap_or_default();
        lat.extend(l);
        entries += o;
        failed += b;
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.abort();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        lat.get(((lat.len().max(1) - 1) as f64 * p).round() as usize)
            .map_or(0.0, |v| *v as f64 / 1000.0)
    };
    Ok(Report {
        workload: Workload::Bundles,
        clients,
        requests: lat.len() as u64,
        errors: failed,
        resources: entries,
        seconds,
        requests_per_second: lat.len() as f64 / seconds,
        resources_per_second: entries as f64 / seconds,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        p999_ms: pct(0.999),
        max_ms: lat.last().map_or(0.0, |m| *m as f64 / 1000.0),
    })
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "workload {:?}, {} clients, {:.1} s",
            self.workload, self.clients, self.seconds
        )?;
        writeln!(
            f,
            "  requests   {:>10} ok, {} failed",
            self.requests, self.errors
        )?;
        writeln!(
            f,
            "  throughput {:>10.0} requests/s, {:.0} resources/s",
            self.requests_per_second, self.resources_per_second
        )?;
        write!(
            f,
            "  latency    p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            self.p50_ms, self.p99_ms, self.p999_ms, self.max_ms
        )
    }
}
