//! A real etcd cluster of 1 or more members on loopback, for the tests of
//! etcd as the coordinator: each member its own `etcd` process (Debian's
//! `etcd-server`, which the test command installs), killed when the value
//! is dropped. A missing `etcd` fails the test with what to install; it is
//! never skipped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::http::request_with;
use crate::{ChildGuard, free_ports, until};

/// Most members started.
const MEMBERS_MAX: usize = 5;

/// One member.
#[derive(Debug)]
struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<ChildGuard>,
}

/// The files of a member that serves clients over TLS and asks them for a
/// certificate (`--client-cert-auth`).
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// The CA clients' certificates must chain to.
    pub ca: PathBuf,
    /// The member's certificate (for 127.0.0.1).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

/// A running etcd cluster.
#[derive(Debug)]
pub struct Etcd {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    initial: String,
    tls: Option<EtcdTls>,
}

fn base64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

impl Etcd {
    /// Starts `members` members and waits until the cluster answers.
    pub fn start(members: usize) -> Self {
        Self::start_with(members, None)
    }

    /// Starts one member that serves clients only over mutual TLS.
    pub fn start_tls(tls: EtcdTls) -> Self {
        Self::start_with(1, Some(tls))
    }

    fn start_with(members: usize, tls: Option<EtcdTls>) -> Self {
        assert!((1..=MEMBERS_MAX).contains(&members));
        let dir = tempfile::tempdir().expect("etcd dir");
        let (base, _) = free_ports(2 * members as u16, 0);
        let members: Vec<Member> = (0..members)
            .map(|i| Member {
                name: format!("e{i}"),
                client: base + 2 * i as u16,
                peer: base + 2 * i as u16 + 1,
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Self {
            dir,
            members,
            initial,
            tls,
        };
        for i in 0..etcd.members.len() {
            etcd.restart(i);
        }
        etcd.wait_healthy();
        etcd
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.members[i].client)
    }

    fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.members[i].client))
    }

    /// Member `i`'s log file.
    pub fn log(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.members[i].name))
    }

    /// Starts member `i` (again), with its data as it was.
    pub fn restart(&mut self, i: usize) {
        let m = &self.members[i];
        let log = std::fs::File::create(self.log(i)).expect("etcd log");
        let client = self.endpoint(i);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(self.dir.path().join(&m.name))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "vigil-test"])
            // Loopback: elections in half a second, not a second.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"]);
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&t.cert)
                .arg("--key-file")
                .arg(&t.key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "etcd is not installed: the README's test command installs it \
                 (Debian's etcd-server); these tests never skip"
            ),
            Err(e) => panic!("etcd did not start: {e}"),
        };
        self.members[i].child = Some(ChildGuard(child));
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(c) = self.members[i].child.take() {
            let _ = c.kill9();
        }
    }

    /// Stops member `i` where it is (SIGSTOP): it keeps its connections
    /// and answers nothing, as a member cut off would.
    pub fn pause(&self, i: usize) {
        self.signal(i, "STOP");
    }

    /// Lets a paused member go on (SIGCONT).
    pub fn resume(&self, i: usize) {
        self.signal(i, "CONT");
    }

    fn signal(&self, i: usize, sig: &str) {
        let pid = self.members[i].child.as_ref().expect("running").0.id();
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} {pid}");
    }

    /// Waits until every running member says it is healthy (a TLS member:
    /// until it accepts connections, the tests' own client speaks no TLS;
    /// a request may then still wait for its election).
    pub fn wait_healthy(&self) {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                continue;
            }
            if self.tls.is_some() {
                let addr = self.addr(i);
                until("etcd listens", Duration::from_secs(30), || {
                    std::net::TcpStream::connect(addr).is_ok()
                });
                continue;
            }
            let addr = self.addr(i);
            until(
                &format!("etcd member {i} is healthy"),
                Duration::from_secs(30),
                || {
                    request_with(addr, "GET", "/health", None, &[])
                        .is_ok_and(|r| r.status == 200 && r.body.contains("true"))
                },
            );
        }
    }

    /// Key `key`'s value, read from the first running member that answers.
    pub fn get(&self, key: &str) -> Option<String> {
        let body = format!(r#"{{"key":"{}"}}"#, base64(key.as_bytes()));
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                continue;
            }
            let Ok(r) = request_with(
                self.addr(i),
                "POST",
                "/v3/kv/range",
                Some(&body),
                &[("Content-Type", "application/json")],
            ) else {
                continue;
            };
            if r.status != 200 {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(&r.body).expect("etcd json");
            let value = v["kvs"][0]["value"].as_str()?;
            let bytes = B64.decode(value).expect("etcd base64");
            return Some(String::from_utf8(bytes).expect("utf-8"));
        }
        panic!("no etcd member answered a read of {key}")
    }

    /// Turns authentication on with a `root` user of password `password`
    /// (through member 0, before any client needs it).
    pub fn enable_auth(&self, password: &str) {
        let calls = [
            (
                "/v3/auth/user/add",
                format!(r#"{{"name":"root","password":"{password}"}}"#),
            ),
            ("/v3/auth/role/add", r#"{"name":"root"}"#.to_owned()),
            (
                "/v3/auth/user/grant",
                r#"{"user":"root","role":"root"}"#.to_owned(),
            ),
            ("/v3/auth/enable", "{}".to_owned()),
        ];
        for (path, body) in calls {
            let r = request_with(
                self.addr(0),
                "POST",
                path,
                Some(&body),
                &[("Content-Type", "application/json")],
            )
            .expect("etcd auth call");
            assert_eq!(r.status, 200, "{path}: {}", r.body);
        }
    }

    /// Writes `key` (through member 0).
    pub fn put(&self, key: &str, value: &str) {
        let body = format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            base64(key.as_bytes()),
            base64(value.as_bytes())
        );
        let r = request_with(
            self.addr(0),
            "POST",
            "/v3/kv/put",
            Some(&body),
            &[("Content-Type", "application/json")],
        )
        .expect("etcd put");
        assert_eq!(r.status, 200, "{}", r.body);
    }
}
