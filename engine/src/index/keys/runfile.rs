//! One sorted run of search-key changes on disk: the key store's files.
//!
//! A run file is written once, front to back, and never changed: the key
//! store (`keystore`) writes one per flush of its in-memory runs and
//! merges files in the background. Writing a sorted file costs the same
//! whatever the store's size, where merging into a B-tree rewrites most
//! of its leaves each time (docs/BENCHMARKS.md, sixth session).
//!
//! Format 1 (docs/format.md, "Key store"), integers little-endian:
//! - header, 16 bytes: `VGKEYRUN`, u32 format, u32 zero;
//! - blocks of about [`BLOCK_BYTES`]: entries, then u32 CRC32 of them. An
//!   entry is varint `shared` (bytes in common with the previous key of
//!   the block; 0 for the first), varint suffix length, the suffix, and
//!   u8 1 (present) or 0 (removed). Keys are strictly increasing;
//! - the block index: per block, varint key length, its first key, u64
//!   offset, u32 length (without the CRC); then u32 CRC32 of it;
//! - footer, 36 bytes: u64 index offset, u64 index length (without the
//!   CRC), u64 entries, u32 blocks, u32 CRC32 of those 28 bytes, `VGKR`.
//!
//! Every block is checked against its CRC when read; a file whose footer
//! or index does not check is refused when opened.
//!
//! Format 2, written by an encrypted store (one with data keys): the same
//! layout, but each block's entries and the block index are sealed under
//! a data key of the store (`DataKeys::seal_value`: key id, then the
//! sealed bytes; bound to what it is and its offset in the file), the
//! CRCs and lengths covering the sealed bytes. The index is opened once,
//! when the file is opened (its first keys then live in memory only); a
//! block is opened when it is read. Search values never reach the disk in
//! clear.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use crate::crypt::datakeys::DataKeys;
use crate::error::{Error, Result};
use crate::index::keys::runs::Row;
use crate::log::codec::{Put, Reader};

/// The format this build writes and reads (unencrypted).
pub(crate) const RUN_FORMAT_VERSION: u32 = 1;
/// The format of a run file whose blocks and index are sealed.
pub(crate) const RUN_FORMAT_SEALED: u32 = 2;
/// What a sealed block and a sealed index are bound to.
const BLOCK_DOMAIN: &[u8] = b"vigil keyrun blk";
const INDEX_DOMAIN: &[u8] = b"vigil keyrun idx";
/// Bytes sealing adds to a block or the index.
const SEAL_BYTES: usize = crate::crypt::KEY_ID_BYTES + crate::crypt::SEAL_OVERHEAD;
const MAGIC: &[u8; 8] = b"VGKEYRUN";
const FOOTER_MAGIC: &[u8; 4] = b"VGKR";
const HEADER_BYTES: u64 = 16;
const FOOTER_BYTES: u64 = 36;
/// A block is closed once its entries reach this many bytes.
pub(crate) const BLOCK_BYTES: usize = 16 * 1024;
/// Longest key a run file holds (a key row is far shorter; see
/// `limits::INDEX_KEY_BYTES_MAX`).
const KEY_BYTES_MAX: usize = 16 * 1024;
/// The writer makes the file durable every this many bytes, so the disk
/// takes a large file as a stream of small writes beside the log's
/// fsyncs, not as one burst at the end that they would queue behind.
const SYNC_EVERY_BYTES: u64 = 2 * 1024 * 1024;
/// Largest block read back: one entry past `BLOCK_BYTES` at most, sealed.
const BLOCK_READ_MAX: u64 = (BLOCK_BYTES + KEY_BYTES_MAX + 16 + SEAL_BYTES) as u64;
/// Largest block index read back (a file of billions of entries).
const INDEX_READ_MAX: u64 = 1 << 30;

/// Writes a run file front to back from entries in increasing key order.
pub(crate) struct RunWriter {
    out: BufWriter<File>,
    path: PathBuf,
    offset: u64,
    /// `offset` at the last intermediate sync.
    synced: u64,
    block: Vec<u8>,
    block_first: Vec<u8>,
    last: Vec<u8>,
    index: Vec<u8>,
    blocks: u32,
    entries: u64,
    /// Seals blocks and the index (format 2) when the store is encrypted.
    keys: Option<Arc<DataKeys>>,
}

impl RunWriter {
    /// Creates the file at `path`, which must not exist; with `keys`, its
    /// blocks and index are sealed (format 2).
    pub(crate) fn create(path: &Path, keys: Option<Arc<DataKeys>>) -> Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| Error::io("create key run file", path, e))?;
        let mut w = Self {
            out: BufWriter::with_capacity(256 * 1024, file),
            path: path.to_owned(),
            offset: 0,
            synced: 0,
            block: Vec::with_capacity(BLOCK_BYTES + 1024),
            block_first: Vec::new(),
            last: Vec::new(),
            index: Vec::new(),
            blocks: 0,
            entries: 0,
            keys,
        };
        let mut header = Vec::with_capacity(HEADER_BYTES as usize);
        header.extend_from_slice(MAGIC);
        header.put_u32(match w.keys {
            Some(_) => RUN_FORMAT_SEALED,
            None => RUN_FORMAT_VERSION,
        });
        header.put_u32(0);
        w.write(&header)?;
        Ok(w)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io("write key run file", &self.path, e))?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Appends one entry; keys must strictly increase.
    pub(crate) fn push(&mut self, key: &[u8], present: bool) -> Result<()> {
        assert!(
            self.entries == 0 || key > self.last.as_slice(),
            "run file keys strictly increase"
        );
        assert!(key.len() <= KEY_BYTES_MAX, "a key row fits a run file");
        let shared = if self.block.is_empty() {
            self.block_first.clear();
            self.block_first.extend_from_slice(key);
            0
        } else {
            key.iter()
                .zip(&self.last)
                .take_while(|(a, b)| a == b)
                .count()
        };
        self.block.put_varint(shared as u64);
        self.block.put_varint((key.len() - shared) as u64);
        self.block.extend_from_slice(&key[shared..]);
        self.block.push(u8::from(present));
        self.last.clear();
        self.last.extend_from_slice(key);
        self.entries += 1;
        if self.block.len() >= BLOCK_BYTES {
            self.close_block()?;
        }
        Ok(())
    }

    fn close_block(&mut self) -> Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let sealed = match &self.keys {
            Some(k) => Some(k.seal_value(BLOCK_DOMAIN, self.offset, &self.block)?),
            None => None,
        };
        let block = std::mem::take(&mut self.block);
        let stored = sealed.as_deref().unwrap_or(&block);
        self.index.put_varint(self.block_first.len() as u64);
        self.index.extend_from_slice(&self.block_first);
        self.index.put_u64(self.offset);
        self.index.put_u32(stored.len() as u32);
        let crc = crc32fast::hash(stored);
        self.write(stored)?;
        self.write(&crc.to_le_bytes())?;
        self.block = block;
        self.block.clear();
        self.blocks += 1;
        if self.offset - self.synced >= SYNC_EVERY_BYTES {
            self.sync()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.out
            .flush()
            .map_err(|e| Error::io("write key run file", &self.path, e))?;
        self.out
            .get_ref()
            .sync_data()
            .map_err(|source| Error::Fsync {
                path: self.path.clone(),
                source,
            })?;
        self.synced = self.offset;
        Ok(())
    }

    /// Writes the index and footer, makes the file durable and opens it
    /// for reading as file `number`.
    pub(crate) fn finish(mut self, number: u64) -> Result<RunFile> {
        self.close_block()?;
        let index_offset = self.offset;
        let mut index = std::mem::take(&mut self.index);
        if let Some(k) = &self.keys {
            index = k.seal_value(INDEX_DOMAIN, index_offset, &index)?;
        }
        self.write(&index)?;
        self.write(&crc32fast::hash(&index).to_le_bytes())?;
        let mut footer = Vec::with_capacity(FOOTER_BYTES as usize);
        footer.put_u64(index_offset);
        footer.put_u64(index.len() as u64);
        footer.put_u64(self.entries);
        footer.put_u32(self.blocks);
        footer.put_u32(crc32fast::hash(&footer));
        footer.extend_from_slice(FOOTER_MAGIC);
        self.write(&footer)?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::io("write key run file", &self.path, e.into_error()))?;
        file.sync_all().map_err(|source| Error::Fsync {
            path: self.path.clone(),
            source,
        })?;
        drop(file);
        RunFile::open(&self.path, number, self.keys.clone())
    }
}

/// Where one block lies and the key it starts with.
#[derive(Debug)]
struct BlockRef {
    first: Box<[u8]>,
    offset: u64,
    len: u32,
}

/// An open run file: its block index in memory, blocks read on demand.
#[derive(Debug)]
pub(crate) struct RunFile {
    file: File,
    path: PathBuf,
    number: u64,
    blocks: Vec<BlockRef>,
    entries: u64,
    /// Opens its blocks when the file is sealed (format 2).
    sealed: Option<Arc<DataKeys>>,
}

impl RunFile {
    /// Opens the file and checks its header, footer and block index; a
    /// sealed file (format 2) needs the store's data `keys`.
    pub(crate) fn open(path: &Path, number: u64, keys: Option<Arc<DataKeys>>) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io("open key run file", path, e))?;
        let bytes = file
            .metadata()
            .map_err(|e| Error::io("open key run file", path, e))?
            .len();
        let bad = |detail: String| Error::Corrupt(format!("key run {}: {detail}", path.display()));
        if bytes < HEADER_BYTES + FOOTER_BYTES {
            return Err(bad(format!("{bytes} bytes is too short")));
        }
        let read = |offset: u64, len: u64| -> Result<Vec<u8>> {
            let mut buf = vec![0u8; len as usize];
            file.read_exact_at(&mut buf, offset)
                .map_err(|e| Error::io("read key run file", path, e))?;
            Ok(buf)
        };
        let decode = |e: crate::log::codec::DecodeError| bad(e.0);
        let header = read(0, HEADER_BYTES)?;
        let mut r = Reader::new(&header);
        let magic = r.take(8, "magic").map_err(decode)?;
        let version = r.u32("format").map_err(decode)?;
        if magic != MAGIC || r.u32("reserved").map_err(decode)? != 0 {
            return Err(bad("not a key run file".into()));
        }
        let sealed = match (version, keys) {
            (RUN_FORMAT_VERSION, _) => None,
            (RUN_FORMAT_SEALED, Some(k)) => Some(k),
            (RUN_FORMAT_SEALED, None) => {
                return Err(bad(
                    "sealed (an encrypted store's) and the store was opened without a key-encryption key"
                        .into(),
                ));
            }
            _ => {
                return Err(Error::UnsupportedFormatVersion {
                    what: "key run file",
                    version: version.min(u32::from(u16::MAX)) as u16,
                });
            }
        };
        let footer = read(bytes - FOOTER_BYTES, FOOTER_BYTES)?;
        let mut r = Reader::new(&footer);
        let index_offset = r.u64("index offset").map_err(decode)?;
        let index_len = r.u64("index length").map_err(decode)?;
        let entries = r.u64("entries").map_err(decode)?;
        let block_count = r.u32("blocks").map_err(decode)?;
        let checked = r.position();
        let crc = r.u32("footer crc").map_err(decode)?;
        if r.take(4, "footer magic").map_err(decode)? != FOOTER_MAGIC
            || crc != crc32fast::hash(&footer[..checked])
        {
            return Err(bad("footer does not check (file not finished?)".into()));
        }
        let index_end = index_offset
            .checked_add(index_len)
            .and_then(|e| e.checked_add(4));
        if index_offset < HEADER_BYTES
            || index_len > INDEX_READ_MAX
            || index_end != Some(bytes - FOOTER_BYTES)
        {
            return Err(bad(format!(
                "index at {index_offset} of {index_len} bytes does not fit the file"
            )));
        }
        let index = read(index_offset, index_len + 4)?;
        let (index, crc) = index.split_at(index_len as usize);
        if Reader::new(crc).u32("index crc").map_err(decode)? != crc32fast::hash(index) {
            return Err(bad("block index checksum mismatch".into()));
        }
        let opened;
        let index = match &sealed {
            Some(k) => {
                opened = k
                    .open_value(INDEX_DOMAIN, index_offset, index)
                    .map_err(|e| bad(format!("block index: {e}")))?;
                &opened[..]
            }
            None => index,
        };
        let mut blocks = Vec::with_capacity(block_count.min(1 << 20) as usize);
        let mut r = Reader::new(index);
        let mut end_of_last = HEADER_BYTES;
        while r.remaining() > 0 {
            let key_len = r.varint("first key length").map_err(decode)?;
            if key_len > KEY_BYTES_MAX as u64 {
                return Err(bad("block index entry overruns".into()));
            }
            let first: Box<[u8]> = r
                .take(key_len as usize, "first key")
                .map_err(decode)?
                .into();
            let offset = r.u64("block offset").map_err(decode)?;
            let len = r.u32("block length").map_err(decode)?;
            let fits = offset == end_of_last
                && u64::from(len) <= BLOCK_READ_MAX
                && len > 0
                && blocks.last().is_none_or(|b: &BlockRef| b.first < first);
            if !fits {
                return Err(bad(format!("block at {offset} is out of place")));
            }
            end_of_last = offset + u64::from(len) + 4;
            blocks.push(BlockRef { first, offset, len });
        }
        if blocks.len() != block_count as usize || end_of_last != index_offset {
            return Err(bad(format!(
                "{} blocks indexed, footer says {block_count}",
                blocks.len()
            )));
        }
        Ok(Self {
            file,
            path: path.to_owned(),
            number,
            blocks,
            entries,
            sealed,
        })
    }

    /// The file's number in the key store's directory.
    pub(crate) fn number(&self) -> u64 {
        self.number
    }

    /// Entries the file holds (present and removed).
    pub(crate) fn entries(&self) -> u64 {
        self.entries
    }

    /// Reads and checks block `i`, decoding its entries into `into`.
    fn block(&self, i: usize, raw: &mut Vec<u8>, into: &mut Block) -> Result<()> {
        let b = &self.blocks[i];
        raw.resize(b.len as usize + 4, 0);
        self.file
            .read_exact_at(raw, b.offset)
            .map_err(|e| Error::io("read key run file", &self.path, e))?;
        let (payload, crc) = raw.split_at(b.len as usize);
        let bad = |detail: &str| {
            Error::Corrupt(format!(
                "key run {} block at {}: {detail}",
                self.path.display(),
                b.offset
            ))
        };
        let decode = |e: crate::log::codec::DecodeError| bad(&e.0);
        if Reader::new(crc).u32("block crc").map_err(decode)? != crc32fast::hash(payload) {
            return Err(bad("checksum mismatch"));
        }
        let opened;
        let payload = match &self.sealed {
            Some(k) => {
                opened = k
                    .open_value(BLOCK_DOMAIN, b.offset, payload)
                    .map_err(|e| bad(&e))?;
                &opened[..]
            }
            None => payload,
        };
        into.keys.clear();
        into.ends.clear();
        let mut r = Reader::new(payload);
        let mut prev = 0..0;
        while r.remaining() > 0 {
            let shared = r.varint("shared length").map_err(decode)?;
            let suffix = r.varint("suffix length").map_err(decode)?;
            let first = into.ends.is_empty();
            if shared > prev.len() as u64 || (first && shared > 0) || suffix > KEY_BYTES_MAX as u64
            {
                return Err(bad("entry overruns"));
            }
            let start = into.keys.len();
            into.keys
                .extend_from_within(prev.start..prev.start + shared as usize);
            into.keys
                .extend_from_slice(r.take(suffix as usize, "suffix").map_err(decode)?);
            let present = match r.u8("flag").map_err(decode)? {
                0 => false,
                1 => true,
                _ => return Err(bad("entry flag is neither 0 nor 1")),
            };
            let key = start..into.keys.len();
            let in_order = match first {
                true => into.keys[key.clone()] == *b.first,
                false => into.keys[prev.clone()] < into.keys[key.clone()],
            };
            if !in_order {
                return Err(bad("keys out of order"));
            }
            into.ends.push((key.end, present));
            prev = key;
        }
        Ok(())
    }

    /// A cursor at the first entry with key `>= lo`.
    pub(crate) fn seek(&self, lo: &[u8]) -> Result<Cursor<'_>> {
        // The last block starting at or before `lo` may hold it.
        let start = self
            .blocks
            .partition_point(|b| b.first.as_ref() <= lo)
            .saturating_sub(1);
        let mut c = Cursor {
            file: self,
            next_block: start,
            raw: Vec::new(),
            block: Block::default(),
            pos: 0,
        };
        c.load()?;
        while c.current().is_some_and(|(k, _)| k < lo) {
            c.advance()?;
        }
        Ok(c)
    }

    /// The entries with `lo <= key < hi` (`hi = None`: to the end), in
    /// key order.
    pub(crate) fn range<'a>(&'a self, lo: &[u8], hi: Option<&[u8]>) -> RangeIter<'a> {
        RangeIter {
            cursor: Some(self.seek(lo)),
            hi: hi.map(<[u8]>::to_vec),
        }
    }
}

/// One decoded block: its keys back to back, and where each ends.
#[derive(Default)]
struct Block {
    keys: Vec<u8>,
    ends: Vec<(usize, bool)>,
}

/// A position in a run file, reading a block at a time into buffers it
/// reuses: moving on allocates nothing per entry.
pub(crate) struct Cursor<'a> {
    file: &'a RunFile,
    next_block: usize,
    raw: Vec<u8>,
    block: Block,
    pos: usize,
}

impl Cursor<'_> {
    /// The entry here; `None` past the end.
    pub(crate) fn current(&self) -> Option<(&[u8], bool)> {
        let &(end, present) = self.block.ends.get(self.pos)?;
        let start = match self.pos {
            0 => 0,
            p => self.block.ends[p - 1].0,
        };
        Some((&self.block.keys[start..end], present))
    }

    /// Moves to the next entry.
    pub(crate) fn advance(&mut self) -> Result<()> {
        self.pos += 1;
        if self.pos >= self.block.ends.len() {
            self.load()?;
        }
        Ok(())
    }

    /// Loads the next block (none left: the cursor is at the end). Its
    /// first key must follow the last key of the block before.
    fn load(&mut self) -> Result<()> {
        let last = self.block.ends.len().checked_sub(1).map(|p| {
            let start = p.checked_sub(1).map_or(0, |q| self.block.ends[q].0);
            self.block.keys[start..self.block.ends[p].0].to_vec()
        });
        self.pos = 0;
        self.block.ends.clear();
        if self.next_block < self.file.blocks.len() {
            let i = self.next_block;
            self.next_block += 1;
            self.file.block(i, &mut self.raw, &mut self.block)?;
            if let (Some(last), Some((first, _))) = (last, self.current())
                && first <= last.as_slice()
            {
                return Err(Error::Corrupt(format!(
                    "key run {}: block {i} does not follow the block before",
                    self.file.path.display()
                )));
            }
        }
        Ok(())
    }

    /// The first key of the block after the one loaded, if any.
    fn next_block_first(&self) -> Option<&[u8]> {
        self.file
            .blocks
            .get(self.next_block)
            .map(|b| b.first.as_ref())
    }
}

/// Entries of a run file in key order within a range.
pub(crate) struct RangeIter<'a> {
    /// `None` once finished; an error is yielded once, then `None`.
    cursor: Option<Result<Cursor<'a>>>,
    hi: Option<Vec<u8>>,
}

impl Iterator for RangeIter<'_> {
    type Item = Result<Row>;

    fn next(&mut self) -> Option<Self::Item> {
        let c = match self.cursor.take()? {
            Ok(c) => c,
            Err(e) => return Some(Err(e)),
        };
        let (key, present) = c.current()?;
        if self.hi.as_ref().is_some_and(|hi| key >= hi.as_slice()) {
            return None;
        }
        let row = (key.to_vec(), present);
        let mut c = c;
        // The next block starts at or past `hi`: stop without reading it.
        let last_in_block = c.pos + 1 >= c.block.ends.len();
        let stop = last_in_block
            && c.next_block_first()
                .is_none_or(|f| self.hi.as_ref().is_some_and(|hi| f >= hi.as_slice()));
        if !stop {
            self.cursor = Some(c.advance().map(|()| c));
        } else {
            self.cursor = None;
        }
        Some(Ok(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn write(dir: &Path, rows: &BTreeMap<Vec<u8>, bool>) -> RunFile {
        let path = dir.join("1.run");
        let _ = std::fs::remove_file(&path);
        let mut w = RunWriter::create(&path, None).expect("create");
        for (k, p) in rows {
            w.push(k, *p).expect("push");
        }
        w.finish(1).expect("finish")
    }

    proptest! {
        /// A written file reads back every range exactly as written.
        #[test]
        fn ranges_read_back_what_was_written(
            rows in proptest::collection::btree_map(
                proptest::collection::vec(0u8..4, 0..3000),
                any::<bool>(),
                0..200,
            ),
            lo in proptest::collection::vec(0u8..4, 0..6),
            hi in proptest::option::of(proptest::collection::vec(0u8..4, 0..6)),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let f = write(dir.path(), &rows);
            prop_assert_eq!(f.entries(), rows.len() as u64);
            let got: Vec<Row> = f.range(&lo, hi.as_deref()).map(|r| r.expect("read")).collect();
            let want: Vec<Row> = rows
                .iter()
                .filter(|(k, _)| **k >= lo && hi.as_ref().is_none_or(|h| *k < h))
                .map(|(k, p)| (k.clone(), *p))
                .collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_is_refused_or_caught_on_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rows: BTreeMap<Vec<u8>, bool> = (0..20_000u32)
            .map(|i| (format!("key-{i:08}").into_bytes(), i % 7 != 0))
            .collect();
        let f = write(dir.path(), &rows);
        assert!(f.blocks.len() > 3, "several blocks");
        let bytes = std::fs::read(dir.path().join("1.run")).expect("read");
        let bad = dir.path().join("bad.run");
        for at in (0..bytes.len()).step_by(331) {
            let mut b = bytes.clone();
            b[at] ^= 0x10;
            std::fs::write(&bad, &b).expect("write");
            let caught = match RunFile::open(&bad, 2, None) {
                Err(_) => true,
                Ok(f) => f.range(&[], None).any(|r| r.is_err()),
            };
            assert!(caught, "a flipped bit at byte {at} went unnoticed");
        }
    }

    /// Today's bytes of a small file are pinned (engine/tests/golden); a
    /// change needs a new format version and a note in docs/format.md.
    /// Re-pin with `VIGIL_BLESS=1`.
    #[test]
    fn the_run_file_format_is_pinned() {
        let rows: BTreeMap<Vec<u8>, bool> = [
            (&b"birthdate\x001970-01-01\x00Patient\x00a"[..], true),
            (b"birthdate\x001970-01-01\x00Patient\x00b", false),
            (b"gender\x00female\x00Patient\x00a", true),
        ]
        .into_iter()
        .map(|(k, p)| (k.to_vec(), p))
        .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let f = write(dir.path(), &rows);
        let bytes = std::fs::read(dir.path().join("1.run")).expect("read");
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/key_run_v1.bin");
        if std::env::var_os("VIGIL_BLESS").is_some() {
            std::fs::write(&golden, &bytes).expect("bless");
        }
        let want = std::fs::read(&golden).expect("golden file");
        assert_eq!(
            bytes, want,
            "the run file's bytes differ from the pinned ones"
        );
        let got: BTreeMap<Vec<u8>, bool> = f.range(&[], None).map(|r| r.expect("read")).collect();
        assert_eq!(got, rows);
    }

    /// The sealed format (2): sealing draws fresh keys and nonces, so only
    /// a blessing writes a new file; the pinned one, with the data-keys
    /// file it was sealed under (a key file with a fixed key), must open
    /// and read back the same rows.
    #[test]
    fn the_sealed_run_file_format_is_pinned() {
        use crate::crypt::keyfile::KeyFile;
        let rows: BTreeMap<Vec<u8>, bool> = [
            (&b"family\x00lemke\x00Patient\x00a"[..], true),
            (b"family\x00lemke\x00Patient\x00b", false),
            (b"gender\x00female\x00Patient\x00a", true),
        ]
        .into_iter()
        .map(|(k, p)| (k.to_vec(), p))
        .collect();
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("pinned.key");
        let hex: String = (0u8..32).map(|i| format!("{:02x}", i * 5)).collect();
        std::fs::write(&key, format!("vigil-kek 1\nname pinned\nkey 1 {hex}\n")).expect("key");
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        let kek = Arc::new(KeyFile::load(&key).expect("pinned key file"));
        if std::env::var_os("VIGIL_BLESS").is_some() {
            let store = tempfile::tempdir().expect("tempdir");
            let keys = Arc::new(DataKeys::open(store.path(), kek.clone()).expect("data keys"));
            let path = store.path().join("1.run");
            let mut w = RunWriter::create(&path, Some(keys)).expect("create");
            for (k, p) in &rows {
                w.push(k, *p).expect("push");
            }
            w.finish(1).expect("finish");
            std::fs::copy(&path, golden.join("key_run_sealed_v2.bin")).expect("bless");
            std::fs::copy(
                store.path().join("data-keys"),
                golden.join("key_run_sealed_v2.data-keys"),
            )
            .expect("bless");
        }
        std::fs::copy(
            golden.join("key_run_sealed_v2.data-keys"),
            dir.path().join("data-keys"),
        )
        .expect("golden data keys");
        let keys = Arc::new(DataKeys::open_read_only(dir.path(), kek).expect("pinned data keys"));
        let f = RunFile::open(&golden.join("key_run_sealed_v2.bin"), 1, Some(keys))
            .expect("the pinned sealed file opens");
        let got: BTreeMap<Vec<u8>, bool> = f.range(&[], None).map(|r| r.expect("read")).collect();
        assert_eq!(got, rows);
        let bytes = std::fs::read(golden.join("key_run_sealed_v2.bin")).expect("golden");
        assert_eq!(&bytes[8..12], &2u32.to_le_bytes(), "format 2");
        assert!(!bytes.windows(5).any(|w| w == b"lemke"), "no key in clear");
    }

    /// Blocks whose keys overlap (each checks, the index is in order) are
    /// reported when read, not passed on out of order.
    #[test]
    fn overlapping_blocks_are_caught() {
        let dir = tempfile::tempdir().expect("tempdir");
        let block = |keys: &[&[u8]]| {
            let mut payload = Vec::new();
            for k in keys {
                payload.put_varint(0);
                payload.put_varint(k.len() as u64);
                payload.extend_from_slice(k);
                payload.push(1);
            }
            payload
        };
        let blocks = [block(&[b"a", b"z"]), block(&[b"b", b"c"])];
        let mut bytes = Vec::new();
        bytes.extend_from_slice(MAGIC);
        bytes.put_u32(RUN_FORMAT_VERSION);
        bytes.put_u32(0);
        let mut index = Vec::new();
        for (b, first) in blocks.iter().zip([b"a", b"b"]) {
            index.put_varint(1);
            index.extend_from_slice(first);
            index.put_u64(bytes.len() as u64);
            index.put_u32(b.len() as u32);
            bytes.extend_from_slice(b);
            bytes.put_u32(crc32fast::hash(b));
        }
        let mut footer = Vec::new();
        footer.put_u64(bytes.len() as u64);
        footer.put_u64(index.len() as u64);
        footer.put_u64(4);
        footer.put_u32(2);
        footer.put_u32(crc32fast::hash(&footer));
        footer.extend_from_slice(FOOTER_MAGIC);
        bytes.extend_from_slice(&index);
        bytes.put_u32(crc32fast::hash(&index));
        bytes.extend_from_slice(&footer);
        let path = dir.path().join("1.run");
        std::fs::write(&path, &bytes).expect("write");
        let f = RunFile::open(&path, 1, None).expect("header, index and footer check");
        let rows: Vec<Result<Row>> = f.range(&[], None).collect();
        assert!(
            matches!(rows.last(), Some(Err(Error::Corrupt(m))) if m.contains("does not follow")),
            "{rows:?}"
        );
    }

    #[test]
    fn an_unfinished_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("1.run");
        let mut w = RunWriter::create(&path, None).expect("create");
        for i in 0..3000u32 {
            w.push(format!("{i:08}").as_bytes(), true).expect("push");
        }
        drop(w);
        assert!(RunFile::open(&path, 1, None).is_err());
    }

    #[test]
    fn a_sealed_file_reads_back_shows_no_key_and_refuses_tampering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kek = crate::crypt::keyfile::KeyFile::create(&dir.path().join("k"), "k").expect("kek");
        let keys = Arc::new(DataKeys::open(dir.path(), Arc::new(kek)).expect("data keys"));
        let path = dir.path().join("1.run");
        let mut w = RunWriter::create(&path, Some(keys.clone())).expect("create");
        let key = |i: u32| format!("family=Secretname{i:06}").into_bytes();
        for i in 0..20_000u32 {
            w.push(&key(i), i % 3 != 0).expect("push");
        }
        let f = w.finish(1).expect("finish");
        assert!(f.blocks.len() > 3, "several blocks");
        let rows: Vec<Row> = f
            .range(&key(2500), Some(&key(2510)))
            .map(|r| r.expect("read"))
            .collect();
        assert_eq!(rows.len(), 10);
        assert_eq!(rows[0].0, key(2500));
        let bytes = std::fs::read(&path).expect("read");
        assert!(
            !bytes.windows(10).any(|w| w == b"Secretname"),
            "no key in clear"
        );
        assert!(
            RunFile::open(&path, 1, None).is_err(),
            "a sealed file needs the keys"
        );
        // A block altered and its CRC made to match again: opening it fails.
        let b = &f.blocks[1];
        let (at, len) = (b.offset as usize, b.len as usize);
        let mut bad = bytes.clone();
        bad[at + len / 2] ^= 0x40;
        let crc = crc32fast::hash(&bad[at..at + len]);
        bad[at + len..at + len + 4].copy_from_slice(&crc.to_le_bytes());
        let tampered = dir.path().join("2.run");
        std::fs::write(&tampered, &bad).expect("write");
        let f = RunFile::open(&tampered, 2, Some(keys)).expect("index still opens");
        let rows: Vec<Result<Row>> = f.range(&[], None).collect();
        assert!(
            rows.iter().any(|r| r.is_err()),
            "the altered block is refused"
        );
    }
}
