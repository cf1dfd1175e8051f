//! `vigil up`: a whole local DR cluster in one command. Two data nodes and
//! a witness (or, with `--etcd`, three etcd members) on loopback, each its
//! own process (the data nodes and the witness of this same binary), with
//! its own data directory and certificate; sample patients from the
//! project's own generator; the endpoints and next commands printed; a
//! data node that exits is started again (it rejoins as a follower), and
//! Ctrl-C stops everything cleanly. Running it again reuses the directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::status::call_with;

/// Prints a line; a closed stdout (a pipe whose reader left) is ignored
/// rather than a reason to leave the nodes running.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// Where a local cluster lives and how it is reached.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The cluster directory (certificates, configs, data, logs).
    pub dir: PathBuf,
    /// Node a's HTTP port; node b listens on the next one.
    pub http_port: u16,
    /// a's replication port; b and the witness use the next two.
    pub repl_port: u16,
    /// Sample patients loaded into a new cluster.
    pub patients: usize,
    /// This binary (the nodes are its `serve` and `witness`).
    pub exe: PathBuf,
    /// Route every link between the nodes (and to the witness) through a
    /// UDP relay in this process, so that a drill can cut one.
    pub relays: bool,
    /// Coordinate through three local etcd members (the installed `etcd`)
    /// instead of the witness; their client ports are a's replication
    /// port + 10, + 12, + 14.
    pub etcd: bool,
}

/// etcd members `vigil up --etcd` starts.
pub const ETCD_MEMBERS: usize = 3;
/// Names of the etcd members' processes.
const ETCD_NAMES: [&str; ETCD_MEMBERS] = ["e0", "e1", "e2"];

/// Member `i`'s client and peer ports.
fn etcd_ports(o: &UpOptions, i: usize) -> (u16, u16) {
    let base = o.repl_port + 10 + 2 * i as u16;
    (base, base + 1)
}

/// Why the cluster could not come up.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Certificates could not be made.
    #[error("certificates: {0}")]
    Certs(#[from] vigil_net::runtime::tls::TlsError),
    /// The cluster did not come up in time.
    #[error("{0}")]
    NotReady(String),
    /// A node's configuration could not be written.
    #[error(transparent)]
    Config(#[from] vigil_fhir::config::ConfigError),
}

/// Longest wait for the first leader (a new cluster's first lease takes
/// two lease durations).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// A node that exits is started again after this.
const RESTART_DELAY: Duration = Duration::from_secs(3);
/// Longest wait for a node to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Resources per sample patient record.
const RECORD_SIZE: usize = 20;
/// Most sample patients.
pub const PATIENTS_MAX: usize = 100_000;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> UpError {
    let what = what.into();
    move |source| UpError::Io { what, source }
}

struct Proc {
    name: &'static str,
    exe: PathBuf,
    args: Vec<String>,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(
        exe: &Path,
        name: &'static str,
        args: Vec<String>,
        logs: &Path,
    ) -> Result<Self, UpError> {
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io(format!("open {}", log.display())))?;
        let err = file.try_clone().map_err(io("log file"))?;
        let mut cmd = Command::new(exe);
        // Its own process group: Ctrl-C reaches `vigil up`, which stops the
        // nodes in order, not every node at once behind its back.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .args(&args)
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(io(format!("start {name}")))?;
        Ok(Self {
            name,
            exe: exe.to_owned(),
            args,
            child,
            log,
        })
    }

    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = rustix::process::Pid::from_raw(self.child.id() as i32);
            if let Some(pid) = pid {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let t0 = Instant::now();
            while t0.elapsed() < STOP_TIMEOUT {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Data node `me`'s configuration file.
fn node_config(o: &UpOptions, me: &str, links: &Links) -> Result<String, UpError> {
    use vigil_fhir::config::Config;
    use vigil_fhir::config::replication::{ReplicationConfig, ReplicationRole};
    let (i, peer) = if me == "a" { (0, "b") } else { (1, "a") };
    let (peer_addr, witness_addr) = links.of(me, o);
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let mut r = ReplicationConfig::new("local", me, o.dir.join("certs"), ReplicationRole::Auto);
    r.listen = Some(at(o.repl_port + i));
    r.peer = Some(peer.into());
    r.peer_addr = Some(peer_addr);
    if o.etcd {
        r.coordinator = vigil_fhir::config::replication::CoordinatorKind::Etcd;
        r.etcd_endpoints = links.etcd_of(me, o);
    } else {
        r.witness = Some("w".into());
        r.witness_addr = Some(witness_addr);
    }
    r.preferred = Some("a".into());
    r.max_lag_ms = Some(0);
    let config = Config {
        data: o.dir.join(me),
        http: at(o.http_port + i),
        export_dir: Some(o.dir.join("exports")),
        replication: Some(r),
        ..Config::default()
    };
    let text = config.to_toml()?;
    Ok(format!(
        "# Written by `vigil up`; edit the cluster with its flags instead.\n{text}"
    ))
}

/// The relays a drill can cut: in front of a's and b's replication ports
/// and of the witness (one per data node).
#[derive(Default)]
struct Links {
    relays: Option<[vigil_net::relay::Relay; 4]>,
    /// With etcd: each data node's way to each member (TCP).
    etcd: Option<[Vec<vigil_net::tcp_relay::TcpRelay>; 2]>,
}

impl Links {
    fn start(o: &UpOptions) -> Result<Self, UpError> {
        if !o.relays {
            return Ok(Self::default());
        }
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let r = |port, seed| {
            vigil_net::relay::Relay::start(at(port), seed).map_err(io("start a relay"))
        };
        let etcd = if o.etcd {
            let ways = || {
                (0..ETCD_MEMBERS)
                    .map(|i| vigil_net::tcp_relay::TcpRelay::start(at(etcd_ports(o, i).0)))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(io("start a TCP relay"))
            };
            Some([ways()?, ways()?])
        } else {
            None
        };
        Ok(Self {
            relays: Some([
                r(o.repl_port, 1)?,
                r(o.repl_port + 1, 2)?,
                r(o.repl_port + 2, 3)?,
                r(o.repl_port + 2, 4)?,
            ]),
            etcd,
        })
    }

    /// The etcd client URLs node `me` is given.
    fn etcd_of(&self, me: &str, o: &UpOptions) -> Vec<String> {
        let side = usize::from(me != "a");
        match &self.etcd {
            Some(ways) => ways[side]
                .iter()
                .map(|r| format!("http://{}", r.addr()))
                .collect(),
            None => (0..ETCD_MEMBERS)
                .map(|i| format!("http://127.0.0.1:{}", etcd_ports(o, i).0))
                .collect(),
        }
    }

    /// Cuts (or heals) only `node`'s links to the coordinator (the
    /// witness, or every etcd member), not to the other data node.
    fn cut_coordinator(&self, node: &str, cut: bool) {
        let f = cut_or_heal(cut);
        if let Some([_, _, a_w, b_w]) = &self.relays {
            if node == "a" { a_w.set(f) } else { b_w.set(f) }
        }
        if let Some(ways) = &self.etcd {
            for r in &ways[usize::from(node != "a")] {
                r.set_cut(cut);
            }
        }
    }

    /// (peer address, witness address) as node `me` reaches them.
    fn of(&self, me: &str, o: &UpOptions) -> (SocketAddr, SocketAddr) {
        let direct = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        match (&self.relays, me) {
            (Some([_, to_b, a_w, _]), "a") => (to_b.addr(), a_w.addr()),
            (Some([to_a, _, _, b_w]), _) => (to_a.addr(), b_w.addr()),
            (None, "a") => (direct(o.repl_port + 1), direct(o.repl_port + 2)),
            (None, _) => (direct(o.repl_port), direct(o.repl_port + 2)),
        }
    }

    /// Cuts (or heals) every link of `node`: to and from the other data
    /// node and the witness.
    fn isolate(&self, node: &str, cut: bool) {
        if let Some([to_a, to_b, _, _]) = &self.relays {
            let f = cut_or_heal(cut);
            to_a.set(f);
            to_b.set(f);
        }
        self.cut_coordinator(node, cut);
    }
}

/// A relay's faults: every datagram dropped both ways, or none.
fn cut_or_heal(cut: bool) -> vigil_net::relay::Faults {
    if cut {
        vigil_net::relay::Faults::CUT
    } else {
        vigil_net::relay::Faults::default()
    }
}

fn http_of(o: &UpOptions, node: &str) -> String {
    let port = if node == "a" {
        o.http_port
    } else {
        o.http_port + 1
    };
    format!("http://127.0.0.1:{port}")
}

/// Which node leads now, if one does.
async fn leader(o: &UpOptions) -> Option<&'static str> {
    for n in ["a", "b"] {
        if let Ok((200, _, _)) =
            call_with("GET", &http_of(o, n), "/health/leader", None, &[], None).await
        {
            return Some(n);
        }
    }
    None
}

/// A running local cluster: the witness and two data nodes as child
/// processes, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct LocalCluster {
    /// How it was started.
    pub opts: UpOptions,
    procs: Vec<Proc>,
    links: Links,
}

impl LocalCluster {
    /// Makes or reuses the directory, starts the three processes and waits
    /// for a leader; returns it with the leader's name.
    pub async fn start(o: UpOptions) -> Result<(LocalCluster, &'static str), UpError> {
        let dir = &o.dir;
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(io(format!("create {}", logs.display())))?;
        let certs = dir.join("certs");
        if !certs.join("ca.pem").exists() {
            let specs = ["a", "b", "w"]
                .iter()
                .map(|n| vigil_net::runtime::tls::NodeSpec::parse(n))
                .collect::<Result<Vec<_>, _>>()?;
            vigil_net::runtime::tls::make_cluster(&certs, "local", &specs)?;
            say!(
                "made a cluster CA and certificates for a, b and w in {}",
                certs.display()
            );
        } else {
            say!("reusing {}", dir.display());
        }
        let links = Links::start(&o)?;
        for n in ["a", "b"] {
            let path = dir.join(format!("{n}.toml"));
            std::fs::write(&path, node_config(&o, n, &links)?)
                .map_err(io(format!("write {}", path.display())))?;
        }
        let witness_addr = SocketAddr::from(([127, 0, 0, 1], o.repl_port + 2));
        let mut procs = if o.etcd {
            start_etcd(&o, &logs).await?
        } else {
            vec![Proc::spawn(
                &o.exe,
                "w",
                vec![
                    "witness".into(),
                    "--data".into(),
                    dir.join("w").display().to_string(),
                    "--listen".into(),
                    witness_addr.to_string(),
                    "--certs".into(),
                    certs.display().to_string(),
                    "--node".into(),
                    "w".into(),
                ],
                &logs,
            )?]
        };
        for n in ["a", "b"] {
            let config = dir.join(format!("{n}.toml")).display().to_string();
            procs.push(Proc::spawn(
                &o.exe,
                if n == "a" { "a" } else { "b" },
                vec!["serve".into(), "--config".into(), config],
                &logs,
            )?);
        }
        say!(
            "starting: {}, data nodes a and b (logs in {})",
            if o.etcd {
                "etcd members e0, e1, e2"
            } else {
                "witness w"
            },
            logs.display()
        );
        let mut c = LocalCluster {
            opts: o,
            procs,
            links,
        };
        let t0 = Instant::now();
        let mut shown = 0;
        let lead = loop {
            if let Some(l) = leader(&c.opts).await {
                break l;
            }
            for p in c.procs.iter_mut() {
                if let Ok(Some(status)) = p.child.try_wait() {
                    return Err(UpError::NotReady(format!(
                        "{} exited ({status}) while starting; see {}",
                        p.name,
                        p.log.display()
                    )));
                }
            }
            if t0.elapsed() > READY_TIMEOUT {
                return Err(UpError::NotReady(format!(
                    "no leader after {} s; see the logs in {}",
                    READY_TIMEOUT.as_secs(),
                    logs.display()
                )));
            }
            let secs = t0.elapsed().as_secs();
            if secs >= shown + 2 {
                shown = secs;
                say!(
                    "  waiting for the first lease ({secs} s; a new cluster's takes about two lease durations)"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        say!("{lead} leads after {:.1} s", t0.elapsed().as_secs_f64());
        // The follower takes writes (forwarding them) once it reached the
        // leader.
        let other = if lead == "a" { "b" } else { "a" };
        while t0.elapsed() < READY_TIMEOUT {
            let url = c.http(other);
            if let Ok((200, text, _)) = call_with("GET", &url, "/status", None, &[], None).await
                && serde_json::from_str::<serde_json::Value>(&text)
                    .is_ok_and(|v| v["upstream"]["connected"] == true)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok((c, lead))
    }

    /// Node `node`'s FHIR base URL ("a" or "b").
    pub fn http(&self, node: &str) -> String {
        http_of(&self.opts, node)
    }

    /// Which data node leads now, if one does.
    pub async fn leader(&self) -> Option<&'static str> {
        leader(&self.opts).await
    }

    /// The process id of `name` ("a", "b" or "w").
    pub fn pid(&self, name: &str) -> u32 {
        self.procs
            .iter()
            .find(|p| p.name == name)
            .map_or(0, |p| p.child.id())
    }

    /// Sends `sig` to process `name` (SIGSTOP and SIGCONT pause and
    /// resume it).
    pub fn signal(&self, name: &str, sig: rustix::process::Signal) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid(name) as i32) {
            let _ = rustix::process::kill_process(pid, sig);
        }
    }

    /// Kills `name` with SIGKILL, as a crash would.
    pub fn kill(&mut self, name: &str) {
        if let Some(p) = self.procs.iter_mut().find(|p| p.name == name) {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// Cuts every network link of data node `node` (`true`) or heals them;
    /// only for a cluster started with `relays`.
    pub fn isolate(&self, node: &str, cut: bool) {
        self.links.isolate(node, cut);
    }

    /// Cuts (or heals) only data node `node`'s links to the coordinator;
    /// only for a cluster started with `relays`.
    pub fn cut_coordinator(&self, node: &str, cut: bool) {
        self.links.cut_coordinator(node, cut);
    }

    /// The names of the coordinator's processes: `["w"]`, or the etcd
    /// members'.
    pub fn coordinator_procs(&self) -> Vec<&'static str> {
        if self.opts.etcd {
            ETCD_NAMES.to_vec()
        } else {
            vec!["w"]
        }
    }

    /// Starts every process that has exited again; returns their names.
    pub fn restart_exited(&mut self) -> Vec<&'static str> {
        let logs = self.opts.dir.join("logs");
        let mut started = Vec::new();
        for p in self.procs.iter_mut() {
            if let Ok(Some(_)) = p.child.try_wait() {
                match Proc::spawn(&p.exe.clone(), p.name, p.args.clone(), &logs) {
                    // The old one has exited: dropping it only reaps it.
                    Ok(new) => {
                        drop(std::mem::replace(p, new));
                        started.push(p.name);
                    }
                    Err(e) => say!("cannot restart {}: {e}", p.name),
                }
            }
        }
        started
    }

    /// Names of the processes that have exited.
    pub fn exited(&mut self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for p in self.procs.iter_mut() {
            if let Ok(Some(_)) = p.child.try_wait() {
                out.push(p.name);
            }
        }
        out
    }

    /// Stops the data nodes, then the witness (SIGTERM; SIGKILL after 15 s).
    pub fn stop(mut self) {
        for p in self.procs.iter_mut().rev() {
            p.stop();
        }
    }
}

/// Starts the three etcd members (their data under DIR/etcd) and waits
/// until they answer.
async fn start_etcd(o: &UpOptions, logs: &Path) -> Result<Vec<Proc>, UpError> {
    let etcd = Path::new("etcd");
    if Command::new(etcd)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        return Err(UpError::NotReady(
            "--etcd needs etcd installed (on Debian: apt-get install etcd-server)".into(),
        ));
    }
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    let initial = (0..ETCD_MEMBERS)
        .map(|i| format!("{}={}", ETCD_NAMES[i], url(etcd_ports(o, i).1)))
        .collect::<Vec<_>>()
        .join(",");
    let mut procs = Vec::new();
    for (i, name) in ETCD_NAMES.iter().enumerate() {
        let (client, peer) = etcd_ports(o, i);
        let args = [
            "--name",
            name,
            "--data-dir",
            &o.dir.join("etcd").join(name).display().to_string(),
            "--listen-client-urls",
            &url(client),
            "--advertise-client-urls",
            &url(client),
            "--listen-peer-urls",
            &url(peer),
            "--initial-advertise-peer-urls",
            &url(peer),
            "--initial-cluster",
            &initial,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            "vigil-local",
            // Loopback: elections in half a second.
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
            "--logger",
            "zap",
            "--log-level",
            "warn",
        ]
        .map(String::from)
        .to_vec();
        procs.push(Proc::spawn(etcd, name, args, logs)?);
    }
    let t0 = Instant::now();
    for (i, name) in ETCD_NAMES.iter().enumerate() {
        let base = url(etcd_ports(o, i).0);
        loop {
            if let Ok((200, text, _)) = call_with("GET", &base, "/health", None, &[], None).await
                && text.contains("true")
            {
                break;
            }
            if t0.elapsed() > READY_TIMEOUT {
                return Err(UpError::NotReady(format!(
                    "etcd member {name} did not become healthy; see {}",
                    logs.join(format!("{name}.log")).display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(procs)
}

/// Starts the cluster, loads samples into a new one, and runs until
/// SIGINT/SIGTERM. `on_ready` gets the leader's name once it serves.
pub async fn run(o: UpOptions, on_ready: impl FnOnce(&str)) -> Result<(), UpError> {
    if o.patients > PATIENTS_MAX {
        return Err(UpError::NotReady(format!(
            "--patients is at most {PATIENTS_MAX}"
        )));
    }
    let (mut c, lead) = LocalCluster::start(o).await?;
    let marker = c.opts.dir.join("samples-loaded");
    if !marker.exists() && c.opts.patients > 0 {
        load_samples(&c.opts, lead).await?;
        std::fs::write(&marker, c.opts.patients.to_string())
            .map_err(io("write the samples marker"))?;
    }
    print_banner(&c.opts, lead, c.pid(lead));
    on_ready(lead);
    supervise(&mut c).await;
    say!("stopping the cluster");
    c.stop();
    say!("stopped; run `vigil up` again to continue where you left off");
    Ok(())
}

async fn load_samples(o: &UpOptions, lead: &str) -> Result<(), UpError> {
    let url = http_of(o, lead);
    let mut rng = vigil_fhir::synth::Rng::new(20_261_126);
    let t0 = Instant::now();
    let mut last = Instant::now();
    for i in 0..o.patients {
        let bundle = vigil_fhir::synth::transaction_bundle(&mut rng, RECORD_SIZE).to_string();
        match call_with("POST", &url, "/", Some(bundle.into_bytes()), &[], None).await {
            Ok((200, _, _)) => {}
            Ok((status, text, _)) => {
                return Err(UpError::NotReady(format!(
                    "loading sample patient {}: HTTP {status}: {text}",
                    i + 1
                )));
            }
            Err(e) => return Err(UpError::NotReady(format!("loading samples: {e}"))),
        }
        if last.elapsed() >= Duration::from_secs(1) || i + 1 == o.patients {
            last = Instant::now();
            say!(
                "  loaded {}/{} sample patients ({} resources each, {:.0}/s)",
                i + 1,
                o.patients,
                RECORD_SIZE,
                (i + 1) as f64 / t0.elapsed().as_secs_f64().max(1e-3)
            );
        }
    }
    Ok(())
}

fn print_banner(o: &UpOptions, lead: &str, leader_pid: u32) {
    let (a, b) = (http_of(o, "a"), http_of(o, "b"));
    let follower = if lead == "a" { &b } else { &a };
    let leader_url = if lead == "a" { &a } else { &b };
    say!(
        "\nVigil DR cluster up in {dir}
  node a   {a}   {ra}
  node b   {b}   {rb}
  {coordinator}
Both endpoints take reads and writes (a follower forwards writes to the leader).

Try:
  curl -s '{follower}/Patient?_count=2'        # read from the follower (see the lag headers)
  vigil status --url {follower}
  vigil switchover --url {leader_url}           # planned failover, zero loss
  kill -9 {leader_pid}                            # the leader dies: the follower takes over,
                                                #   the old leader restarts and rejoins
  vigil bench --url {leader_url} --workload create --duration 5

Ctrl-C stops everything.",
        dir = o.dir.display(),
        ra = if lead == "a" { "leader" } else { "follower" },
        rb = if lead == "b" { "leader" } else { "follower" },
        coordinator = if o.etcd {
            let urls: Vec<String> = (0..ETCD_MEMBERS)
                .map(|i| format!("http://127.0.0.1:{}", etcd_ports(o, i).0))
                .collect();
            format!("etcd     {}", urls.join(" "))
        } else {
            format!("witness  127.0.0.1:{} (UDP)", o.repl_port + 2)
        },
    );
}

/// Runs until a signal; restarts a process that exits.
async fn supervise(c: &mut LocalCluster) {
    let signal = vigil_fhir::server::shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = &mut signal => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let gone = c.exited();
        if gone.is_empty() {
            continue;
        }
        say!(
            "{} exited; starting it again in {} s (a data node rejoins as a follower)",
            gone.join(", "),
            RESTART_DELAY.as_secs()
        );
        tokio::time::sleep(RESTART_DELAY).await;
        c.restart_exited();
    }
}
