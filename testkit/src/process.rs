//! Child processes that never outlive a test.

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

/// What a Vigil server prints first, before the address it listens on.
const LISTENING: &str = "vigil listening on http://";

/// A child process killed (SIGKILL) and reaped when dropped, so a failing
/// test never leaves processes behind.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Spawns `cmd` with piped stdout.
    pub fn spawn(mut cmd: Command) -> std::io::Result<Self> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        Ok(Self(cmd.spawn()?))
    }

    /// Spawns a Vigil server (`vigil serve`, a test node) and reads its
    /// first line: the HTTP address it listens on. A server that stops or
    /// prints anything else first is an error quoting that line.
    pub fn spawn_server(cmd: Command) -> std::io::Result<(Self, SocketAddr)> {
        let mut child = Self::spawn(cmd)?;
        let out = child
            .0
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut line = String::new();
        std::io::BufReader::new(out).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix(LISTENING)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("server did not start: {line:?}")))?;
        Ok((child, addr))
    }

    /// Kills with SIGKILL and waits; returns everything it printed.
    pub fn kill9(mut self) -> std::io::Result<String> {
        use std::io::Read;
        self.0.kill()?;
        self.0.wait()?;
        let mut out = String::new();
        if let Some(mut s) = self.0.stdout.take() {
            s.read_to_string(&mut out)?;
        }
        Ok(out)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd` to its end and returns what it printed on stdout; panics
/// with its stdout and stderr when it fails (a test helper).
pub fn output_of(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the command runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}
