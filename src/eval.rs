//! Scoring delivered batches against synthetic ground truth (`truth.jsonl` from `synth`):
//! hits found and missed, and peak precision and recall by one-to-one nearest matching.

use crate::algo::spots::{TrueSpot, score};
use crate::output::read_batch;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

#[derive(Debug, Deserialize)]
struct TruthLine {
    timestamp: u64,
    hit: bool,
    spots: Vec<TruthSpotLine>,
}

#[derive(Debug, Deserialize)]
struct TruthSpotLine {
    ss: f64,
    fs: f64,
    intensity_kev: f64,
    sigma: f64,
}

/// The scores of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Score {
    pub truth_events: u64,
    pub truth_hits: u64,
    pub received_events: u64,
    pub received_hits: u64,
    pub missed_hits: u64,
    pub false_hits: u64,
    pub duplicate_events: u64,
    pub truth_spots: u64,
    pub found_peaks: u64,
    pub matched: u64,
    pub precision: f64,
    pub recall: f64,
    /// Integrated intensity above which a spot counts as well above noise.
    pub bright_kev: f64,
    pub bright_spots: u64,
    pub bright_matched: u64,
    pub recall_bright: f64,
}

/// Scores every `.h5` batch image in `dir` against `truth` (JSON lines); peaks within
/// `max_dist` pixels of a true spot match it.
pub fn score_dir(
    truth: &Path,
    dir: &Path,
    bright_kev: f64,
    max_dist: f64,
) -> anyhow::Result<Score> {
    let f = std::fs::File::open(truth).map_err(|e| anyhow::anyhow!("{}: {e}", truth.display()))?;
    let mut by_ts: HashMap<u64, TruthLine> = HashMap::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        let t: TruthLine = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", truth.display(), i + 1))?;
        by_ts.insert(t.timestamp, t);
    }
    let mut s = Score {
        truth_events: by_ts.len() as u64,
        truth_hits: by_ts.values().filter(|t| t.hit).count() as u64,
        bright_kev,
        ..Score::default()
    };
    let mut seen = std::collections::HashSet::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "h5"))
        .collect();
    files.sort();
    for path in files {
        let bytes = std::fs::read(&path)?;
        let (batch, _) =
            read_batch(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        for ev in &batch.events {
            s.received_events += 1;
            if !seen.insert(ev.timestamp) {
                s.duplicate_events += 1;
                continue;
            }
            let Some(t) = by_ts.get(&ev.timestamp) else {
                anyhow::bail!(
                    "{}: event key 0x{:016X} is not in the truth",
                    path.display(),
                    ev.timestamp
                );
            };
            let is_hit = ev.scalar("hit").is_none_or(|v| v != 0.0);
            if !is_hit {
                continue;
            }
            s.received_hits += 1;
            if !t.hit {
                s.false_hits += 1;
            }
            let found: Vec<(f32, f32)> = ev
                .peaks
                .fs
                .iter()
                .zip(&ev.peaks.ss)
                .map(|(&x, &y)| (x, y))
                .collect();
            let spots: Vec<TrueSpot> = t
                .spots
                .iter()
                .map(|p| TrueSpot {
                    fs: p.fs,
                    ss: p.ss,
                    intensity: p.intensity_kev,
                    sigma: p.sigma,
                })
                .collect();
            let bright: Vec<TrueSpot> = spots
                .iter()
                .copied()
                .filter(|p| p.intensity >= bright_kev)
                .collect();
            let (_, _, m) = score(&found, &spots, max_dist);
            let (_, _, mb) = score(&found, &bright, max_dist);
            s.truth_spots += spots.len() as u64;
            s.found_peaks += found.len() as u64;
            s.matched += m as u64;
            s.bright_spots += bright.len() as u64;
            s.bright_matched += mb as u64;
        }
    }
    s.missed_hits = by_ts
        .iter()
        .filter(|(ts, t)| t.hit && !seen.contains(ts))
        .count() as u64;
    let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    s.precision = ratio(s.matched, s.found_peaks);
    s.recall = ratio(s.matched, s.truth_spots);
    s.recall_bright = ratio(s.bright_matched, s.bright_spots);
    Ok(s)
}

impl Score {
    /// One paragraph for people.
    pub fn render(&self) -> String {
        format!(
            "score vs ground truth: {} of {} true hits received ({} missed, {} false hits, {} duplicates)\n  peaks: precision {:.3}, recall {:.3} ({} of {} spots), recall {:.3} for spots >= {} keV ({} of {})\n",
            self.received_hits - self.false_hits,
            self.truth_hits,
            self.missed_hits,
            self.false_hits,
            self.duplicate_events,
            self.precision,
            self.recall,
            self.matched,
            self.truth_spots,
            self.recall_bright,
            self.bright_kev,
            self.bright_matched,
            self.bright_spots
        )
    }
}
