//! A store rebuilt from archive pieces, applied in plan order, in one of
//! two ways: through the replica appender, which indexes every version as
//! it appends (the store serves as soon as the restore returns); or, when
//! a base backup's index is to be laid beside the log, as raw segment
//! files ([`rawlog`](super::rawlog)), so that opening the store replays
//! only the frames after the backup.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::rawlog::RawLog;
use super::{APPEND_BYTES, Piece};
use crate::crypt::datakeys::DataKeys;
use crate::crypt::{Kek, WrappedKey};
use crate::error::{Error, Result};
use crate::{Options, RestoreTarget, Store};

/// A store being restored from archive pieces, applied in plan order.
pub struct ArchiveRestore {
    sink: Sink,
    dir: PathBuf,
    kek: Option<Arc<dyn Kek>>,
    target: RestoreTarget,
    next_lsn: u64,
    prev_crc: u32,
    last_time_us: u64,
    done: bool,
    /// The frame (LSN, CRC) a base backup's index ends at, and whether
    /// the restored log holds it.
    index_at: Option<(u64, u32)>,
    index_found: bool,
}

/// Where restored frames go.
enum Sink {
    /// A replica store, indexing as it appends.
    Indexed(Store),
    /// Segment files; the data keys once the first arrive.
    Raw(Box<RawLog>, Option<DataKeys>),
}

impl std::fmt::Debug for ArchiveRestore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveRestore")
            .field("next_lsn", &self.next_lsn)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl ArchiveRestore {
    /// Starts a restore into `dir`, which must not hold a store, indexed
    /// as it is appended: the store is opened with `opts` (its key
    /// extractor and KEK: those the restored store will be opened with,
    /// else its first open rebuilds the index). The KEK unwraps the
    /// pieces' data keys and wraps them for the new store; it is required
    /// when they hold any.
    pub fn create(dir: &Path, opts: Options, target: RestoreTarget) -> Result<Self> {
        if dir.join("wal").exists() {
            return Err(Error::Restore(format!(
                "{} already holds a store; restore into a new directory",
                dir.display()
            )));
        }
        let kek = opts.kek.clone();
        let store = Store::open_with(
            dir,
            Options {
                replica: true,
                ..opts
            },
        )?;
        Ok(Self::new(dir, Sink::Indexed(store), kek, target, None))
    }

    /// Starts a restore into `dir` (which must not hold a store) that
    /// writes the log only, for the index of the base backup `base`, laid
    /// beside it afterwards if [`Self::index_fits`]: up to the backup's
    /// frame in the backup's segments, after it in segments of at most
    /// `segment_bytes`. `kek` unwraps the pieces' data keys and wraps them
    /// for the new store.
    pub fn create_log_only(
        dir: &Path,
        kek: Option<Arc<dyn Kek>>,
        target: RestoreTarget,
        base: &super::BaseBackup,
        segment_bytes: u64,
    ) -> Result<Self> {
        let raw = RawLog::create(dir, segment_bytes, &base.segments, base.lsn)?;
        Ok(Self::new(
            dir,
            Sink::Raw(Box::new(raw), None),
            kek,
            target,
            Some((base.lsn, base.crc)),
        ))
    }

    fn new(
        dir: &Path,
        sink: Sink,
        kek: Option<Arc<dyn Kek>>,
        target: RestoreTarget,
        index_at: Option<(u64, u32)>,
    ) -> Self {
        Self {
            sink,
            dir: dir.to_owned(),
            kek,
            target,
            next_lsn: 1,
            prev_crc: 0,
            last_time_us: 0,
            done: false,
            index_at,
            index_found: false,
        }
    }

    /// Whether the restored log holds the frame the base backup's index
    /// ends at, as it was: that index can then be laid beside it (else
    /// the first open builds one from the log).
    pub fn index_fits(&self) -> bool {
        match (&self.sink, self.index_at) {
            (Sink::Raw(raw, _), Some((lsn, _))) => self.index_found && raw.laid_out_to(lsn),
            _ => false,
        }
    }

    /// Takes data keys (wrapped under the KEK of the node that wrote them:
    /// a piece's, or a base backup's) into the new store, rewrapped under
    /// its own KEK. `whose` names where they came from, for errors.
    pub fn import_keys(&mut self, keys: &[(u64, WrappedKey)], whose: &str) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let Some(kek) = &self.kek else {
            return Err(Error::KeyNeeded {
                dir: self.dir.clone(),
            });
        };
        let mut plain = Vec::with_capacity(keys.len());
        for (id, w) in keys {
            let key = kek.unwrap(w).map_err(|source| Error::Crypt {
                context: format!(
                    "unwrapping data key {id:016x} of {whose} (wrapped under {} v{})",
                    w.kek, w.version
                ),
                source,
            })?;
            plain.push((*id, key));
        }
        match &mut self.sink {
            Sink::Indexed(store) => store.import_data_keys(&plain),
            Sink::Raw(_, held) => {
                if held.is_none() {
                    *held = Some(DataKeys::open(&self.dir, kek.clone())?);
                }
                let held = held.as_ref().expect("opened just above");
                for (id, key) in plain {
                    held.import(id, key)?;
                }
                Ok(())
            }
        }
    }

    /// The LSN the next piece must start at.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Whether the target is reached (later pieces are not needed).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Appends the piece's frames up to the target. The piece must follow
    /// the last one applied (its first LSN and previous CRC).
    pub fn apply(&mut self, piece: Piece) -> Result<()> {
        if self.done {
            return Ok(());
        }
        if piece.name.first_lsn != self.next_lsn || piece.name.prev_crc != self.prev_crc {
            return Err(Error::Restore(format!(
                "archive piece {} does not follow lsn {} (crc {:08x})",
                piece.name.object_name(),
                self.next_lsn - 1,
                self.prev_crc
            )));
        }
        let whole = piece.name;
        let Some(piece) = piece.cut_to(self.target)? else {
            self.done = true;
            return Ok(());
        };
        if piece.name != whole {
            self.done = true;
        }
        let whose = format!("archive piece {}", piece.name.object_name());
        self.import_keys(&piece.keys, &whose)?;
        if let Some((lsn, crc)) = self.index_at
            && piece
                .headers
                .iter()
                .any(|(_, h)| h.end_lsn() - 1 == lsn && h.crc == crc)
        {
            self.index_found = true;
        }
        match &mut self.sink {
            Sink::Indexed(store) => {
                let mut start = 0usize;
                for (i, (at, h)) in piece.headers.iter().enumerate() {
                    let end = at + h.frame_len() as usize;
                    let last = i + 1 == piece.headers.len();
                    if end - start >= APPEND_BYTES || last {
                        store.append_log(piece.log[start..end].to_vec())?;
                        start = end;
                    }
                }
            }
            Sink::Raw(raw, _) => raw.append(&piece.log, &piece.headers, piece.name.prev_crc)?,
        }
        self.next_lsn = piece.name.last_lsn + 1;
        self.prev_crc = piece.name.last_crc;
        self.last_time_us = piece.last_time_us;
        if matches!(self.target, RestoreTarget::Lsn(n) if n <= piece.name.last_lsn) {
            self.done = true;
        }
        Ok(())
    }

    /// Makes the restored store durable and closes it: what it holds.
    pub fn finish(self) -> Result<crate::RestoreReport> {
        if self.next_lsn == 1 {
            return Err(Error::Restore(
                "nothing in the archive is at or before the point asked".into(),
            ));
        }
        let mut report = crate::RestoreReport {
            last_lsn: self.next_lsn - 1,
            last_timestamp_us: self.last_time_us,
            segments: 0,
        };
        match self.sink {
            Sink::Indexed(store) => store.close()?,
            Sink::Raw(raw, _) => report.segments = raw.finish()?,
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::PIECE_BYTES_MAX;
    use crate::archive::tests::store_with_log;

    #[test]
    fn a_restore_cuts_at_the_target_and_refuses_a_piece_out_of_order() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store_with_log(dir.path());
        let a = store.archive_piece(1, 300).expect("piece").expect("frames");
        let b = store
            .archive_piece(a.name.last_lsn + 1, PIECE_BYTES_MAX)
            .expect("piece")
            .expect("frames");
        let to = tempfile::tempdir().expect("dir");
        let mut r = ArchiveRestore::create(
            to.path(),
            Options::default(),
            RestoreTarget::Lsn(a.name.last_lsn + 2),
        )
        .expect("create");
        let e = r.apply(b.clone()).expect_err("out of order");
        assert!(e.to_string().contains("does not follow"), "{e}");
        r.apply(a.clone()).expect("a");
        assert!(!r.is_done());
        r.apply(b).expect("b");
        assert!(r.is_done());
        let report = r.finish().expect("finish");
        assert_eq!(report.last_lsn, a.name.last_lsn + 2);
        let restored = Store::open(to.path()).expect("open");
        assert_eq!(restored.last_lsn(), a.name.last_lsn + 2);
    }
}
