//! Time for `lastUpdated`: wall-clock microseconds, made monotonic.

use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in microseconds since the Unix epoch.
///
/// The store never lets timestamps go backwards in LSN order, whatever
/// this returns (see [`next_timestamp`]); tests pass a clock that steps
/// back to check that.
pub trait Clock: Send + Sync + 'static {
    /// The current time in microseconds since the Unix epoch.
    fn now_us(&self) -> u64;
}

/// The system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> u64 {
        // A clock before 1970 is a broken machine; clamp rather than panic:
        // monotonicity below still holds.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
}

/// The timestamp for the next frame: the wall clock, but never earlier than
/// the previous frame's.
pub(crate) fn next_timestamp(clock: &dyn Clock, last_us: u64) -> u64 {
    clock.now_us().max(last_us)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(u64);
    impl Clock for Fixed {
        fn now_us(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn a_clock_stepping_back_does_not_move_timestamps_back() {
        assert_eq!(next_timestamp(&Fixed(100), 50), 100);
        assert_eq!(next_timestamp(&Fixed(10), 50), 50);
    }
}
