//! The log's files: the set of segments, appending frames durably, and
//! positioned reads for the index's body lookups.
//!
//! Durability rules (see `docs/format.md`, "What we assume of the disk"):
//! a frame is acknowledged only after `fdatasync` of its segment returns;
//! a new segment is written as a `.tmp` file, synced, renamed into place
//! and the directory synced, so a `.seg` file always has a whole header.
//! An fsync failure is returned as [`Error::Fsync`], which poisons the store.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};
use crate::log::frame::FrameHeader;
use crate::log::segment::{SEGMENT_HEADER_BYTES, SegmentHeader, segment_file_name};

/// Syncs a directory so that entries created or renamed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| Error::io("open directory", dir, e))?;
    d.sync_all().map_err(|source| Error::Fsync {
        path: dir.to_owned(),
        source,
    })
}

/// Read handles on every segment, shared by readers and the writer.
pub(crate) struct Segments {
    dir: PathBuf,
    files: RwLock<BTreeMap<u64, Arc<File>>>,
    /// First LSN of the segment being appended to, and its bytes of data
    /// (the rest of that file is preallocated zeros).
    active_first_lsn: AtomicU64,
    active_len: AtomicU64,
}

impl Segments {
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            files: RwLock::new(BTreeMap::new()),
            active_first_lsn: AtomicU64::new(0),
            active_len: AtomicU64::new(0),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn path_of(&self, first_lsn: u64) -> PathBuf {
        self.dir.join(segment_file_name(first_lsn))
    }

    /// Registers a segment for reading.
    pub(crate) fn add(&self, first_lsn: u64) -> Result<()> {
        let path = self.path_of(first_lsn);
        let f = File::open(&path).map_err(|e| Error::io("open segment", &path, e))?;
        self.files
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(first_lsn, Arc::new(f));
        Ok(())
    }

    /// Forgets a segment whose file is being removed.
    pub(crate) fn remove(&self, first_lsn: u64) {
        self.files
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&first_lsn);
    }

    /// The segments' first LSNs, oldest first.
    pub(crate) fn list(&self) -> Vec<u64> {
        self.files
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// Reads exactly `len` bytes at `offset` of a segment.
    pub(crate) fn read_at(&self, segment: u64, offset: u64, len: usize) -> Result<Vec<u8>> {
        let file = self
            .files
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&segment)
            .cloned()
            .ok_or_else(|| Error::Corrupt(format!("no segment starting at lsn {segment}")))?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset)
            .map_err(|e| Error::io("read segment", self.path_of(segment), e))?;
        Ok(buf)
    }

    /// Bytes of all segment files: `(data, allocated)`. Data counts headers
    /// and frames; allocated adds the preallocated end of the newest segment.
    pub(crate) fn bytes_on_disk(&self) -> Result<(u64, u64)> {
        let files = self.files.read().unwrap_or_else(|p| p.into_inner());
        let active = self.active_first_lsn.load(Ordering::Acquire);
        let (mut data, mut allocated) = (0, 0);
        for (lsn, f) in files.iter() {
            let len = f
                .metadata()
                .map_err(|e| Error::io("stat segment", self.path_of(*lsn), e))?
                .len();
            allocated += len;
            data += if *lsn == active {
                self.active_len.load(Ordering::Acquire).min(len)
            } else {
                len
            };
        }
        Ok((data, allocated))
    }

    fn note_active(&self, first_lsn: u64, len: u64) {
        self.active_first_lsn.store(first_lsn, Ordering::Release);
        self.active_len.store(len, Ordering::Release);
    }
}

/// The segment being appended to, owned by the writer thread.
pub(crate) struct Appender {
    segments: Arc<Segments>,
    segment_bytes: u64,
    file: Arc<File>,
    first_lsn: u64,
    len: u64,
    /// CRC of the last frame written, chained into the next segment's header.
    last_frame_crc: u32,
}

impl Appender {
    /// Continues the segment at `first_lsn`, whose valid bytes end at `len`.
    pub(crate) fn resume(
        segments: Arc<Segments>,
        segment_bytes: u64,
        first_lsn: u64,
        len: u64,
        last_frame_crc: u32,
    ) -> Result<Self> {
        let path = segments.path_of(first_lsn);
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open segment for writing", &path, e))?;
        if preallocate(&file, &path, segment_bytes)? {
            file.sync_all().map_err(|source| Error::Fsync {
                path: path.clone(),
                source,
            })?;
        }
        segments.note_active(first_lsn, len);
        let file = Arc::new(file);
        Ok(Self {
            segments,
            segment_bytes,
            file,
            first_lsn,
            len,
            last_frame_crc,
        })
    }

    /// Creates a new segment starting at `first_lsn`, durably, and returns
    /// an appender on it.
    pub(crate) fn create(
        segments: Arc<Segments>,
        segment_bytes: u64,
        first_lsn: u64,
        prev_tail_crc: u32,
    ) -> Result<Self> {
        let path = segments.path_of(first_lsn);
        let tmp = path.with_extension("tmp");
        let header = SegmentHeader {
            first_lsn,
            prev_tail_crc,
        }
        .encode();
        {
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(|e| Error::io("create segment", &tmp, e))?;
            f.write_all_at(&header, 0)
                .map_err(|e| Error::io("write segment header", &tmp, e))?;
            preallocate(&f, &tmp, segment_bytes)?;
            f.sync_all().map_err(|source| Error::Fsync {
                path: tmp.clone(),
                source,
            })?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename segment", &path, e))?;
        sync_dir(segments.dir())?;
        segments.add(first_lsn)?;
        Self::resume(
            segments,
            segment_bytes,
            first_lsn,
            SEGMENT_HEADER_BYTES as u64,
            0,
        )
    }

    /// Writes one encoded frame after the last, rotating to a new segment
    /// first when the current one is full. Returns the segment and offset
    /// the frame was written at. The frame is not durable until
    /// [`Appender::sync`] (or a sync of [`Appender::file`]) returns.
    pub(crate) fn write(&mut self, header: &FrameHeader, frame: &[u8]) -> Result<(u64, u64)> {
        assert_eq!(frame.len() as u64, header.frame_len());
        if self.len >= self.segment_bytes && self.len > SEGMENT_HEADER_BYTES as u64 {
            let next = Self::create(
                self.segments.clone(),
                self.segment_bytes,
                header.first_lsn,
                self.last_frame_crc,
            )?;
            tracing::debug!(
                segment = header.first_lsn,
                "sealed segment {}",
                self.first_lsn
            );
            *self = next;
        }
        let offset = self.len;
        let path = || self.segments.path_of(self.first_lsn);
        crate::failpoint::check("log.write")
            .and_then(|()| self.file.write_all_at(frame, offset))
            .map_err(|e| Error::io("write frame", path(), e))?;
        self.len += frame.len() as u64;
        self.last_frame_crc = header.crc;
        self.segments.note_active(self.first_lsn, self.len);
        Ok((self.first_lsn, offset))
    }

    /// Cuts the active segment back to `offset` (a frame boundary in it),
    /// whose last frame before has CRC `last_frame_crc`: the bytes after
    /// are zeroed and fsynced first, so recovery never finds the cut frames
    /// again. An error is fatal to the store (the file may be half zeroed).
    pub(crate) fn rewind(&mut self, offset: u64, last_frame_crc: u32) -> Result<()> {
        assert!(
            offset >= SEGMENT_HEADER_BYTES as u64 && offset <= self.len,
            "a rewind stays within the active segment's frames"
        );
        let path = self.segments.path_of(self.first_lsn);
        let zeros = vec![0u8; (self.len - offset) as usize];
        self.file
            .write_all_at(&zeros, offset)
            .map_err(|e| Error::io("cut frames", &path, e))?;
        sync_data(&self.file, &path)?;
        self.len = offset;
        self.last_frame_crc = last_frame_crc;
        self.segments.note_active(self.first_lsn, self.len);
        Ok(())
    }

    /// Removes the active segment, all of whose frames are being cut, and
    /// appends to the one before it again, whose valid bytes end at `len`
    /// with a frame of CRC `last_frame_crc`. The file goes first (with a
    /// directory fsync), so a crash leaves the log ending in that segment.
    pub(crate) fn retreat(&mut self, previous: u64, len: u64, last_frame_crc: u32) -> Result<()> {
        assert!(
            previous < self.first_lsn,
            "the segment before the active one"
        );
        let path = self.segments.path_of(self.first_lsn);
        self.segments.remove(self.first_lsn);
        std::fs::remove_file(&path).map_err(|e| Error::io("remove segment", &path, e))?;
        sync_dir(self.segments.dir())?;
        *self = Self::resume(
            self.segments.clone(),
            self.segment_bytes,
            previous,
            len,
            last_frame_crc,
        )?;
        Ok(())
    }

    /// The first LSN of the active segment.
    pub(crate) fn segment(&self) -> u64 {
        self.first_lsn
    }

    /// The file the last frame was written to, and its path, for syncing.
    pub(crate) fn file(&self) -> (Arc<File>, PathBuf) {
        (self.file.clone(), self.segments.path_of(self.first_lsn))
    }
}

/// Makes a frame durable: `fdatasync` of its segment. An error is fatal.
pub(crate) fn sync_data(file: &File, path: &Path) -> Result<()> {
    crate::failpoint::check("log.fsync")
        .and_then(|()| file.sync_data())
        .map_err(|source| Error::Fsync {
            path: path.to_owned(),
            source,
        })
}

/// Allocates the segment's blocks up to `bytes`, so appends neither grow
/// the file nor allocate (fdatasync then writes data only: about a third
/// faster on ext4 here). Returns whether the file grew. A file system
/// without `fallocate` just goes without.
///
/// On a nearly full disk the space there is gets used: when the full size
/// does not fit, half of it is tried, and so on down to
/// [`PREALLOCATE_BYTES_MIN`]; below that the segment grows as it is
/// written, and a write the disk cannot take fails with
/// [`Error::DiskFull`] (only that commit fails).
fn preallocate(file: &File, path: &Path, bytes: u64) -> Result<bool> {
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat segment", path, e))?
        .len();
    let mut want = bytes;
    while want > len {
        let tried = crate::failpoint::check("log.preallocate")
            .map_err(|e| rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO))
            .and_then(|()| {
                rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, want)
            });
        match tried {
            Ok(()) => {
                if want < bytes {
                    tracing::warn!(segment = %path.display(), preallocated = want, wanted = bytes, "the disk is nearly full: segment preallocated in part");
                }
                return Ok(true);
            }
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
                tracing::debug!(segment = %path.display(), "fallocate unsupported; segments grow as written");
                return Ok(false);
            }
            Err(e) if e == rustix::io::Errno::NOSPC || e == rustix::io::Errno::DQUOT => {
                want /= 2;
                if want < PREALLOCATE_BYTES_MIN {
                    break;
                }
            }
            Err(e) => return Err(Error::io("preallocate segment", path, e.into())),
        }
    }
    if len < bytes {
        tracing::warn!(segment = %path.display(), "the disk is nearly full: segment not preallocated, it grows as written");
    }
    Ok(false)
}

/// The smallest preallocation tried on a nearly full disk.
const PREALLOCATE_BYTES_MIN: u64 = 1024 * 1024;
