//! The coordinator role (rank 0): builds events across the run's streams from the small data,
//! hands work units to workers on request, delivers every transition to every worker before
//! the events that follow it, and gathers the final counts.

use super::layout::Layout;
use super::messages::{EventDesc, Msg, Part, RoleId, TransitionMsg, WorkerStats, WriterStats};
use super::router::Mailbox;
use super::summary::{Progress, Summary};
use crate::config::Config;
use crate::detector::frame::is_raw_segment;
use crate::xtc::eventbuild::{BuiltEvent, EventBuilder};
use crate::xtc::index::StreamIndexer;
use crate::xtc::run::RunFiles;
use crate::xtc::{Dgram, NamesLookup, TransitionId};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

struct Feed {
    builder: EventBuilder<StreamIndexer>,
    stream_ids: Vec<u32>,
    /// The detector whose streams every event needs; none when only data is forwarded.
    detector: Option<String>,
    /// Send every stream's datagram of an event (data selection), not only the detector's.
    all_parts: bool,
    expected_set: bool,
    log: Vec<TransitionMsg>,
    events_seen: u64,
    max_events: Option<u64>,
    exhausted: bool,
    incomplete: u64,
    other: u64,
    incomplete_reports: u32,
}

impl Feed {
    fn transition(&mut self, ev: &BuiltEvent) -> anyhow::Result<()> {
        let mut per_stream = Vec::new();
        for p in &ev.parts {
            if let Some(bytes) = &p.entry.transition {
                per_stream.push((
                    self.stream_ids[p.stream],
                    serde_bytes::ByteBuf::from(bytes.to_vec()),
                ));
            }
        }
        if ev.service == TransitionId::Configure
            && !self.expected_set
            && let Some(det) = &self.detector
        {
            let mut expected = vec![false; self.stream_ids.len()];
            for p in &ev.parts {
                let Some(bytes) = &p.entry.transition else {
                    continue;
                };
                let d = Dgram::parse(bytes, 0)?;
                let l = NamesLookup::from_configure(&d.root())?;
                expected[p.stream] = l.entries().iter().any(|(_, s)| is_raw_segment(s, det));
            }
            if !expected.iter().any(|&e| e) {
                anyhow::bail!("no stream of this run declares detector {det:?} (alg raw)");
            }
            self.builder.set_expected(expected);
            self.expected_set = true;
        }
        self.log.push(TransitionMsg {
            service: ev.service as u8,
            timestamp: ev.timestamp,
            per_stream,
        });
        Ok(())
    }

    /// The next unit of up to `k` events; the transition log position before its first event.
    fn next_unit(&mut self, k: usize) -> anyhow::Result<(Vec<EventDesc>, usize)> {
        let mut events = Vec::new();
        let mut mark = self.log.len();
        while events.len() < k && !self.exhausted {
            if self.max_events.is_some_and(|m| self.events_seen >= m) {
                self.exhausted = true;
                break;
            }
            let Some(ev) = self.builder.next_event()? else {
                self.exhausted = true;
                break;
            };
            if ev.service.is_transition() {
                self.transition(&ev)?;
                if !events.is_empty() {
                    break;
                }
                mark = self.log.len();
                continue;
            }
            let index = self.events_seen;
            self.events_seen += 1;
            let expected = |i: usize| self.builder.expected(i);
            let has_detector =
                self.detector.is_none() || ev.parts.iter().any(|p| expected(p.stream));
            let parts: Vec<Part> = ev
                .parts
                .iter()
                .filter(|p| self.all_parts || expected(p.stream))
                .filter_map(|p| {
                    p.entry.location.map(|l| Part {
                        stream: self.stream_ids[p.stream],
                        chunk: l.chunk,
                        offset: l.offset,
                        size: l.size,
                    })
                })
                .collect();
            if parts.is_empty() || !has_detector {
                self.other += 1;
                continue;
            }
            if !ev.missing.is_empty() {
                self.incomplete += 1;
                if self.incomplete_reports < 20 {
                    self.incomplete_reports += 1;
                    let missing: Vec<u32> =
                        ev.missing.iter().map(|&i| self.stream_ids[i]).collect();
                    eprintln!(
                        "lclstreamer: event {index} (key 0x{:016X}) incomplete: streams {missing:?} missing",
                        ev.timestamp
                    );
                }
                continue;
            }
            if events.is_empty() {
                mark = self.log.len();
            }
            events.push(EventDesc {
                index,
                timestamp: ev.timestamp,
                parts,
            });
        }
        Ok((events, mark))
    }
}

/// Opens the run's streams and the event builder.
fn open_feed(cfg: &Config, run: &RunFiles) -> anyhow::Result<Feed> {
    Ok(Feed {
        builder: EventBuilder::for_run(run, cfg.source.use_smalldata)?,
        stream_ids: run.streams.iter().map(|s| s.stream).collect(),
        detector: cfg.source.detector.clone(),
        all_parts: !cfg.data.is_empty() || cfg.source.detector.is_none(),
        expected_set: false,
        log: Vec::new(),
        events_seen: 0,
        max_events: cfg.source.max_events,
        exhausted: false,
        incomplete: 0,
        other: 0,
        incomplete_reports: 0,
    })
}

/// Runs the coordinator until every worker and writer has reported.
pub fn run(
    mb: Mailbox,
    layout: &Layout,
    cfg: &Config,
    run: &RunFiles,
    progress: Progress,
) -> anyhow::Result<Summary> {
    let start = Instant::now();
    let mut feed = open_feed(cfg, run)?;
    let k = cfg.parallel.events_per_unit.max(1);
    let mut cursor: HashMap<RoleId, usize> = HashMap::new();
    let mut sent_files: HashMap<RoleId, HashSet<(u32, u32)>> = HashMap::new();
    let mut latest: HashMap<RoleId, WorkerStats> = HashMap::new();
    let mut finals: HashMap<RoleId, WorkerStats> = HashMap::new();
    let mut writers: Vec<WriterStats> = Vec::new();
    let mut last_progress = Instant::now();
    let arp = crate::arp::Reporter::from_env();
    let report = |read: u64, latest: &HashMap<RoleId, WorkerStats>| {
        progress.show(read, latest, start.elapsed());
        if let Some(a) = &arp {
            a.update(&super::summary::arp_counters(read, latest, start.elapsed()));
        }
    };
    while finals.len() < layout.workers as usize || writers.len() < layout.writers as usize {
        let Some(msg) = mb.recv_timeout(Duration::from_millis(500))? else {
            if last_progress.elapsed() >= progress.period() {
                report(feed.events_seen, &latest);
                last_progress = Instant::now();
            }
            continue;
        };
        match msg {
            Msg::Ready { worker, stats } => {
                latest.insert(worker, stats);
                let (events, mark) = feed.next_unit(k)?;
                let c = cursor.entry(worker).or_insert(0);
                if events.is_empty() {
                    let transitions = feed.log[*c..].to_vec();
                    *c = feed.log.len();
                    mb.send(worker, Msg::End { transitions })?;
                    continue;
                }
                let transitions = feed.log[*c..mark].to_vec();
                *c = mark;
                let known = sent_files.entry(worker).or_default();
                let mut files = Vec::new();
                for e in &events {
                    for p in &e.parts {
                        if known.insert((p.stream, p.chunk)) {
                            let i = feed
                                .stream_ids
                                .iter()
                                .position(|&s| s == p.stream)
                                .unwrap_or(0);
                            let path = feed
                                .builder
                                .stream(i)
                                .and_then(|ix| ix.chunk_path(p.chunk))
                                .ok_or_else(|| {
                                    anyhow::anyhow!(
                                        "stream {} chunk {} has no file",
                                        p.stream,
                                        p.chunk
                                    )
                                })?;
                            files.push((p.stream, p.chunk, path.to_path_buf()));
                        }
                    }
                }
                mb.send(
                    worker,
                    Msg::Work {
                        transitions,
                        files,
                        events,
                    },
                )?;
            }
            Msg::WorkerFinal { worker, stats } => {
                finals.insert(worker, stats);
            }
            Msg::WriterDone { stats, .. } => writers.push(stats),
            other => anyhow::bail!("coordinator: unexpected message {other:?}"),
        }
        if last_progress.elapsed() >= progress.period() {
            report(feed.events_seen, &latest);
            last_progress = Instant::now();
        }
    }
    progress.done();
    let mut truncated = Vec::new();
    for i in 0..feed.stream_ids.len() {
        if let Some(ix) = feed.builder.stream(i) {
            for (path, t) in ix.truncations() {
                truncated.push(format!(
                    "{}: ends inside the datagram at byte {} ({} of {} bytes)",
                    path.display(),
                    t.offset,
                    t.available,
                    t.expected
                ));
            }
        }
    }
    let summary = Summary::gather(
        cfg,
        layout,
        run,
        feed.events_seen,
        feed.incomplete,
        feed.other,
        feed.builder.stats().incomplete_transitions,
        finals.values().copied().collect(),
        writers,
        truncated,
        start.elapsed(),
    );
    if let Some(a) = arp {
        a.finish(&summary.arp_counters());
    }
    Ok(summary)
}
