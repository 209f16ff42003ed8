//! `lclstreamer run` end to end on synthetic multi-stream runs, alone and under mpirun with 2,
//! 3 and 4 ranks: every event accounted for, every hit delivered, peaks matching the ground
//! truth, the same results whatever the rank count; and a run with a missing, a truncated and
//! a damaged event.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_lclstreamer");
const EXP: &str = "mfxtest01";

fn synth(root: &Path, events: u32) {
    synth_detector(root, events, "epix10k2M", 4);
}

fn synth_detector(root: &Path, events: u32, detector: &str, streams: u32) {
    synth_args(root, events, detector, streams, &[]);
}

fn synth_args(root: &Path, events: u32, detector: &str, streams: u32, extra: &[&str]) {
    let out = Command::new(EXE)
        .args(["synth", "--out"])
        .arg(root)
        .args([
            "--exp",
            EXP,
            "--run",
            "3",
            "--detector",
            detector,
            "--seed",
            "11",
        ])
        .args(["--streams", &streams.to_string(), "--hit-rate", "0.5"])
        .args(["--events", &events.to_string()])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn side(root: &Path) -> PathBuf {
    root.join("mfx").join(EXP).join("synth/r0003")
}

fn config(root: &Path, sink: &str) -> PathBuf {
    config_detector(root, sink, "epix10k2M")
}

fn config_detector(root: &Path, sink: &str, det: &str) -> PathBuf {
    config_with(root, sink, det, &side(root), "[7, 2, 100, 10]")
}

/// A job configuration for detector `det` with constants in `consts` and psana common-mode
/// parameters `cm`.
fn config_with(root: &Path, sink: &str, det: &str, consts: &Path, cm: &str) -> PathBuf {
    let s = side(root);
    let text = format!(
        "source:\n  exp: {EXP}\n  run: 3\n  root: {root}\n  detector: {det}\ndetector:\n  kind: {det}\n  constants: {k}\n  geometry: {c}/geometry.geom\n  common_mode: {cm}\nprocessing:\n  peakfinder8: {{adc_threshold: 25.0, minimum_snr: 6.0, min_pixel_count: 2, max_pixel_count: 200, local_bg_radius: 3, min_res: 0, max_res: 3000, max_num_peaks: 2048}}\n  min_num_peaks_for_hit: 10\n  max_num_peaks_for_hit: 5000\noutput:\n  batch_size: 3\n  sinks:\n{sink}\nparallel:\n  events_per_unit: 2\n",
        root = root.display(),
        c = s.display(),
        k = consts.display(),
    );
    let p = root.join(format!("job-{}.yaml", sink.len()));
    std::fs::write(&p, text).unwrap();
    p
}

fn run(ranks: u32, cfg: &Path, summary: &Path) {
    let mut cmd = if ranks == 1 {
        Command::new(EXE)
    } else {
        let mut c = Command::new("mpirun");
        c.args(["--oversubscribe", "-n", &ranks.to_string(), EXE]);
        c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
        c
    };
    let out = cmd
        .args(["run", "--quiet", "--config"])
        .arg(cfg)
        .arg("--summary")
        .arg(summary)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{ranks} ranks: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn score(root: &Path, dir: &Path) -> Value {
    let out = Command::new(EXE)
        .args(["score", "--json", "--truth"])
        .arg(side(root).join("truth.jsonl"))
        .arg("--batches")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Event key → number of peaks, over every batch file in `dir`.
fn peaks_by_event(dir: &Path) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        let (b, _) = lclstreamer::output::read_batch(&bytes).unwrap();
        for ev in b.events {
            assert!(
                m.insert(ev.timestamp, ev.peaks.fs.len()).is_none(),
                "event sent twice"
            );
        }
    }
    m
}

#[test]
fn same_results_on_one_to_four_ranks_and_peaks_match_truth() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let events = 16;
    synth(root, events);
    let mut reference: Option<BTreeMap<u64, usize>> = None;
    for ranks in [1, 2, 3, 4] {
        let out = root.join(format!("out{ranks}"));
        let cfg = config(
            root,
            &format!("    - kind: files\n      dir: {}", out.display()),
        );
        let sum = root.join(format!("sum{ranks}.json"));
        run(ranks, &cfg, &sum);
        let s = json(&sum);
        assert_eq!(s["events_read"], events, "{ranks} ranks");
        assert_eq!(s["processed"], events);
        assert_eq!(s["damaged"], 0);
        assert_eq!(s["incomplete"], 0);
        let sc = score(root, &out);
        assert_eq!(sc["missed_hits"], 0, "{ranks} ranks: {sc}");
        assert_eq!(sc["false_hits"], 0);
        assert_eq!(sc["received_hits"], sc["truth_hits"]);
        assert!(sc["precision"].as_f64().unwrap() >= 0.98, "{sc}");
        assert!(sc["recall_bright"].as_f64().unwrap() >= 0.95, "{sc}");
        assert_eq!(s["hits"], sc["truth_hits"]);
        let got = peaks_by_event(&out);
        assert_eq!(got.len() as u64, s["events_sent"].as_u64().unwrap());
        match &reference {
            None => reference = Some(got),
            Some(r) => assert_eq!(&got, r, "{ranks} ranks differ from 1 rank"),
        }
    }
}

#[test]
fn jungfrau4m_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    synth_detector(root, 6, "jungfrau4M", 2);
    let out = root.join("out");
    let cfg = config_detector(
        root,
        &format!("    - kind: files\n      dir: {}", out.display()),
        "jungfrau4M",
    );
    let sum = root.join("sum.json");
    run(1, &cfg, &sum);
    let s = json(&sum);
    assert_eq!(
        (s["events_read"].as_u64(), s["processed"].as_u64()),
        (Some(6), Some(6))
    );
    let sc = score(root, &out);
    assert_eq!(
        (sc["missed_hits"].as_u64(), sc["false_hits"].as_u64()),
        (Some(0), Some(0)),
        "{sc}"
    );
    assert!(sc["precision"].as_f64().unwrap() >= 0.98, "{sc}");
    assert!(sc["recall_bright"].as_f64().unwrap() >= 0.95, "{sc}");
}

/// A synthetic run of `preset` (`--segments` when given) through `lclstreamer run` on one rank;
/// prints and returns the score.
fn model_end_to_end(
    preset: &str,
    segments: Option<&str>,
    events: u32,
    streams: u32,
    cm: &str,
) -> Value {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut extra = vec!["--npy-only"];
    if let Some(s) = segments {
        extra.extend(["--segments", s]);
    }
    let t0 = std::time::Instant::now();
    synth_args(root, events, preset, streams, &extra);
    let synth_s = t0.elapsed().as_secs_f64();
    // Whole-detector constants: `run` takes the planes of the segments present.
    let consts = side(root);
    let out = root.join("out");
    let cfg = config_with(
        root,
        &format!("    - kind: files\n      dir: {}", out.display()),
        preset,
        &consts,
        cm,
    );
    let sum = root.join("sum.json");
    let t1 = std::time::Instant::now();
    run(1, &cfg, &sum);
    let run_s = t1.elapsed().as_secs_f64();
    let s = json(&sum);
    assert_eq!(
        (s["events_read"].as_u64(), s["processed"].as_u64()),
        (Some(u64::from(events)), Some(u64::from(events))),
        "{preset}: {s}"
    );
    let sc = score(root, &out);
    println!(
        "{preset}{}: {events} events, {} hits, precision {:.3}, recall {:.3}, bright recall {:.3}; \
         synth {synth_s:.1} s, run {run_s:.1} s",
        segments.map_or(String::new(), |s| format!(" segments {s}")),
        sc["truth_hits"],
        sc["precision"].as_f64().unwrap(),
        sc["recall"].as_f64().unwrap_or(f64::NAN),
        sc["recall_bright"].as_f64().unwrap(),
    );
    assert_eq!(
        (sc["missed_hits"].as_u64(), sc["false_hits"].as_u64()),
        (Some(0), Some(0)),
        "{preset}: {sc}"
    );
    assert!(sc["precision"].as_f64().unwrap() >= 0.95, "{preset}: {sc}");
    assert!(
        sc["recall_bright"].as_f64().unwrap() >= 0.95,
        "{preset}: {sc}"
    );
    sc
}

#[test]
fn epixquad_end_to_end() {
    model_end_to_end("epixquad", None, 8, 2, "[7, 2, 100, 10]");
}

#[test]
fn jungfrau05m_end_to_end() {
    model_end_to_end("jungfrau05M", None, 8, 1, "[7, 2, 100, 10]");
}

#[test]
fn sparse_jungfrau16m_end_to_end() {
    model_end_to_end("jungfrau16M", Some("3,17,30"), 6, 3, "[7, 2, 100, 10]");
}

#[test]
fn epix100_end_to_end() {
    model_end_to_end("epix100", None, 8, 1, "[0, 1, 100, 10]");
}

#[test]
fn nng_stream_to_the_pull_consumer_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    synth(root, 8);
    let recv = root.join("received");
    let url = "tcp://127.0.0.1:15911";
    let mut pull = Command::new(EXE)
        .args(["pull", url, "--producers", "1", "--timeout", "60", "--out"])
        .arg(&recv)
        .spawn()
        .unwrap();
    let cfg = config(root, &format!("    - kind: nng\n      urls: [{url}]"));
    let sum = root.join("sum.json");
    run(3, &cfg, &sum);
    assert!(
        pull.wait().unwrap().success(),
        "pull saw an incomplete stream"
    );
    let s = json(&sum);
    assert_eq!(s["sinks"][0]["events"], s["events_sent"]);
    assert_eq!(
        peaks_by_event(&recv).len() as u64,
        s["events_sent"].as_u64().unwrap()
    );
}

#[test]
fn zmq_streams_in_each_format_reach_pull_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    synth(root, 8);
    for (i, (format, pattern, socket)) in [
        ("stream2", "push", "zmq-pull"),
        ("simplon", "push", "zmq-pull"),
        ("msgpack", "rep", "zmq-req"),
        ("hdf5", "push", "zmq-pull"),
    ]
    .into_iter()
    .enumerate()
    {
        let recv = root.join(format!("received-{format}"));
        let url = format!("tcp://127.0.0.1:{}", 15931 + i);
        let (sink_mode, pull_mode) = match pattern {
            "rep" => ("listen", Some("--dial")),
            _ => ("dial", None),
        };
        let mut pull = Command::new(EXE)
            .args(["pull", &url, "--socket", socket, "--timeout", "60", "--out"])
            .arg(&recv)
            .args(pull_mode)
            .spawn()
            .unwrap();
        let cfg = config(
            root,
            &format!(
                "    - {{kind: zmq, urls: [{url}], pattern: {pattern}, mode: {sink_mode}, format: {format}}}"
            ),
        );
        let sum = root.join(format!("sum-{format}.json"));
        run(3, &cfg, &sum);
        assert!(
            pull.wait().unwrap().success(),
            "{format}: pull saw an incomplete stream"
        );
        let s = json(&sum);
        let sent = s["events_sent"].as_u64().unwrap();
        assert!(sent > 0);
        assert_eq!(s["sinks"][0]["events"], sent, "{format}");
        let files = std::fs::read_dir(&recv).unwrap().count() as u64;
        let want = if format == "hdf5" {
            s["batches"].as_u64().unwrap()
        } else {
            sent
        };
        assert_eq!(
            files,
            want,
            "{format}: one message per {}",
            if format == "hdf5" { "batch" } else { "event" }
        );
    }
}

/// Rewrites `file` without the `k`-th L1Accept (datagram boundaries from the reader).
fn drop_l1accept(file: &Path, k: usize) {
    use lclstreamer::xtc::{DgramReader, TransitionId};
    let mut r = DgramReader::open(file).unwrap();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut seen = 0;
    while let Some(d) = r.next_into(&mut buf).unwrap() {
        if d.service() == TransitionId::L1Accept {
            seen += 1;
            if seen == k + 1 {
                continue;
            }
        }
        out.extend_from_slice(d.bytes);
    }
    std::fs::write(file, out).unwrap();
}

/// Offset of the `k`-th L1Accept in a bigdata file.
fn l1_offset(file: &Path, k: usize) -> (u64, u64) {
    use lclstreamer::xtc::{DgramReader, TransitionId};
    let mut r = DgramReader::open(file).unwrap();
    let mut n = 0;
    while let Some((off, h)) = r.next_header().unwrap() {
        if h.service() == TransitionId::L1Accept {
            if n == k {
                return (off, h.size());
            }
            n += 1;
        }
    }
    panic!("no L1Accept {k}");
}

#[test]
fn missing_truncated_and_damaged_events_are_counted_and_the_rest_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let events = 12;
    synth(root, events);
    let xtc = root.join("mfx").join(EXP).join("xtc");
    // Stream 2 misses event 3.
    drop_l1accept(
        &xtc.join(format!("smalldata/{EXP}-r0003-s002-c000.smd.xtc2")),
        3,
    );
    // Event 5 is damaged in stream 1.
    let s1 = xtc.join(format!("{EXP}-r0003-s001-c000.xtc2"));
    let (off, _) = l1_offset(&s1, 5);
    let mut b = std::fs::read(&s1).unwrap();
    b[off as usize + 16] |= 1 << 5; // MissingData
    std::fs::write(&s1, b).unwrap();
    // Stream 0's last file is cut inside the last event.
    let s0 = xtc.join(format!("{EXP}-r0003-s000-c000.xtc2"));
    let (off, size) = l1_offset(&s0, events as usize - 1);
    let f = std::fs::OpenOptions::new().write(true).open(&s0).unwrap();
    f.set_len(off + size / 2).unwrap();

    let out = root.join("out");
    let cfg = config(
        root,
        &format!("    - kind: files\n      dir: {}", out.display()),
    );
    let sum = root.join("sum.json");
    run(2, &cfg, &sum);
    let s = json(&sum);
    assert_eq!(s["events_read"], events);
    assert_eq!(s["incomplete"], 1, "{s}");
    assert_eq!(s["damaged"], 2, "{s}");
    assert_eq!(s["processed"], events - 3);
    // Small data indexes past the cut: the file is reported truncated once, its event damaged.
    let t = s["truncated_files"].as_array().unwrap();
    assert_eq!(t.len(), 1, "{s}");
    assert!(
        t[0].as_str().unwrap().contains(&s0.display().to_string()),
        "{s}"
    );
    let sc = score(root, &out);
    assert_eq!(sc["false_hits"], 0);
    assert!(sc["missed_hits"].as_u64().unwrap() <= 3);
}

#[test]
fn startup_errors_are_reported_once_and_every_rank_exits_nonzero() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let cfg = root.join("bad.yaml");
    std::fs::write(
        &cfg,
        format!(
            "source: {{exp: {EXP}, run: 3, root: {r}, detector: epix10k2M}}\ndetector: {{kind: epix10k2M, constants: {r}/nope, geometry: {r}/nope.geom}}\noutput:\n  sinks: [{{kind: files, dir: {r}/out}}]\n",
            r = root.display()
        ),
    )
    .unwrap();
    let out = Command::new("mpirun")
        .args(["--oversubscribe", "-n", "3", EXE, "run", "--config"])
        .arg(&cfg)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("lclstreamer:").count(), 1, "{err}");
    assert!(err.contains(EXP), "{err}");

    std::fs::write(&cfg, "source: {detector: x, bogus: 1}\n").unwrap();
    let out = Command::new(EXE)
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bogus") && err.contains("line 1"), "{err}");
}
