//! Latency of a live run: from an event's datagram being discovered by the coordinator to its
//! batch having been handed to every sink by the writer. Kept as a log-bucketed histogram (32
//! buckets per octave of microseconds, so quantiles are within 1.6 %) that writers merge and
//! send to rank 0 in a few hundred bytes, whatever the number of events.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Sub-buckets per octave (a power of two).
const SUB: u64 = 32;
const SUB_BITS: u32 = SUB.trailing_zeros();

/// Wall-clock nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn bucket(us: u64) -> u32 {
    if us < SUB {
        return us as u32;
    }
    let e = 63 - us.leading_zeros();
    let m = (us >> (e - SUB_BITS)) & (SUB - 1);
    (SUB + u64::from(e - SUB_BITS) * SUB + m) as u32
}

/// The middle of bucket `b` in microseconds.
fn middle(b: u32) -> f64 {
    let b = u64::from(b);
    if b < SUB {
        return b as f64;
    }
    let e = (b - SUB) / SUB + u64::from(SUB_BITS);
    let m = (b - SUB) % SUB;
    let width = 1u64 << (e - u64::from(SUB_BITS));
    ((SUB + m) * width) as f64 + (width as f64 - 1.0) / 2.0
}

/// Counts of latencies per bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    buckets: BTreeMap<u32, u64>,
    max_us: u64,
}

impl Latency {
    /// Records that the events discovered at `seen_ns` (0: not measured) were sent at `now_ns`.
    pub fn sent(&mut self, seen_ns: impl IntoIterator<Item = u64>, now_ns: u64) {
        for s in seen_ns.into_iter().filter(|&s| s > 0) {
            let us = now_ns.saturating_sub(s) / 1000;
            *self.buckets.entry(bucket(us)).or_default() += 1;
            self.max_us = self.max_us.max(us);
        }
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, o: &Latency) {
        for (&b, &n) in &o.buckets {
            *self.buckets.entry(b).or_default() += n;
        }
        self.max_us = self.max_us.max(o.max_us);
    }

    /// Events recorded.
    pub fn count(&self) -> u64 {
        self.buckets.values().sum()
    }

    /// The `q` quantile in seconds (`None` when empty).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((n - 1) as f64 * q.clamp(0.0, 1.0)).round() as u64;
        let mut seen = 0;
        for (&b, &c) in &self.buckets {
            seen += c;
            if seen > rank {
                return Some((middle(b) * 1e-6).min(self.max_us as f64 * 1e-6));
            }
        }
        Some(self.max_us as f64 * 1e-6)
    }

    /// Median, p99 and maximum, as reported.
    pub fn summary(&self) -> Option<LatencySummary> {
        Some(LatencySummary {
            events: self.count(),
            median_seconds: self.quantile(0.5)?,
            p99_seconds: self.quantile(0.99)?,
            max_seconds: self.max_us as f64 * 1e-6,
        })
    }
}

/// Latency from discovery by the coordinator to the batch being sent, over a live run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub events: u64,
    pub median_seconds: f64,
    pub p99_seconds: f64,
    pub max_seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_their_middles_lie_inside() {
        let mut last = 0;
        for us in [0u64, 1, 31, 32, 33, 63, 64, 100, 1000, 52_345, 1 << 40] {
            let b = bucket(us);
            assert!(b >= last, "{us}");
            last = b;
            let m = middle(b);
            assert!(
                (m - us as f64).abs() <= us as f64 / 32.0 + 0.5,
                "{us} → {m}"
            );
        }
    }

    #[test]
    fn quantiles_match_the_samples_within_the_bucket_width() {
        let mut h = Latency::default();
        // 1 ms .. 1000 ms, discovered at 1 s, sent 1 + k ms later.
        let base = 1_000_000_000u64;
        for k in 1..=1000u64 {
            h.sent([base], base + k * 1_000_000);
        }
        h.sent([0], base);
        assert_eq!(h.count(), 1000);
        let med = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((med - 0.5005).abs() < 0.5 * 0.02, "{med}");
        assert!((p99 - 0.990).abs() < 0.99 * 0.02, "{p99}");
        let mut a = Latency::default();
        let mut b = Latency::default();
        a.sent([base], base + 10_000_000);
        b.sent([base], base + 30_000_000);
        a.merge(&b);
        let s = a.summary().unwrap();
        assert_eq!(s.events, 2);
        assert!((s.max_seconds - 0.030).abs() < 1e-9);
        assert!(Latency::default().summary().is_none());
    }
}
