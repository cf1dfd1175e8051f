//! The leader's durable record of which followers may be promoted.
//!
//! `max_lag` is a promise: a follower whose durable watermark is further
//! behind than that is *ineligible*, and the record says so on disk before
//! the leader acknowledges another write. The decision itself is the pure
//! function [`decide`]; [`EligibilityFile`] persists it (one line per
//! follower, written to a temporary file, fsynced, renamed, directory
//! fsynced). The failover work moves this record to the witness.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// File name of the record, in the store's directory.
pub const FILE_NAME: &str = "replication-eligibility";
/// Most followers recorded.
const FOLLOWERS_MAX: usize = 64;

/// How much earlier than `max_lag` a follower is marked ineligible: the
/// check runs on a timer and on every acknowledgement, so the mark must be
/// made before the bound is reached, not after.
pub fn margin(max_lag: Duration) -> Duration {
    (max_lag / 4).min(Duration::from_millis(200))
}

/// Whether a follower with `lag` (age of the oldest write it lacks
/// durably) is eligible, given whether it `was` and the promise `max_lag`.
/// Synchronous replication (`max_lag = 0`) acknowledges nothing an
/// eligible follower lacks: it stays eligible until the leader gives up
/// waiting for it (see `Node::give_up_on`), and is eligible again once it
/// holds everything (`lag` zero). A follower that broke a bound above zero
/// is eligible again only once back within half of it.
pub fn decide(was: bool, lag: Duration, max_lag: Option<Duration>) -> bool {
    match max_lag {
        None => true,
        Some(m) if m.is_zero() => was || lag.is_zero(),
        Some(m) if was => lag < m.saturating_sub(margin(m)),
        Some(m) => lag <= m / 2,
    }
}

/// One follower's line in the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// May it be promoted?
    pub eligible: bool,
    /// When this state began, µs since the Unix epoch.
    pub since_us: u64,
}

/// The record on disk and in memory.
#[derive(Debug)]
pub struct EligibilityFile {
    path: PathBuf,
    entries: BTreeMap<String, Entry>,
}

impl EligibilityFile {
    /// Loads the record from `dir` (empty if there is none yet). Lines
    /// that do not parse are refused with the line number.
    pub fn load(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(FILE_NAME);
        let mut entries = BTreeMap::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for (i, line) in text.lines().enumerate() {
                    let f: Vec<&str> = line.split(' ').collect();
                    let parsed = match f.as_slice() {
                        [name, state, since] => {
                            let eligible = match *state {
                                "eligible" => Some(true),
                                "ineligible" => Some(false),
                                _ => None,
                            };
                            eligible
                                .zip(since.parse().ok())
                                .map(|(eligible, since_us)| {
                                    ((*name).to_owned(), Entry { eligible, since_us })
                                })
                        }
                        _ => None,
                    };
                    let (name, e) = parsed.ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("{} line {}: {line:?}", path.display(), i + 1),
                        )
                    })?;
                    entries.insert(name, e);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(Self { path, entries })
    }

    /// The recorded state of `node`, if any.
    pub fn get(&self, node: &str) -> Option<Entry> {
        self.entries.get(node).copied()
    }

    /// Records `node`'s state durably if it changed; returns whether it did.
    pub fn set(&mut self, node: &str, eligible: bool, now_us: u64) -> std::io::Result<bool> {
        if self.get(node).is_some_and(|e| e.eligible == eligible) {
            return Ok(false);
        }
        if !self.entries.contains_key(node) && self.entries.len() >= FOLLOWERS_MAX {
            return Err(std::io::Error::other(format!(
                "more than {FOLLOWERS_MAX} followers recorded"
            )));
        }
        let mut next = self.entries.clone();
        next.insert(
            node.to_owned(),
            Entry {
                eligible,
                since_us: now_us,
            },
        );
        let mut text = String::new();
        for (n, e) in &next {
            let state = if e.eligible { "eligible" } else { "ineligible" };
            text.push_str(&format!("{n} {state} {}\n", e.since_us));
        }
        replace_durably(&self.path, text.as_bytes())?;
        self.entries = next;
        Ok(true)
    }
}

/// Replaces the file at `path` with `bytes` so that a crash leaves either
/// the old content or the new, never a mix: a temporary file is written
/// and fsynced, renamed over `path`, and the directory fsynced.
pub(crate) fn replace_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_enforced_early_and_restored_with_hysteresis() {
        let m = Some(Duration::from_secs(1));
        assert!(decide(true, Duration::from_millis(700), m));
        assert!(
            !decide(true, Duration::from_millis(850), m),
            "marked before the bound"
        );
        assert!(
            !decide(false, Duration::from_millis(700), m),
            "not back until half"
        );
        assert!(decide(false, Duration::from_millis(400), m));
        assert!(decide(true, Duration::from_secs(99), Some(Duration::ZERO)));
        assert!(
            !decide(false, Duration::from_millis(1), Some(Duration::ZERO)),
            "synchronous: back only once it holds everything"
        );
        assert!(decide(false, Duration::ZERO, Some(Duration::ZERO)));
        assert!(decide(false, Duration::from_secs(99), None));
    }

    #[test]
    fn the_record_survives_a_reload_and_refuses_garbage() {
        let d = tempfile::tempdir().expect("dir");
        let mut f = EligibilityFile::load(d.path()).expect("load");
        assert!(f.set("b", false, 7).expect("set"));
        assert!(
            !f.set("b", false, 9).expect("set"),
            "unchanged: not rewritten"
        );
        let g = EligibilityFile::load(d.path()).expect("reload");
        assert_eq!(
            g.get("b"),
            Some(Entry {
                eligible: false,
                since_us: 7
            })
        );
        std::fs::write(d.path().join(FILE_NAME), "b maybe 1\n").expect("write");
        assert!(EligibilityFile::load(d.path()).is_err());
    }
}
