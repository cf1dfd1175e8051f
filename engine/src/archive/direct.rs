//! Files a restore writes once, front to back, and makes durable when
//! done: the log's segments and a base backup's index files.
//!
//! They are written with `O_DIRECT` where the file system takes it, from
//! one aligned buffer reused for the whole file. Through the page cache,
//! each of the hundreds of megabytes a restore writes would first take a
//! new page (on this project's VMs the slowest part of a restore: fresh
//! pages cost five times what reused ones do), then a copy into it, then
//! the closing fsync would write it all out again. Direct writes go from
//! the buffer to the disk, and what the restore writes does not push the
//! rest of the machine's page cache out. A file system without `O_DIRECT`
//! (tmpfs) gets ordinary writes and the same fsync at the end.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Alignment of a direct write's memory, offset and length (the largest
/// logical block size in use; a 512-byte device accepts it too).
pub const DIRECT_ALIGN: usize = 4096;
/// Bytes gathered before each write (a multiple of [`DIRECT_ALIGN`]).
const BUFFER_BYTES: usize = 1 << 20;

/// A new file written front to back, past the page cache where possible.
/// Nothing written is durable, and the file's length may be rounded up to
/// a block, until [`DirectFile::finish`] returns.
pub struct DirectFile {
    file: File,
    /// `BUFFER_BYTES` from `at` are the aligned buffer (direct only).
    buf: Vec<u8>,
    at: usize,
    /// Bytes gathered in the buffer, not yet written.
    held: usize,
    /// Bytes taken so far: the file's length once finished.
    len: u64,
    direct: bool,
}

impl std::fmt::Debug for DirectFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectFile")
            .field("len", &self.len)
            .field("direct", &self.direct)
            .finish_non_exhaustive()
    }
}

impl DirectFile {
    /// Creates the file `path`, which must not exist.
    pub fn create_new(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().write(true).create_new(true).open(path)?;
        let buf = vec![0u8; BUFFER_BYTES + DIRECT_ALIGN];
        let at = buf.as_ptr().align_offset(DIRECT_ALIGN);
        // Set on the open file, so that a file system that refuses it
        // leaves a created file to write as usual.
        let direct = at < DIRECT_ALIGN
            && rustix::fs::fcntl_getfl(&file)
                .and_then(|fl| rustix::fs::fcntl_setfl(&file, fl | rustix::fs::OFlags::DIRECT))
                .is_ok();
        Ok(Self {
            file,
            buf: if direct { buf } else { Vec::new() },
            at: if direct { at } else { 0 },
            held: 0,
            len: 0,
            direct,
        })
    }

    /// Whether writes bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Appends `data`.
    pub fn write_all(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        if !self.direct {
            self.file.write_all(data)?;
            self.len += data.len() as u64;
            return Ok(());
        }
        while !data.is_empty() {
            let n = (BUFFER_BYTES - self.held).min(data.len());
            let start = self.at + self.held;
            self.buf[start..start + n].copy_from_slice(&data[..n]);
            self.held += n;
            self.len += n as u64;
            data = &data[n..];
            if self.held == BUFFER_BYTES {
                self.write_held(BUFFER_BYTES)?;
            }
        }
        Ok(())
    }

    /// Writes the first `len` bytes of the buffer (a multiple of the
    /// alignment; what is past `held` is zeros) and empties it.
    fn write_held(&mut self, len: usize) -> std::io::Result<()> {
        assert!(
            len.is_multiple_of(DIRECT_ALIGN) && len >= self.held && len <= BUFFER_BYTES,
            "a direct write is whole aligned blocks of what is held"
        );
        self.buf[self.at + self.held..self.at + len].fill(0);
        self.file.write_all(&self.buf[self.at..self.at + len])?;
        self.held = 0;
        Ok(())
    }

    /// Writes what is held, gives the file its exact length and makes it
    /// durable: the bytes written.
    pub fn finish(mut self) -> std::io::Result<u64> {
        if self.direct && self.held > 0 {
            // The last block is written whole, then cut to the length.
            self.write_held(self.held.next_multiple_of(DIRECT_ALIGN))?;
            self.file.set_len(self.len)?;
        }
        self.file.sync_all()?;
        Ok(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_length_reads_back_exactly_and_the_file_must_be_new() {
        let dir = tempfile::tempdir().expect("dir");
        let data: Vec<u8> = (0..3 * BUFFER_BYTES + 777)
            .map(|i| (i % 251) as u8)
            .collect();
        for (i, len) in [
            0,
            1,
            DIRECT_ALIGN - 1,
            DIRECT_ALIGN,
            BUFFER_BYTES,
            BUFFER_BYTES + 1,
            data.len(),
        ]
        .into_iter()
        .enumerate()
        {
            let path = dir.path().join(format!("f{i}"));
            let mut f = DirectFile::create_new(&path).expect("create");
            // In pieces of uneven sizes, as a decompressor hands them.
            for piece in data[..len].chunks(70_001) {
                f.write_all(piece).expect("write");
            }
            assert_eq!(f.finish().expect("finish"), len as u64);
            assert_eq!(std::fs::read(&path).expect("read"), &data[..len], "{len}");
            assert!(DirectFile::create_new(&path).is_err(), "it exists");
        }
    }
}
