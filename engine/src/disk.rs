//! Free space on the store's file system, and the reserve below which
//! client writes stop.
//!
//! The reserve keeps room for the work that protects or frees data when
//! the disk fills: index commits, search-key flushes and merges, the cut of
//! a rejoin, a backup's temporary files and a clean shutdown. Below it the
//! writer refuses commits (and a replica's appends) with
//! [`Error::DiskFull`]; internal records (an `EpochStart`, a checkpoint)
//! still go through.

use std::path::Path;

use crate::error::{Error, Result};

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

/// Refuses a client write of `bytes` into `dir` that would leave less than
/// `reserve_bytes` free. A file system that cannot be measured is not a
/// reason to refuse (the write itself then finds out).
pub(crate) fn check_reserve(dir: &Path, reserve_bytes: u64, bytes: u64) -> Result<()> {
    if reserve_bytes == 0 {
        return Ok(());
    }
    match space(dir, reserve_bytes) {
        Ok(s) if !s.fits(bytes) => Err(Error::DiskFull {
            op: "commit",
            path: dir.to_owned(),
            detail: format!(
                "{} bytes free; writes stop {} bytes before the disk is full (disk_reserve_bytes)",
                s.free_bytes, s.reserve_bytes
            ),
        }),
        _ => Ok(()),
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
        assert!(check_reserve(d.path(), 0, u64::MAX).is_ok(), "no reserve");
        assert!(check_reserve(d.path(), 1, 0).is_ok());
        let e = check_reserve(d.path(), s.total_bytes + 1, 0).expect_err("more than the disk");
        assert!(e.is_disk_full(), "{e}");
        assert!(e.to_string().contains("disk_reserve_bytes"), "{e}");
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
