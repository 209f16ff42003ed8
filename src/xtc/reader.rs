//! Reading datagrams from files: sequential (buffered, header-only skipping) and positioned.

use super::dgram::Dgram;
use super::error::{FormatError, XtcError};
use super::header::{DGRAM_HEADER_SIZE, DgramHeader};
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

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
}

impl DgramReader {
    /// Opens `path` for sequential reading from the start.
    pub fn open(path: &Path) -> Result<Self, XtcError> {
        let file = File::open(path).map_err(|e| XtcError::io(path, 0, e))?;
        let len = file.metadata().map_err(|e| XtcError::io(path, 0, e))?.len();
        Ok(Self {
            file: BufReader::with_capacity(READ_BUFFER, file),
            path: path.to_path_buf(),
            pos: 0,
            len,
            truncation: None,
            peeked: None,
        })
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
        if self.truncation.is_some() || self.pos >= self.len {
            return Ok(None);
        }
        let left = self.len - self.pos;
        if left < DGRAM_HEADER_SIZE as u64 {
            self.truncation = Some(Truncation {
                offset: self.pos,
                expected: 0,
                available: left,
            });
            return Ok(None);
        }
        let mut h = [0u8; DGRAM_HEADER_SIZE];
        self.file
            .read_exact(&mut h)
            .map_err(|e| XtcError::io(&self.path, self.pos, e))?;
        let header =
            DgramHeader::parse(&h, self.pos).map_err(|e| XtcError::format(&self.path, e))?;
        if header.size() > left {
            self.truncation = Some(Truncation {
                offset: self.pos,
                expected: header.size(),
                available: left,
            });
            return Ok(None);
        }
        Ok(Some(header))
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
    file.read_exact_at(buf, offset)
        .map_err(|e| XtcError::io(path, offset, e))?;
    Dgram::parse(buf, offset).map_err(|e| XtcError::format(path, e))
}
