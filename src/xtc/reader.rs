//! Reading datagrams from files: sequential (buffered, header-only skipping) and positioned.
//! A live reader follows a file that is still growing: an incomplete last datagram is "not yet",
//! not a truncation, until the caller says the file is complete.

use super::dgram::Dgram;
use super::error::{FormatError, XtcError};
use super::header::{DGRAM_HEADER_SIZE, DgramHeader};
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Buffer size of sequential readers: large enough for many small datagrams per syscall,
/// small enough that skipping a large payload wastes little.
const READ_BUFFER: usize = 256 * 1024;

/// A file that ends inside a datagram (normal for files still being written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    /// Offset of the incomplete datagram.
    pub offset: u64,
    /// Bytes its header promises (0 when the header itself is cut).
    pub expected: u64,
    /// Bytes actually present from `offset` to the end of the file.
    pub available: u64,
}

/// Sequential datagram reader over one file.
pub struct DgramReader {
    file: BufReader<File>,
    path: PathBuf,
    pos: u64,
    len: u64,
    truncation: Option<Truncation>,
    peeked: Option<DgramHeader>,
    /// A header read whose datagram is not complete yet (live only).
    partial: Option<DgramHeader>,
    live: bool,
}

impl DgramReader {
    /// Opens `path` for sequential reading from the start; a DAQ file is found under either of
    /// its names (`x.xtc2`, `x.xtc2.inprogress`: the writer may rename it at any moment), and
    /// [`DgramReader::path`] is the name it was opened under.
    pub fn open(path: &Path) -> Result<Self, XtcError> {
        let (file, path) = super::live::open_either(path).map_err(|e| XtcError::io(path, 0, e))?;
        let len = file
            .metadata()
            .map_err(|e| XtcError::io(&path, 0, e))?
            .len();
        Ok(Self {
            file: BufReader::with_capacity(READ_BUFFER, file),
            path,
            pos: 0,
            len,
            truncation: None,
            peeked: None,
            partial: None,
            live: false,
        })
    }

    /// Opens `path` to follow it while it grows: a missing or incomplete next datagram reads as
    /// `None` without marking a truncation, and the file's length is read again on each try.
    pub fn open_live(path: &Path) -> Result<Self, XtcError> {
        let mut r = Self::open(path)?;
        r.live = true;
        Ok(r)
    }

    /// True while following a growing file.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// Declares a followed file complete: its length is read a last time, and from now on an
    /// incomplete last datagram is a truncation.
    pub fn finish_live(&mut self) -> Result<(), XtcError> {
        if self.live {
            self.refresh()?;
            self.live = false;
        }
        Ok(())
    }

    fn refresh(&mut self) -> Result<(), XtcError> {
        self.len = self
            .file
            .get_ref()
            .metadata()
            .map_err(|e| XtcError::io(&self.path, self.pos, e))?
            .len();
        Ok(())
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Offset of the next datagram.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Set once the reader met a datagram cut by the end of the file.
    pub fn truncation(&self) -> Option<Truncation> {
        self.truncation
    }

    /// The header of the next datagram without consuming it; `Ok(None)` at a clean end of file
    /// or a truncated last datagram.
    pub fn peek_header(&mut self) -> Result<Option<DgramHeader>, XtcError> {
        if self.peeked.is_none() {
            self.peeked = self.read_header()?;
        }
        Ok(self.peeked)
    }

    /// The transition id of the next datagram, if any.
    pub fn peek_service(&mut self) -> Result<Option<super::header::TransitionId>, XtcError> {
        Ok(self.peek_header()?.map(|h| h.service()))
    }

    fn take_header(&mut self) -> Result<Option<DgramHeader>, XtcError> {
        match self.peeked.take() {
            Some(h) => Ok(Some(h)),
            None => self.read_header(),
        }
    }

    fn read_header(&mut self) -> Result<Option<DgramHeader>, XtcError> {
        if self.truncation.is_some() {
            return Ok(None);
        }
        if let Some(h) = self.partial {
            if self.live && h.size() > self.len - self.pos {
                self.refresh()?;
            }
            let left = self.len - self.pos;
            if h.size() <= left {
                self.partial = None;
                return Ok(Some(h));
            }
            if !self.live {
                self.truncation = Some(Truncation {
                    offset: self.pos,
                    expected: h.size(),
                    available: left,
                });
            }
            return Ok(None);
        }
        if self.live && self.len - self.pos < DGRAM_HEADER_SIZE as u64 {
            self.refresh()?;
        }
        if self.pos >= self.len {
            return Ok(None);
        }
        let left = self.len - self.pos;
        if left < DGRAM_HEADER_SIZE as u64 {
            if !self.live {
                self.truncation = Some(Truncation {
                    offset: self.pos,
                    expected: 0,
                    available: left,
                });
            }
            return Ok(None);
        }
        let mut h = [0u8; DGRAM_HEADER_SIZE];
        self.file
            .read_exact(&mut h)
            .map_err(|e| XtcError::io(&self.path, self.pos, e))?;
        let header =
            DgramHeader::parse(&h, self.pos).map_err(|e| XtcError::format(&self.path, e))?;
        self.partial = Some(header);
        self.read_header()
    }

    /// Reads the next whole datagram into `buf` (reused) and returns a view of it.
    pub fn next_into<'b>(&mut self, buf: &'b mut Vec<u8>) -> Result<Option<Dgram<'b>>, XtcError> {
        let Some(header) = self.take_header()? else {
            return Ok(None);
        };
        let size = header.size() as usize;
        buf.clear();
        buf.reserve(size);
        header.write(buf);
        buf.resize(size, 0);
        self.file
            .read_exact(&mut buf[DGRAM_HEADER_SIZE..])
            .map_err(|e| XtcError::io(&self.path, self.pos + DGRAM_HEADER_SIZE as u64, e))?;
        let offset = self.pos;
        self.pos += size as u64;
        Ok(Some(Dgram {
            header,
            offset,
            bytes: buf.as_slice(),
        }))
    }

    /// Reads the next header and skips its payload; returns (offset, header).
    pub fn next_header(&mut self) -> Result<Option<(u64, DgramHeader)>, XtcError> {
        let Some(header) = self.take_header()? else {
            return Ok(None);
        };
        let skip = header.size() - DGRAM_HEADER_SIZE as u64;
        self.file
            .seek_relative(skip as i64)
            .map_err(|e| XtcError::io(&self.path, self.pos, e))?;
        let offset = self.pos;
        self.pos += header.size();
        Ok(Some((offset, header)))
    }
}

/// Reads the datagram of `size` bytes at `offset` of an open file into `buf` (positioned read,
/// no shared cursor), checking that the header agrees with the expected size.
pub fn read_dgram_at<'b>(
    file: &File,
    path: &Path,
    offset: u64,
    size: u64,
    buf: &'b mut Vec<u8>,
) -> Result<Dgram<'b>, XtcError> {
    if size < DGRAM_HEADER_SIZE as u64 || size > u64::from(u32::MAX) + 12 {
        return Err(XtcError::format(
            path,
            FormatError::new(
                offset,
                format!("index gives an impossible datagram size {size}"),
            ),
        ));
    }
    buf.clear();
    buf.resize(size as usize, 0);
    read_exact_at_patiently(file, buf, offset).map_err(|e| XtcError::io(path, offset, e))?;
    Dgram::parse(buf, offset).map_err(|e| XtcError::format(path, e))
}

/// How long positioned reads wait for bytes that a file being written does not hold yet, in
/// milliseconds (0: a short read fails at once).
static SHORT_READ_PATIENCE_MS: AtomicU64 = AtomicU64::new(0);

/// Lets positioned reads in this process wait up to `d` for a file to grow to the bytes asked
/// for (live runs: a payload may be read just after it was written).
pub fn set_short_read_patience(d: Duration) {
    SHORT_READ_PATIENCE_MS.store(d.as_millis() as u64, Ordering::Relaxed);
}

fn read_exact_at_patiently(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    let patience = Duration::from_millis(SHORT_READ_PATIENCE_MS.load(Ordering::Relaxed));
    let start = Instant::now();
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) if start.elapsed() < patience => std::thread::sleep(Duration::from_millis(5)),
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "file ends {} bytes short of the datagram{}",
                        buf.len() - got,
                        if patience.is_zero() {
                            String::new()
                        } else {
                            format!(" (waited {:.1} s for it)", patience.as_secs_f64())
                        }
                    ),
                ));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
