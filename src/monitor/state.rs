//! What the monitor shows: one snapshot of the job, updated by rank 0 as reports arrive.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Upper bin edges of the peaks-per-event histogram; the last bin counts everything above.
pub const PEAK_BINS: [u32; 14] = [0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000];

/// The histogram bin of an event with `n` peaks.
pub fn peak_bin(n: usize) -> usize {
    PEAK_BINS
        .iter()
        .position(|&e| n as u64 <= u64::from(e))
        .unwrap_or(PEAK_BINS.len())
}

/// Samples of the hit-rate history kept (one per update; older ones are thinned).
const HISTORY: usize = 600;

/// One sample of the cumulative counts, for the hit rate over time.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Sample {
    pub t: f64,
    pub processed: u64,
    pub hits: u64,
}

/// One role's progress.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RankRate {
    pub role: &'static str,
    pub rank: u32,
    pub events: u64,
    pub events_per_second: f64,
}

/// One sink's counts over all writers, from the sinks' own counts (`None` where a sink does
/// not tell; `consumers` only for network sinks).
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct SinkState {
    pub name: String,
    pub batches: u64,
    pub events: u64,
    pub bytes: Option<u64>,
    pub spilled: Option<u64>,
    pub dropped: Option<u64>,
    /// Consumers connected now, where the transport knows it.
    pub consumers: Option<u32>,
}

/// Latency from discovery to sending (live runs), in seconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Default)]
pub struct LatencyState {
    pub events: u64,
    pub median_seconds: f64,
    pub p99_seconds: f64,
}

/// The latest hit, downsampled to 8-bit grey for the page.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Preview {
    pub event_index: u64,
    pub n_peaks: u32,
    pub width: u32,
    pub height: u32,
    /// Slab pixels per preview pixel along each axis.
    pub bin: u32,
    /// `width * height` grey levels, row-major, base64.
    pub pixels: String,
    /// Peak positions `(fs, ss)` in preview pixels.
    pub peaks: Vec<(f32, f32)>,
}

/// Everything the page, the JSON endpoint and the Prometheus endpoint show.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Snapshot {
    pub experiment: Option<String>,
    pub run: Option<u32>,
    pub detector: String,
    /// `running`, `finished` or `interrupted`.
    pub state: String,
    pub elapsed_seconds: f64,
    pub events_read: u64,
    pub processed: u64,
    pub damaged: u64,
    pub hits: u64,
    pub hit_rate: f64,
    pub events_per_second: f64,
    /// Events and batches the writers sent.
    pub events_sent: u64,
    pub batches: u64,
    /// Set on a live run once a batch was sent.
    pub latency: Option<LatencyState>,
    pub history: VecDeque<Sample>,
    pub peak_bins: Vec<u32>,
    /// One count per bin of [`PEAK_BINS`], plus one for more.
    pub peaks_per_event: Vec<u64>,
    pub ranks: Vec<RankRate>,
    pub sinks: Vec<SinkState>,
    /// Increases with every new preview, so the page fetches it only when it changed.
    pub latest_hit_seq: u64,
}

impl Snapshot {
    /// An empty snapshot of a run that is starting.
    pub fn new(experiment: Option<String>, run: Option<u32>, detector: &str) -> Snapshot {
        Snapshot {
            experiment,
            run,
            detector: detector.to_string(),
            state: "running".into(),
            peak_bins: PEAK_BINS.to_vec(),
            peaks_per_event: vec![0; PEAK_BINS.len() + 1],
            ..Snapshot::default()
        }
    }

    /// Records the cumulative counts at `t` seconds and derives the rates.
    pub fn record(&mut self, t: f64, events_read: u64, processed: u64, damaged: u64, hits: u64) {
        self.elapsed_seconds = t;
        self.events_read = events_read;
        self.processed = processed;
        self.damaged = damaged;
        self.hits = hits;
        self.hit_rate = if processed > 0 {
            hits as f64 / processed as f64
        } else {
            0.0
        };
        self.events_per_second = (processed + damaged) as f64 / t.max(1e-9);
        if self.history.back().is_some_and(|s| s.t >= t) {
            return;
        }
        if self.history.len() == HISTORY {
            // Keep the whole run in view: drop every second sample of the older half.
            let keep: VecDeque<Sample> = self
                .history
                .iter()
                .enumerate()
                .filter(|(i, _)| *i >= HISTORY / 2 || i % 2 == 0)
                .map(|(_, s)| *s)
                .collect();
            self.history = keep;
        }
        self.history.push_back(Sample { t, processed, hits });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_follow_their_upper_edges() {
        assert_eq!(peak_bin(0), 0);
        assert_eq!(peak_bin(1), 1);
        assert_eq!(peak_bin(4), 4);
        assert_eq!(peak_bin(5), 4);
        assert_eq!(peak_bin(6), 5);
        assert_eq!(peak_bin(5000), PEAK_BINS.len() - 1);
        assert_eq!(peak_bin(5001), PEAK_BINS.len());
    }

    #[test]
    fn history_is_bounded_and_keeps_the_start() {
        let mut s = Snapshot::new(None, None, "d");
        for i in 0..5000u64 {
            s.record(i as f64 + 1.0, i, i, 0, i / 2);
        }
        assert!(s.history.len() <= HISTORY);
        assert_eq!(s.history[0].t, 1.0);
        assert_eq!(s.history.back().unwrap().t, 5000.0);
        assert!(
            s.history
                .iter()
                .zip(s.history.iter().skip(1))
                .all(|(a, b)| a.t < b.t)
        );
        assert_eq!(s.hits, 4999 / 2);
    }
}
