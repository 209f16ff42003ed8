//! The coordinator role (rank 0): builds events across the run's streams from the small data,
//! hands work units to workers on request, delivers every transition to every worker before
//! the events that follow it, and gathers the final counts. On a live run a request that finds
//! no event yet is held until events arrive, the run ends, or the idle timeout passes.

use super::feed::Board;
use super::layout::Layout;
use super::messages::{EventDesc, Msg, Part, RoleId, TransitionMsg, WorkerStats, WriterStats};
use super::router::Mailbox;
use super::summary::{Progress, Summary};
use crate::config::Config;
use crate::detector::frame::is_raw_segment;
use crate::xtc::eventbuild::{BuiltEvent, EventBuilder};
use crate::xtc::index::{Poll, StreamIndexer};
use crate::xtc::run::RunFiles;
use crate::xtc::{Dgram, NamesLookup, TransitionId};
use std::collections::{HashMap, HashSet, VecDeque};
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
    /// When the builder last produced something (live idle timeout).
    last_data: Instant,
    /// Set when a live run ended for want of data.
    idle_end: bool,
    /// A live run: events carry the time they were found (latency).
    live: bool,
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
            let ev = match self.builder.poll_event()? {
                Poll::Ready(ev) => ev,
                Poll::Pending => break,
                Poll::End => {
                    self.exhausted = true;
                    break;
                }
            };
            self.last_data = Instant::now();
            let seen_ns = if self.live {
                super::latency::now_ns()
            } else {
                0
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
                seen_ns,
            });
        }
        Ok((events, mark))
    }
}

/// Opens the run's streams and the event builder.
fn open_feed(cfg: &Config, run: &RunFiles) -> anyhow::Result<Feed> {
    let builder = if cfg.source.live {
        EventBuilder::for_live_run(run, cfg.source.use_smalldata)?
    } else {
        EventBuilder::for_run(run, cfg.source.use_smalldata)?
    };
    Ok(Feed {
        builder,
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
        last_data: Instant::now(),
        idle_end: false,
        live: cfg.source.live,
    })
}

/// Per-worker delivery state: transition log position and files already announced.
#[derive(Default)]
struct Delivery {
    cursor: HashMap<RoleId, usize>,
    sent_files: HashMap<RoleId, HashSet<(u32, u32)>>,
}

/// Answers one worker's request with a unit of events or the end of the run; `false` when a
/// live run has nothing for it yet.
fn answer(
    mb: &Mailbox,
    feed: &mut Feed,
    k: usize,
    d: &mut Delivery,
    worker: RoleId,
) -> anyhow::Result<bool> {
    let (events, mark) = feed.next_unit(k)?;
    let c = d.cursor.entry(worker).or_insert(0);
    if events.is_empty() {
        if !feed.exhausted {
            return Ok(false);
        }
        let transitions = feed.log[*c..].to_vec();
        *c = feed.log.len();
        mb.send(worker, Msg::End { transitions })?;
        return Ok(true);
    }
    let transitions = feed.log[*c..mark].to_vec();
    *c = mark;
    let known = d.sent_files.entry(worker).or_default();
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
                        anyhow::anyhow!("stream {} chunk {} has no file", p.stream, p.chunk)
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
    Ok(true)
}

/// Answers held requests while there is something to give; ends a live run that has been idle
/// too long.
fn serve_held(
    mb: &Mailbox,
    feed: &mut Feed,
    k: usize,
    d: &mut Delivery,
    held: &mut VecDeque<RoleId>,
    idle: std::time::Duration,
) -> anyhow::Result<()> {
    while let Some(&w) = held.front() {
        if !answer(mb, feed, k, d, w)? {
            if feed.last_data.elapsed() < idle {
                return Ok(());
            }
            feed.exhausted = true;
            feed.idle_end = true;
            continue;
        }
        held.pop_front();
    }
    Ok(())
}

/// Runs the coordinator until every worker and writer has reported; feeds `monitor` if given.
pub fn run(
    mb: Mailbox,
    layout: &Layout,
    cfg: &Config,
    run: &RunFiles,
    progress: Progress,
    monitor: Option<std::sync::Arc<crate::monitor::Monitor>>,
) -> anyhow::Result<Summary> {
    let mut board = monitor.map(|m| Board::new(m, layout));
    let start = Instant::now();
    let mut feed = open_feed(cfg, run)?;
    let k = cfg.parallel.events_per_unit.max(1);
    let mut delivery = Delivery::default();
    let mut held: VecDeque<RoleId> = VecDeque::new();
    let idle = cfg.source.idle_timeout();
    let mut ready_workers: HashSet<RoleId> = HashSet::new();
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
    let mut interrupted = None;
    while finals.len() < layout.workers as usize || writers.len() < layout.writers as usize {
        if interrupted.is_none()
            && let Some(sig) = crate::interrupt::Interrupt::requested()
        {
            let name = crate::interrupt::Interrupt::name(sig);
            eprintln!(
                "lclstreamer: {name}: stopping after {} events; finishing what is in flight",
                feed.events_seen
            );
            interrupted = Some(name.to_string());
            feed.exhausted = true;
        }
        serve_held(&mb, &mut feed, k, &mut delivery, &mut held, idle)?;
        let wait = if held.is_empty() {
            Duration::from_millis(100)
        } else {
            crate::xtc::live::POLL
        };
        let msg = mb.recv_timeout(wait)?;
        if let Some(b) = &mut board {
            b.publish(feed.events_seen, &latest);
        }
        let Some(msg) = msg else {
            if last_progress.elapsed() >= progress.period() {
                report(feed.events_seen, &latest);
                last_progress = Instant::now();
            }
            continue;
        };
        match msg {
            Msg::Ready { worker, stats } => {
                latest.insert(worker, stats);
                if cfg.source.live
                    && ready_workers.insert(worker)
                    && ready_workers.len() == layout.workers as usize
                    && !progress.quiet
                {
                    eprintln!(
                        "lclstreamer: live: {} workers ready, following {} streams",
                        layout.workers,
                        feed.stream_ids.len()
                    );
                }
                if !held.is_empty() || !answer(&mb, &mut feed, k, &mut delivery, worker)? {
                    held.push_back(worker);
                }
            }
            Msg::WorkerFinal { worker, stats } => {
                finals.insert(worker, stats);
            }
            Msg::WriterDone { writer, stats } => {
                if let Some(b) = &mut board {
                    let sinks = stats
                        .sinks
                        .iter()
                        .map(|(name, st)| crate::serialize::SinkNow {
                            name: name.clone(),
                            stats: *st,
                            consumers: None,
                        })
                        .collect();
                    b.writer_tick(writer, stats.clone(), sinks);
                }
                writers.push(stats);
            }
            Msg::Stop { .. } => feed.exhausted = true,
            Msg::WorkerTick {
                worker,
                peaks,
                preview,
            } => {
                if let Some(b) = &mut board {
                    b.worker_tick(worker, peaks, preview);
                }
            }
            Msg::WriterTick {
                writer,
                stats,
                sinks,
            } => {
                if let Some(b) = &mut board {
                    b.writer_tick(writer, stats, sinks);
                }
            }
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
    let mut summary = Summary::gather(
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
    if cfg.source.live {
        summary.live = Some(live_summary(&feed, idle));
    }
    summary.interrupted = interrupted;
    if let Some(a) = arp {
        a.finish(&summary.arp_counters());
    }
    if let Some(b) = &mut board {
        b.finish(&summary, &finals);
    }
    Ok(summary)
}

fn live_summary(feed: &Feed, idle: Duration) -> super::summary::LiveSummary {
    let n = feed.builder.num_streams();
    let end_run = (0..n).all(|i| feed.builder.stream(i).is_some_and(|s| s.saw_end_run()));
    let ended = if feed.idle_end {
        "idle timeout"
    } else if feed.max_events.is_some_and(|m| feed.events_seen >= m) {
        "max_events"
    } else if end_run {
        "EndRun"
    } else {
        "files complete"
    };
    super::summary::LiveSummary {
        ended: ended.into(),
        waiting_streams: if feed.idle_end {
            feed.builder
                .pending_streams()
                .into_iter()
                .map(|i| feed.stream_ids[i])
                .collect()
        } else {
            Vec::new()
        },
        idle_timeout_seconds: idle.as_secs_f64(),
    }
}
