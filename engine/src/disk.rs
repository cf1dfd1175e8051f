//! Free space on the store's file system, and the reserve below which
//! client writes stop.
//!
//! The reserve keeps room for the work that protects or frees data when
//! the disk fills: index commits, search-key flushes and merges, the cut of
//! a rejoin, a backup's temporary files and a clean shutdown. Below it the
//! writer refuses commits (and a replica's appends) with
//! [`Error::DiskFull`]; internal records (an `EpochStart`, a checkpoint)
//! still go through.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// While far from the reserve, free space is measured at most this often
/// (the bytes written since are subtracted from the last measurement).
const REMEASURE_INTERVAL: Duration = Duration::from_secs(1);
/// Within this much of the reserve, free space is measured for every write.
const PRECISE_MARGIN_BYTES: u64 = 64 * 1024 * 1024;

/// Free and total bytes of the file system holding a store, and the
/// store's reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes an unprivileged writer may still use (`f_bavail`).
    pub free_bytes: u64,
    /// Size of the file system.
    pub total_bytes: u64,
    /// Below this many free bytes client writes are refused.
    pub reserve_bytes: u64,
}

impl DiskSpace {
    /// Whether a write of `bytes` leaves the reserve untouched.
    pub fn fits(&self, bytes: u64) -> bool {
        self.free_bytes >= self.reserve_bytes.saturating_add(bytes)
    }

    /// Whether client writes are available: at least
    /// [`DISK_WRITE_HEADROOM_BYTES`] left above the reserve. What health
    /// checks report, so that a node stops being sent writes as soon as
    /// they start being refused.
    pub fn writable(&self) -> bool {
        self.fits(DISK_WRITE_HEADROOM_BYTES)
    }
}

/// Room above the reserve below which a node reports writes unavailable
/// (a write smaller than this may still fit).
pub const DISK_WRITE_HEADROOM_BYTES: u64 = 1024 * 1024;

/// Measures the file system holding `dir`.
pub(crate) fn space(dir: &Path, reserve_bytes: u64) -> Result<DiskSpace> {
    let st =
        rustix::fs::statvfs(dir).map_err(|e| Error::io("measure free space", dir, e.into()))?;
    Ok(DiskSpace {
        free_bytes: st.f_bavail.saturating_mul(st.f_frsize),
        total_bytes: st.f_blocks.saturating_mul(st.f_frsize),
        reserve_bytes,
    })
}

/// The writer's check of the reserve before each client write: a statvfs
/// per commit group cost a single committer ~20 µs (about a tenth of a
/// commit), so far from the reserve the last measurement, less what was
/// written since, stands in for a new one (for at most a second); within
/// [`PRECISE_MARGIN_BYTES`] of the reserve every write is measured. Other
/// programs' writes within that second are the estimate's only error, and
/// a write the disk then cannot take still fails cleanly as
/// [`Error::DiskFull`].
#[derive(Debug)]
pub(crate) struct ReserveGate {
    dir: PathBuf,
    reserve_bytes: u64,
    /// The last measurement: when, and the free bytes then.
    measured: Option<(Instant, u64)>,
    /// Bytes let through since that measurement.
    written: u64,
}

impl ReserveGate {
    /// A gate for the store in `dir` keeping `reserve_bytes` free (0: off).
    pub(crate) fn new(dir: &Path, reserve_bytes: u64) -> Self {
        Self {
            dir: dir.to_owned(),
            reserve_bytes,
            measured: None,
            written: 0,
        }
    }

    /// Lets a write of `bytes` through, or refuses it with
    /// [`Error::DiskFull`] when it would leave less than the reserve free.
    /// A file system that cannot be measured is not a reason to refuse (the
    /// write itself then finds out).
    pub(crate) fn admit(&mut self, bytes: u64) -> Result<()> {
        if self.reserve_bytes == 0 {
            return Ok(());
        }
        let comfortable = self.reserve_bytes + PRECISE_MARGIN_BYTES + bytes;
        let estimate = self.measured.and_then(|(at, free)| {
            let free = free.saturating_sub(self.written);
            (at.elapsed() < REMEASURE_INTERVAL && free >= comfortable).then_some(free)
        });
        let free = match estimate {
            Some(free) => free,
            None => match space(&self.dir, self.reserve_bytes) {
                Ok(s) => {
                    self.measured = Some((Instant::now(), s.free_bytes));
                    self.written = 0;
                    s.free_bytes
                }
                Err(_) => return Ok(()),
            },
        };
        if free < self.reserve_bytes.saturating_add(bytes) {
            return Err(Error::DiskFull {
                op: "commit",
                path: self.dir.clone(),
                detail: format!(
                    "{free} bytes free; writes stop {} bytes before the disk is full (disk_reserve_bytes)",
                    self.reserve_bytes
                ),
            });
        }
        self.written += bytes;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_refuses_what_would_eat_into_it() {
        let d = tempfile::tempdir().expect("dir");
        let s = space(d.path(), 0).expect("space");
        assert!(s.total_bytes > 0 && s.free_bytes <= s.total_bytes);
        assert!(
            ReserveGate::new(d.path(), 0).admit(u64::MAX).is_ok(),
            "no reserve"
        );
        let mut gate = ReserveGate::new(d.path(), 1);
        assert!(gate.admit(0).is_ok());
        let e = ReserveGate::new(d.path(), s.total_bytes + 1)
            .admit(0)
            .expect_err("more than the disk");
        assert!(e.is_disk_full(), "{e}");
        assert!(e.to_string().contains("disk_reserve_bytes"), "{e}");
        // Far from the reserve, the estimate stands in for a measurement;
        // what is written counts against it, and near the reserve every
        // write is measured.
        let reserve = s.free_bytes.saturating_sub(3 * PRECISE_MARGIN_BYTES);
        let mut gate = ReserveGate::new(d.path(), reserve);
        gate.admit(PRECISE_MARGIN_BYTES)
            .expect("far from the reserve");
        let (at, _) = gate.measured.expect("measured once");
        gate.admit(PRECISE_MARGIN_BYTES / 2).expect("estimated");
        assert_eq!(gate.measured.map(|m| m.0), Some(at), "not measured again");
        assert_eq!(gate.written, PRECISE_MARGIN_BYTES * 3 / 2);
        // 2 margins: too near the reserve to estimate, so measured (the
        // disk itself still has room: nothing was really written).
        gate.admit(2 * PRECISE_MARGIN_BYTES)
            .expect("measured: fits");
        assert_ne!(gate.measured.map(|m| m.0), Some(at), "measured anew");
        let e = gate
            .admit(4 * PRECISE_MARGIN_BYTES)
            .expect_err("past the reserve");
        assert!(e.is_disk_full());
        assert!(
            DiskSpace {
                free_bytes: 10,
                total_bytes: 100,
                reserve_bytes: 4
            }
            .fits(6)
        );
        assert!(
            !DiskSpace {
                free_bytes: 10,
                total_bytes: 100,
                reserve_bytes: 4
            }
            .fits(7)
        );
    }
}
