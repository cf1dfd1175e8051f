//! Child processes that never outlive a test.

use std::process::{Child, Command, Stdio};

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
