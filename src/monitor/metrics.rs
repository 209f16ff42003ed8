//! The snapshot in Prometheus' text exposition format (version 0.0.4).

use super::state::{SinkState, Snapshot};
use std::fmt::Write;

/// Escapes a label value (backslash, double quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders every number of the snapshot.
pub fn render(s: &Snapshot) -> String {
    let mut o = String::new();
    let run = format!(
        "experiment=\"{}\",run=\"{}\",detector=\"{}\"",
        label(s.experiment.as_deref().unwrap_or("")),
        s.run.map(|r| r.to_string()).unwrap_or_default(),
        label(&s.detector)
    );
    family(
        &mut o,
        "lclstreamer_info",
        "gauge",
        "The run being streamed.",
    );
    let _ = writeln!(
        o,
        "lclstreamer_info{{{run},state=\"{}\"}} 1",
        label(&s.state)
    );
    for (name, help, v) in [
        ("events_read", "Events the coordinator read.", s.events_read),
        (
            "events_processed",
            "Events the workers processed.",
            s.processed,
        ),
        (
            "events_damaged",
            "Events that could not be processed.",
            s.damaged,
        ),
        ("hits", "Events that passed the hit criteria.", s.hits),
    ] {
        let n = format!("lclstreamer_{name}_total");
        family(&mut o, &n, "counter", help);
        let _ = writeln!(o, "{n} {v}");
    }
    family(
        &mut o,
        "lclstreamer_hit_rate",
        "gauge",
        "Hits per processed event.",
    );
    let _ = writeln!(o, "lclstreamer_hit_rate {}", s.hit_rate);
    family(
        &mut o,
        "lclstreamer_events_per_second",
        "gauge",
        "Events done per second since the start.",
    );
    let _ = writeln!(o, "lclstreamer_events_per_second {}", s.events_per_second);
    for (name, help, v) in [
        ("events_sent", "Events the writers sent.", s.events_sent),
        ("batches_sent", "Batches the writers sent.", s.batches),
    ] {
        let n = format!("lclstreamer_{name}_total");
        family(&mut o, &n, "counter", help);
        let _ = writeln!(o, "{n} {v}");
    }
    if let Some(l) = &s.latency {
        family(
            &mut o,
            "lclstreamer_latency_seconds",
            "gauge",
            "Live runs: from an event's discovery by the coordinator to its batch being sent.",
        );
        let _ = writeln!(
            o,
            "lclstreamer_latency_seconds{{quantile=\"0.5\"}} {}",
            l.median_seconds
        );
        let _ = writeln!(
            o,
            "lclstreamer_latency_seconds{{quantile=\"0.99\"}} {}",
            l.p99_seconds
        );
        family(
            &mut o,
            "lclstreamer_latency_events_total",
            "counter",
            "Events the latency quantiles are over.",
        );
        let _ = writeln!(o, "lclstreamer_latency_events_total {}", l.events);
    }
    family(
        &mut o,
        "lclstreamer_peaks_per_event",
        "histogram",
        "Peaks found per processed event.",
    );
    let mut cum = 0u64;
    for (i, c) in s.peaks_per_event.iter().enumerate() {
        cum += c;
        let le = s
            .peak_bins
            .get(i)
            .map(|e| e.to_string())
            .unwrap_or_else(|| "+Inf".into());
        let _ = writeln!(o, "lclstreamer_peaks_per_event_bucket{{le=\"{le}\"}} {cum}");
    }
    let _ = writeln!(o, "lclstreamer_peaks_per_event_count {cum}");
    family(
        &mut o,
        "lclstreamer_rank_events_total",
        "counter",
        "Events each role handled.",
    );
    for r in &s.ranks {
        let _ = writeln!(
            o,
            "lclstreamer_rank_events_total{{role=\"{}\",rank=\"{}\"}} {}",
            r.role, r.rank, r.events
        );
    }
    for (name, help, get) in [
        (
            "batches",
            "Batches sent (handed to the sink while the job runs).",
            (|x| Some(x.batches)) as fn(&SinkState) -> Option<u64>,
        ),
        ("events", "Events sent.", |x| Some(x.events)),
        ("bytes", "Bytes sent (known at the end).", |x| x.bytes),
        (
            "spilled",
            "Batches spilled to disk (known at the end).",
            |x| x.spilled,
        ),
        (
            "dropped",
            "Batches dropped by policy (known at the end).",
            |x| x.dropped,
        ),
    ] {
        let n = format!("lclstreamer_sink_{name}_total");
        family(&mut o, &n, "counter", help);
        for k in &s.sinks {
            if let Some(v) = get(k) {
                let _ = writeln!(o, "{n}{{sink=\"{}\"}} {v}", label(&k.name));
            }
        }
    }
    family(
        &mut o,
        "lclstreamer_sink_consumers",
        "gauge",
        "Consumers connected to a sink.",
    );
    for k in &s.sinks {
        if let Some(c) = k.consumers {
            let _ = writeln!(
                o,
                "lclstreamer_sink_consumers{{sink=\"{}\"}} {c}",
                label(&k.name)
            );
        }
    }
    o
}
