//! Archived frames written straight into segment files: the log of a
//! store restored beside a base backup's index, which then only replays
//! what follows the backup. Nothing is indexed here; the files are
//! written past the page cache where the file system allows
//! ([`DirectFile`]).

use std::path::{Path, PathBuf};

use super::direct::DirectFile;
use crate::error::{Error, Result};
use crate::log::frame::FrameHeader;
use crate::log::segment::{SegmentHeader, segment_file_name};

/// A log being written segment by segment, frames in LSN order.
pub(crate) struct RawLog {
    wal: PathBuf,
    segment_bytes: u64,
    current: Option<(DirectFile, PathBuf, u64)>,
    segments: usize,
    /// Up to `layout_to`, segments start exactly at `layout` (a base
    /// backup's): the index it brings names bodies by segment and offset.
    layout: std::collections::BTreeSet<u64>,
    layout_to: u64,
    /// Boundaries of `layout` reached at a frame start.
    layout_hit: usize,
}

impl RawLog {
    /// Starts the log of the store in `dir` (which must not hold one),
    /// rolling to a new segment past `segment_bytes`.
    /// Up to LSN `layout_to`, segments start at the LSNs of `layout`
    /// and nowhere else.
    pub(crate) fn create(
        dir: &Path,
        segment_bytes: u64,
        layout: &[u64],
        layout_to: u64,
    ) -> Result<Self> {
        let wal = dir.join("wal");
        if wal.exists() {
            return Err(Error::Restore(format!(
                "{} already holds a store; restore into a new directory",
                dir.display()
            )));
        }
        std::fs::create_dir_all(&wal).map_err(|e| Error::io("create", &wal, e))?;
        Ok(Self {
            wal,
            segment_bytes,
            current: None,
            segments: 0,
            layout: layout.iter().copied().collect(),
            layout_to,
            layout_hit: 0,
        })
    }

    /// Appends whole checked frames: `log` holds them, `headers` says
    /// where each starts; `prev_crc` is the CRC of the frame before the
    /// first (a new segment's chain field).
    pub(crate) fn append(
        &mut self,
        log: &[u8],
        headers: &[(usize, FrameHeader)],
        mut prev_crc: u32,
    ) -> Result<()> {
        let mut span: Option<(usize, usize)> = None;
        for (at, h) in headers {
            let len = h.frame_len();
            let at_boundary = self.layout.contains(&h.first_lsn);
            self.layout_hit += usize::from(at_boundary);
            let roll = match &self.current {
                None => true,
                Some(_) if at_boundary => true,
                Some(_) if h.first_lsn <= self.layout_to => false,
                Some((_, _, size)) => {
                    let pending = span.map_or(0, |(s, e)| (e - s) as u64);
                    let header = crate::log::segment::SEGMENT_HEADER_BYTES as u64;
                    *size + pending > header && *size + pending + len > self.segment_bytes
                }
            };
            if roll {
                self.write_span(log, span.take())?;
                self.start_segment(h.first_lsn, prev_crc)?;
            }
            span = Some(match span {
                Some((s, _)) => (s, at + len as usize),
                None => (*at, at + len as usize),
            });
            prev_crc = h.crc;
        }
        self.write_span(log, span)
    }

    fn write_span(&mut self, log: &[u8], span: Option<(usize, usize)>) -> Result<()> {
        let (Some((s, e)), Some((file, path, size))) = (span, self.current.as_mut()) else {
            return Ok(());
        };
        file.write_all(&log[s..e])
            .map_err(|err| Error::io("write restored segment", &*path, err))?;
        *size += (e - s) as u64;
        Ok(())
    }

    fn start_segment(&mut self, first_lsn: u64, prev_tail_crc: u32) -> Result<()> {
        self.close_segment()?;
        let path = self.wal.join(segment_file_name(first_lsn));
        let mut file = DirectFile::create_new(&path).map_err(|e| Error::io("create", &path, e))?;
        let header = SegmentHeader {
            first_lsn,
            prev_tail_crc,
        }
        .encode();
        file.write_all(&header)
            .map_err(|e| Error::io("write restored segment", &path, e))?;
        self.current = Some((file, path, header.len() as u64));
        self.segments += 1;
        Ok(())
    }

    fn close_segment(&mut self) -> Result<()> {
        if let Some((file, path, _)) = self.current.take() {
            file.finish()
                .map_err(|e| Error::io("write and sync restored segment", &path, e))?;
        }
        Ok(())
    }

    /// Whether every boundary of the layout up to `lsn` fell on a frame
    /// start (the restored log is laid out as the backup's was).
    pub(crate) fn laid_out_to(&self, lsn: u64) -> bool {
        self.layout_hit == self.layout.range(..=lsn).count()
    }

    /// Makes every segment durable: how many were written.
    pub(crate) fn finish(mut self) -> Result<usize> {
        self.close_segment()?;
        crate::log::files::sync_dir(&self.wal)?;
        Ok(self.segments)
    }
}
