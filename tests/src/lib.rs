//! Support for Vigil's cross-crate tests of real processes: a server
//! process from a config file (`NodeProcess`), a two-region cluster with a
//! witness and relays ([`dr`]), a tmpfs that fills up, and the bodies the
//! crash tests write. What every test shares is `vigil-testkit`'s.

use std::net::SocketAddr;
use std::process::Command;

use vigil_testkit::ChildGuard;

pub mod dr;

/// Writes `dir/[node].toml` for a node on loopback (HTTP on a free port,
/// data in `dir/[node]`, warnings only) with `replication`, after
/// `adjust` has set what a test needs besides; returns its path.
pub fn write_node_config(
    dir: &std::path::Path,
    node: &str,
    replication: Option<vigil_fhir::config::replication::ReplicationConfig>,
    adjust: impl FnOnce(&mut vigil_fhir::config::Config),
) -> std::io::Result<std::path::PathBuf> {
    let mut c = vigil_fhir::config::Config {
        data: dir.join(node),
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        log_level: "warn".into(),
        replication,
        ..vigil_fhir::config::Config::default()
    };
    adjust(&mut c);
    let path = dir.join(format!("{node}.toml"));
    std::fs::write(&path, c.to_toml().map_err(std::io::Error::other)?)?;
    Ok(path)
}

/// The replication settings of a fresh two-node cluster `t` — leader `a`
/// listening on a free loopback UDP port, follower `b` pointed at it —
/// with their certificates made under `dir/certs`: (leader's,
/// follower's).
pub fn leader_follower_configs(
    dir: &std::path::Path,
) -> std::io::Result<(
    vigil_fhir::config::replication::ReplicationConfig,
    vigil_fhir::config::replication::ReplicationConfig,
)> {
    use vigil_fhir::config::replication::{ReplicationConfig, ReplicationRole};
    let certs = dir.join("certs");
    let specs = ["a", "b"]
        .map(|n| vigil_net::runtime::tls::NodeSpec::parse(n).map_err(std::io::Error::other));
    let [a, b] = specs;
    vigil_net::runtime::tls::make_cluster(&certs, "t", &[a?, b?]).map_err(std::io::Error::other)?;
    let repl = SocketAddr::from(([127, 0, 0, 1], vigil_testkit::free_udp_port()?));
    let mut leader = ReplicationConfig::new("t", "a", certs.clone(), ReplicationRole::Leader);
    leader.listen = Some(repl);
    let mut follower = ReplicationConfig::new("t", "b", certs, ReplicationRole::Follower);
    follower.leader = Some(repl);
    follower.leader_name = Some("a".into());
    Ok((leader, follower))
}

/// The body the crash child writes for op `n` of batch `batch` of `size` ops.
pub fn crash_body(n: u64, batch: u64, size: u64) -> Vec<u8> {
    format!(
        r#"{{"resourceType":"Observation","id":"c{}","status":"final","n":{n},"batch":{batch},"size":{size},"valueQuantity":{{"value":{}.{:02},"unit":"mg/dL"}},"note":"{}"}}"#,
        n % 40,
        n % 200,
        n % 100,
        "x".repeat((n % 300) as usize)
    )
    .into_bytes()
}

/// A `vigil_node` server process started from a config file; killed
/// (SIGKILL) when dropped.
#[derive(Debug)]
pub struct NodeProcess {
    /// The process.
    pub child: ChildGuard,
    /// Its HTTP address.
    pub http: SocketAddr,
}

impl NodeProcess {
    /// Starts `vigil_node CONFIG` and waits for its "listening" line.
    pub fn start(bin: &str, config: &std::path::Path) -> std::io::Result<Self> {
        Self::start_with(bin, config, &[])
    }

    /// Like [`NodeProcess::start`], with these environment variables
    /// (credentials for object storage, which never go in a config file).
    pub fn start_with(
        bin: &str,
        config: &std::path::Path,
        env: &[(&'static str, String)],
    ) -> std::io::Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.arg(config);
        cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        let (child, http) = ChildGuard::spawn_server(cmd)?;
        Ok(Self { child, http })
    }
}

/// Logs of a test process to stderr, filtered by `RUST_LOG` (default
/// `warn`).
pub fn init_logs() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// A tmpfs of a given size mounted for a test (a real file system that
/// fills up), unmounted when dropped, also when the test fails. Mounting
/// needs root, which CI has; without it the test fails, naming why.
#[derive(Debug)]
pub struct Tmpfs {
    /// Where it is mounted.
    pub path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB.
    pub fn mount(mib: u64) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("fs");
        std::fs::create_dir(&path).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "vigil-test"])
            .arg(&path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test needs a file system of limited size; mounting a tmpfs needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { path, _dir: dir }
    }

    /// Takes `mib` MiB with a file, returned so that deleting it frees
    /// the space again.
    pub fn fill(&self, mib: u64) -> std::path::PathBuf {
        let f = self.path.join("filler");
        std::fs::write(&f, vec![7u8; (mib << 20) as usize]).expect("filler");
        f
    }
}

impl Tmpfs {
    /// Takes every free byte with a file (as another program filling the
    /// disk would), returned so that deleting it frees the space again.
    pub fn fill_all(&self) -> std::path::PathBuf {
        use std::io::Write;
        let f = self.path.join("filler-all");
        let mut file = std::fs::File::create(&f).expect("filler");
        let chunk = vec![7u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.flush();
        f
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A Patient `id` carrying about `bytes` bytes of text that does not
/// compress much (hex digits of a pseudo-random sequence), so that a test
/// fills a small disk in seconds.
pub fn bulky_patient(id: &str, bytes: usize) -> String {
    use std::fmt::Write;
    let mut x = id.bytes().fold(0x9E37_79B9_7F4A_7C15u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    });
    let mut text = String::with_capacity(bytes + 16);
    while text.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let _ = write!(text, "{x:016x}");
    }
    format!(
        r#"{{"resourceType":"Patient","id":"{id}","active":true,"name":[{{"family":"Bulky","given":["{id}"]}}],"text":{{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">{text}</div>"}}}}"#
    )
}

/// Fills `store` with Synthea-like patient records (ten patients per
/// commit, drawn from `seed`: the same seed writes the same records) until
/// `mb` MB of raw JSON are written; returns the bytes of JSON written. The
/// benchmarks' common starting point.
pub fn fill_with_patients(store: &vigil_engine::Store, mb: u64, seed: u64) -> u64 {
    let (mut raw, mut rng) = (0u64, vigil_fhir::synth::Rng::new(seed));
    while raw < mb * 1_000_000 {
        let mut b = vigil_engine::Batch::new();
        for _ in 0..10 {
            for (ty, id, body) in vigil_fhir::synth::patient_record(&mut rng, 60) {
                raw += body.len() as u64;
                b.push(vigil_engine::Op::put(ty, id, body));
            }
        }
        store.commit(b).expect("commit");
    }
    raw
}
