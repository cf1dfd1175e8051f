//! A real HAProxy (Debian's `haproxy`, which the test command installs) in
//! the foreground on loopback, killed when the value is dropped. A missing
//! HAProxy fails the test with what to install; it is never skipped.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{ChildGuard, until};

/// A running HAProxy.
#[derive(Debug)]
pub struct HaProxy {
    _dir: tempfile::TempDir,
    _child: ChildGuard,
    /// The frontend's address.
    pub addr: SocketAddr,
}

impl HaProxy {
    /// Runs HAProxy with `config`, whose frontend binds `addr`, and waits
    /// until it accepts connections.
    pub fn start(config: &str, addr: SocketAddr) -> Self {
        let dir = tempfile::tempdir().expect("haproxy dir");
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, config).expect("haproxy.cfg");
        let bin = ["/usr/sbin/haproxy", "haproxy"]
            .into_iter()
            .find(|b| {
                Command::new(b)
                    .arg("-v")
                    .stdout(Stdio::null())
                    .status()
                    .is_ok()
            })
            .unwrap_or_else(|| {
                panic!(
                    "HAProxy is not installed: the README's test command installs it \
                     (Debian's haproxy); these tests never skip"
                )
            });
        let log = std::fs::File::create(dir.path().join("haproxy.log")).expect("log");
        let mut cmd = Command::new(bin);
        cmd.arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let child = ChildGuard(cmd.spawn().expect("haproxy starts"));
        until("HAProxy listens", Duration::from_secs(10), || {
            std::net::TcpStream::connect(addr).is_ok()
        });
        Self {
            _dir: dir,
            _child: child,
            addr,
        }
    }
}
