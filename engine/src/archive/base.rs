//! Base backups beside the archive: a copy of the derived index at a
//! frame of the log, so that a store restored from the archive opens by
//! replaying only the frames after it instead of indexing the whole log.
//!
//! A base backup is a set of objects under `backups/<name>/` (the index
//! file and its key store's files, byte for byte) and, written last and
//! create-only, its manifest `backups/<name>.vgbk`: the frame the index
//! ends at (LSN, CRC, epoch, commit time), when it was taken, each file's
//! size and CRC, and on an encrypted store the data keys the index seals
//! under, wrapped under the backing-up node's KEK. A backup without its
//! manifest does not exist. The log itself is never in a base backup: it
//! is the archive's pieces (every version is kept, so a restore always
//! needs the whole log; a base backup only saves indexing it).

use std::path::{Path, PathBuf};

use crate::Store;
use crate::crypt::WrappedKey;
use crate::error::{Error, Result};
use crate::log::codec::Put;
use crate::store::state::INDEX_FILE;

/// The base backup manifest format this build writes and reads.
pub const BACKUP_FORMAT: u16 = 1;
/// Where base backups live under an archive's prefix.
pub const BACKUP_PREFIX: &str = "backups/";
/// The manifest object's name suffix.
const SUFFIX: &str = ".vgbk";
const MAGIC: &[u8; 8] = b"VGBACKUP";
/// Most files a base backup holds (the index and its key run files).
const FILES_MAX: usize = 8192;
/// Most data keys a manifest names.
const KEYS_MAX: usize = 65_536;
/// Most segments a manifest names (a petabyte of 1 GiB segments).
const SEGMENTS_MAX: usize = 1 << 20;
/// Longest file path inside a backup.
const PATH_BYTES_MAX: usize = 256;

/// One file of a base backup: its path inside the backup (`/`-separated),
/// size and CRC-32, and the size of its object (the file as one zstd
/// frame: an index compresses several times over, and its download is
/// most of a restore).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFile {
    /// Path relative to the backup (and to the store directory).
    pub path: String,
    /// Bytes.
    pub bytes: u64,
    /// CRC-32 of the bytes.
    pub crc: u32,
    /// Bytes of its object (compressed).
    pub stored: u64,
}

/// A base backup's manifest: what it holds and where in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBackup {
    /// The frame the index ends at: its last LSN ...
    pub lsn: u64,
    /// ... its CRC ...
    pub crc: u32,
    /// ... its epoch ...
    pub epoch: u64,
    /// ... and its commit time, µs since the Unix epoch.
    pub timestamp_us: u64,
    /// When the backup was taken, µs since the Unix epoch.
    pub taken_us: u64,
    /// Its files.
    pub files: Vec<BackupFile>,
    /// The first LSN of each of the store's segments that starts at or
    /// before `lsn`, ascending: the index names bodies by segment and
    /// offset, so a restore lays the log out in these same segments.
    pub segments: Vec<u64>,
    /// The data keys its files seal under (an encrypted store), wrapped
    /// under the backing-up node's KEK.
    pub keys: Vec<(u64, WrappedKey)>,
}

impl BaseBackup {
    /// The backup's name: its LSN and when it was taken, fixed width, so
    /// names sort by LSN.
    pub fn name(&self) -> String {
        Self::name_of(self.lsn, self.taken_us)
    }

    /// The name of the backup at `lsn` taken at `taken_us` (what
    /// [`Self::parse_manifest_object`] reads back).
    pub fn name_of(lsn: u64, taken_us: u64) -> String {
        format!("{lsn:020}-{taken_us:020}")
    }

    /// The manifest's object name.
    pub fn manifest_object(&self) -> String {
        format!("{BACKUP_PREFIX}{}{SUFFIX}", self.name())
    }

    /// The object name of one of its files (compressed: `.zst`).
    pub fn file_object(&self, file: &BackupFile) -> String {
        format!("{BACKUP_PREFIX}{}/{}.zst", self.name(), file.path)
    }

    /// The (LSN, taken time) a manifest object's name carries, if it is
    /// one (`backups/<lsn:020>-<taken:020>.vgbk`).
    pub fn parse_manifest_object(object: &str) -> Option<(u64, u64)> {
        let stem = object.strip_prefix(BACKUP_PREFIX)?.strip_suffix(SUFFIX)?;
        let (lsn, taken) = stem.split_once('-')?;
        if lsn.len() != 20 || taken.len() != 20 {
            return None;
        }
        Some((lsn.parse().ok()?, taken.parse().ok()?))
    }

    /// The manifest's bytes (docs/format.md, "Base backup").
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(256 + self.files.len() * 48);
        super::codec::put_opening(&mut v, MAGIC, BACKUP_FORMAT);
        v.put_u64(self.lsn);
        v.put_u32(self.crc);
        v.put_u64(self.epoch);
        v.put_u64(self.timestamp_us);
        v.put_u64(self.taken_us);
        v.put_u32(self.files.len() as u32);
        for f in &self.files {
            v.put_u16(f.path.len() as u16);
            v.extend_from_slice(f.path.as_bytes());
            v.put_u64(f.bytes);
            v.put_u32(f.crc);
            v.put_u64(f.stored);
        }
        v.put_u32(self.segments.len() as u32);
        for lsn in &self.segments {
            v.put_u64(*lsn);
        }
        super::codec::put_keys(&mut v, &self.keys);
        let crc = crc32fast::hash(&v);
        v.put_u32(crc);
        v
    }

    /// Reads a manifest, checking its CRC, limits and paths.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = |d: String| Error::Corrupt(format!("base backup manifest: {d}"));
        let dec = |e: crate::DecodeError| bad(e.to_string());
        if bytes.len() < MAGIC.len() + 4 {
            return Err(bad("not a Vigil base backup manifest (too short)".into()));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let mut r = super::codec::read_opening(body, MAGIC, BACKUP_FORMAT, "base backup manifest")?;
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(bad("CRC does not match".into()));
        }
        let lsn = r.u64("lsn").map_err(dec)?;
        let crc = r.u32("crc").map_err(dec)?;
        let epoch = r.u64("epoch").map_err(dec)?;
        let timestamp_us = r.u64("timestamp").map_err(dec)?;
        let taken_us = r.u64("taken").map_err(dec)?;
        let n = r.u32("files").map_err(dec)? as usize;
        if n > FILES_MAX {
            return Err(bad(format!("{n} files, at most {FILES_MAX}")));
        }
        let mut files = Vec::with_capacity(n);
        for _ in 0..n {
            let len = r.u16("path length").map_err(dec)? as usize;
            let path = std::str::from_utf8(r.take(len, "path").map_err(dec)?)
                .map_err(|_| bad("a path is not UTF-8".into()))?
                .to_owned();
            check_path(&path).map_err(bad)?;
            let bytes = r.u64("file bytes").map_err(dec)?;
            let crc = r.u32("file crc").map_err(dec)?;
            let stored = r.u64("file stored bytes").map_err(dec)?;
            files.push(BackupFile {
                path,
                bytes,
                crc,
                stored,
            });
        }
        let n_segments = r.u32("segments").map_err(dec)? as usize;
        if n_segments > SEGMENTS_MAX {
            return Err(bad(format!(
                "{n_segments} segments, at most {SEGMENTS_MAX}"
            )));
        }
        let mut segments = Vec::with_capacity(n_segments);
        for _ in 0..n_segments {
            let first = r.u64("segment").map_err(dec)?;
            if segments.last().is_some_and(|p| *p >= first) || first == 0 || first > lsn {
                return Err(bad(format!("segment at lsn {first} out of order")));
            }
            segments.push(first);
        }
        if segments.first() != Some(&1) {
            return Err(bad("the segments do not start at lsn 1".into()));
        }
        let keys = super::codec::read_keys(&mut r, KEYS_MAX, "base backup manifest")?;
        if r.remaining() != 0 {
            return Err(bad(format!("{} bytes after the keys", r.remaining())));
        }
        if lsn == 0 {
            return Err(bad("lsn 0".into()));
        }
        Ok(Self {
            lsn,
            crc,
            epoch,
            timestamp_us,
            taken_us,
            files,
            segments,
            keys,
        })
    }

    /// Where `file` goes in a store directory `dir`.
    pub fn local_path(dir: &Path, file: &BackupFile) -> PathBuf {
        file.path
            .split('/')
            .fold(dir.to_owned(), |p, part| p.join(part))
    }
}

/// A file path inside a backup: the index file, or a file directly in its
/// key store's directory; plain names only.
fn check_path(path: &str) -> std::result::Result<(), String> {
    let keys_dir = format!("{INDEX_FILE}.keys.d/");
    let ok = path.len() <= PATH_BYTES_MAX
        && (path == INDEX_FILE
            || path.strip_prefix(&keys_dir).is_some_and(|name| {
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
                    && !name.starts_with('.')
            }));
    if ok {
        Ok(())
    } else {
        Err(format!("{path:?} is not a file a base backup holds"))
    }
}

impl Store {
    /// Copies this store's index into `dest` (a new directory inside the
    /// store's own, so key files are hard-linked rather than copied) and
    /// describes it as a base backup taken at `taken_us`: the frame it
    /// ends at, its files with their sizes and CRCs (`stored` is left 0
    /// for the uploader, which compresses them), and the data keys,
    /// wrapped. Safe while the store runs and writes; the index copy is
    /// one read transaction's view.
    pub fn snapshot_index(&self, dest: &Path, taken_us: u64) -> Result<BaseBackup> {
        self.inner.check_alive()?;
        let index = self.inner.index.current();
        let (lsn, crc) = index.snapshot_to(&dest.join(INDEX_FILE))?;
        drop(index);
        if lsn == 0 {
            return Err(Error::Backup(
                "the store holds no frame yet: nothing to back up".into(),
            ));
        }
        let head = self.frame_ending_at(lsn)?.ok_or_else(|| {
            Error::Corrupt(format!(
                "the index ends at lsn {lsn}, which no frame ends at"
            ))
        })?;
        if head.crc != crc {
            return Err(Error::Corrupt(format!(
                "the index's frame at lsn {lsn} is not the log's"
            )));
        }
        let mut files = Vec::new();
        let keys_dir = format!("{INDEX_FILE}.keys.d");
        let mut names = vec![INDEX_FILE.to_owned()];
        let kd = dest.join(&keys_dir);
        let mut listed: Vec<String> = std::fs::read_dir(&kd)
            .map_err(|e| Error::io("list key snapshot", &kd, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        listed.sort();
        names.extend(listed.into_iter().map(|n| format!("{keys_dir}/{n}")));
        for path in names {
            let file = BackupFile {
                path,
                bytes: 0,
                crc: 0,
                stored: 0,
            };
            let local = BaseBackup::local_path(dest, &file);
            let (bytes, crc) = crc_of_file(&local)?;
            files.push(BackupFile { bytes, crc, ..file });
        }
        let wal = self.inner.dir.join("wal");
        let segments = crate::log::segment::list_segments(&wal)
            .map_err(|e| Error::io("list log", &wal, e))?
            .into_iter()
            .map(|(first, _)| first)
            .filter(|first| *first <= lsn)
            .collect();
        let keys = match self.inner.log.dicts.keys() {
            Some(k) => k
                .status()
                .into_iter()
                .filter_map(|s| k.wrapped(s.id).map(|w| (s.id, w)))
                .collect(),
            None => Vec::new(),
        };
        Ok(BaseBackup {
            lsn,
            crc,
            epoch: head.epoch,
            timestamp_us: head.timestamp_us,
            taken_us,
            files,
            segments,
            keys,
        })
    }
}

/// Size and CRC-32 of a file, read in chunks.
pub fn crc_of_file(path: &Path) -> Result<(u64, u32)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BaseBackup {
        BaseBackup {
            lsn: 4_242,
            crc: 0xdead_beef,
            epoch: 3,
            timestamp_us: 1_700_000_000_000_000,
            taken_us: 1_700_000_000_500_000,
            files: vec![
                BackupFile {
                    path: INDEX_FILE.into(),
                    bytes: 1 << 20,
                    crc: 0x0102_0304,
                    stored: 1 << 18,
                },
                BackupFile {
                    path: format!("{INDEX_FILE}.keys.d/MANIFEST"),
                    bytes: 60,
                    crc: 7,
                    stored: 70,
                },
                BackupFile {
                    path: format!("{INDEX_FILE}.keys.d/000000000003.run"),
                    bytes: 9_000,
                    crc: 8,
                    stored: 3_000,
                },
            ],
            segments: vec![1, 2_000, 4_000],
            keys: vec![(
                0x0102_0304_0506_0708,
                WrappedKey {
                    kek: "region-a".into(),
                    version: 2,
                    sealed: vec![7; 60],
                },
            )],
        }
    }

    /// The manifest format, pinned: a change needs a new format version
    /// and a note in docs/format.md. `VIGIL_BLESS=1` writes the file anew.
    #[test]
    fn the_manifest_format_is_pinned() {
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/base_backup_v1.bin");
        let b = sample();
        if std::env::var_os("VIGIL_BLESS").is_some() {
            std::fs::write(&golden, b.encode()).expect("bless");
        }
        let pinned = std::fs::read(&golden).expect("golden manifest");
        assert_eq!(&pinned[..8], MAGIC);
        assert_eq!(&pinned[8..10], &BACKUP_FORMAT.to_le_bytes());
        assert_eq!(BaseBackup::decode(&pinned).expect("decodes"), b);
        assert_eq!(b.encode(), pinned, "encoding is stable");
        assert_eq!(
            b.manifest_object(),
            "backups/00000000000000004242-00001700000000500000.vgbk"
        );
        assert_eq!(
            b.file_object(&b.files[2]),
            "backups/00000000000000004242-00001700000000500000/index.redb.keys.d/000000000003.run.zst"
        );
    }

    #[test]
    fn segments_must_start_at_one_and_ascend() {
        for segments in [vec![], vec![2], vec![1, 1], vec![1, 5_000]] {
            let b = BaseBackup {
                segments,
                ..sample()
            };
            assert!(BaseBackup::decode(&b.encode()).is_err(), "{:?}", b.segments);
        }
    }
}
