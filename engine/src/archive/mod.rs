//! The continuous log archive's objects ("pieces") and the restore that
//! reads them back. No I/O to object storage here: `net::archive` uploads
//! and lists; this module says what a piece holds, which pieces make one
//! history, and turns them into a store.
//!
//! A **piece** is a run of whole durable frames, byte for byte as the log
//! holds them, with a header naming its LSN range, epochs, commit times,
//! the CRC of the frame before it and of its last frame (so pieces chain
//! as segments do), and, on an encrypted store, the data keys its frames
//! seal under, wrapped under the uploading node's key-encryption key. Its
//! object name carries the same facts (docs/format.md, "Archive"), so a
//! restore plans from a listing alone.
//!
//! **Histories.** Pieces are immutable and created only if absent, so a
//! deposed leader cannot overwrite what its successor wrote; but it may
//! have uploaded frames the cluster then lost (a rejoin's quarantine). A
//! new leader continues after the newest piece its own log agrees with, so
//! pieces form a tree rooted at LSN 1; [`plan_restore`] follows the branch
//! that reaches the highest epoch (the cluster's history: epochs are
//! fenced), then the furthest LSN.

use std::collections::HashMap;

use crate::crypt::WrappedKey;
use crate::error::{Error, Result};
use crate::log::codec::Put;
use crate::log::frame::{FrameHeader, check_frame};
use crate::{RestoreTarget, Store};

mod base;
mod codec;
mod direct;
mod rawlog;
mod restore;

pub use base::{BACKUP_FORMAT, BACKUP_PREFIX, BackupFile, BaseBackup, crc_of_file};
pub use direct::{DIRECT_ALIGN, DirectFile};
pub use restore::ArchiveRestore;

/// The piece format this build writes and reads.
pub const PIECE_FORMAT: u16 = 1;
/// Most log bytes in one piece (a piece is uploaded in one request).
pub const PIECE_BYTES_MAX: usize = 64 << 20;
/// Where pieces live under an archive's prefix.
pub const PIECE_PREFIX: &str = "log/";
/// Most data keys one piece names (a key is taken per segment and open).
const PIECE_KEYS_MAX: usize = 4096;
const MAGIC: &[u8; 8] = b"VGARCHIV";
const SUFFIX: &str = ".vgar";
/// Frames handed to the replica appender at once when restoring.
pub(crate) const APPEND_BYTES: usize = 8 << 20;

/// What a piece's object name says: enough to plan a restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PieceName {
    /// LSN of its first record.
    pub first_lsn: u64,
    /// LSN of its last record.
    pub last_lsn: u64,
    /// Epoch of its last frame.
    pub last_epoch: u64,
    /// CRC of the frame just before it (0 when it starts the log).
    pub prev_crc: u32,
    /// CRC of its last frame.
    pub last_crc: u32,
}

impl PieceName {
    /// Its object name under the archive's prefix:
    /// `log/<first:020>-<last:020>-e<epoch:020>-<prev crc:08x>-<last crc:08x>.vgar`
    /// (zero-padded, so names sort by LSN).
    pub fn object_name(&self) -> String {
        format!(
            "{PIECE_PREFIX}{:020}-{:020}-e{:020}-{:08x}-{:08x}{SUFFIX}",
            self.first_lsn, self.last_lsn, self.last_epoch, self.prev_crc, self.last_crc
        )
    }

    /// Reads an object name made by [`PieceName::object_name`]; anything
    /// else (another tool's object, a temporary upload) is `None`.
    pub fn parse(name: &str) -> Option<Self> {
        let rest = name.strip_prefix(PIECE_PREFIX)?.strip_suffix(SUFFIX)?;
        let mut it = rest.split('-');
        let first_lsn = it.next()?.parse().ok()?;
        let last_lsn = it.next()?.parse().ok()?;
        let last_epoch = it.next()?.strip_prefix('e')?.parse().ok()?;
        let prev_crc = u32::from_str_radix(it.next()?, 16).ok()?;
        let last_crc = u32::from_str_radix(it.next()?, 16).ok()?;
        if it.next().is_some() || first_lsn == 0 || last_lsn < first_lsn {
            return None;
        }
        Some(Self {
            first_lsn,
            last_lsn,
            last_epoch,
            prev_crc,
            last_crc,
        })
    }
}

/// One piece: whole frames and what they need to be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// What its name says.
    pub name: PieceName,
    /// Epoch of its first frame.
    pub first_epoch: u64,
    /// Commit time of its first frame, µs since the Unix epoch.
    pub first_time_us: u64,
    /// Commit time of its last frame.
    pub last_time_us: u64,
    /// Number of frames.
    pub frames: u32,
    /// The data keys its frames seal under, wrapped under the uploading
    /// node's KEK (empty for an unencrypted store).
    pub keys: Vec<(u64, WrappedKey)>,
    /// The frames, as the log holds them.
    pub log: Vec<u8>,
    /// Where each frame starts in `log`, and its header: found (and every
    /// frame checked) once, when the piece is made or read.
    pub(crate) headers: Vec<(usize, FrameHeader)>,
}

/// Walks whole checked frames of `log`: (offset, header).
fn frames_of(log: &[u8]) -> Result<Vec<(usize, FrameHeader)>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < log.len() {
        let h = check_frame(&log[at..])
            .map_err(|e| Error::Corrupt(format!("archive piece: frame at byte {at}: {e}")))?;
        if let Some((_, p)) = out.last() {
            let p: &FrameHeader = p;
            if h.first_lsn != p.end_lsn() || h.epoch < p.epoch || h.timestamp_us < p.timestamp_us {
                return Err(Error::Corrupt(format!(
                    "archive piece: frame at byte {at} does not follow the one before (lsn {} after {}, epoch {} after {})",
                    h.first_lsn,
                    p.end_lsn(),
                    h.epoch,
                    p.epoch
                )));
            }
        }
        out.push((at, h));
        at += h.frame_len() as usize;
    }
    Ok(out)
}

impl Piece {
    /// Builds a piece from whole frames (`prev_crc`: the CRC of the frame
    /// before them), checking each.
    pub fn from_frames(log: Vec<u8>, prev_crc: u32, keys: Vec<(u64, WrappedKey)>) -> Result<Self> {
        let headers = frames_of(&log)?;
        Self::from_checked(log, headers, prev_crc, keys)
    }

    /// A piece of frames already checked: `headers` are theirs.
    fn from_checked(
        log: Vec<u8>,
        headers: Vec<(usize, FrameHeader)>,
        prev_crc: u32,
        keys: Vec<(u64, WrappedKey)>,
    ) -> Result<Self> {
        let (Some((_, first)), Some((_, last))) = (headers.first(), headers.last()) else {
            return Err(Error::Corrupt("archive piece: no frames".into()));
        };
        if keys.len() > PIECE_KEYS_MAX {
            return Err(Error::Corrupt(format!(
                "archive piece: {} data keys, at most {PIECE_KEYS_MAX}",
                keys.len()
            )));
        }
        Ok(Self {
            name: PieceName {
                first_lsn: first.first_lsn,
                last_lsn: last.end_lsn() - 1,
                last_epoch: last.epoch,
                prev_crc,
                last_crc: last.crc,
            },
            first_epoch: first.epoch,
            first_time_us: first.timestamp_us,
            last_time_us: last.timestamp_us,
            frames: u32::try_from(headers.len()).unwrap_or(u32::MAX),
            keys,
            log,
            headers,
        })
    }

    /// Its bytes as stored (docs/format.md, "Archive"): a header whose
    /// CRC covers it, then the frames.
    pub fn encode(&self) -> Vec<u8> {
        let mut head = Vec::with_capacity(128);
        codec::put_opening(&mut head, MAGIC, PIECE_FORMAT);
        head.put_u64(self.name.first_lsn);
        head.put_u64(self.name.last_lsn);
        head.put_u64(self.first_epoch);
        head.put_u64(self.name.last_epoch);
        head.put_u64(self.first_time_us);
        head.put_u64(self.last_time_us);
        head.put_u32(self.frames);
        head.put_u32(self.name.prev_crc);
        head.put_u32(self.name.last_crc);
        codec::put_keys(&mut head, &self.keys);
        head.put_u64(self.log.len() as u64);
        let crc = crc32fast::hash(&head);
        head.put_u32(crc);
        head.extend_from_slice(&self.log);
        head
    }

    /// Reads a piece, checking its header's CRC, every frame's CRC, that
    /// the frames are dense and agree with the header.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (header, head_len) = Self::decode_head(bytes)?;
        header.with_frames(bytes[head_len..].to_vec())
    }

    /// [`Piece::decode`] of bytes it may keep: the frames stay where they
    /// were read into, not copied (a piece is up to 64 MiB).
    pub fn decode_owned(mut bytes: Vec<u8>) -> Result<Self> {
        let (header, head_len) = Self::decode_head(&bytes)?;
        bytes.drain(..head_len);
        header.with_frames(bytes)
    }

    /// The piece its header describes (its keys, no log or frame headers) and
    /// the header's length; its CRC checked and the log's length equal to
    /// the bytes after it.
    fn decode_head(bytes: &[u8]) -> Result<(Self, usize)> {
        let bad = |d: String| Error::Corrupt(format!("archive piece: {d}"));
        let dec = |e: crate::DecodeError| bad(e.to_string());
        let mut r = codec::read_opening(bytes, MAGIC, PIECE_FORMAT, "archive piece")?;
        let first_lsn = r.u64("first_lsn").map_err(dec)?;
        let last_lsn = r.u64("last_lsn").map_err(dec)?;
        let first_epoch = r.u64("first_epoch").map_err(dec)?;
        let last_epoch = r.u64("last_epoch").map_err(dec)?;
        let first_time_us = r.u64("first_time").map_err(dec)?;
        let last_time_us = r.u64("last_time").map_err(dec)?;
        let frames = r.u32("frames").map_err(dec)?;
        let prev_crc = r.u32("prev_crc").map_err(dec)?;
        let last_crc = r.u32("last_crc").map_err(dec)?;
        let keys = codec::read_keys(&mut r, PIECE_KEYS_MAX, "archive piece")?;
        let log_len = r.u64("log length").map_err(dec)?;
        let head_len = bytes.len() - r.remaining();
        let crc = r.u32("header crc").map_err(dec)?;
        if crc32fast::hash(&bytes[..head_len]) != crc {
            return Err(bad("header CRC does not match".into()));
        }
        if log_len > PIECE_BYTES_MAX as u64 + (1 << 20) || log_len != r.remaining() as u64 {
            return Err(bad(format!(
                "{log_len} bytes of log announced, {} present",
                r.remaining()
            )));
        }
        let header = Self {
            name: PieceName {
                first_lsn,
                last_lsn,
                last_epoch,
                prev_crc,
                last_crc,
            },
            first_epoch,
            first_time_us,
            last_time_us,
            frames,
            keys,
            log: Vec::new(),
            headers: Vec::new(),
        };
        Ok((header, bytes.len() - r.remaining()))
    }

    /// Checks `log` (the bytes after the header) against what the header
    /// says, and takes it as the piece's frames.
    fn with_frames(self, log: Vec<u8>) -> Result<Self> {
        let bad = |d: String| Error::Corrupt(format!("archive piece: {d}"));
        let mut header = self;
        let keys = std::mem::take(&mut header.keys);
        let piece = Self::from_frames(log, header.name.prev_crc, keys)?;
        if (
            piece.name,
            piece.first_epoch,
            piece.first_time_us,
            piece.last_time_us,
            piece.frames,
        ) != (
            header.name,
            header.first_epoch,
            header.first_time_us,
            header.last_time_us,
            header.frames,
        ) {
            return Err(bad("the header does not describe its frames".into()));
        }
        Ok(piece)
    }

    /// Each frame's last LSN, CRC and commit time, in order.
    pub fn frame_ends(&self) -> impl Iterator<Item = (u64, u32, u64)> + '_ {
        self.headers
            .iter()
            .map(|(_, h)| (h.end_lsn() - 1, h.crc, h.timestamp_us))
    }

    /// The piece cut to the frames at or before `target` (`None`: none).
    pub fn cut_to(self, target: RestoreTarget) -> Result<Option<Self>> {
        let keep = |h: &FrameHeader| match target {
            RestoreTarget::Latest => true,
            RestoreTarget::Lsn(n) => h.end_lsn() - 1 <= n,
            RestoreTarget::Time(t) => h.timestamp_us <= t,
        };
        let kept = self.headers.iter().take_while(|(_, h)| keep(h)).count();
        if kept == self.headers.len() {
            return Ok(Some(self));
        }
        if kept == 0 {
            return Ok(None);
        }
        let (at, h) = self.headers[kept - 1];
        let (mut log, mut headers) = (self.log, self.headers);
        log.truncate(at + h.frame_len() as usize);
        headers.truncate(kept);
        Self::from_checked(log, headers, self.name.prev_crc, self.keys).map(Some)
    }
}

impl Store {
    /// The next piece of this store's archive: its durable frames from
    /// `from_lsn` (a frame start), at most `max_bytes` of them (at least
    /// one frame), with the data keys they seal under wrapped under this
    /// store's KEK. `None` when the log holds nothing durable there yet.
    pub fn archive_piece(&self, from_lsn: u64, max_bytes: usize) -> Result<Option<Piece>> {
        let prev_crc = if from_lsn <= 1 {
            0
        } else {
            match self.frame_ending_at(from_lsn - 1)? {
                Some(h) => h.crc,
                None => {
                    return Err(Error::NotAFrameStart {
                        lsn: from_lsn,
                        why: "no frame of this log ends just before it".into(),
                    });
                }
            }
        };
        let mut log = Vec::new();
        let mut key_ids: Vec<u64> = Vec::new();
        let mut next = from_lsn;
        while log.len() < max_bytes {
            let Some(chunk) = self.read_log(next, max_bytes - log.len())? else {
                break;
            };
            if !log.is_empty() && log.len() + chunk.bytes.len() > max_bytes {
                break;
            }
            next = chunk.end_lsn;
            log.extend_from_slice(&chunk.bytes);
            for (id, _) in &chunk.data_keys {
                if !key_ids.contains(id) {
                    key_ids.push(*id);
                }
            }
        }
        if log.is_empty() {
            return Ok(None);
        }
        let keys = match self.inner.log.dicts.keys() {
            Some(k) => key_ids
                .into_iter()
                .map(|id| {
                    k.wrapped(id).map(|w| (id, w)).ok_or_else(|| {
                        Error::Corrupt(format!(
                            "data key {id:016x} of the log is not in the data-keys file"
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        Piece::from_frames(log, prev_crc, keys).map(Some)
    }

    /// Whether this log holds the piece `name`'s last frame as it is
    /// (same LSN, epoch and CRC): the archive can continue after it.
    pub fn agrees_with_piece(&self, name: &PieceName) -> Result<bool> {
        Ok(self
            .frame_ending_at(name.last_lsn)?
            .is_some_and(|h| h.crc == name.last_crc && h.epoch == name.last_epoch))
    }
}

/// Where an archive continues for a leader whose log is `store`: after
/// the newest piece (by LSN) whose last frame this log holds as it is, or
/// at LSN 1. Pieces past it that the log does not hold are a deposed
/// leader's lost frames; the new pieces branch off before them.
pub fn archive_resume_lsn(store: &Store, names: &[PieceName]) -> Result<u64> {
    let mut sorted: Vec<&PieceName> = names.iter().collect();
    sorted.sort_by_key(|n| std::cmp::Reverse(n.last_lsn));
    for n in sorted {
        if n.last_lsn <= store.log_end().lsn && store.agrees_with_piece(n)? {
            return Ok(n.last_lsn + 1);
        }
    }
    Ok(1)
}

/// The pieces of the cluster's history, in order: from LSN 1, following
/// chained pieces (first LSN and previous CRC matching the last piece's
/// end), choosing at each fork the branch that reaches the highest epoch,
/// then the furthest LSN. Empty when no piece starts the log.
pub fn plan_restore(names: &[PieceName]) -> Vec<PieceName> {
    // Nodes are (next lsn, crc of the frame before it); a piece is an edge.
    let mut out_of: HashMap<(u64, u32), Vec<PieceName>> = HashMap::new();
    for n in names {
        out_of
            .entry((n.first_lsn, n.prev_crc))
            .or_default()
            .push(*n);
    }
    // Best (epoch reached, lsn reached, path) from each node, computed
    // from the furthest nodes back (edges always move forward).
    let mut sorted: Vec<PieceName> = names.to_vec();
    sorted.sort_by_key(|n| std::cmp::Reverse(n.first_lsn));
    let mut best: HashMap<(u64, u32), (u64, u64, PieceName)> = HashMap::new();
    for n in &sorted {
        let node = (n.first_lsn, n.prev_crc);
        let after = best.get(&(n.last_lsn + 1, n.last_crc));
        let score = after.map_or((n.last_epoch, n.last_lsn), |(e, l, _)| {
            ((*e).max(n.last_epoch), *l)
        });
        let better = best.get(&node).is_none_or(|(e, l, _)| score > (*e, *l));
        if better {
            best.insert(node, (score.0, score.1, *n));
        }
    }
    let mut path = Vec::new();
    let mut at = (1u64, 0u32);
    while let Some((_, _, n)) = best.get(&at) {
        path.push(*n);
        at = (n.last_lsn + 1, n.last_crc);
        assert!(
            path.len() <= names.len(),
            "a restore plan visits each piece once"
        );
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Batch, Op, Options};
    use std::path::Path;
    use std::sync::Arc;

    fn name(first: u64, last: u64, epoch: u64, prev: u32, crc: u32) -> PieceName {
        PieceName {
            first_lsn: first,
            last_lsn: last,
            last_epoch: epoch,
            prev_crc: prev,
            last_crc: crc,
        }
    }

    #[test]
    fn names_round_trip_and_sort_by_lsn() {
        let n = name(11, 20, 3, 0xdead_beef, 7);
        assert_eq!(PieceName::parse(&n.object_name()), Some(n));
        let a = name(9, 10, 1, 1, 2).object_name();
        let b = n.object_name();
        assert!(a < b, "zero-padded names sort by LSN");
        for bad in [
            "log/x.vgar",
            "log/00000000000000000011-00000000000000000020-e3-deadbeef-00000007",
            "other/00000000000000000011-00000000000000000020-e00000000000000000003-deadbeef-00000007.vgar",
            "log/00000000000000000020-00000000000000000011-e00000000000000000003-deadbeef-00000007.vgar",
            "log/00000000000000000000-00000000000000000011-e00000000000000000003-deadbeef-00000007.vgar",
        ] {
            assert_eq!(PieceName::parse(bad), None, "{bad}");
        }
    }

    /// A fork: a deposed leader (epoch 3) archived 21..=30, which the
    /// cluster lost; its successor (epoch 4) archived 21..=25 (agreed
    /// frames and its own) and 26..=40. The plan follows epoch 4.
    #[test]
    fn the_plan_follows_the_branch_of_the_highest_epoch() {
        let root = [name(1, 10, 1, 0, 10), name(11, 20, 3, 10, 20)];
        let deposed = name(21, 30, 3, 20, 30);
        let new = [name(21, 25, 3, 20, 25), name(26, 40, 4, 25, 40)];
        let mut all = vec![root[0], root[1], deposed, new[0], new[1]];
        all.reverse();
        assert_eq!(plan_restore(&all), vec![root[0], root[1], new[0], new[1]]);
        // Before the successor uploaded past the fork, the deposed branch
        // is the furthest there is (ties on epoch go to the longer).
        assert_eq!(
            plan_restore(&[root[0], root[1], deposed, new[0]]),
            vec![root[0], root[1], deposed]
        );
        // Nothing starts the log: no plan. A gap ends it.
        assert!(plan_restore(&[root[1]]).is_empty());
        assert_eq!(
            plan_restore(&[root[0], name(12, 20, 1, 10, 20)]),
            vec![root[0]]
        );
        // A piece that does not chain (another CRC before it) is not taken.
        assert_eq!(
            plan_restore(&[root[0], name(11, 20, 9, 99, 20)]),
            vec![root[0]]
        );
    }

    pub(super) fn store_with_log(dir: &Path) -> Store {
        let store = Store::open(dir).expect("open");
        for i in 0..20u64 {
            let mut b = Batch::new();
            b.push(Op::put(
                "Patient",
                format!("p{}", i % 4),
                format!(r#"{{"resourceType":"Patient","n":{i}}}"#).into_bytes(),
            ));
            store.commit(b).expect("commit");
        }
        store
    }

    #[test]
    fn a_piece_round_trips_and_damage_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store_with_log(dir.path());
        let piece = store
            .archive_piece(1, PIECE_BYTES_MAX)
            .expect("piece")
            .expect("frames");
        assert_eq!(piece.name.first_lsn, 1);
        assert_eq!(piece.name.last_lsn, store.last_lsn());
        assert_eq!(piece.name.prev_crc, 0);
        let bytes = piece.encode();
        assert_eq!(Piece::decode(&bytes).expect("decode"), piece);
        assert_eq!(
            Piece::decode_owned(bytes.clone()).expect("decode owned"),
            piece
        );
        // Every single-byte change and every truncation is refused, by
        // both.
        for at in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(Piece::decode(&bad).is_err(), "flip at {at}");
            assert!(Piece::decode_owned(bad).is_err(), "flip at {at}");
        }
        for len in (0..bytes.len()).step_by(13) {
            assert!(Piece::decode(&bytes[..len]).is_err(), "cut at {len}");
            assert!(
                Piece::decode_owned(bytes[..len].to_vec()).is_err(),
                "cut at {len}"
            );
        }
        // A later piece chains to the one before.
        let half = store.archive_piece(1, 200).expect("piece").expect("frames");
        let rest = store
            .archive_piece(half.name.last_lsn + 1, PIECE_BYTES_MAX)
            .expect("piece")
            .expect("frames");
        assert_eq!(rest.name.prev_crc, half.name.last_crc);
        assert!(store.agrees_with_piece(&half.name).expect("agree"));
        assert!(
            !store
                .agrees_with_piece(&PieceName {
                    last_crc: half.name.last_crc ^ 1,
                    ..half.name
                })
                .expect("agree")
        );
        assert_eq!(
            archive_resume_lsn(&store, &[half.name]).expect("resume"),
            half.name.last_lsn + 1
        );
        assert_eq!(
            store
                .archive_piece(store.last_lsn() + 1, 1 << 20)
                .expect("none"),
            None
        );
    }

    struct Frozen;
    impl crate::Clock for Frozen {
        fn now_us(&self) -> u64 {
            1_700_000_000_000_000
        }
    }

    /// The piece format, pinned: a change needs a new format version and
    /// a note in docs/format.md. `VIGIL_BLESS=1` writes the file anew.
    #[test]
    fn the_piece_format_is_pinned() {
        let golden =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/archive_piece_v1.bin");
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open_with(
            dir.path(),
            Options {
                clock: Arc::new(Frozen),
                ..Options::default()
            },
        )
        .expect("open");
        let mut b = Batch::new();
        b.push(Op::put(
            "Patient",
            "a",
            br#"{"resourceType":"Patient","id":"a"}"#.to_vec(),
        ));
        store.commit(b).expect("commit");
        let piece = store
            .archive_piece(1, PIECE_BYTES_MAX)
            .expect("piece")
            .expect("frames");
        if std::env::var_os("VIGIL_BLESS").is_some() {
            std::fs::write(&golden, piece.encode()).expect("bless");
        }
        let pinned = std::fs::read(&golden).expect("golden piece");
        let decoded = Piece::decode(&pinned).expect("the pinned piece decodes");
        assert_eq!(decoded.name.first_lsn, 1);
        assert_eq!(&pinned[..8], b"VGARCHIV");
        assert_eq!(&pinned[8..10], &PIECE_FORMAT.to_le_bytes());
        assert_eq!(decoded.encode(), pinned, "encoding is stable");
    }
}
