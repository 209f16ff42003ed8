//! Event building across streams on the exact `sec << 32 | nsec` key, as psana does: take the
//! smallest key among the streams' next datagrams and join every stream whose next datagram
//! has it. Transitions belong in every stream; L1Accepts may come from a subset (mixed rates).
//! Nothing is dropped: a transition or event missing an expected stream is returned flagged.
//! Over live streams no event is built while a stream that has not ended has nothing complete
//! yet: its next datagram could have the smallest key.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::dgram::Dgram;
use super::error::XtcError;
use super::header::TransitionId;
use super::index::{EntrySource, IndexEntry, Poll, StreamIndexer};
use super::live::open_either;
use super::reader::read_dgram_at;
use super::run::RunFiles;

/// One stream's contribution to an event.
#[derive(Debug, Clone)]
pub struct EventPart {
    /// Index of the stream in the builder's list.
    pub stream: usize,
    pub entry: IndexEntry,
}

/// One built event (an L1Accept or a transition) with the streams that took part.
#[derive(Debug, Clone)]
pub struct BuiltEvent {
    pub timestamp: u64,
    pub service: TransitionId,
    pub parts: Vec<EventPart>,
    /// Streams expected here but absent (every stream for transitions).
    pub missing: Vec<usize>,
}

impl BuiltEvent {
    /// True when every expected stream contributed.
    pub fn complete(&self) -> bool {
        self.missing.is_empty()
    }

    /// The contribution of `stream`, if any.
    pub fn part(&self, stream: usize) -> Option<&EventPart> {
        self.parts.iter().find(|p| p.stream == stream)
    }
}

/// Counts kept while building.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BuildStats {
    pub events: u64,
    pub transitions: u64,
    pub incomplete_events: u64,
    pub incomplete_transitions: u64,
}

/// Merges per-stream index iterators into events in timestamp order.
pub struct EventBuilder<I: EntrySource> {
    streams: Vec<I>,
    heads: Vec<Option<IndexEntry>>,
    ended: Vec<bool>,
    expected: Vec<bool>,
    stats: BuildStats,
}

impl<I: EntrySource> EventBuilder<I> {
    /// A builder over `streams`; `expected[i]` says whether an L1Accept without stream `i` is
    /// incomplete (e.g. the streams carrying the segments of the detector being processed).
    pub fn new(streams: Vec<I>, expected: Vec<bool>) -> Self {
        let n = streams.len();
        let mut expected = expected;
        expected.resize(n, false);
        Self {
            streams,
            heads: (0..n).map(|_| None).collect(),
            ended: vec![false; n],
            expected,
            stats: BuildStats::default(),
        }
    }

    /// Changes which streams an L1Accept must contain to be complete (e.g. once the
    /// Configure told which streams carry the detector).
    pub fn set_expected(&mut self, expected: Vec<bool>) {
        let n = self.streams.len();
        self.expected = expected;
        self.expected.resize(n, false);
    }

    /// Whether stream `i` is expected in every L1Accept.
    pub fn expected(&self, i: usize) -> bool {
        self.expected.get(i).copied().unwrap_or(false)
    }

    /// Counts so far.
    pub fn stats(&self) -> BuildStats {
        self.stats
    }

    /// The underlying stream `i` (for chunk tables, lookups, truncations).
    pub fn stream(&self, i: usize) -> Option<&I> {
        self.streams.get(i)
    }

    /// Number of streams.
    pub fn num_streams(&self) -> usize {
        self.streams.len()
    }

    /// The next event or transition, `None` when every stream is exhausted (a live stream with
    /// nothing complete yet is an error here: use [`EventBuilder::poll_event`]).
    pub fn next_event(&mut self) -> Result<Option<BuiltEvent>, XtcError> {
        match self.poll_event()? {
            Poll::Ready(e) => Ok(Some(e)),
            Poll::End => Ok(None),
            Poll::Pending => Err(XtcError::Layout(format!(
                "live streams {:?} have no complete datagram yet",
                self.pending_streams()
            ))),
        }
    }

    /// Streams that have not ended and have no datagram waiting.
    pub fn pending_streams(&self) -> Vec<usize> {
        (0..self.streams.len())
            .filter(|&i| self.heads[i].is_none() && !self.ended[i])
            .collect()
    }

    /// The next event or transition; `Pending` while a stream that has not ended has nothing
    /// complete, `End` when every stream has ended.
    pub fn poll_event(&mut self) -> Result<Poll<BuiltEvent>, XtcError> {
        let mut key: Option<(u64, bool)> = None;
        let mut pending = false;
        for ((s, head), ended) in self
            .streams
            .iter_mut()
            .zip(&mut self.heads)
            .zip(&mut self.ended)
        {
            if head.is_none() && !*ended {
                match s.poll_entry()? {
                    Poll::Ready(e) => *head = Some(e),
                    Poll::Pending => pending = true,
                    Poll::End => *ended = true,
                }
            }
            if let Some(e) = head {
                // Transitions sort before L1Accepts of the same key.
                let k = (e.header.timestamp, !e.service().is_transition());
                if key.is_none_or(|m| k < m) {
                    key = Some(k);
                }
            }
        }
        if pending {
            return Ok(Poll::Pending);
        }
        let Some((ts, is_l1)) = key else {
            return Ok(Poll::End);
        };
        let mut parts = Vec::new();
        let mut service = TransitionId::L1Accept;
        for (i, head) in self.heads.iter_mut().enumerate() {
            if head
                .as_ref()
                .is_some_and(|e| e.header.timestamp == ts && e.service().is_transition() != is_l1)
            {
                let entry = head.take().expect("checked above");
                service = entry.service();
                parts.push(EventPart { stream: i, entry });
            }
        }
        let missing: Vec<usize> = (0..self.streams.len())
            .filter(|i| parts.iter().all(|p| p.stream != *i))
            .filter(|i| !is_l1 || self.expected[*i])
            .collect();
        if is_l1 {
            self.stats.events += 1;
            self.stats.incomplete_events += u64::from(!missing.is_empty());
        } else {
            self.stats.transitions += 1;
            self.stats.incomplete_transitions += u64::from(!missing.is_empty());
        }
        Ok(Poll::Ready(BuiltEvent {
            timestamp: ts,
            service,
            parts,
            missing,
        }))
    }
}

impl<I: EntrySource> Iterator for EventBuilder<I> {
    type Item = Result<BuiltEvent, XtcError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}

impl EventBuilder<StreamIndexer> {
    /// Opens every stream of `run` (through its small data when `use_smd`) and builds events
    /// across them, with no stream expected yet.
    pub fn for_run(run: &RunFiles, use_smd: bool) -> Result<Self, XtcError> {
        let indexers = run
            .streams
            .iter()
            .map(|s| StreamIndexer::open(s, use_smd))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EventBuilder::new(indexers, Vec::new()))
    }

    /// Like [`EventBuilder::for_run`] over a run still being written.
    pub fn for_live_run(run: &RunFiles, use_smd: bool) -> Result<Self, XtcError> {
        let indexers = run
            .streams
            .iter()
            .map(|s| StreamIndexer::open_live(s, use_smd))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EventBuilder::new(indexers, Vec::new()))
    }

    /// Reads the bigdata datagram of `part` (one of this builder's event parts) into `buf`,
    /// opening each chunk file once into `files`; `None` when the part has no bigdata location.
    pub fn read_part<'b>(
        &self,
        part: &EventPart,
        files: &mut BTreeMap<PathBuf, File>,
        buf: &'b mut Vec<u8>,
    ) -> Result<Option<(PathBuf, Dgram<'b>)>, XtcError> {
        let Some(loc) = part.entry.location else {
            return Ok(None);
        };
        let path = self
            .stream(part.stream)
            .and_then(|ix| ix.chunk_path(loc.chunk))
            .map(Path::to_path_buf)
            .ok_or_else(|| {
                XtcError::Layout(format!(
                    "chunk {} of stream {} unknown",
                    loc.chunk, part.stream
                ))
            })?;
        if !files.contains_key(&path) {
            let (f, _) = open_either(&path).map_err(|e| XtcError::io(&path, 0, e))?;
            files.insert(path.clone(), f);
        }
        let d = read_dgram_at(&files[&path], &path, loc.offset, loc.size, buf)?;
        Ok(Some((path, d)))
    }
}
