//! `vigil drill`: the DR test, automated. Writes tagged test data at a
//! steady rate through the cluster's endpoints and logs every
//! acknowledgement; causes the disaster; measures RTO (until writes succeed
//! again), RPO (acknowledged writes missing afterwards, and how old they
//! were), latency and throughput over time, promotion and rejoin; writes a
//! report (Markdown, JSON and an SVG chart) and says whether the cluster
//! kept its promises.

mod chart;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::status::call_with;
use crate::up::{LocalCluster, UpOptions};

/// The disaster a drill causes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// The leader's process is killed (SIGKILL); it is started again later
    /// and must rejoin as a follower.
    KillLeader,
    /// The leader is cut off from the other node and the witness (clients
    /// still reach it): it must stop acknowledging within its lease, the
    /// follower takes over, and after the healing the old leader rejoins.
    PartitionLeader,
    /// The witness is killed: nothing may change, writes go on.
    WitnessLoss,
    /// One coordinator member is killed (an etcd member; with the witness,
    /// the witness): nothing may change, writes go on.
    CoordinatorMemberLoss,
    /// The coordinator loses its quorum (two of three etcd members killed;
    /// the witness killed): nothing may change while the two data nodes
    /// hear each other — the leader keeps its majority with its
    /// follower's vote.
    CoordinatorQuorumLoss,
    /// The leader is cut off from the coordinator but not from its
    /// follower: nothing may change (the follower's vote keeps its lease).
    LeaderCutFromCoordinator,
    /// The leader's process is paused (SIGSTOP) for 10 s, past its lease,
    /// then resumed: the follower takes over, and the old leader must
    /// acknowledge nothing after its lease ended (no acknowledged write
    /// lost) and rejoin.
    PauseLeader,
    /// A planned switchover: zero loss, a short pause.
    Switchover,
}

/// What a drill does.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// The disaster.
    pub scenario: Scenario,
    /// Writes per second.
    pub rate: f64,
    /// Seconds of steady writing before the disaster.
    pub before: Duration,
    /// Seconds of writing after it (the drill also waits for the rejoin).
    pub after: Duration,
    /// Where the report goes.
    pub out: PathBuf,
    /// A local cluster to start (`--local`), or the nodes of a running one.
    pub local: Option<UpOptions>,
    /// A running cluster's two node URLs.
    pub urls: Vec<String>,
    /// For a running cluster: the token its `[drills]` settings require.
    pub token: Option<String>,
    /// The RTO promise checked, seconds.
    pub rto_max: f64,
    /// After the drill, move leadership back with a switchover.
    pub failback: bool,
}

/// Why a drill could not run.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// The cluster could not be started or reached.
    #[error("{0}")]
    Cluster(String),
    /// The report could not be written.
    #[error("write {path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl Scenario {
    /// For a scenario that runs only on a cluster the drill started
    /// (`--local`): its name and what the drill must own of the cluster.
    pub fn local_only(self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::KillLeader | Self::Switchover => None,
            Self::PartitionLeader => Some(("partition-leader", "the links")),
            Self::WitnessLoss => Some(("witness-loss", "the witness")),
            Self::CoordinatorMemberLoss => Some(("coordinator-member-loss", "the coordinator")),
            Self::CoordinatorQuorumLoss => Some(("coordinator-quorum-loss", "the coordinator")),
            Self::LeaderCutFromCoordinator => Some(("leader-cut-from-coordinator", "the links")),
            Self::PauseLeader => Some(("pause-leader", "the processes")),
        }
    }

    /// Whether the cluster must go on as it was: no promotion, no outage.
    pub fn nothing_changes(self) -> bool {
        matches!(
            self,
            Self::WitnessLoss
                | Self::CoordinatorMemberLoss
                | Self::CoordinatorQuorumLoss
                | Self::LeaderCutFromCoordinator
        )
    }
}

/// How long `pause-leader` keeps the leader stopped (past any default
/// lease).
const PAUSE: Duration = Duration::from_secs(10);

/// Most writes in flight at once.
const IN_FLIGHT_MAX: usize = 512;
/// A write not answered in this long counts as failed (a client's
/// timeout): a node that hangs must not hold the whole load back.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for promotion or rejoin after the disaster.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Writes per second accepted.
pub const RATE_MAX: f64 = 5_000.0;
/// An outage caused by the disaster begins within this many seconds of it.
const OUTAGE_START_WITHIN: f64 = 5.0;

#[derive(Debug, Clone, Serialize)]
struct Sample {
    /// Seconds since the drill began, when sent.
    t: f64,
    latency_ms: f64,
    status: u16,
    id: String,
    version: Option<String>,
}

/// One second of the drill.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Second {
    /// Seconds since the drill began.
    pub t: u64,
    /// Writes acknowledged.
    pub ok: usize,
    /// Writes refused or failed.
    pub failed: usize,
    /// Median latency of the acknowledged ones, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

/// What a drill measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The scenario.
    pub scenario: Scenario,
    /// When it ran (Unix seconds).
    pub started_unix: u64,
    /// Writes per second asked for.
    pub rate: f64,
    /// The cluster's loss promise (`max_lag`), seconds.
    pub max_lag_seconds: f64,
    /// The leader before, and after.
    pub leader_before: String,
    /// The leader after.
    pub leader_after: String,
    /// Seconds into the drill: the disaster.
    pub failure_at: f64,
    /// Seconds into the drill: another node took writes (if it did).
    pub promoted_at: Option<f64>,
    /// Seconds into the drill: the old leader followed again, caught up.
    pub rejoined_at: Option<f64>,
    /// From the disaster to the end of the outage (the first write
    /// acknowledged after the longest stretch without one), s.
    pub rto_seconds: Option<f64>,
    /// Longest time without an acknowledged write around the disaster, s.
    pub longest_gap_seconds: f64,
    /// Writes acknowledged.
    pub acknowledged: usize,
    /// Writes refused (503) or failed meanwhile.
    pub refused: usize,
    /// Acknowledged writes missing afterwards.
    pub lost: usize,
    /// Age at the disaster of the oldest lost write, seconds.
    pub oldest_lost_seconds: f64,
    /// Resource versions the rejoin put in quarantine (local drills).
    pub quarantined_versions: usize,
    /// Per second.
    pub seconds: Vec<Second>,
    /// Whether the loss stayed within the promise.
    pub rpo_kept: bool,
    /// Whether the RTO stayed within `rto_max`.
    pub rto_kept: bool,
    /// The RTO promise checked.
    pub rto_max_seconds: f64,
    /// With `--failback`: the switchover back, as the new leader reported
    /// it (milliseconds from the write pause to the hand-over).
    pub failback_handover_ms: Option<u64>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A node that does not answer a probe this fast is taken as down (a
/// paused process holds its connections open and answers nothing).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

async fn probe(url: &str, path: &str) -> Option<(u16, String)> {
    match tokio::time::timeout(PROBE_TIMEOUT, call_with("GET", url, path, None, &[], None)).await {
        Ok(Ok((status, text, _))) => Some((status, text)),
        _ => None,
    }
}

async fn leader_of(urls: &[String]) -> Option<String> {
    for u in urls {
        if let Some((200, _)) = probe(u, "/health/leader").await {
            return Some(u.clone());
        }
    }
    None
}

async fn status_of(url: &str) -> serde_json::Value {
    match probe(url, "/status").await {
        Some((200, t)) => serde_json::from_str(&t).unwrap_or_default(),
        _ => serde_json::Value::Null,
    }
}

/// The `p` quantile of `v` (sorted here first).
fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    vigil_net::status::percentile(v, p)
}

/// Runs a drill and writes its report; returns it.
pub async fn run(o: DrillOptions) -> Result<Report, DrillError> {
    if !(o.rate > 0.0 && o.rate <= RATE_MAX) {
        return Err(DrillError::Cluster(format!(
            "--rate must be in (0, {RATE_MAX}]"
        )));
    }
    if let (None, Some((name, owns))) = (&o.local, o.scenario.local_only()) {
        return Err(DrillError::Cluster(format!(
            "{name} needs --local (the drill must own {owns})"
        )));
    }
    let mut local = None;
    let urls = match &o.local {
        Some(up) => {
            let (c, _) = LocalCluster::start(up.clone())
                .await
                .map_err(|e| DrillError::Cluster(e.to_string()))?;
            let urls = vec![c.http("a"), c.http("b")];
            local = Some(c);
            urls
        }
        None if o.urls.len() == 2 => o.urls.clone(),
        None => {
            return Err(DrillError::Cluster(
                "give --local, or both nodes' URLs (--url A --url B)".into(),
            ));
        }
    };
    let leader_before = leader_of(&urls)
        .await
        .ok_or_else(|| DrillError::Cluster("no node leads; is the cluster up?".into()))?;
    let max_lag_seconds = status_of(&leader_before).await["max_lag_seconds"]
        .as_f64()
        .unwrap_or(0.0);
    let drill_id = format!("drill-{}", unix_now());
    say(&format!(
        "drill {drill_id}: {:?}, {} writes/s, {} s before and {} s after; leader {leader_before}",
        o.scenario,
        o.rate,
        o.before.as_secs(),
        o.after.as_secs()
    ));
    let t0 = Instant::now();
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn(write_load(
        urls.clone(),
        o.rate,
        drill_id.clone(),
        t0,
        samples.clone(),
        stop.clone(),
    ));
    progress_until(&samples, t0, o.before, &urls).await;
    // The disaster.
    let failure_at = t0.elapsed().as_secs_f64();
    let old_leader_node = if leader_before == urls[0] { "a" } else { "b" };
    match o.scenario {
        Scenario::KillLeader => match local.as_mut() {
            Some(c) => {
                say(&format!(
                    "DISASTER: kill -9 the leader (node {old_leader_node})"
                ));
                c.kill(old_leader_node);
            }
            None => {
                say("DISASTER: the leader is told to crash (POST /admin/drill/crash)");
                let headers = o
                    .token
                    .iter()
                    .map(|t| ("x-vigil-drill-token", t.clone()))
                    .collect::<Vec<_>>();
                match call_with(
                    "POST",
                    &leader_before,
                    "/admin/drill/crash",
                    None,
                    &headers,
                    None,
                )
                .await
                {
                    Ok((202, _, _)) => {}
                    Ok((s, t, _)) => {
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                        return Err(DrillError::Cluster(format!(
                            "the leader refused to crash (HTTP {s}): {t}"
                        )));
                    }
                    Err(e) => return Err(DrillError::Cluster(e.to_string())),
                }
            }
        },
        // The scenarios below run only on a local cluster (checked before
        // it started: `Scenario::local_only`).
        Scenario::PartitionLeader => {
            if let Some(c) = local.as_ref() {
                say(&format!(
                    "DISASTER: cut the leader (node {old_leader_node}) off from its peer and the witness"
                ));
                c.isolate(old_leader_node, true);
            }
        }
        Scenario::WitnessLoss => {
            if let Some(c) = local.as_mut() {
                say("DISASTER: kill -9 the witness");
                c.kill("w");
            }
        }
        Scenario::CoordinatorMemberLoss | Scenario::CoordinatorQuorumLoss => {
            if let Some(c) = local.as_mut() {
                let procs = c.coordinator_procs();
                let kill = match o.scenario {
                    // Of three etcd members, two are a quorum's loss; the
                    // witness is its own quorum.
                    Scenario::CoordinatorQuorumLoss => procs.len().div_ceil(2),
                    _ => 1,
                };
                for p in &procs[..kill] {
                    say(&format!("DISASTER: kill -9 coordinator member {p}"));
                    c.kill(p);
                }
            }
        }
        Scenario::LeaderCutFromCoordinator => {
            if let Some(c) = local.as_ref() {
                say(&format!(
                    "DISASTER: cut the leader (node {old_leader_node}) off from the coordinator, not from its follower"
                ));
                c.cut_coordinator(old_leader_node, true);
            }
        }
        Scenario::PauseLeader => {
            if let Some(c) = local.as_ref() {
                say(&format!(
                    "DISASTER: pause the leader (node {old_leader_node}) with SIGSTOP for {} s",
                    PAUSE.as_secs()
                ));
                c.signal(old_leader_node, rustix::process::Signal::STOP);
            }
        }
        Scenario::Switchover => {
            say("switchover requested");
            if let Err(e) =
                call_with("POST", &leader_before, "/admin/switchover", None, &[], None).await
            {
                say(&format!("switchover failed: {e}"));
            }
        }
    }
    // Watch for promotion and rejoin while writing goes on.
    let mut promoted_at = None;
    let mut rejoined_at = None;
    let mut restarted = false;
    let mut healed = false;
    let mut resumed = false;
    let deadline = Instant::now() + SETTLE_TIMEOUT.max(o.after);
    let after_until = t0.elapsed() + o.after;
    loop {
        let now = t0.elapsed();
        let lead = leader_of(&urls).await;
        if promoted_at.is_none() && lead.as_ref().is_some_and(|l| *l != leader_before) {
            promoted_at = Some(now.as_secs_f64());
            say(&format!(
                "{} leads now (+{:.2} s)",
                lead.clone().unwrap_or_default(),
                now.as_secs_f64() - failure_at
            ));
        }
        if o.scenario == Scenario::KillLeader
            && !restarted
            && now.as_secs_f64() > failure_at + 3.0
            && let Some(c) = local.as_mut()
        {
            let started = c.restart_exited();
            say(&format!(
                "restarted {started:?}: the old leader must rejoin as a follower"
            ));
            restarted = true;
        }
        if o.scenario == Scenario::PauseLeader
            && !resumed
            && now.as_secs_f64() > failure_at + PAUSE.as_secs_f64()
            && let Some(c) = local.as_ref()
        {
            c.signal(old_leader_node, rustix::process::Signal::CONT);
            resumed = true;
            say("resumed the old leader (SIGCONT): it must learn the new epoch and rejoin");
        }
        if o.scenario == Scenario::PartitionLeader
            && !healed
            && promoted_at.is_some_and(|p| now.as_secs_f64() > p + 2.0)
            && let Some(c) = local.as_ref()
        {
            c.isolate(old_leader_node, false);
            healed = true;
            say("healed: the old leader must learn the new epoch and rejoin");
        }
        if !o.scenario.nothing_changes() && rejoined_at.is_none() && promoted_at.is_some() {
            let up = &status_of(&leader_before).await["upstream"];
            if up["connected"] == true && up["lag_lsns"] == 0 {
                rejoined_at = Some(t0.elapsed().as_secs_f64());
                say(&format!(
                    "the old leader follows again, caught up (+{:.2} s)",
                    t0.elapsed().as_secs_f64() - failure_at
                ));
            }
        }
        let settled = o.scenario.nothing_changes() || rejoined_at.is_some();
        if (now >= after_until && settled) || Instant::now() > deadline {
            break;
        }
        progress_until(&samples, t0, now + Duration::from_millis(500), &urls).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = writer.await;
    let samples = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut leader_after = leader_of(&urls).await.unwrap_or_default();
    let mut failback_handover_ms = None;
    if o.failback && !leader_after.is_empty() && leader_after != leader_before {
        say("failing back: switchover to the original leader");
        match call_with("POST", &leader_after, "/admin/switchover", None, &[], None).await {
            Ok((200, text, _)) => {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                failback_handover_ms = v["handover_ms"].as_u64();
            }
            Ok((s, text, _)) => say(&format!("failback refused (HTTP {s}): {text}")),
            Err(e) => say(&format!("failback failed: {e}")),
        }
        for _ in 0..100 {
            if leader_of(&urls).await.as_deref() == Some(leader_before.as_str()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        leader_after = leader_of(&urls).await.unwrap_or_default();
    }
    // RPO: every acknowledged write, read back from the leader now.
    say(&format!(
        "checking {} acknowledged writes on {leader_after}",
        samples.iter().filter(|s| s.status / 100 == 2).count()
    ));
    let mut lost = 0;
    let mut oldest_lost: f64 = 0.0;
    for s in samples.iter().filter(|s| s.status / 100 == 2) {
        let path = format!("/Patient/{}", s.id);
        let found = match call_with("GET", &leader_after, &path, None, &[], None).await {
            Ok((200, t, _)) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                v["meta"]["versionId"].as_str() == s.version.as_deref()
            }
            _ => false,
        };
        if !found {
            lost += 1;
            oldest_lost = oldest_lost.max(failure_at - (s.t + s.latency_ms / 1e3));
        }
    }
    let quarantined_versions = match &local {
        Some(c) => vigil_fhir::quarantine::list(&c.opts.dir.join(old_leader_node))
            .unwrap_or_default()
            .iter()
            .map(|f| f.versions)
            .sum(),
        None => 0,
    };
    let acked_after: Vec<f64> = samples
        .iter()
        .filter(|s| s.status / 100 == 2)
        .map(|s| s.t + s.latency_ms / 1e3)
        .collect();
    // RTO: the outage is the longest stretch without an acknowledgement
    // that ends after the disaster (writes already in flight may still be
    // acknowledged just after it); RTO runs from the disaster to its end.
    let mut sorted = acked_after.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    // Only a stretch that begins within a few seconds of the disaster is
    // its outage; one shorter than a few write intervals is no outage.
    let outage = sorted
        .windows(2)
        .filter(|w| w[1] > failure_at && w[0] <= failure_at + OUTAGE_START_WITHIN)
        .map(|w| (w[1] - w[0], w[1]))
        .fold(None, |m: Option<(f64, f64)>, g| match m {
            Some(b) if b.0 >= g.0 => Some(b),
            _ => Some(g),
        });
    let quiet = 4.0 / o.rate;
    let rto_seconds = outage.map(|(gap, end)| {
        if gap <= quiet {
            0.0
        } else {
            (end - failure_at).max(0.0)
        }
    });
    let longest_gap_seconds = outage.map_or(0.0, |(gap, _)| gap);
    let seconds = per_second(&samples);
    let rpo_kept = if max_lag_seconds == 0.0 {
        lost == 0
    } else {
        oldest_lost <= max_lag_seconds
    };
    let rto_kept = rto_seconds.is_some_and(|r| r <= o.rto_max);
    let report = Report {
        scenario: o.scenario,
        started_unix: unix_now(),
        rate: o.rate,
        max_lag_seconds,
        leader_before,
        leader_after,
        failure_at,
        promoted_at,
        rejoined_at,
        rto_seconds,
        longest_gap_seconds,
        acknowledged: acked_after.len(),
        refused: samples.len() - acked_after.len(),
        lost,
        oldest_lost_seconds: oldest_lost,
        quarantined_versions,
        seconds,
        rpo_kept,
        rto_kept,
        rto_max_seconds: o.rto_max,
        failback_handover_ms,
    };
    write_report(&o.out, &report)?;
    if let Some(c) = local {
        say("stopping the local cluster");
        c.stop();
    }
    Ok(report)
}

fn say(s: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "{s}");
}

/// Prints a progress line each second until `until` (since `t0`).
async fn progress_until(
    samples: &Arc<Mutex<Vec<Sample>>>,
    t0: Instant,
    until: Duration,
    urls: &[String],
) {
    while t0.elapsed() < until {
        let step = (until - t0.elapsed()).min(Duration::from_secs(1));
        tokio::time::sleep(step).await;
        let now = t0.elapsed().as_secs_f64();
        let (ok, failed, mut lat) = {
            let s = samples.lock().unwrap_or_else(|p| p.into_inner());
            let recent: Vec<&Sample> = s.iter().filter(|x| x.t >= now - 1.0).collect();
            let ok: Vec<f64> = recent
                .iter()
                .filter(|x| x.status / 100 == 2)
                .map(|x| x.latency_ms)
                .collect();
            (ok.len(), recent.len() - ok.len(), ok)
        };
        let lead = leader_of(urls).await.unwrap_or_else(|| "none".into());
        say(&format!(
            "  t={now:5.1}s  ok {ok:4}/s  failed {failed:3}  p99 {:6.1} ms  leader {lead}",
            percentile(&mut lat, 0.99)
        ));
    }
}

/// Sends one write every 1/rate seconds, alternating endpoints (a client
/// behind a load balancer that knows both), until `stop`.
async fn write_load(
    urls: Vec<String>,
    rate: f64,
    drill_id: String,
    t0: Instant,
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let sem = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_MAX));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut n = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        tick.tick().await;
        let Ok(permit) = sem.clone().try_acquire_owned() else {
            continue; // saturated: the sample is simply not sent
        };
        n += 1;
        let id = format!("{drill_id}-{n}");
        let url = urls[n as usize % urls.len()].clone();
        let body = serde_json::json!({
            "resourceType": "Patient",
            "id": id,
            "meta": {"tag": [{"system": "urn:vigil:drill", "code": drill_id}]},
            "name": [{"family": "Drill", "given": [n.to_string()]}],
        })
        .to_string();
        let samples = samples.clone();
        tasks.spawn(async move {
            let sent = t0.elapsed();
            let path = format!("/Patient/{id}");
            let put = call_with("PUT", &url, &path, Some(body.into_bytes()), &[], None);
            let r = tokio::time::timeout(WRITE_TIMEOUT, put)
                .await
                .unwrap_or_else(|_| {
                    Err(crate::status::StatusError::Fetch {
                        url: url.clone(),
                        detail: "timed out".into(),
                    })
                });
            let latency_ms = (t0.elapsed() - sent).as_secs_f64() * 1e3;
            let (status, version) = match r {
                Ok((s, text, _)) => {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    (s, v["meta"]["versionId"].as_str().map(String::from))
                }
                Err(_) => (0, None),
            };
            samples
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Sample {
                    t: sent.as_secs_f64(),
                    latency_ms,
                    status,
                    id,
                    version,
                });
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

fn per_second(samples: &[Sample]) -> Vec<Second> {
    let end = samples.iter().map(|s| s.t as u64).max().unwrap_or(0);
    (0..=end)
        .map(|t| {
            let here: Vec<&Sample> = samples.iter().filter(|s| s.t as u64 == t).collect();
            let mut lat: Vec<f64> = here
                .iter()
                .filter(|s| s.status / 100 == 2)
                .map(|s| s.latency_ms)
                .collect();
            let ok = lat.len();
            Second {
                t,
                ok,
                failed: here.len() - ok,
                p50_ms: percentile(&mut lat, 0.5),
                p99_ms: percentile(&mut lat, 0.99),
            }
        })
        .collect()
}

fn write_report(dir: &std::path::Path, r: &Report) -> Result<(), DrillError> {
    let io = |path: PathBuf| move |source| DrillError::Io { path, source };
    std::fs::create_dir_all(dir).map_err(io(dir.to_owned()))?;
    let json = dir.join("drill.json");
    let text = serde_json::to_string_pretty(r).unwrap_or_default();
    std::fs::write(&json, text).map_err(io(json.clone()))?;
    let svg = dir.join("drill.svg");
    std::fs::write(&svg, chart::svg(r)).map_err(io(svg.clone()))?;
    let md = dir.join("drill.md");
    std::fs::write(&md, markdown(r)).map_err(io(md.clone()))?;
    say(&format!(
        "report: {}, {}, {}",
        md.display(),
        json.display(),
        svg.display()
    ));
    Ok(())
}

fn markdown(r: &Report) -> String {
    let opt = |v: Option<f64>| v.map_or("—".into(), |v| format!("{v:.2} s"));
    let verdict = |ok: bool| if ok { "kept" } else { "**BROKEN**" };
    format!(
        "# DR drill: {:?}\n\n\
         | | |\n|---|---|\n\
         | rate | {} writes/s |\n\
         | leader before / after | {} / {} |\n\
         | disaster at | {:.2} s |\n\
         | RTO (disaster to the first write acknowledged after the outage) | {} (promise {:.0} s: {}) |\n\
         | longest time without an acknowledged write | {:.2} s |\n\
         | promotion | {} after the disaster |\n\
         | rejoin of the old leader | {} after the disaster |\n\
         | writes acknowledged / refused | {} / {} |\n\
         | acknowledged writes lost | {} (oldest {:.3} s before the disaster; promise max_lag {:.3} s: {}) |\n\
         | versions in quarantine | {} |\n\n\
         ![latency and throughput](drill.svg)\n\n\
         Per second: acknowledged writes, refused ones, p50 and p99 latency.\n\n\
         | t (s) | ok | refused | p50 ms | p99 ms |\n|---:|---:|---:|---:|---:|\n{}",
        r.scenario,
        r.rate,
        r.leader_before,
        r.leader_after,
        r.failure_at,
        opt(r.rto_seconds),
        r.rto_max_seconds,
        verdict(r.rto_kept),
        r.longest_gap_seconds,
        opt(r.promoted_at.map(|p| p - r.failure_at)),
        opt(r.rejoined_at.map(|p| p - r.failure_at)),
        r.acknowledged,
        r.refused,
        r.lost,
        r.oldest_lost_seconds,
        r.max_lag_seconds,
        verdict(r.rpo_kept),
        r.quarantined_versions,
        r.seconds
            .iter()
            .map(|s| format!(
                "| {} | {} | {} | {:.1} | {:.1} |\n",
                s.t, s.ok, s.failed, s.p50_ms, s.p99_ms
            ))
            .collect::<String>()
    )
}
