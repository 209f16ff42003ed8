//! Progress reporting on rank 0 and the end-of-run summary (printed, optionally JSON).

use super::layout::Layout;
use super::messages::{RecordMsg, RoleId, WorkerStats, WriterStats};
use crate::config::Config;
use crate::output::Presence;
use crate::xtc::run::RunFiles;
use serde::Serialize;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

/// How progress is shown: a refreshed line on a terminal, periodic log lines otherwise.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub quiet: bool,
    pub tty: bool,
}

impl Progress {
    /// Progress on stderr unless `quiet`.
    pub fn new(quiet: bool) -> Progress {
        Progress {
            quiet,
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// How often to print.
    pub fn period(&self) -> Duration {
        if self.tty {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(10)
        }
    }

    /// Prints one progress report.
    pub fn show(&self, read: u64, latest: &HashMap<RoleId, WorkerStats>, elapsed: Duration) {
        if self.quiet {
            return;
        }
        let done: u64 = latest.values().map(|s| s.processed + s.damaged).sum();
        let hits: u64 = latest.values().map(|s| s.hits).sum();
        let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
        let hit_rate = if done > 0 {
            100.0 * hits as f64 / done as f64
        } else {
            0.0
        };
        let line = format!(
            "lclstreamer: {done}/{read} events, {rate:.1} events/s, hit rate {hit_rate:.1} %, {:.0} s",
            elapsed.as_secs_f64()
        );
        if self.tty {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
    }

    /// Ends the progress line.
    pub fn done(&self) {
        if self.tty && !self.quiet {
            eprintln!();
        }
    }
}

/// Counts of one sink, over all writers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkSummary {
    pub name: String,
    pub batches: u64,
    pub events: u64,
    pub bytes: u64,
    pub spilled: u64,
    pub dropped: u64,
    pub in_doubt: u64,
    pub refused: u64,
    pub resent: u64,
    /// URLs (summed over writers) the end-of-stream could not be delivered to.
    pub eos_undelivered: u64,
}

/// Events sent without one selected field's value.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MissingSummary {
    pub name: String,
    pub events: u64,
}

/// Adds the fields `records` lack to the per-field counts (every selected field is listed,
/// with 0 when never missing).
pub fn count_missing(counts: &mut Vec<(String, u64)>, records: &[RecordMsg]) {
    for r in records {
        for f in r.fields.iter().filter(|f| f.presence != Presence::Always) {
            let n = u64::from(f.presence == Presence::Missing);
            match counts.iter_mut().find(|(name, _)| *name == f.name) {
                Some((_, c)) => *c += n,
                None => counts.push((f.name.clone(), n)),
            }
        }
    }
}

/// Share of the work time per stage (summed over ranks), in seconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageTimes {
    pub read: f64,
    pub calibrate: f64,
    pub peakfind: f64,
    pub compress: f64,
    pub serialize: f64,
    pub send: f64,
}

/// How a live run ended.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LiveSummary {
    /// `EndRun` (every stream's EndRun read), `files complete` (renamed without an EndRun) or
    /// `idle timeout`.
    pub ended: String,
    /// Streams still waiting for data when the idle timeout ended the run.
    pub waiting_streams: Vec<u32>,
    pub idle_timeout_seconds: f64,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub experiment: Option<String>,
    pub run: Option<u32>,
    pub detector: String,
    pub ranks: u32,
    pub workers: u32,
    pub writers: u32,
    pub events_read: u64,
    pub incomplete: u64,
    pub without_detector: u64,
    pub incomplete_transitions: u64,
    pub damaged: u64,
    pub processed: u64,
    pub hits: u64,
    pub hit_rate: f64,
    pub peaks: u64,
    pub events_sent: u64,
    pub batches: u64,
    pub sinks: Vec<SinkSummary>,
    /// Per selected field: events sent without its value (fill value, `<name>_present` 0).
    pub missing: Vec<MissingSummary>,
    pub truncated_files: Vec<String>,
    pub wall_seconds: f64,
    pub events_per_second: f64,
    pub stage_seconds: StageTimes,
    /// Set for a live run.
    pub live: Option<LiveSummary>,
    /// Failures that stopped deliveries; the job exits 1.
    pub errors: Vec<String>,
    /// Problems that did not fail the job.
    pub warnings: Vec<String>,
    /// Events processed but not delivered because of a failure or a stop.
    pub undelivered: u64,
    /// The signal that stopped the job before the end of the run (`SIGTERM`, `SIGINT`).
    pub interrupted: Option<String>,
    /// Live runs: from an event's discovery by the coordinator (which polls growing files, so
    /// this includes up to one poll interval after the write) to its batch being sent.
    pub latency: Option<super::latency::LatencySummary>,
}

/// The eLog counters shown while the job runs.
pub fn arp_counters(
    read: u64,
    latest: &HashMap<RoleId, WorkerStats>,
    elapsed: Duration,
) -> Vec<(&'static str, serde_json::Value)> {
    let done: u64 = latest.values().map(|s| s.processed + s.damaged).sum();
    let hits: u64 = latest.values().map(|s| s.hits).sum();
    vec![
        ("<b>Events read</b>", read.into()),
        ("<b>Events processed</b>", done.into()),
        ("<b>Hits</b>", hits.into()),
        (
            "<b>Duration</b>",
            format!("{:.1} min", elapsed.as_secs_f64() / 60.0).into(),
        ),
    ]
}

impl Summary {
    /// The final eLog counters.
    pub fn arp_counters(&self) -> Vec<(&'static str, serde_json::Value)> {
        vec![
            ("<b>Events read</b>", self.events_read.into()),
            ("<b>Events processed</b>", self.processed.into()),
            ("<b>Hits</b>", self.hits.into()),
            (
                "<b>Hit rate</b>",
                format!("{:.1} %", 100.0 * self.hit_rate).into(),
            ),
            (
                "<b>Incomplete / damaged</b>",
                format!("{} / {}", self.incomplete, self.damaged).into(),
            ),
            ("<b>Batches sent</b>", self.batches.into()),
            (
                "<b>Duration</b>",
                format!("{:.1} min", self.wall_seconds / 60.0).into(),
            ),
            ("<b>Status</b>", "done".into()),
        ]
    }

    /// Adds up what the coordinator, workers and writers counted.
    #[allow(clippy::too_many_arguments)]
    pub fn gather(
        cfg: &Config,
        layout: &Layout,
        run: &RunFiles,
        events_read: u64,
        incomplete: u64,
        without_detector: u64,
        incomplete_transitions: u64,
        workers: Vec<WorkerStats>,
        writers: Vec<WriterStats>,
        truncated_files: Vec<String>,
        wall: Duration,
    ) -> Summary {
        let sum = |f: fn(&WorkerStats) -> u64| workers.iter().map(f).sum::<u64>();
        let processed = sum(|s| s.processed);
        let hits = sum(|s| s.hits);
        let mut sinks: Vec<SinkSummary> = Vec::new();
        for w in &writers {
            for (name, st) in &w.sinks {
                let s = match sinks.iter_mut().position(|s| &s.name == name) {
                    Some(i) => &mut sinks[i],
                    None => {
                        sinks.push(SinkSummary {
                            name: name.clone(),
                            ..Default::default()
                        });
                        sinks.last_mut().expect("pushed")
                    }
                };
                s.batches += st.batches;
                s.events += st.events;
                s.bytes += st.bytes;
                s.spilled += st.spilled;
                s.dropped += st.dropped;
                s.in_doubt += st.in_doubt;
                s.refused += st.refused;
                s.resent += st.resent;
                s.eos_undelivered += st.eos_undelivered;
            }
        }
        let mut missing: Vec<MissingSummary> = Vec::new();
        for (name, n) in writers.iter().flat_map(|w| &w.missing) {
            match missing.iter_mut().find(|m| &m.name == name) {
                Some(m) => m.events += n,
                None => missing.push(MissingSummary {
                    name: name.clone(),
                    events: *n,
                }),
            }
        }
        let secs = |ns: u64| ns as f64 * 1e-9;
        let mut latency = super::latency::Latency::default();
        for w in &writers {
            latency.merge(&w.latency);
        }
        Summary {
            experiment: cfg.source.exp.clone().or_else(|| run.exp.clone()),
            run: cfg.source.run.or(run.run),
            detector: cfg.source.detector.clone().unwrap_or_default(),
            ranks: layout.size,
            workers: layout.workers,
            writers: layout.writers,
            events_read,
            incomplete,
            without_detector,
            incomplete_transitions,
            damaged: sum(|s| s.damaged),
            processed,
            hits,
            hit_rate: if processed > 0 {
                hits as f64 / processed as f64
            } else {
                0.0
            },
            peaks: sum(|s| s.peaks),
            events_sent: sum(|s| s.sent),
            batches: writers.iter().map(|w| w.batches).sum(),
            sinks,
            missing,
            truncated_files,
            errors: writers.iter().flat_map(|w| w.errors.clone()).collect(),
            warnings: writers.iter().flat_map(|w| w.warnings.clone()).collect(),
            undelivered: writers.iter().map(|w| w.undelivered).sum(),
            interrupted: None,
            wall_seconds: wall.as_secs_f64(),
            events_per_second: events_read as f64 / wall.as_secs_f64().max(1e-9),
            stage_seconds: StageTimes {
                read: secs(sum(|s| s.ns_read)),
                calibrate: secs(sum(|s| s.ns_calib)),
                peakfind: secs(sum(|s| s.ns_peaks)),
                compress: secs(sum(|s| s.ns_compress)),
                serialize: secs(writers.iter().map(|w| w.ns_serialize).sum()),
                send: secs(writers.iter().map(|w| w.ns_send).sum()),
            },
            live: None,
            latency: latency.summary(),
        }
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut s = format!(
            "lclstreamer run summary: {} run {} detector {}\n  ranks {} (workers {}, writers {})\n  events read {}  processed {}  incomplete {}  damaged {}  without detector {}\n  hits {} ({:.1} %)  peaks {}  events sent {} in {} batches\n",
            self.experiment.as_deref().unwrap_or("?"),
            self.run.map_or("?".into(), |r| r.to_string()),
            self.detector,
            self.ranks,
            self.workers,
            self.writers,
            self.events_read,
            self.processed,
            self.incomplete,
            self.damaged,
            self.without_detector,
            self.hits,
            100.0 * self.hit_rate,
            self.peaks,
            self.events_sent,
            self.batches,
        );
        for k in &self.sinks {
            s += &format!(
                "  sink {}: {} batches, {} events, {} bytes, {} spilled, {} dropped",
                k.name, k.batches, k.events, k.bytes, k.spilled, k.dropped
            );
            for (n, what) in [
                (k.in_doubt, "in doubt"),
                (k.refused, "refused"),
                (k.resent, "resent"),
                (k.eos_undelivered, "end-of-stream undelivered"),
            ] {
                if n > 0 {
                    s += &format!(", {n} {what}");
                }
            }
            s += "\n";
        }
        if let Some(sig) = &self.interrupted {
            s += &format!(
                "  INTERRUPTED by {sig}: the run was not read to its end; {} events read\n",
                self.events_read
            );
        }
        if self.undelivered > 0 {
            s += &format!("  undelivered: {} events\n", self.undelivered);
        }
        for e in &self.errors {
            s += &format!("  ERROR: {e}\n");
        }
        for w in &self.warnings {
            s += &format!("  warning: {w}\n");
        }
        for m in &self.missing {
            s += &format!(
                "  data {}: missing in {} of {} events sent\n",
                m.name, m.events, self.events_sent
            );
        }
        for t in &self.truncated_files {
            s += &format!("  truncated: {t}\n");
        }
        if self.incomplete_transitions > 0 {
            s += &format!(
                "  transitions missing from some stream: {}\n",
                self.incomplete_transitions
            );
        }
        if let Some(l) = &self.live {
            s += &format!("  live run ended: {}", l.ended);
            if !l.waiting_streams.is_empty() {
                s += &format!(
                    " ({:.1} s without data; streams {:?} still waiting, events read {})",
                    l.idle_timeout_seconds, l.waiting_streams, self.events_read
                );
            }
            s += "\n";
        }
        if let Some(l) = &self.latency {
            s += &format!(
                "  latency discovered → sent: median {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} events)\n",
                l.median_seconds * 1e3,
                l.p99_seconds * 1e3,
                l.max_seconds * 1e3,
                l.events
            );
        }
        let st = &self.stage_seconds;
        s += &format!(
            "  wall {:.2} s, {:.1} events/s; stage seconds: read {:.2}, calibrate {:.2}, peakfind {:.2}, compress {:.2}, serialize {:.2}, send {:.2}\n",
            self.wall_seconds,
            self.events_per_second,
            st.read,
            st.calibrate,
            st.peakfind,
            st.compress,
            st.serialize,
            st.send
        );
        s
    }
}
