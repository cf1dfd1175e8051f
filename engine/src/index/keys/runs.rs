//! Recent secondary-key changes held in memory as sorted runs.
//!
//! A search-key row written straight into a large redb B-tree lands on a
//! random leaf: every row dirties a 4 KiB page that the next durable
//! commit rewrites, and that was most of a create's CPU (docs/BENCHMARKS.md).
//! So the applier writes each transaction's key changes as a small sorted
//! [`Run`]; runs of similar size are merged in memory, and the key store
//! (`keystore`) writes the oldest runs as one sorted run file
//! (`runfile`). A reader merges the runs over those files, newest first.
//!
//! An entry is `(row, present)`: `present = false` is a removal that hides
//! the row in the file below.

use std::cmp::Ordering;
use std::sync::Arc;

/// Shared immutable bytes: merging runs copies pointers, not rows.
pub(crate) type Bytes = Arc<[u8]>;

/// One change: a key row (as `index::key_row` writes it) and whether it
/// is now present (`false`: removed).
pub(crate) type Entry = (Bytes, bool);

/// Changes of a contiguous stretch of the log, sorted by key, one entry
/// per key (the newest change wins).
#[derive(Debug)]
pub(crate) struct Run {
    /// The LSN of the last frame whose changes it holds.
    pub end_lsn: u64,
    pub entries: Vec<Entry>,
}

impl Run {
    /// A run from sorted, unique entries.
    pub(crate) fn new(end_lsn: u64, entries: Vec<Entry>) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        Self { end_lsn, entries }
    }

    /// The entries with `lo <= key < hi`.
    pub(crate) fn range(&self, lo: &[u8], hi: &[u8]) -> &[Entry] {
        let a = self.entries.partition_point(|(k, _)| k.as_ref() < lo);
        let b = self.entries.partition_point(|(k, _)| k.as_ref() < hi);
        &self.entries[a..b.max(a)]
    }
}

/// The runs a reader merges over the key store's file: every change after
/// `base_lsn` up to the LSN it was published at.
#[derive(Debug, Default)]
pub(crate) struct RunSet {
    /// Changes up to here are in the key store's file.
    pub base_lsn: u64,
    /// Oldest first; each run's changes come after the previous run's.
    pub runs: Vec<Arc<Run>>,
}

/// Merges two sorted runs; on equal keys the newer entry wins. Removals
/// are kept: they must still hide rows in the file below.
pub(crate) fn merge(older: &[Entry], newer: &[Entry]) -> Vec<Entry> {
    let mut out = Vec::with_capacity(older.len() + newer.len());
    let (mut i, mut j) = (0, 0);
    while i < older.len() && j < newer.len() {
        match older[i].0.cmp(&newer[j].0) {
            Ordering::Less => {
                out.push(older[i].clone());
                i += 1;
            }
            Ordering::Greater => {
                out.push(newer[j].clone());
                j += 1;
            }
            Ordering::Equal => {
                out.push(newer[j].clone());
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&older[i..]);
    out.extend_from_slice(&newer[j..]);
    out
}

/// Appends `run` and merges the newest runs while the one before the
/// newest is at most twice its size, never touching the first `frozen`
/// runs (being written to the file). Sizes then fall geometrically from
/// the oldest run, so a reader merges O(log n) runs and each entry is
/// copied O(log n) times.
pub(crate) fn push_run(runs: &mut Vec<Arc<Run>>, run: Run, frozen: usize) {
    runs.push(Arc::new(run));
    while runs.len() >= frozen + 2 {
        let n = runs.len();
        if runs[n - 2].entries.len() > 2 * runs[n - 1].entries.len() {
            break;
        }
        let newer = runs.pop().expect("two runs");
        let older = runs.pop().expect("two runs");
        runs.push(Arc::new(Run::new(
            newer.end_lsn,
            merge(&older.entries, &newer.entries),
        )));
    }
}

/// A row of a merged scan and whether it is present (`false`: removed).
pub(crate) type Row = (Vec<u8>, bool);

/// One source of a merged scan: its keys in order, each with whether it
/// is present. `K` is an owned key (`Vec<u8>`) or a shared one ([`Bytes`]).
pub(crate) type Source<'a, E, K = Vec<u8>> = Box<dyn Iterator<Item = Result<(K, bool), E>> + 'a>;

/// Merges sources given oldest first into one stream in key order, one
/// row per key, where the newest source that has a row decides whether it
/// is present. Removals are passed on (`false`); a scan drops them. Each
/// row costs one key comparison per source.
pub(crate) struct Merged<'a, E, K = Vec<u8>> {
    heads: Vec<Option<(K, bool)>>,
    sources: Vec<Source<'a, E, K>>,
    /// Sources whose head equals the least key, oldest first (reused).
    ties: Vec<usize>,
}

impl<'a, E, K: Ord> Merged<'a, E, K> {
    pub(crate) fn new(sources: Vec<Source<'a, E, K>>) -> Self {
        Self {
            heads: sources.iter().map(|_| None).collect(),
            sources,
            ties: Vec::new(),
        }
    }

    /// Fills the empty heads; the first error ends the scan.
    fn fill(&mut self) -> Result<(), E> {
        for (head, source) in self.heads.iter_mut().zip(self.sources.iter_mut()) {
            if head.is_none() {
                *head = source.next().transpose()?;
            }
        }
        Ok(())
    }
}

impl<E, K: Ord> Iterator for Merged<'_, E, K> {
    type Item = Result<(K, bool), E>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.fill() {
            return Some(Err(e));
        }
        self.ties.clear();
        for (i, head) in self.heads.iter().enumerate() {
            let Some((k, _)) = head else { continue };
            match self.ties.first() {
                None => self.ties.push(i),
                Some(&t) => {
                    let least = &self.heads[t].as_ref().expect("a tie has a head").0;
                    match k.cmp(least) {
                        Ordering::Less => {
                            self.ties.clear();
                            self.ties.push(i);
                        }
                        Ordering::Equal => self.ties.push(i),
                        Ordering::Greater => {}
                    }
                }
            }
        }
        // Oldest to newest: the newest source holding the key wins.
        let &newest = self.ties.last()?;
        for &t in &self.ties[..self.ties.len() - 1] {
            self.heads[t] = None;
        }
        self.heads[newest].take().map(Ok)
    }
}

/// A run's entries as a merge source of owned keys (merged with files).
pub(crate) fn run_source<'a, E: 'a>(entries: &'a [Entry]) -> Source<'a, E> {
    Box::new(entries.iter().map(|(k, p)| Ok((k.to_vec(), *p))))
}

/// A run's entries as a merge source of shared keys (no copies).
pub(crate) fn shared_source<'a, E: 'a>(entries: &'a [Entry]) -> Source<'a, E, Bytes> {
    Box::new(entries.iter().map(|(k, p)| Ok((k.clone(), *p))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn run_of(end_lsn: u64, changes: &[(u8, bool)]) -> Run {
        let m: BTreeMap<u8, bool> = changes.iter().copied().collect();
        Run::new(
            end_lsn,
            m.into_iter()
                .map(|(k, p)| (Arc::from(vec![k]), p))
                .collect(),
        )
    }

    proptest! {
        /// Pushing runs (with merging) then scanning them over a base gives
        /// what applying every change in order to the base gives.
        #[test]
        fn runs_over_a_base_equal_the_changes_applied_in_order(
            base in proptest::collection::btree_set(any::<u8>(), 0..40),
            batches in proptest::collection::vec(
                proptest::collection::vec((any::<u8>(), any::<bool>()), 0..20),
                0..30,
            ),
            frozen_after in 0usize..30,
        ) {
            let mut model = base.clone();
            let mut runs = Vec::new();
            let mut frozen = 0;
            for (i, batch) in batches.iter().enumerate() {
                let mut last = BTreeMap::new();
                for (k, p) in batch {
                    last.insert(*k, *p);
                    match p {
                        true => model.insert(*k),
                        false => model.remove(k),
                    };
                }
                let changes: Vec<_> = last.into_iter().collect();
                push_run(&mut runs, run_of(i as u64 + 1, &changes), frozen);
                if i == frozen_after {
                    frozen = runs.len();
                }
                prop_assert!(runs.windows(2).all(|w| w[0].end_lsn < w[1].end_lsn));
            }
            let base_source: Source<'_, ()> = Box::new(base.iter().map(|k| Ok((vec![*k], true))));
            let mut sources = vec![base_source];
            sources.extend(runs.iter().map(|r| run_source(&r.entries)));
            let scanned: BTreeSet<u8> = Merged::new(sources)
                .filter_map(|r| {
                    let (k, p) = r.expect("no errors");
                    p.then_some(k[0])
                })
                .collect();
            prop_assert_eq!(&scanned, &model);
        }
    }

    #[test]
    fn runs_stay_few_as_they_grow() {
        let mut runs = Vec::new();
        for i in 0..1000u64 {
            push_run(&mut runs, run_of(i + 1, &[((i % 251) as u8, true)]), 0);
            assert!(
                runs.len() <= 12,
                "{} runs after {} pushes",
                runs.len(),
                i + 1
            );
        }
    }

    #[test]
    fn range_is_half_open() {
        let r = run_of(1, &[(1, true), (2, false), (3, true)]);
        let got: Vec<u8> = r.range(&[2], &[3]).iter().map(|e| e.0[0]).collect();
        assert_eq!(got, vec![2]);
        assert!(r.range(&[3], &[3]).is_empty());
    }
}
