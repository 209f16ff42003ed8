//! Per-stream datagram index: where each datagram of a stream lives, from the small data when
//! present (the bigdata is never opened) or by scanning bigdata headers otherwise, following
//! chunk switches announced by chunkinfo. A live index follows files still being written: it
//! answers "not yet" ([`Poll::Pending`]) where a finished file would end.

use super::dgram::Dgram;
use super::error::{FormatError, XtcError};
use super::header::{DgramHeader, NamesId, TransitionId, TypeKind};
use super::live::{existing_name, renamed};
use super::names::NamesLookup;
use super::reader::{DgramReader, Truncation};
use super::run::StreamFiles;
use super::smalldata::{chunk_info, find_smdinfo, smd_offset_size};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a datagram's bytes are in a stream's bigdata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub chunk: u32,
    pub offset: u64,
    pub size: u64,
}

/// One indexed datagram of a stream.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    pub header: DgramHeader,
    /// Bigdata location (always known for L1Accepts; for transitions only when scanning bigdata).
    pub location: Option<Location>,
    /// The whole transition datagram (small-data copy when indexing small data); `None` for
    /// L1Accepts.
    pub transition: Option<Arc<Vec<u8>>>,
}

/// The next item of a source that may still be growing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll<T> {
    Ready(T),
    /// Nothing complete yet; the source has not ended.
    Pending,
    /// The source has ended.
    End,
}

/// A stream's datagrams, one at a time, possibly while they are being written.
pub trait EntrySource {
    fn poll_entry(&mut self) -> Result<Poll<IndexEntry>, XtcError>;
}

impl IndexEntry {
    /// The transition id.
    pub fn service(&self) -> TransitionId {
        self.header.service()
    }
}

/// Reads one stream's index, datagram by datagram.
pub struct StreamIndexer {
    reader: DgramReader,
    from_smd: bool,
    lookup: NamesLookup,
    smd_id: Option<NamesId>,
    chunk: u32,
    chunks: Vec<(u32, PathBuf)>,
    pending_switch: Option<u32>,
    buf: Vec<u8>,
    truncations: Vec<(PathBuf, Truncation)>,
    /// Bigdata file lengths by chunk, read once when small data points into them.
    chunk_len: Vec<(u32, Option<u64>)>,
    past_end: u64,
    live: bool,
    end_run: bool,
    ended: bool,
}

impl StreamIndexer {
    /// Indexes `files`, from its small data when `use_smd` and a small-data file exists.
    pub fn open(files: &StreamFiles, use_smd: bool) -> Result<Self, XtcError> {
        Self::open_with(files, use_smd, false)
    }

    fn open_with(files: &StreamFiles, use_smd: bool, live: bool) -> Result<Self, XtcError> {
        let chunks: Vec<(u32, PathBuf)> = files
            .chunks
            .iter()
            .map(|c| (c.chunk, c.path.clone()))
            .collect();
        let first = chunks.first().cloned().ok_or_else(|| {
            XtcError::Layout(format!("stream s{:03} has no bigdata file", files.stream))
        })?;
        let (path, from_smd) = match (&files.smd, use_smd) {
            (Some(smd), true) => (smd.clone(), true),
            _ => (first.1.clone(), false),
        };
        let reader = if live {
            DgramReader::open_live(&path)?
        } else {
            DgramReader::open(&path)?
        };
        Ok(Self {
            reader,
            from_smd,
            lookup: NamesLookup::new(),
            smd_id: None,
            chunk: first.0,
            chunks,
            pending_switch: None,
            buf: Vec::with_capacity(64 * 1024),
            truncations: Vec::new(),
            chunk_len: Vec::new(),
            past_end: 0,
            live,
            end_run: false,
            ended: false,
        })
    }

    /// Indexes `files` while they are being written: a stream ends at its EndRun (after the
    /// datagrams complete by then), or when its `.inprogress` file has been renamed and read to
    /// its end; until then a missing datagram is [`Poll::Pending`].
    pub fn open_live(files: &StreamFiles, use_smd: bool) -> Result<Self, XtcError> {
        Self::open_with(files, use_smd, true)
    }

    /// True once the stream's EndRun was indexed.
    pub fn saw_end_run(&self) -> bool {
        self.end_run
    }

    /// True when this index comes from small data.
    pub fn from_smd(&self) -> bool {
        self.from_smd
    }

    /// The file holding `chunk` (from the run's file list or a chunkinfo announcement).
    pub fn chunk_path(&self, chunk: u32) -> Option<&Path> {
        self.chunks
            .iter()
            .find(|(c, _)| *c == chunk)
            .map(|(_, p)| p.as_path())
    }

    /// Every chunk known so far, by id.
    pub fn chunk_paths(&self) -> &[(u32, PathBuf)] {
        &self.chunks
    }

    /// The schemas of the Configure in force.
    pub fn lookup(&self) -> &NamesLookup {
        &self.lookup
    }

    /// Files that end inside a datagram, each listed once: a file read to its end, or a bigdata
    /// chunk that small data points past.
    pub fn truncations(&self) -> &[(PathBuf, Truncation)] {
        &self.truncations
    }

    /// L1Accepts whose small-data location lies past the end of their bigdata chunk.
    pub fn events_past_end(&self) -> u64 {
        self.past_end
    }

    fn note(&mut self, path: PathBuf, t: Truncation) {
        if !self.truncations.iter().any(|(p, _)| *p == path) {
            self.truncations.push((path, t));
        }
    }

    /// Checks a small-data location against its bigdata chunk's length (read once per chunk).
    fn check_extent(&mut self, loc: Location) {
        let cached = self
            .chunk_len
            .iter()
            .find(|(c, _)| *c == loc.chunk)
            .map(|&(_, len)| len);
        let stale = |len: Option<u64>| len.is_none_or(|l| loc.offset.saturating_add(loc.size) > l);
        let len = match cached {
            Some(len) if !(self.live && stale(len)) => len,
            _ => {
                let len = self
                    .chunk_path(loc.chunk)
                    .and_then(existing_name)
                    .and_then(|p| std::fs::metadata(p).ok())
                    .map(|m| m.len());
                self.chunk_len.retain(|(c, _)| *c != loc.chunk);
                self.chunk_len.push((loc.chunk, len));
                len
            }
        };
        let Some(len) = len else {
            return;
        };
        if loc.offset.saturating_add(loc.size) > len {
            self.past_end += 1;
            if let Some(path) = self.chunk_path(loc.chunk).map(Path::to_path_buf) {
                let available = len.saturating_sub(loc.offset);
                self.note(
                    path,
                    Truncation {
                        offset: loc.offset,
                        expected: loc.size,
                        available,
                    },
                );
            }
        }
    }

    fn set_chunk_path(&mut self, chunk: u32, path: PathBuf) {
        match self.chunks.iter_mut().find(|(c, _)| *c == chunk) {
            Some(e) => e.1 = path,
            None => self.chunks.push((chunk, path)),
        }
    }

    fn note_transition(&mut self, dgram: &Dgram<'_>, path: &Path) -> Result<(), XtcError> {
        let fmt = |e: FormatError| XtcError::format(path, e);
        match dgram.service() {
            TransitionId::Configure => {
                self.lookup = NamesLookup::from_configure(&dgram.root()).map_err(fmt)?;
                self.smd_id = find_smdinfo(&self.lookup);
            }
            TransitionId::Enable => {
                if let Some(info) = chunk_info(dgram, &self.lookup).map_err(fmt)?
                    && info.chunk_id > self.chunk
                {
                    let dir = self
                        .chunk_path(self.chunk)
                        .and_then(Path::parent)
                        .unwrap_or(Path::new("."))
                        .to_path_buf();
                    self.set_chunk_path(info.chunk_id, dir.join(&info.filename));
                    self.pending_switch = Some(info.chunk_id);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Moves to the next bigdata chunk at the end of the current one (bigdata scanning only).
    fn advance_chunk(&mut self) -> Result<bool, XtcError> {
        let next = self.pending_switch.take().or_else(|| {
            self.chunks
                .iter()
                .map(|(c, _)| *c)
                .filter(|c| *c > self.chunk)
                .min()
        });
        let Some(next) = next else {
            return Ok(false);
        };
        let path = self
            .chunk_path(next)
            .map(Path::to_path_buf)
            .ok_or_else(|| {
                XtcError::Layout(format!("chunk {next} announced but its file is unknown"))
            })?;
        let found = if self.live {
            existing_name(&path)
        } else {
            Some(path.clone()).filter(|p| p.is_file())
        };
        let Some(found) = found else {
            return Err(XtcError::Layout(format!(
                "{}: chunk {next} announced by chunkinfo is missing",
                path.display()
            )));
        };
        self.reader = if self.live {
            DgramReader::open_live(&found)?
        } else {
            DgramReader::open(&found)?
        };
        self.chunk = next;
        Ok(true)
    }

    /// In live bigdata scanning: whether the chunk after the current one exists (so the current
    /// one is complete: the writer starts a chunk only after closing the previous).
    fn next_chunk_exists(&self) -> bool {
        let next = self.pending_switch.or_else(|| {
            self.chunks
                .iter()
                .map(|(c, _)| *c)
                .filter(|c| *c > self.chunk)
                .min()
        });
        next.and_then(|c| self.chunk_path(c))
            .and_then(existing_name)
            .is_some()
    }

    fn record_truncation(&mut self) {
        if let Some(t) = self.reader.truncation() {
            self.note(self.reader.path().to_path_buf(), t);
        }
    }

    /// The next datagram of a finished stream, or `None` at its end (a live index that has
    /// nothing complete yet is an error here: poll it with [`EntrySource::poll_entry`]).
    pub fn next_entry(&mut self) -> Result<Option<IndexEntry>, XtcError> {
        match self.poll_entry()? {
            Poll::Ready(e) => Ok(Some(e)),
            Poll::End => Ok(None),
            Poll::Pending => Err(XtcError::Layout(format!(
                "{}: live stream has no complete datagram yet",
                self.reader.path().display()
            ))),
        }
    }

    fn poll_inner(&mut self) -> Result<Poll<IndexEntry>, XtcError> {
        if self.ended {
            return Ok(Poll::End);
        }
        let next = if self.from_smd {
            self.next_from_smd()?
        } else {
            self.next_from_bigdata()?
        };
        if let Some(e) = next {
            self.end_run |= e.service() == TransitionId::EndRun;
            return Ok(Poll::Ready(e));
        }
        if self.reader.is_live() {
            // Complete when the EndRun was read or the writer renamed the file; then whatever
            // it holds is read, and an incomplete tail is a truncation.
            if !(self.end_run || renamed(self.reader.path())) {
                return Ok(Poll::Pending);
            }
            self.reader.finish_live()?;
            return self.poll_inner();
        }
        if self.live && !self.from_smd && self.pending_switch.is_some() {
            // The bigdata chunk ended, announced a next one that does not exist yet.
            return Ok(Poll::Pending);
        }
        self.ended = true;
        Ok(Poll::End)
    }

    fn next_from_smd(&mut self) -> Result<Option<IndexEntry>, XtcError> {
        let mut buf = std::mem::take(&mut self.buf);
        let result = self.smd_step(&mut buf);
        self.buf = buf;
        result
    }

    fn smd_step(&mut self, buf: &mut Vec<u8>) -> Result<Option<IndexEntry>, XtcError> {
        let path = self.reader.path().to_path_buf();
        let Some(d) = self.reader.next_into(buf)? else {
            if !self.reader.is_live() {
                self.record_truncation();
            }
            return Ok(None);
        };
        let header = d.header;
        if d.service() == TransitionId::L1Accept {
            let (offset, size) = match self.smd_id.and_then(|id| fast_smd_l1(&d, id)) {
                Some(v) => v,
                None => {
                    smd_offset_size(&d, &self.lookup).map_err(|e| XtcError::format(&path, e))?
                }
            };
            let location = Location {
                chunk: self.chunk,
                offset,
                size,
            };
            self.check_extent(location);
            return Ok(Some(IndexEntry {
                header,
                location: Some(location),
                transition: None,
            }));
        }
        let bytes = Arc::new(d.bytes.to_vec());
        self.note_transition(&d, &path)?;
        if let Some(next) = self.pending_switch.take() {
            self.chunk = next;
        }
        Ok(Some(IndexEntry {
            header,
            location: None,
            transition: Some(bytes),
        }))
    }

    fn next_from_bigdata(&mut self) -> Result<Option<IndexEntry>, XtcError> {
        loop {
            let path = self.reader.path().to_path_buf();
            let offset = self.reader.position();
            let mut buf = std::mem::take(&mut self.buf);
            let step = self.bigdata_step(&mut buf, &path, offset);
            self.buf = buf;
            match step? {
                Some(e) => return Ok(Some(e)),
                None if self.reader.is_live() => {
                    if !self.next_chunk_exists() {
                        return Ok(None);
                    }
                    self.reader.finish_live()?;
                    if let Some(e) = self.bigdata_again()? {
                        return Ok(Some(e));
                    }
                    self.record_truncation();
                    self.advance_chunk()?;
                }
                None => {
                    self.record_truncation();
                    if self.live && self.pending_switch.is_some() && !self.next_chunk_exists() {
                        return Ok(None);
                    }
                    if !self.advance_chunk()? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    fn bigdata_again(&mut self) -> Result<Option<IndexEntry>, XtcError> {
        let path = self.reader.path().to_path_buf();
        let offset = self.reader.position();
        let mut buf = std::mem::take(&mut self.buf);
        let step = self.bigdata_step(&mut buf, &path, offset);
        self.buf = buf;
        step
    }

    fn bigdata_step(
        &mut self,
        buf: &mut Vec<u8>,
        path: &Path,
        offset: u64,
    ) -> Result<Option<IndexEntry>, XtcError> {
        let chunk = self.chunk;
        let location = |size| Location {
            chunk,
            offset,
            size,
        };
        if self.peek_is_l1()? {
            let Some((_, header)) = self.reader.next_header()? else {
                return Ok(None);
            };
            return Ok(Some(IndexEntry {
                header,
                location: Some(location(header.size())),
                transition: None,
            }));
        }
        let Some(d) = self.reader.next_into(buf)? else {
            return Ok(None);
        };
        let entry = IndexEntry {
            header: d.header,
            location: Some(location(d.header.size())),
            transition: Some(Arc::new(d.bytes.to_vec())),
        };
        self.note_transition(&d, path)?;
        Ok(Some(entry))
    }

    fn peek_is_l1(&mut self) -> Result<bool, XtcError> {
        self.reader
            .peek_service()
            .map(|s| s == Some(TransitionId::L1Accept))
    }
}

impl EntrySource for StreamIndexer {
    fn poll_entry(&mut self) -> Result<Poll<IndexEntry>, XtcError> {
        self.poll_inner()
    }
}

impl Iterator for StreamIndexer {
    type Item = Result<IndexEntry, XtcError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_entry().transpose()
    }
}

/// Reads (offset, size) straight from the fixed layout the small-data writers produce:
/// root → ShapesData(smdinfo) → Shapes (empty) → Data (two u64). `None` when the layout differs.
fn fast_smd_l1(d: &Dgram<'_>, smd_id: NamesId) -> Option<(u64, u64)> {
    let root = d.root();
    let mut children = root.children();
    let sd = children.next()?.ok()?;
    if sd.header.src != smd_id.0 || sd.header.contains.kind() != TypeKind::ShapesData {
        return None;
    }
    let mut inner = sd.children();
    let shapes = inner.next()?.ok()?;
    let data = inner.next()?.ok()?;
    if shapes.header.contains.kind() != TypeKind::Shapes
        || data.header.contains.kind() != TypeKind::Data
        || data.payload.len() != 16
    {
        return None;
    }
    let off = super::bytes::u64_at(data.payload, 0)?;
    let size = super::bytes::u64_at(data.payload, 8)?;
    Some((off, size))
}
