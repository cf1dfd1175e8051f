//! Opening the log after a clean stop or a crash.
//!
//! Rules (see `docs/format.md`, "Recovery"):
//! - A group commit writes one frame and fsyncs it before the next, so only
//!   the newest frame can be torn. A bad frame in the newest segment with no
//!   valid frame after it is a torn tail: it is cut off and the bytes cut
//!   are logged.
//! - Any other bad frame, a broken segment chain or an LSN gap is
//!   corruption: open fails with an error naming the segment and offset,
//!   unless repair is asked for, which cuts the log there and moves every
//!   byte after it to a quarantine folder (nothing is deleted).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::limits::{FRAME_PAYLOAD_BYTES_MAX, SEGMENT_BYTES_TARGET};
use crate::log::files::sync_dir;
use crate::log::frame::{FrameError, FrameHeader};
use crate::log::scanner::scan_segment_stream;
use crate::log::segment::{
    SEGMENT_HEADER_BYTES, SegmentHeader, SegmentScan, list_segments, scan_segment,
};

/// Largest segment file accepted: a full segment plus one maximal frame.
const SEGMENT_FILE_BYTES_MAX: u64 = SEGMENT_BYTES_TARGET + FRAME_PAYLOAD_BYTES_MAX as u64 + 4096;

/// What recovery found.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// First LSN of every segment kept, oldest first.
    pub segments: Vec<u64>,
    /// Valid length of the newest segment.
    pub tail_len: u64,
    /// The newest frame, if the log has any.
    pub last_frame: Option<FrameHeader>,
    /// CRC chaining value for the next segment (last frame's CRC).
    pub last_crc: u32,
    /// The LSN the next record gets.
    pub next_lsn: u64,
    /// Bytes cut from a torn tail.
    pub torn_bytes_cut: u64,
    /// Frames whose CRC was checked.
    pub frames_checked: u64,
    /// Log bytes read and checked.
    pub bytes_checked: u64,
    /// When repair cut the log: the first LSN no longer in it, and where the
    /// cut bytes went.
    pub repaired: Option<(u64, PathBuf)>,
}

/// Options for [`recover`].
pub(crate) struct RecoverOptions<'a> {
    /// Check every frame of every segment (else only the newest two).
    pub verify_all: bool,
    /// Cut the log at mid-log corruption instead of failing.
    pub repair: bool,
    /// The newest segment may hold several unsynced frames (a replica):
    /// a bad frame there is the torn tail even with valid frames after it.
    pub unsynced_tail: bool,
    /// Where repair moves what it cuts.
    pub quarantine_dir: &'a Path,
}

pub(crate) fn read_segment(path: &Path) -> Result<Vec<u8>> {
    let (mut f, len) = open_segment(path)?;
    let mut buf = Vec::with_capacity(len as usize);
    f.read_to_end(&mut buf)
        .map_err(|e| Error::io("read segment", path, e))?;
    Ok(buf)
}

/// Whether the start of `f` is in the page cache (a read that may not
/// wait for the disk finds it there). When that cannot be asked, it is
/// taken to be.
fn in_page_cache(f: &File) -> bool {
    let mut probe = [0u8; 4096];
    let mut bufs = [std::io::IoSliceMut::new(&mut probe)];
    !matches!(
        rustix::io::preadv2(f, &mut bufs, 0, rustix::io::ReadWriteFlags::NOWAIT),
        Err(rustix::io::Errno::AGAIN)
    )
}

/// A segment opened for reading, and its length (refused when larger
/// than a segment can be).
fn open_segment(path: &Path) -> Result<(File, u64)> {
    let f = File::open(path).map_err(|e| Error::io("open segment", path, e))?;
    let len = f
        .metadata()
        .map_err(|e| Error::io("stat segment", path, e))?
        .len();
    if len > SEGMENT_FILE_BYTES_MAX {
        return Err(Error::CorruptLog {
            segment: path.to_owned(),
            offset: 0,
            detail: format!("segment of {len} bytes exceeds {SEGMENT_FILE_BYTES_MAX}"),
        });
    }
    Ok((f, len))
}

/// Scans a whole segment: streamed when it holds only frames (and the
/// zeros of its preallocated end), else read whole, whose bytes are then
/// returned too (what follows damage is looked at).
///
/// A segment not in the page cache (a restore wrote it past the cache, or
/// the machine restarted) is read with `O_DIRECT`: through the cache, each
/// page of it would first be allocated and filled, to be read once. A read
/// that fails either way is left to the whole-file read, which reports it.
fn scan_file(path: &Path) -> Result<(Option<Vec<u8>>, SegmentScan)> {
    let (mut f, len) = open_segment(path)?;
    if !in_page_cache(&f) {
        // A file system without O_DIRECT keeps the file as it was.
        let _ = rustix::fs::fcntl_getfl(&f)
            .and_then(|fl| rustix::fs::fcntl_setfl(&f, fl | rustix::fs::OFlags::DIRECT));
    }
    if let Ok(Some(scan)) = scan_segment_stream(&mut f, len) {
        return Ok((None, scan));
    }
    let bytes = read_segment(path)?;
    let scan = scan_segment(&bytes).map_err(|e| corrupt(path, 0, e.0))?;
    Ok((Some(bytes), scan))
}

fn corrupt(path: &Path, offset: u64, detail: impl Into<String>) -> Error {
    Error::CorruptLog {
        segment: path.to_owned(),
        offset,
        detail: detail.into(),
    }
}

/// Scans the log directory, cuts a torn tail, and reports the log's end.
pub(crate) fn recover(dir: &Path, opts: &RecoverOptions<'_>) -> Result<Recovered> {
    // Leftovers of a segment creation that crashed before its rename.
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("list log", dir, e))? {
        let entry = entry.map_err(|e| Error::io("list log", dir, e))?;
        if entry.path().extension().is_some_and(|x| x == "tmp") {
            std::fs::remove_file(entry.path())
                .map_err(|e| Error::io("remove temporary segment", entry.path(), e))?;
        }
    }
    let segs = list_segments(dir).map_err(|e| Error::io("list log", dir, e))?;
    // Sealed segments checked in full are independent of each other: scan
    // them on several threads first; the checks that chain segments, and
    // the newest segment (which may be cut), stay in order below.
    let n = segs.len();
    let mut prescanned = prescan(&segs, |i| i + 1 < n && (opts.verify_all || i + 2 >= n));
    let mut out = Recovered::default();
    let mut prev: Option<(u64, Option<u32>)> = None; // (end lsn, last crc if known)
    let mut i = 0;
    while i < n {
        let (name_lsn, path) = &segs[i];
        let is_last = i + 1 == n;
        let deep = opts.verify_all || i + 2 >= n;
        if !deep {
            let mut hdr = [0u8; SEGMENT_HEADER_BYTES];
            File::open(path)
                .and_then(|mut f| f.read_exact(&mut hdr))
                .map_err(|e| Error::io("read segment header", path, e))?;
            let h = SegmentHeader::decode(&hdr).map_err(|e| corrupt(path, 0, e.0))?;
            check_chain(path, *name_lsn, &h, prev)?;
            out.segments.push(*name_lsn);
            // The next segment's first LSN is this one's end; its CRC is unknown.
            prev = Some((segs[i + 1].0, None));
            i += 1;
            continue;
        }
        let (bytes, scan) = match prescanned[i].take() {
            Some(scan) => (None, scan?),
            None => scan_file(path)?,
        };
        check_chain(path, *name_lsn, &scan.header, prev)?;
        out.frames_checked += scan.frames.len() as u64;
        out.bytes_checked += scan.valid_len;
        // A zero tail is preallocated space: the data ends where it starts.
        let mut keep_len = scan.valid_len;
        let mut stop_here = false;
        if let Some(stop) = scan.stop.as_ref().filter(|s| !s.zero_tail) {
            if is_last && (!stop.valid_frame_after || opts.unsynced_tail) {
                // The torn frame's bytes; zeros after them are preallocation.
                let end = bytes
                    .as_deref()
                    .and_then(|b| b.iter().rposition(|x| *x != 0))
                    .map_or(scan.valid_len, |i| i as u64 + 1);
                let cut = end.saturating_sub(scan.valid_len);
                truncate(path, scan.valid_len)?;
                tracing::warn!(
                    segment = %path.display(),
                    offset = scan.valid_len,
                    bytes_cut = cut,
                    "cut a torn frame at the end of the log ({})",
                    stop.error
                );
                out.torn_bytes_cut = cut;
                keep_len = scan.valid_len;
            } else if opts.repair {
                let first_lost = scan
                    .frames
                    .last()
                    .map_or(scan.header.first_lsn, |f| f.header.end_lsn());
                let qdir = quarantine(
                    opts.quarantine_dir,
                    first_lost,
                    path,
                    scan.valid_len,
                    &segs[i + 1..],
                )?;
                truncate(path, scan.valid_len)?;
                tracing::error!(
                    segment = %path.display(),
                    offset = stop.offset,
                    first_lost_lsn = first_lost,
                    quarantine = %qdir.display(),
                    "repair cut the log at corruption ({})",
                    stop.error
                );
                out.repaired = Some((first_lost, qdir));
                keep_len = scan.valid_len;
                stop_here = true;
            } else {
                return Err(match &stop.error {
                    FrameError::ChecksumMismatch { .. } => Error::ChecksumMismatch {
                        segment: path.clone(),
                        offset: stop.offset,
                        detail: stop.error.to_string(),
                    },
                    other => corrupt(path, stop.offset, other.to_string()),
                });
            }
        }
        if !is_last && !stop_here && scan.frames.is_empty() {
            return Err(corrupt(
                path,
                SEGMENT_HEADER_BYTES as u64,
                "a sealed segment holds no frame",
            ));
        }
        note_segment(&mut out, *name_lsn, &scan, keep_len);
        prev = Some((out.next_lsn, Some(out.last_crc)));
        if stop_here {
            break;
        }
        i += 1;
    }
    if out.segments.is_empty() {
        out.next_lsn = 1;
    }
    Ok(out)
}

/// Most threads that scan sealed segments at open.
const SCAN_THREADS_MAX: usize = 4;

/// Scans, in parallel, the segments `wanted` selects; the others are `None`.
fn prescan(
    segs: &[(u64, PathBuf)],
    wanted: impl Fn(usize) -> bool,
) -> Vec<Option<Result<SegmentScan>>> {
    let picked: Vec<usize> = (0..segs.len()).filter(|&i| wanted(i)).collect();
    let mut out: Vec<Option<Result<SegmentScan>>> = (0..segs.len()).map(|_| None).collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, SCAN_THREADS_MAX)
        .min(picked.len().max(1));
    let scan_one = |i: usize| -> Result<SegmentScan> { scan_file(&segs[i].1).map(|(_, s)| s) };
    let results: Vec<(usize, Result<SegmentScan>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let mine: Vec<usize> = picked.iter().copied().skip(t).step_by(threads).collect();
                scope.spawn(move || {
                    mine.into_iter()
                        .map(|i| (i, scan_one(i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    for (i, r) in results {
        out[i] = Some(r);
    }
    out
}

fn note_segment(out: &mut Recovered, name_lsn: u64, scan: &SegmentScan, keep_len: u64) {
    out.segments.push(name_lsn);
    out.tail_len = keep_len;
    match scan.frames.last() {
        Some(f) => {
            out.last_frame = Some(f.header);
            out.last_crc = f.header.crc;
            out.next_lsn = f.header.end_lsn();
        }
        None => {
            out.last_crc = scan.header.prev_tail_crc;
            out.next_lsn = scan.header.first_lsn;
        }
    }
}

fn check_chain(
    path: &Path,
    name_lsn: u64,
    h: &SegmentHeader,
    prev: Option<(u64, Option<u32>)>,
) -> Result<()> {
    if h.first_lsn != name_lsn {
        return Err(corrupt(
            path,
            0,
            format!(
                "header says first lsn {}, file name says {name_lsn}",
                h.first_lsn
            ),
        ));
    }
    match prev {
        None if h.prev_tail_crc != 0 && h.first_lsn == 1 => {
            Err(corrupt(path, 0, "the first segment claims a predecessor"))
        }
        Some((end, _)) if end != h.first_lsn => Err(corrupt(
            path,
            0,
            format!(
                "segment starts at lsn {} but the previous one ends before lsn {end}",
                h.first_lsn
            ),
        )),
        Some((_, Some(crc))) if crc != h.prev_tail_crc => Err(corrupt(
            path,
            0,
            format!(
                "segment chain broken: header names previous tail {:#010x}, previous segment ends with {crc:#010x}",
                h.prev_tail_crc
            ),
        )),
        _ => Ok(()),
    }
}

pub(crate) fn truncate(path: &Path, len: u64) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open segment for truncation", path, e))?;
    f.set_len(len)
        .map_err(|e| Error::io("truncate segment", path, e))?;
    f.sync_all().map_err(|source| Error::Fsync {
        path: path.to_owned(),
        source,
    })
}

/// Copies the bytes after `offset` of `path` and moves every later segment
/// into a new quarantine folder, with a manifest. Returns the folder.
pub(crate) fn quarantine(
    root: &Path,
    first_lost: u64,
    path: &Path,
    offset: u64,
    later: &[(u64, PathBuf)],
) -> Result<PathBuf> {
    quarantine_as(root, "repair", first_lost, path, offset, later)
}

/// [`quarantine`] into `root/KIND-lsn-FIRST_LOST`.
pub(crate) fn quarantine_as(
    root: &Path,
    kind: &str,
    first_lost: u64,
    path: &Path,
    offset: u64,
    later: &[(u64, PathBuf)],
) -> Result<PathBuf> {
    let qdir = root.join(format!("{kind}-lsn-{first_lost:020}"));
    std::fs::create_dir_all(&qdir).map_err(|e| Error::io("create quarantine", &qdir, e))?;
    let bytes = read_segment(path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cut_name = format!("{name}.from-{offset}");
    let cut_path = qdir.join(&cut_name);
    std::fs::write(&cut_path, &bytes[offset as usize..])
        .map_err(|e| Error::io("write quarantine", &cut_path, e))?;
    let mut manifest = format!(
        "Vigil log {kind}\nfirst lost lsn: {first_lost}\n{cut_name}: bytes {offset}.. of {name}\n"
    );
    for (_, p) in later {
        let file = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dest = qdir.join(&file);
        std::fs::rename(p, &dest).map_err(|e| Error::io("move segment to quarantine", p, e))?;
        manifest.push_str(&format!("{file}: whole segment\n"));
    }
    let mpath = qdir.join("MANIFEST.txt");
    std::fs::write(&mpath, manifest).map_err(|e| Error::io("write manifest", &mpath, e))?;
    for f in std::fs::read_dir(&qdir).map_err(|e| Error::io("list quarantine", &qdir, e))? {
        let p = f
            .map_err(|e| Error::io("list quarantine", &qdir, e))?
            .path();
        File::open(&p)
            .and_then(|f| f.sync_all())
            .map_err(|source| Error::Fsync {
                path: p.clone(),
                source,
            })?;
    }
    sync_dir(&qdir)?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(qdir)
}
