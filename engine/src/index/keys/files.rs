//! The key store's directory: its run files and the manifest naming them.
//!
//! The directory holds `NNNNNNNNNNNN.run` files (`runfile`) and one
//! `MANIFEST`. Only files the manifest names are part of the key store;
//! together, oldest first, they hold the search keys at exactly the frame
//! the manifest records (LSN and CRC). A file is written and synced before
//! a manifest names it, and a manifest is replaced by writing a temporary
//! file, syncing it, renaming it over the old one and syncing the
//! directory; so a crash leaves either manifest, each naming whole files.
//! Files no manifest names (a flush or merge cut short) are removed on
//! open.
//!
//! Manifest format 1 (docs/format.md), integers little-endian:
//! `VGKEYMAN`, u32 format, u32 zero, u64 keys LSN, u32 CRC of that frame,
//! u64 index format, u64 next file number, u32 file count, u64 per file
//! (oldest first), u32 CRC32 of everything before it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::crypt::datakeys::DataKeys;
use crate::error::{Error, Result};
use crate::index::keys::runfile::{RunFile, RunWriter};
use crate::index::keys::runs::{Merged, Source};
use crate::log::codec::{Put, Reader};
use crate::log::files::sync_dir;

/// The manifest format this build writes and reads.
pub(crate) const MANIFEST_FORMAT_VERSION: u32 = 1;
const MANIFEST: &str = "MANIFEST";
const MANIFEST_TMP: &str = "MANIFEST.tmp";
const MAGIC: &[u8; 8] = b"VGKEYMAN";
/// Most run files a manifest names. Merging keeps the count near
/// log2(keys / flush size); past [`FILES_MERGE_AT`] the smallest
/// neighbours are merged whatever their sizes.
const FILES_MAX: usize = 4096;
/// File count past which merging ignores the size ratio.
pub(crate) const FILES_MERGE_AT: usize = 24;
/// A merge checks for a stop request every this many entries.
const MERGE_STOP_CHECK: u64 = 4096;

/// What the manifest records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Manifest {
    /// The frame the files' keys end with (0: no keys).
    pub lsn: u64,
    pub crc: u32,
    /// The index format that wrote the files.
    pub index_format: u64,
    /// The number the next new file takes.
    pub next_file: u64,
    /// The files, oldest first.
    pub files: Vec<u64>,
}

impl Manifest {
    /// The manifest of an empty key store.
    pub(crate) fn empty(index_format: u64) -> Self {
        Self {
            lsn: 0,
            crc: 0,
            index_format,
            next_file: 1,
            files: Vec::new(),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        assert!(
            self.files.len() <= FILES_MAX,
            "the manifest names few files"
        );
        assert!(
            self.files.iter().all(|&f| f < self.next_file),
            "file numbers are below the next one"
        );
        let mut out = Vec::with_capacity(48 + 8 * self.files.len());
        out.extend_from_slice(MAGIC);
        out.put_u32(MANIFEST_FORMAT_VERSION);
        out.put_u32(0);
        out.put_u64(self.lsn);
        out.put_u32(self.crc);
        out.put_u64(self.index_format);
        out.put_u64(self.next_file);
        out.put_u32(self.files.len() as u32);
        for &f in &self.files {
            out.put_u64(f);
        }
        let crc = crc32fast::hash(&out);
        out.put_u32(crc);
        out
    }

    /// Decodes a manifest; the error says what is wrong.
    pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        const FIXED: usize = 8 + 4 + 4 + 8 + 4 + 8 + 8 + 4;
        if bytes.len() < FIXED + 4 {
            return Err(format!("{} bytes is too short", bytes.len()));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if Reader::new(crc).u32("crc").map_err(|e| e.0)? != crc32fast::hash(body) {
            return Err("checksum mismatch".into());
        }
        let mut r = Reader::new(body);
        let e = |e: crate::log::codec::DecodeError| e.0;
        if r.take(8, "magic").map_err(e)? != MAGIC {
            return Err("not a key store manifest".into());
        }
        let version = r.u32("format").map_err(e)?;
        if version != MANIFEST_FORMAT_VERSION {
            return Err(format!("unsupported manifest format {version}"));
        }
        if r.u32("reserved").map_err(e)? != 0 {
            return Err("reserved field is not zero".into());
        }
        let lsn = r.u64("lsn").map_err(e)?;
        let crc = r.u32("crc").map_err(e)?;
        let index_format = r.u64("index format").map_err(e)?;
        let next_file = r.u64("next file").map_err(e)?;
        let count = r.u32("file count").map_err(e)? as usize;
        if count > FILES_MAX || r.remaining() != 8 * count {
            return Err(format!("{count} files do not fit {} bytes", r.remaining()));
        }
        let mut files = Vec::with_capacity(count);
        for _ in 0..count {
            let f = r.u64("file").map_err(e)?;
            if f >= next_file || files.contains(&f) {
                return Err(format!("file {f} is named twice or out of range"));
            }
            files.push(f);
        }
        Ok(Self {
            lsn,
            crc,
            index_format,
            next_file,
            files,
        })
    }
}

/// The path of run file `n` in `dir`.
pub(crate) fn run_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:012}.run"))
}

/// Makes `manifest` the directory's manifest, durably.
pub(crate) fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    crate::failpoint::check("keys.flush")
        .map_err(|e| Error::io("write search key manifest", dir, e))?;
    let tmp = dir.join(MANIFEST_TMP);
    std::fs::write(&tmp, manifest.encode())
        .map_err(|e| Error::io("write search key manifest", &tmp, e))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|source| Error::Fsync {
            path: tmp.clone(),
            source,
        })?;
    let path = dir.join(MANIFEST);
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("replace search key manifest", &path, e))?;
    sync_dir(dir)
}

/// Opens the directory (creating it if missing): its manifest and the
/// files it names, oldest first, after removing files it does not name.
/// A manifest or file that does not check, or a named file that is
/// missing, is `Error::Corrupt` naming it.
pub(crate) fn load(
    dir: &Path,
    index_format: u64,
    keys: Option<&Arc<DataKeys>>,
) -> Result<(Manifest, Vec<Arc<RunFile>>)> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create search key directory", dir, e))?;
    let path = dir.join(MANIFEST);
    let manifest = match std::fs::read(&path) {
        Ok(bytes) => Manifest::decode(&bytes)
            .map_err(|why| Error::Corrupt(format!("{}: {why}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let m = Manifest::empty(index_format);
            write_manifest(dir, &m)?;
            m
        }
        Err(e) => return Err(Error::io("read search key manifest", &path, e)),
    };
    remove_strays(dir, &manifest.files)?;
    let files = manifest
        .files
        .iter()
        .map(|&n| {
            let path = run_path(dir, n);
            RunFile::open(&path, n, keys.cloned())
                .map(Arc::new)
                .map_err(|e| match e {
                    Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                        Error::Corrupt(format!(
                            "{}: named by the manifest, missing",
                            path.display()
                        ))
                    }
                    e => e,
                })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((manifest, files))
}

/// Removes every file of `dir` but the manifest and the runs in `keep`.
pub(crate) fn remove_strays(dir: &Path, keep: &[u64]) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list search keys", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list search keys", dir, e))?;
        let name = entry.file_name();
        let kept = name == MANIFEST
            || keep
                .iter()
                .any(|&n| run_path(dir, n).file_name() == Some(name.as_os_str()));
        if !kept {
            let p = entry.path();
            std::fs::remove_file(&p)
                .map_err(|e| Error::io("remove stray search key file", &p, e))?;
        }
    }
    Ok(())
}

/// The total size of the directory's files in bytes (0 if missing).
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
}

/// Which neighbouring files to merge next, if any: `Some(i)` merges files
/// `i` and `i + 1` (sizes in entries, oldest first). The newest pair
/// whose older file is at most twice the newer merges, so sizes fall by
/// more than half from the oldest file and each key is rewritten about
/// log2(keys / flush size) times; past [`FILES_MERGE_AT`] files, the
/// smallest neighbours merge.
pub(crate) fn pick_merge(sizes: &[u64]) -> Option<usize> {
    let pairs = sizes.len().saturating_sub(1);
    (0..pairs)
        .rev()
        .find(|&i| sizes[i] <= 2 * sizes[i + 1])
        .or_else(|| {
            (sizes.len() > FILES_MERGE_AT)
                .then(|| (0..pairs).min_by_key(|&i| sizes[i] + sizes[i + 1]))
                .flatten()
        })
}

/// Writes the entries of `sources` (oldest first; the newest entry of a
/// key wins) to run file `number` in `dir`. Removals are dropped when
/// `drop_removed` (nothing older lies below). Returns `None`, with the
/// partial file removed, if `stopping` turns true first.
pub(crate) fn write_merged<K: Ord + AsRef<[u8]>>(
    dir: &Path,
    number: u64,
    sources: Vec<Source<'_, Error, K>>,
    drop_removed: bool,
    stopping: &dyn Fn() -> bool,
    keys: Option<&Arc<DataKeys>>,
) -> Result<Option<RunFile>> {
    let mut out = MergeOut::create(dir, number, drop_removed, stopping, keys)?;
    for row in Merged::new(sources) {
        let (key, present) = row?;
        if !out.push(key.as_ref(), present)? {
            return Ok(None);
        }
    }
    out.finish().map(Some)
}

/// Merges run files `older` and `newer` (neighbours, `newer` the more
/// recent) into run file `number` in `dir`, as [`write_merged`] does but
/// reading both through cursors, without allocating per entry.
pub(crate) fn merge_files(
    dir: &Path,
    number: u64,
    older: &RunFile,
    newer: &RunFile,
    drop_removed: bool,
    stopping: &dyn Fn() -> bool,
    keys: Option<&Arc<DataKeys>>,
) -> Result<Option<RunFile>> {
    let mut out = MergeOut::create(dir, number, drop_removed, stopping, keys)?;
    let (mut a, mut b) = (older.seek(&[])?, newer.seek(&[])?);
    loop {
        // Which cursors the next key comes from; on equal keys the newer
        // entry is written and both move on.
        let (take_a, take_b) = match (a.current(), b.current()) {
            (None, None) => break,
            (Some(_), None) => (true, false),
            (None, Some(_)) => (false, true),
            (Some((x, _)), Some((y, _))) => match x.cmp(y) {
                std::cmp::Ordering::Less => (true, false),
                std::cmp::Ordering::Greater => (false, true),
                std::cmp::Ordering::Equal => (true, true),
            },
        };
        let (key, present) = match take_b {
            true => b.current(),
            false => a.current(),
        }
        .expect("the cursor taken from has an entry");
        if !out.push(key, present)? {
            return Ok(None);
        }
        if take_a {
            a.advance()?;
        }
        if take_b {
            b.advance()?;
        }
    }
    out.finish().map(Some)
}

/// The file a merge writes: drops removals when asked, and gives up,
/// removing the partial file, once `stopping` turns true.
struct MergeOut<'a> {
    w: RunWriter,
    path: PathBuf,
    number: u64,
    drop_removed: bool,
    stopping: &'a dyn Fn() -> bool,
    seen: u64,
}

impl<'a> MergeOut<'a> {
    fn create(
        dir: &Path,
        number: u64,
        drop_removed: bool,
        stopping: &'a dyn Fn() -> bool,
        keys: Option<&Arc<DataKeys>>,
    ) -> Result<Self> {
        let path = run_path(dir, number);
        Ok(Self {
            w: RunWriter::create(&path, keys.cloned())?,
            path,
            number,
            drop_removed,
            stopping,
            seen: 0,
        })
    }

    /// Writes one merged entry; `false`: the merge was given up.
    fn push(&mut self, key: &[u8], present: bool) -> Result<bool> {
        self.seen += 1;
        if self.seen.is_multiple_of(MERGE_STOP_CHECK) && (self.stopping)() {
            std::fs::remove_file(&self.path)
                .map_err(|e| Error::io("remove partial key run", &self.path, e))?;
            return Ok(false);
        }
        if present || !self.drop_removed {
            self.w.push(key, present)?;
        }
        Ok(true)
    }

    fn finish(self) -> Result<RunFile> {
        self.w.finish(self.number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn file_of(dir: &Path, n: u64, rows: &BTreeMap<Vec<u8>, bool>) -> RunFile {
        let mut w = RunWriter::create(&run_path(dir, n), None).expect("create");
        for (k, p) in rows {
            w.push(k, *p).expect("push");
        }
        w.finish(n).expect("finish")
    }

    proptest! {
        /// Merging two files gives the newer entry of each key, without
        /// removals when asked; the same as merging them as sources.
        #[test]
        fn merged_files_hold_the_newer_entry_of_each_key(
            older in proptest::collection::btree_map(
                proptest::collection::vec(0u8..3, 1..1500), any::<bool>(), 0..60),
            newer in proptest::collection::btree_map(
                proptest::collection::vec(0u8..3, 1..1500), any::<bool>(), 0..60),
            drop_removed in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let (a, b) = (file_of(dir.path(), 1, &older), file_of(dir.path(), 2, &newer));
            let m = merge_files(dir.path(), 3, &a, &b, drop_removed, &|| false, None)
                .expect("merge")
                .expect("not stopped");
            let mut want = older.clone();
            want.extend(newer.iter().map(|(k, p)| (k.clone(), *p)));
            want.retain(|_, p| *p || !drop_removed);
            let got: BTreeMap<Vec<u8>, bool> =
                m.range(&[], None).map(|r| r.expect("read")).collect();
            prop_assert_eq!(&got, &want);
            let sources: Vec<Source<'_, Error>> =
                vec![Box::new(a.range(&[], None)), Box::new(b.range(&[], None))];
            let s = write_merged(dir.path(), 4, sources, drop_removed, &|| false, None)
                .expect("merge")
                .expect("not stopped");
            let same: BTreeMap<Vec<u8>, bool> =
                s.range(&[], None).map(|r| r.expect("read")).collect();
            prop_assert_eq!(&same, &want);
        }
    }

    #[test]
    fn a_merge_asked_to_stop_leaves_no_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rows: BTreeMap<Vec<u8>, bool> = (0..2 * MERGE_STOP_CHECK)
            .map(|i| (i.to_be_bytes().to_vec(), true))
            .collect();
        let (a, b) = (file_of(dir.path(), 1, &rows), file_of(dir.path(), 2, &rows));
        let merged = merge_files(dir.path(), 3, &a, &b, false, &|| true, None).expect("merge");
        assert!(merged.is_none(), "the merge was given up");
        assert!(
            !run_path(dir.path(), 3).exists(),
            "its partial file is gone"
        );
        let whole = merge_files(dir.path(), 4, &a, &b, false, &|| false, None).expect("merge");
        assert_eq!(whole.map(|f| f.entries()), Some(rows.len() as u64));
    }

    #[test]
    fn a_manifest_round_trips_and_refuses_damage() {
        let m = Manifest {
            lsn: 77,
            crc: 0xdead_beef,
            index_format: 5,
            next_file: 9,
            files: vec![3, 7, 8],
        };
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes), Ok(m));
        for at in 0..bytes.len() {
            let mut b = bytes.clone();
            b[at] ^= 1;
            assert!(Manifest::decode(&b).is_err(), "a flipped bit at {at}");
        }
        assert!(Manifest::decode(&bytes[..bytes.len() - 1]).is_err());
        // Today's bytes are pinned (engine/tests/golden); re-pin with
        // `VIGIL_BLESS=1` after a deliberate, versioned change.
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/key_manifest_v1.bin");
        if std::env::var_os("VIGIL_BLESS").is_some() {
            std::fs::write(&golden, &bytes).expect("bless");
        }
        assert_eq!(
            bytes,
            std::fs::read(&golden).expect("golden file"),
            "the manifest's bytes differ from the pinned ones"
        );
    }

    #[test]
    fn merging_keeps_files_few_and_rewrites_each_key_a_few_times() {
        // Flushes of 100 entries each; merges as the key store makes them.
        let mut sizes: Vec<u64> = Vec::new();
        let mut written = 0u64;
        for _ in 0..1000 {
            sizes.push(100);
            written += 100;
            while let Some(i) = pick_merge(&sizes) {
                let merged = sizes[i] + sizes[i + 1];
                written += merged;
                sizes.splice(i..i + 2, [merged]);
            }
            assert!(sizes.len() <= 12, "{} files", sizes.len());
        }
        let total: u64 = sizes.iter().sum();
        assert_eq!(total, 100_000);
        // log2(1000) is about 10: each key is written at most that many
        // times, plus its first write.
        assert!(
            written <= 12 * total,
            "{written} entries written for {total}"
        );
    }
}
