//! `lclstreamer run --live` under mpirun on a run that `lclstreamer replay` writes at 120 Hz
//! while the job reads it: every event reaches the NNG consumer exactly once, the job ends at
//! the run's EndRun, and the latency from an event's datagrams being written to its batch
//! arriving is printed (median, p99). Variants: a stream whose files appear late, chunk
//! rotation during the run (from small data and from bigdata headers), and a run that stops
//! without EndRun (idle timeout).

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const EXE: &str = env!("CARGO_BIN_EXE_lclstreamer");
const EXP: &str = "mfxlive01";
const RATE: f64 = 120.0;

fn synth(root: &Path, events: u32, extra: &[&str]) {
    let out = Command::new(EXE)
        .args(["synth", "--out"])
        .arg(root)
        .args(["--exp", EXP, "--run", "5", "--detector", "epixquad"])
        .args(["--segments", "0,1", "--streams", "2", "--npy-only"])
        .args(["--seed", "3", "--events", &events.to_string()])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn xtc(root: &Path) -> PathBuf {
    root.join("mfx").join(EXP).join("xtc")
}

fn config(src: &Path, live: &Path, url: &str, source_extra: &str) -> PathBuf {
    let side = src.join("mfx").join(EXP).join("synth/r0005");
    let text = format!(
        "source:\n  exp: {EXP}\n  run: 5\n  root: {root}\n  detector: epixquad\n  live_idle_timeout: 20\n  live_flush: 0.25\n{source_extra}detector:\n  kind: epixquad\n  constants: {side}\nprocessing:\n  keep: all\noutput:\n  batch_size: 8\n  compression: none\n  sinks:\n    - kind: nng\n      urls: [{url}]\nparallel:\n  events_per_unit: 2\n",
        root = live.display(),
        side = side.display(),
    );
    let p = live.join("job.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

fn mpirun(ranks: u32, cfg: &Path, summary: &Path) -> Child {
    Command::new("mpirun")
        .args(["--oversubscribe", "-n", &ranks.to_string(), EXE])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .args(["run", "--live", "--config"])
        .arg(cfg)
        .arg("--summary")
        .arg(summary)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Receives batches on `url` in a thread: event key → arrival times (ns since the epoch).
fn consumer(
    url: &str,
) -> (
    mpsc::Receiver<BTreeMap<u64, Vec<u64>>>,
    std::thread::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel();
    let cfg = lclstreamer::transport::PullConfig {
        idle_timeout: Duration::from_secs(60),
        ..lclstreamer::transport::PullConfig::new(url)
    };
    let h = std::thread::spawn(move || {
        // Arrival times are taken on receipt; batches are decoded on another thread so that
        // decoding never delays the next receipt.
        let (btx, brx) = mpsc::channel::<(u64, Vec<u8>)>();
        let decoder = std::thread::spawn(move || {
            let mut got: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
            for (t, bytes) in brx {
                let (b, _) = lclstreamer::output::read_batch(&bytes).unwrap();
                for e in b.events {
                    got.entry(e.timestamp).or_default().push(t);
                }
            }
            got
        });
        let sum = lclstreamer::transport::pull(&cfg, |bytes, _| {
            btx.send((now_ns(), bytes.to_vec())).unwrap();
            Ok(())
        })
        .unwrap();
        assert!(sum.complete, "{}", sum.report());
        drop(btx);
        tx.send(decoder.join().unwrap()).unwrap();
    });
    (rx, h)
}

struct Case {
    events: u32,
    synth_extra: Vec<&'static str>,
    source_extra: &'static str,
    late: Option<&'static str>,
    port: u16,
}

struct Outcome {
    summary: Value,
    replay_stderr: String,
    live_xtc: PathBuf,
    _tmp: tempfile::TempDir,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Replays a synthetic run at 120 Hz while `run --live` on 3 ranks reads it; checks delivery.
fn live_case(name: &str, c: Case) -> Outcome {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let live = tmp.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    synth(&src, c.events, &c.synth_extra);
    let url = format!("tcp://127.0.0.1:{}", c.port);
    let (rx, consumer_thread) = consumer(&url);
    let cfg = config(&src, &live, &url, c.source_extra);
    let summary = live.join("summary.json");
    let written = live.join("written.jsonl");
    let mut job = mpirun(3, &cfg, &summary);
    // The job's stderr, watched for the line rank 0 prints once every worker asked for work.
    let (ready_tx, ready_rx) = mpsc::channel();
    let stderr = job.stderr.take().unwrap();
    let job_err = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut text = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if line.starts_with("lclstreamer: live:") {
                let _ = ready_tx.send(());
            }
            text += &line;
            text.push('\n');
        }
        text
    });
    let go = live.join("go");
    let mut replay = Command::new(EXE);
    replay.arg("replay");
    if c.late.is_none() {
        // Events start once the job is up, so the latency is the steady state's, not the
        // job's start-up (a late stream holds the job's start-up until it appears).
        replay.arg("--wait-for").arg(&go);
        let go = go.clone();
        std::thread::spawn(move || {
            if ready_rx.recv_timeout(Duration::from_secs(120)).is_ok() {
                std::thread::sleep(Duration::from_millis(200));
            }
            std::fs::write(go, b"").unwrap();
        });
    }
    replay
        .args(["--rate", &RATE.to_string(), "--from"])
        .arg(xtc(&src))
        .arg("--to")
        .arg(xtc(&live))
        .arg("--log")
        .arg(&written);
    if let Some(l) = c.late {
        replay.args(["--late-stream", l]);
    }
    let t0 = Instant::now();
    let replay = replay.output().unwrap();
    let replay_stderr = String::from_utf8_lossy(&replay.stderr).to_string();
    assert!(replay.status.success(), "{replay_stderr}");
    let out = job.wait_with_output().unwrap();
    let job_s = t0.elapsed().as_secs_f64();
    let err = job_err.join().unwrap();
    assert!(
        out.status.success(),
        "{name}: {}\n{err}",
        String::from_utf8_lossy(&out.stdout),
    );
    let got = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    consumer_thread.join().unwrap();
    let s: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let n = u64::from(c.events);
    assert_eq!(s["live"]["ended"], "EndRun", "{name}: {s}");
    assert_eq!(
        (
            s["events_read"].as_u64(),
            s["processed"].as_u64(),
            s["events_sent"].as_u64()
        ),
        (Some(n), Some(n), Some(n)),
        "{name}: {s}"
    );
    assert_eq!(
        (s["incomplete"].as_u64(), s["damaged"].as_u64()),
        (Some(0), Some(0)),
        "{name}: {s}"
    );
    assert!(s["truncated_files"].as_array().unwrap().is_empty(), "{s}");
    let written: BTreeMap<u64, u64> = std::fs::read_to_string(&written)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["timestamp"].as_u64().unwrap(),
                v["written_ns"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(written.len() as u64, n, "{name}: replay log");
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        written.keys().collect::<Vec<_>>(),
        "{name}: events received differ from events written"
    );
    let twice: Vec<_> = got.iter().filter(|(_, t)| t.len() != 1).collect();
    assert!(
        twice.is_empty(),
        "{name}: received more than once: {twice:?}"
    );
    let mut lat: Vec<f64> = written
        .iter()
        .map(|(k, w)| (got[k][0] as f64 - *w as f64) * 1e-9)
        .collect();
    let trace: Vec<String> = lat
        .iter()
        .step_by(lat.len() / 10 + 1)
        .map(|l| format!("{:.0}", l * 1e3))
        .collect();
    println!(
        "{name}: latency in ms every {}th event: {}",
        lat.len() / 10 + 1,
        trace.join(" ")
    );
    lat.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    println!(
        "{name}: {n} events at {RATE} Hz, batches of 8, 3 ranks: latency written → received \
         median {:.0} ms, p99 {:.0} ms, max {:.0} ms; job {job_s:.1} s",
        p50 * 1e3,
        p99 * 1e3,
        lat[lat.len() - 1] * 1e3
    );
    assert!(
        lat[0] > 0.0,
        "{name}: an event arrived before it was written"
    );
    if c.late.is_none() {
        assert!(p50 < 1.0, "{name}: median latency {p50:.3} s");
    }
    // The job's own measure, discovered → sent, lies inside written → received for every
    // event (same host), so its quantiles cannot exceed the consumer's (1.6 % histogram error).
    let l = &s["latency"];
    let (m, q) = (
        l["median_seconds"].as_f64().unwrap(),
        l["p99_seconds"].as_f64().unwrap(),
    );
    println!(
        "{name}: summary latency discovered → sent: median {:.0} ms, p99 {:.0} ms",
        m * 1e3,
        q * 1e3
    );
    assert_eq!(l["events"].as_u64(), Some(n), "{name}: {l}");
    assert!(0.0 < m && m <= q, "{name}: {l}");
    assert!(
        m <= p50 * 1.02 + 1e-3,
        "{name}: {m} > consumer median {p50}"
    );
    assert!(q <= lat[lat.len() - 1] * 1.02 + 1e-3, "{name}: {l}");
    if c.late.is_none() {
        assert!(m < 1.0, "{name}: summary median latency {m:.3} s");
    }
    let left: Vec<_> = walk(&xtc(&live))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".inprogress"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    Outcome {
        summary: s,
        replay_stderr,
        live_xtc: xtc(&live),
        _tmp: tmp,
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn live_run_at_120_hz_every_event_once_ends_at_endrun() {
    live_case(
        "live",
        Case {
            events: 300,
            synth_extra: vec![],
            source_extra: "",
            late: None,
            port: 15931,
        },
    );
}

#[test]
fn live_run_with_a_stream_that_starts_late() {
    let o = live_case(
        "late stream",
        Case {
            events: 240,
            synth_extra: vec![],
            source_extra: "  live_streams: 2\n",
            late: Some("1:1.0"),
            port: 15932,
        },
    );
    assert_eq!(o.summary["live"]["ended"], "EndRun");
}

/// Chunks of the replayed run, from the files present afterwards.
fn chunk_files(xtc: &Path) -> usize {
    std::fs::read_dir(xtc)
        .unwrap()
        .filter(|e| {
            let n = e.as_ref().unwrap().file_name();
            let n = n.to_string_lossy();
            n.contains("-s000-c") && n.ends_with(".xtc2")
        })
        .count()
}

#[test]
fn live_run_with_chunk_rotation_from_small_data_and_from_bigdata() {
    for (name, extra, port) in [
        ("chunks (small data)", "", 15933),
        ("chunks (bigdata)", "  use_smalldata: false\n", 15934),
    ] {
        let o = live_case(
            name,
            Case {
                events: 240,
                synth_extra: vec!["--chunk-bytes", "4000000", "--events-per-enable", "40"],
                source_extra: extra,
                late: None,
                port,
            },
        );
        let chunks = chunk_files(&o.live_xtc);
        assert!(chunks >= 3, "{name}: {chunks} chunks; {}", o.replay_stderr);
    }
}

/// Copies the first `n` datagrams of `from` to `to` (bigdata and small data pair up one to one)
/// and `extra` bytes of the next.
fn copy_prefix(from: &Path, to: &Path, n: usize, extra: usize) {
    use lclstreamer::xtc::DgramReader;
    let mut r = DgramReader::open(from).unwrap();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for _ in 0..n {
        out.extend_from_slice(r.next_into(&mut buf).unwrap().unwrap().bytes);
    }
    let next = r.next_into(&mut buf).unwrap().unwrap();
    out.extend_from_slice(&next.bytes[..extra]);
    std::fs::write(to, out).unwrap();
}

#[test]
fn live_run_that_stops_without_endrun_ends_after_the_idle_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let live = tmp.path().join("live");
    synth(&src, 40, &[]);
    let (sx, lx) = (xtc(&src), xtc(&live));
    std::fs::create_dir_all(lx.join("smalldata")).unwrap();
    // Configure, BeginRun, BeginStep, Enable and 20 events; the next datagram half written.
    for s in 0..2 {
        let big = format!("{EXP}-r0005-s{s:03}-c000.xtc2");
        let smd = format!("{EXP}-r0005-s{s:03}-c000.smd.xtc2");
        copy_prefix(
            &sx.join(&big),
            &lx.join(format!("{big}.inprogress")),
            24,
            100,
        );
        copy_prefix(
            &sx.join("smalldata").join(&smd),
            &lx.join("smalldata").join(format!("{smd}.inprogress")),
            24,
            30,
        );
    }
    let out_dir = live.join("out");
    let cfg = config(
        &src,
        &live,
        "tcp://127.0.0.1:1",
        "  live_idle_timeout: 1.5\n",
    );
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("  live_idle_timeout: 20\n", "")
        .replace(
            "    - kind: nng\n      urls: [tcp://127.0.0.1:1]\n",
            &format!("    - kind: files\n      dir: {}\n", out_dir.display()),
        );
    std::fs::write(&cfg, text).unwrap();
    let summary = live.join("summary.json");
    let t0 = Instant::now();
    let out = Command::new(EXE)
        .args(["run", "--live", "--quiet", "--config"])
        .arg(&cfg)
        .arg("--summary")
        .arg(&summary)
        .output()
        .unwrap();
    let secs = t0.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert_eq!(s["live"]["ended"], "idle timeout", "{s}");
    assert_eq!(s["live"]["waiting_streams"], serde_json::json!([0, 1]));
    assert!(text.contains("live run ended: idle timeout"), "{text}");
    assert_eq!(
        (s["events_read"].as_u64(), s["processed"].as_u64()),
        (Some(20), Some(20)),
        "{s}"
    );
    assert!(s["truncated_files"].as_array().unwrap().is_empty(), "{s}");
    assert!(secs >= 1.5, "ended after {secs:.1} s");
}
