//! What the roles tell the live monitor (`monitor:` in the configuration), and how rank 0 turns
//! it into the monitor's snapshot. Workers send a [`Msg::WorkerTick`] (peaks-per-event counts,
//! sometimes a downsampled hit) and writers a [`Msg::WriterTick`] (their counts) at most every
//! [`TICK`]; their event counts already reach rank 0 with every work request. Without a
//! monitor none of this exists and no message is sent.

use super::layout::{Layout, RoleKind};
use super::messages::{Msg, RoleId, WorkerStats, WriterStats};
use super::summary::Summary;
use crate::detector::assemble::Assembly;
use crate::detector::geometry::Geometry;
use crate::monitor::Monitor;
use crate::monitor::preview;
use crate::monitor::state::{LatencyState, PEAK_BINS, Preview, RankRate, SinkState, peak_bin};
use crate::serialize::SinkNow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How often workers and writers report, and rank 0 refreshes the snapshot.
pub const TICK: Duration = Duration::from_millis(500);

/// The least time between two previews of one worker: one a second, or less often with many
/// workers, so that rank 0 receives about four a second at most.
pub fn preview_period(workers: u32) -> Duration {
    Duration::from_secs_f64((0.25 * f64::from(workers)).max(1.0))
}

/// A worker's side: counts peaks per event, arms one preview per period.
pub struct WorkerFeed {
    hist: Vec<u64>,
    last_tick: Instant,
    period: Duration,
    last_preview: Option<Instant>,
    want: AtomicBool,
    preview: Option<Preview>,
    assembly: OnceLock<Option<Assembly>>,
}

impl WorkerFeed {
    pub fn new(workers: u32) -> WorkerFeed {
        WorkerFeed {
            hist: vec![0; PEAK_BINS.len() + 1],
            last_tick: Instant::now(),
            period: preview_period(workers),
            last_preview: None,
            want: AtomicBool::new(false),
            preview: None,
            assembly: OnceLock::new(),
        }
    }

    /// Before a unit: asks for a preview of its first hit when one is due.
    pub fn arm(&self) {
        if self.last_preview.is_none_or(|t| t.elapsed() >= self.period) {
            self.want.store(true, Ordering::Relaxed);
        }
    }

    /// In the unit's parallel loop: true for the one hit to preview.
    pub fn take(&self) -> bool {
        self.want.swap(false, Ordering::AcqRel)
    }

    /// The preview of a calibrated slab (`ss × fs`) and its peaks `(fs, ss)`: assembled with
    /// the geometry when there is one.
    pub fn make(
        &self,
        geometry: Option<&Geometry>,
        slab: &[f32],
        (ss, fs): (usize, usize),
        peaks: &[(f32, f32)],
        event_index: u64,
    ) -> Option<Preview> {
        let assembly = self
            .assembly
            .get_or_init(|| geometry.and_then(|g| Assembly::new(g, None).ok()));
        match assembly {
            Some(a) if a.slab_len() == slab.len() => {
                preview::assembled(slab, fs, a, peaks, event_index)
            }
            _ => preview::preview(slab, ss, fs, peaks, event_index),
        }
    }

    /// Counts one processed event.
    pub fn count(&mut self, n_peaks: usize) {
        self.hist[peak_bin(n_peaks)] += 1;
    }

    /// Keeps a preview for the next tick.
    pub fn offer(&mut self, p: Preview) {
        self.preview = Some(p);
        self.last_preview = Some(Instant::now());
    }

    /// The tick to send now, if one is due (always when `last`).
    pub fn tick(&mut self, worker: RoleId, last: bool) -> Option<Msg> {
        if !last && self.last_tick.elapsed() < TICK {
            return None;
        }
        self.last_tick = Instant::now();
        Some(Msg::WorkerTick {
            worker,
            peaks: self.hist.clone(),
            preview: self.preview.take().map(Box::new),
        })
    }
}

/// A writer's side: when to report.
pub struct WriterFeed {
    last: Instant,
}

impl Default for WriterFeed {
    fn default() -> Self {
        WriterFeed {
            last: Instant::now(),
        }
    }
}

impl WriterFeed {
    /// Time left until the next report.
    pub fn wait(&self) -> Duration {
        TICK.saturating_sub(self.last.elapsed())
    }

    /// The report to send now, if one is due.
    pub fn tick(
        &mut self,
        writer: RoleId,
        stats: &WriterStats,
        sinks: impl FnOnce() -> Vec<SinkNow>,
    ) -> Option<Msg> {
        if self.last.elapsed() < TICK {
            return None;
        }
        self.last = Instant::now();
        Some(Msg::WriterTick {
            writer,
            stats: stats.clone(),
            sinks: sinks(),
        })
    }
}

/// Rank 0's side: the latest reports of every role, published to the monitor every [`TICK`].
pub struct Board {
    monitor: Arc<Monitor>,
    layout: Layout,
    start: Instant,
    last: Option<Instant>,
    peaks: BTreeMap<RoleId, Vec<u64>>,
    writers: BTreeMap<RoleId, (WriterStats, Vec<SinkNow>)>,
    /// Per role: events and time at the previous publication (for the rates).
    prev: HashMap<RoleId, (u64, f64)>,
}

impl Board {
    pub fn new(monitor: Arc<Monitor>, layout: &Layout) -> Board {
        Board {
            monitor,
            layout: layout.clone(),
            start: Instant::now(),
            last: None,
            peaks: BTreeMap::new(),
            writers: BTreeMap::new(),
            prev: HashMap::new(),
        }
    }

    /// Takes a worker's report.
    pub fn worker_tick(&mut self, worker: RoleId, peaks: Vec<u64>, preview: Option<Box<Preview>>) {
        self.peaks.insert(worker, peaks);
        if let Some(p) = preview {
            self.monitor.set_latest_hit(*p);
        }
    }

    /// Takes a writer's report.
    pub fn writer_tick(&mut self, writer: RoleId, stats: WriterStats, sinks: Vec<SinkNow>) {
        self.writers.insert(writer, (stats, sinks));
    }

    fn peaks_per_event(&self) -> Vec<u64> {
        let mut h = vec![0; PEAK_BINS.len() + 1];
        for w in self.peaks.values() {
            for (a, b) in h.iter_mut().zip(w) {
                *a += b;
            }
        }
        h
    }

    /// Every role's events and rate: the rate over the last period while running, over the
    /// whole run at the end.
    fn ranks(
        &mut self,
        t: f64,
        read: u64,
        workers: &HashMap<RoleId, WorkerStats>,
        end: bool,
    ) -> Vec<RankRate> {
        let mut out = Vec::new();
        for id in 0..self.layout.num_roles() {
            let (role, events) = match self.layout.kind(id) {
                RoleKind::Coordinator => ("coordinator", read),
                RoleKind::Worker(_) => (
                    "worker",
                    workers.get(&id).map_or(0, |s| s.processed + s.damaged),
                ),
                RoleKind::Writer(_) => ("writer", self.writers.get(&id).map_or(0, |w| w.0.events)),
            };
            let (e0, t0) = if end {
                (0, 0.0)
            } else {
                self.prev.insert(id, (events, t)).unwrap_or((0, 0.0))
            };
            out.push(RankRate {
                role,
                rank: self.layout.rank_of(id),
                events,
                events_per_second: events.saturating_sub(e0) as f64 / (t - t0).max(1e-9),
            });
        }
        out
    }

    /// Publishes the counts when a period has passed since the last time.
    pub fn publish(&mut self, read: u64, workers: &HashMap<RoleId, WorkerStats>) {
        if self.last.is_some_and(|l| l.elapsed() < TICK) {
            return;
        }
        self.last = Some(Instant::now());
        let t = self.start.elapsed().as_secs_f64();
        let sum = |f: fn(&WorkerStats) -> u64| workers.values().map(f).sum::<u64>();
        let ranks = self.ranks(t, read, workers, false);
        let hist = self.peaks_per_event();
        let mut sinks: Vec<SinkState> = Vec::new();
        let mut latency = super::latency::Latency::default();
        for (w, now) in self.writers.values() {
            latency.merge(&w.latency);
            for k in now {
                let i = match sinks.iter().position(|s| s.name == k.name) {
                    Some(i) => i,
                    None => {
                        sinks.push(SinkState {
                            name: k.name.clone(),
                            bytes: Some(0),
                            spilled: Some(0),
                            dropped: Some(0),
                            ..SinkState::default()
                        });
                        sinks.len() - 1
                    }
                };
                let s = &mut sinks[i];
                s.batches += k.stats.batches;
                s.events += k.stats.events;
                s.bytes = s.bytes.map(|b| b + k.stats.bytes);
                s.spilled = s.spilled.map(|b| b + k.stats.spilled);
                s.dropped = s.dropped.map(|b| b + k.stats.dropped);
                if let Some(c) = k.consumers {
                    s.consumers = Some(s.consumers.unwrap_or(0) + c);
                }
            }
        }
        let (sent, batches) = self
            .writers
            .values()
            .fold((0, 0), |(e, b), (w, _)| (e + w.events, b + w.batches));
        self.monitor.update(|s| {
            s.record(
                t,
                read,
                sum(|w| w.processed),
                sum(|w| w.damaged),
                sum(|w| w.hits),
            );
            s.ranks = ranks;
            s.peaks_per_event = hist;
            s.sinks = sinks;
            s.events_sent = sent;
            s.batches = batches;
            s.latency = latency.summary().map(|l| LatencyState {
                events: l.events,
                median_seconds: l.median_seconds,
                p99_seconds: l.p99_seconds,
            });
        });
    }

    /// The final numbers: the summary's own, so the page ends on what the summary prints.
    pub fn finish(&mut self, sum: &Summary, workers: &HashMap<RoleId, WorkerStats>) {
        let ranks = self.ranks(sum.wall_seconds, sum.events_read, workers, true);
        let hist = self.peaks_per_event();
        self.monitor.update(|s| {
            s.record(
                sum.wall_seconds,
                sum.events_read,
                sum.processed,
                sum.damaged,
                sum.hits,
            );
            s.hit_rate = sum.hit_rate;
            s.events_per_second = sum.events_per_second;
            s.events_sent = sum.events_sent;
            s.batches = sum.batches;
            s.ranks = ranks;
            s.peaks_per_event = hist;
            s.sinks = sum
                .sinks
                .iter()
                .map(|k| SinkState {
                    name: k.name.clone(),
                    batches: k.batches,
                    events: k.events,
                    bytes: Some(k.bytes),
                    spilled: Some(k.spilled),
                    dropped: Some(k.dropped),
                    consumers: None,
                })
                .collect();
            s.latency = sum.latency.as_ref().map(|l| LatencyState {
                events: l.events,
                median_seconds: l.median_seconds,
                p99_seconds: l.p99_seconds,
            });
            s.state = "finished".into();
        });
    }
}
