//! The data directory's free space as the server reports it: samples taken
//! every few seconds give the growth rate and an estimate of when client
//! writes will stop (at the reserve), and a warning is logged when free
//! space falls below the warning threshold.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use vigil_engine::DiskSpace;

/// How often the free space is sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// Samples kept: the growth rate is measured over the last ~5 minutes.
const SAMPLES_MAX: usize = 60;

/// What `/status` and `vigil status` show of the disk.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DiskReport {
    /// Bytes free on the data directory's file system.
    pub free_bytes: u64,
    /// Size of that file system.
    pub total_bytes: u64,
    /// Client writes are refused (507) below this many free bytes.
    pub reserve_bytes: u64,
    /// Whether client writes fit now (free space above the reserve).
    pub writable: bool,
    /// How fast free space shrinks, bytes per second, over the samples
    /// kept (negative: it grows).
    pub growth_bytes_per_second: f64,
    /// At that rate, seconds until writes stop at the reserve (`None`
    /// when free space is not shrinking).
    pub seconds_to_reserve: Option<f64>,
}

/// Free-space samples and the warning state.
#[derive(Debug, Default)]
pub struct DiskWatch {
    inner: Mutex<Watch>,
}

#[derive(Debug, Default)]
struct Watch {
    samples: VecDeque<(Instant, u64)>,
    warned: bool,
}

impl DiskWatch {
    /// Records a sample taken at `at`; logs a warning when free space
    /// falls below `warn_bytes` (once until it rises above again) and
    /// when writes stop at the reserve.
    pub fn sample(&self, at: Instant, space: DiskSpace, warn_bytes: u64) {
        let mut w = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        w.samples.push_back((at, space.free_bytes));
        while w.samples.len() > SAMPLES_MAX {
            w.samples.pop_front();
        }
        let low = space.free_bytes < warn_bytes;
        if low && !w.warned {
            if space.writable() {
                tracing::warn!(
                    free_bytes = space.free_bytes,
                    reserve_bytes = space.reserve_bytes,
                    warn_bytes,
                    "the disk is nearly full: client writes stop at the reserve"
                );
            } else {
                tracing::error!(
                    free_bytes = space.free_bytes,
                    reserve_bytes = space.reserve_bytes,
                    "the disk is full: client writes are refused (507) until space is freed"
                );
            }
        } else if !low && w.warned {
            tracing::info!(
                free_bytes = space.free_bytes,
                "free disk space is above the warning threshold again"
            );
        }
        w.warned = low;
    }

    /// The report for `space` (measured now), with the rate over the
    /// samples kept.
    pub fn report(&self, now: Instant, space: DiskSpace) -> DiskReport {
        let w = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let growth = w
            .samples
            .front()
            .map(|&(at, free)| {
                let secs = now.duration_since(at).as_secs_f64();
                if secs < 1.0 {
                    0.0
                } else {
                    (free as f64 - space.free_bytes as f64) / secs
                }
            })
            .unwrap_or(0.0);
        let left = space.free_bytes.saturating_sub(space.reserve_bytes) as f64;
        DiskReport {
            free_bytes: space.free_bytes,
            total_bytes: space.total_bytes,
            reserve_bytes: space.reserve_bytes,
            writable: space.writable(),
            growth_bytes_per_second: growth,
            seconds_to_reserve: (growth > 0.0).then(|| left / growth),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn space(free: u64) -> DiskSpace {
        DiskSpace {
            free_bytes: free,
            total_bytes: 100 * MIB,
            reserve_bytes: 10 * MIB,
        }
    }

    #[test]
    fn the_rate_and_the_time_to_the_reserve_come_from_the_samples() {
        let w = DiskWatch::default();
        let t0 = Instant::now();
        let r = w.report(t0, space(90 * MIB));
        assert_eq!(
            (r.growth_bytes_per_second, r.seconds_to_reserve),
            (0.0, None)
        );
        w.sample(t0, space(90 * MIB), 40 * MIB);
        let r = w.report(t0 + Duration::from_secs(10), space(80 * MIB));
        assert_eq!(r.growth_bytes_per_second, MIB as f64);
        assert_eq!(
            r.seconds_to_reserve,
            Some(70.0),
            "70 MiB to the reserve at 1 MiB/s"
        );
        assert!(r.writable);
        let r = w.report(t0 + Duration::from_secs(10), space(10 * MIB + 1000));
        assert!(!r.writable, "less than the headroom above the reserve");
        let r = w.report(t0 + Duration::from_secs(10), space(95 * MIB));
        assert_eq!(r.seconds_to_reserve, None, "free space grows");
        let warned = |w: &DiskWatch| w.inner.lock().expect("lock").warned;
        assert!(!warned(&w), "90 MiB free: above the 40 MiB threshold");
        w.sample(t0, space(30 * MIB), 40 * MIB);
        assert!(warned(&w), "below the threshold: warned once");
        w.sample(t0, space(29 * MIB), 40 * MIB);
        assert!(warned(&w));
        w.sample(t0, space(50 * MIB), 40 * MIB);
        assert!(!warned(&w), "above again: the next crossing warns again");
        for i in 0..(SAMPLES_MAX as u64 + 5) {
            w.sample(t0 + Duration::from_secs(i), space(90 * MIB - i), 40 * MIB);
        }
        assert_eq!(w.inner.lock().expect("lock").samples.len(), SAMPLES_MAX);
    }
}
