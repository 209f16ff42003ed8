//! The measurements behind `scripts/bench-scaling`, on the job's own role code in one process
//! (`job::run_with`, no MPI); each prints one JSON line.
//!
//! `coordinator ROOT EXP DETECTOR WORKERS REPS`: the real coordinator on a synthetic run (run 1)
//! with WORKERS stand-in workers that ask for work again as soon as they get it; event
//! descriptors per second from the first to the last work unit handed out, and the bytes and
//! encoding time of the work messages as they would cross MPI.
//!
//! `writer ROOT EXP DETECTOR EVENTS REPS OUT`: the job on one worker captures the records (the
//! frames calibrated and compressed with bitshuffle-LZ4, as workers send them) and the
//! single-core kernel times per event; then one real writer is fed EVENTS of those records by
//! two stand-in workers, batches of 8 to a files sink in OUT: events/s and serialise and send
//! time per event; bytes per event of the Records messages over MPI.

use lclstreamer::config::Config;
use lclstreamer::job::layout::Layout;
use lclstreamer::job::messages::{Msg, RecordMsg, WorkerStats, encode};
use lclstreamer::job::router::Switch;
use lclstreamer::job::worker::CREDITS;
use lclstreamer::job::{Hooks, RunOptions, StandIn, run_with};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn config(root: &Path, exp: &str, det: &str, out: &Path, extra: &str) -> anyhow::Result<Config> {
    let side = root.join(&exp[..3]).join(exp).join("synth/r0001");
    let text = format!(
        "source:\n  exp: {exp}\n  run: 1\n  root: {root}\n  detector: {det}\ndetector:\n  kind: {det}\n  constants: {s}\n  geometry: {s}/geometry.geom\n  common_mode: [7, 2, 100, 10]\nprocessing:\n  peakfinder8: {{adc_threshold: 25.0, minimum_snr: 6.0, min_pixel_count: 2, max_pixel_count: 200, local_bg_radius: 3, min_res: 0, max_res: 3000, max_num_peaks: 2048}}\n  min_num_peaks_for_hit: 10\n  max_num_peaks_for_hit: 5000\n  keep: all\n  send: calibrated\noutput:\n  batch_size: 8\n  compression: bitshuffle_lz4\n  sinks:\n    - kind: files\n      dir: {o}\n{extra}",
        root = root.display(),
        s = side.display(),
        o = out.display(),
    );
    Config::parse(&text, "bench_scaling", root)
}

fn quiet() -> RunOptions {
    RunOptions {
        quiet: true,
        summary: None,
    }
}

/// A worker that asks for work again at once, reads nothing and reports to `writer`.
fn eager_worker(writer: u32) -> StandIn {
    Box::new(move |mb| {
        let worker = mb.id;
        let mut stats = WorkerStats::default();
        let mut outstanding = 2;
        for _ in 0..outstanding {
            mb.send(Layout::COORDINATOR, Msg::Ready { worker, stats })?;
        }
        let mut ended = false;
        while outstanding > 0 {
            match mb.recv()? {
                Msg::Work { events, .. } => {
                    stats.processed += events.len() as u64;
                    stats.units += 1;
                    if ended {
                        outstanding -= 1;
                    } else {
                        mb.send(Layout::COORDINATOR, Msg::Ready { worker, stats })?;
                    }
                }
                Msg::End { .. } => {
                    outstanding -= 1;
                    ended = true;
                }
                Msg::Credit { .. } => {}
                other => anyhow::bail!("eager worker: unexpected {other:?}"),
            }
        }
        mb.send(writer, Msg::WorkerDone { worker })?;
        mb.send(Layout::COORDINATOR, Msg::WorkerFinal { worker, stats })
    })
}

fn coordinator(args: &[String]) -> anyhow::Result<()> {
    let [root, exp, det, workers, reps] = args else {
        anyhow::bail!("coordinator ROOT EXP DETECTOR WORKERS REPS");
    };
    let root = PathBuf::from(root);
    let workers: u32 = workers.parse()?;
    let reps: usize = reps.parse()?;
    let mut rates = Vec::new();
    let mut walls = Vec::new();
    let mut encoded = (0usize, 0usize, Duration::ZERO, 0usize);
    for _ in 0..reps {
        let out = tempfile::tempdir()?;
        let cfg = config(&root, exp, det, out.path(), "")?;
        let layout = Layout::in_process(workers, 1);
        let work: Arc<Mutex<Vec<(Instant, Msg)>>> = Arc::default();
        let mut hooks = Hooks::default();
        let log = Arc::clone(&work);
        hooks.tap = Some(Box::new(move |_, m| {
            if matches!(m, Msg::Work { .. }) {
                log.lock().unwrap().push((Instant::now(), m.clone()));
            }
        }));
        for i in 0..workers {
            hooks
                .stand_ins
                .insert(layout.worker(i), eager_worker(layout.writer(0)));
        }
        let t0 = Instant::now();
        let s = run_with(cfg, &layout, &quiet(), hooks)?;
        walls.push(s.events_read as f64 / t0.elapsed().as_secs_f64());
        let work = std::mem::take(&mut *work.lock().unwrap());
        let events = |m: &Msg| match m {
            Msg::Work { events, .. } => events.len(),
            _ => 0,
        };
        let n: usize = work.iter().map(|(_, m)| events(m)).sum();
        anyhow::ensure!(
            n as u64 == s.events_read,
            "{n} events handed out of {}",
            s.events_read
        );
        let (first, last) = (work[0].0, work[work.len() - 1].0);
        // Events after the first unit, over the time they took to hand out.
        rates.push((n - events(&work[0].1)) as f64 / (last - first).as_secs_f64());
        let t = Instant::now();
        let mut bytes = 0;
        for (_, m) in &work {
            bytes += encode(1, m)?.len();
        }
        encoded = (bytes, n, t.elapsed(), work.len());
    }
    let (bytes, n, t, units) = encoded;
    println!(
        "{}",
        json!({
            "kind": "coordinator", "detector": det, "workers": workers,
            "descriptors_per_s": rates, "run_events_per_s": walls,
            "work_messages": units, "events": n,
            "work_bytes_per_event": bytes as f64 / n as f64,
            "encode_ns_per_event": t.as_nanos() as f64 / n as f64,
        })
    );
    Ok(())
}

/// Runs the job on one worker with a tap; returns the records it sent and its summary.
fn capture(
    root: &Path,
    exp: &str,
    det: &str,
) -> anyhow::Result<(Vec<RecordMsg>, lclstreamer::job::summary::Summary)> {
    let out = tempfile::tempdir()?;
    let cfg = config(
        root,
        exp,
        det,
        out.path(),
        "parallel:\n  events_per_unit: 1\n",
    )?;
    let got: Arc<Mutex<Vec<RecordMsg>>> = Arc::default();
    let log = Arc::clone(&got);
    let hooks = Hooks {
        tap: Some(Box::new(move |_, m| {
            if let Msg::Records { records, .. } = m {
                log.lock().unwrap().extend(records.iter().cloned());
            }
        })),
        ..Hooks::default()
    };
    let s = run_with(cfg, &Layout::in_process(1, 1), &quiet(), hooks)?;
    let records = std::mem::take(&mut *got.lock().unwrap());
    anyhow::ensure!(
        !records.is_empty() && records.iter().all(|r| r.frame.is_some()),
        "no frames captured"
    );
    Ok((records, s))
}

fn writer(args: &[String]) -> anyhow::Result<()> {
    let [root, exp, det, events, reps, out] = args else {
        anyhow::bail!("writer ROOT EXP DETECTOR EVENTS REPS OUT");
    };
    let root = PathBuf::from(root);
    let events: usize = events.parse()?;
    let reps: usize = reps.parse()?;
    let (records, s) = capture(&root, exp, det)?;
    // Kernel times per event (ms), one list per kernel over `reps` captures.
    let mut kernels: [Vec<f64>; 4] = Default::default();
    let mut add = |s: &lclstreamer::job::summary::Summary| {
        let st = &s.stage_seconds;
        for (k, v) in kernels
            .iter_mut()
            .zip([st.read, st.calibrate, st.peakfind, st.compress])
        {
            k.push(1e3 * v / s.processed as f64);
        }
    };
    add(&s);
    for _ in 1..reps {
        add(&capture(&root, exp, det)?.1);
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let frame = records[0].frame.as_ref().expect("checked");
    let pixels: u64 = frame.dims.iter().map(|&d| u64::from(d)).product();
    let chunk: f64 = records
        .iter()
        .map(|r| r.frame.as_ref().map_or(0, |f| f.chunk.len()))
        .sum::<usize>() as f64
        / records.len() as f64;
    let unit = 4;
    let msg = Msg::Records {
        worker: 1,
        records: records.iter().cycle().take(unit).cloned().collect(),
    };
    let records_bytes = encode(2, &msg)?.len() as f64 / unit as f64;
    let t = Instant::now();
    for _ in 0..5 {
        std::hint::black_box(encode(2, &msg)?);
    }
    let encode_ms = t.elapsed().as_secs_f64() * 1e3 / (5 * unit) as f64;
    let mut rates = Vec::new();
    let mut ser = Vec::new();
    let mut send = Vec::new();
    for rep in 0..reps {
        let dir = Path::new(out).join(format!("writer-{det}-{rep}"));
        let cfg = config(&root, exp, det, &dir, "")?;
        let (eps, st) = feed_writer(&cfg, &records, events, unit)?;
        std::fs::remove_dir_all(&dir)?;
        rates.push(eps);
        ser.push(1e3 * st.ns_serialize as f64 * 1e-9 / st.events as f64);
        send.push(1e3 * st.ns_send as f64 * 1e-9 / st.events as f64);
    }
    // The same events without their frames (`send: none`): peaks and fields only.
    let bare: Vec<RecordMsg> = records
        .iter()
        .map(|r| RecordMsg {
            frame: None,
            ..r.clone()
        })
        .collect();
    let mut bare_rates = Vec::new();
    for rep in 0..reps {
        let dir = Path::new(out).join(format!("writer-{det}-bare-{rep}"));
        let cfg = config(&root, exp, det, &dir, "")?;
        bare_rates.push(feed_writer(&cfg, &bare, 4000, unit)?.0);
        std::fs::remove_dir_all(&dir)?;
    }
    println!(
        "{}",
        json!({
            "kind": "writer",
            "writer_events_per_s_without_frames": bare_rates, "detector": det, "pixels": pixels,
            "captured_events": records.len(),
            "kernel_ms": {
                "read": median(&kernels[0]), "calibrate": median(&kernels[1]),
                "peakfind": median(&kernels[2]), "compress": median(&kernels[3]),
            },
            "kernel_ms_runs": kernels,
            "chunk_bytes_per_event": chunk,
            "records_bytes_per_event": records_bytes,
            "records_encode_ms_per_event": encode_ms,
            "writer_events": events,
            "writer_events_per_s": rates,
            "serialize_ms_per_event": ser, "send_ms_per_event": send,
        })
    );
    Ok(())
}

/// One real writer fed `events` copies of `records` by two stand-in workers (units of `unit`,
/// within the credits); returns its events/s and counts.
fn feed_writer(
    cfg: &Config,
    records: &[RecordMsg],
    events: usize,
    unit: usize,
) -> anyhow::Result<(f64, lclstreamer::job::messages::WriterStats)> {
    let layout = Layout::in_process(2, 1);
    let (switch, boxes) = Switch::new(&layout.roles_on(0));
    let (tx, rx) = std::sync::mpsc::channel();
    let start = Arc::new(std::sync::Barrier::new(3));
    let mut handles = Vec::new();
    for mb in boxes {
        let kind = layout.kind(mb.id);
        let (layout, cfg, tx, start) = (layout.clone(), cfg.clone(), tx.clone(), start.clone());
        // Messages made before the clock starts, so the workers only hand them over.
        let units: Vec<Vec<RecordMsg>> = match kind {
            lclstreamer::job::layout::RoleKind::Worker(i) => (0..events / 2 / unit)
                .map(|u| {
                    (0..unit)
                        .map(|k| records[(i as usize + u * unit + k) % records.len()].clone())
                        .collect()
                })
                .collect(),
            _ => Vec::new(),
        };
        handles.push(std::thread::spawn(move || -> anyhow::Result<()> {
            use lclstreamer::job::layout::RoleKind;
            match kind {
                RoleKind::Coordinator => {
                    start.wait();
                    let t0 = Instant::now();
                    match mb.recv()? {
                        Msg::WriterDone { stats, .. } => {
                            let _ = tx.send((t0.elapsed(), stats));
                            Ok(())
                        }
                        other => anyhow::bail!("unexpected {other:?}"),
                    }
                }
                RoleKind::Worker(_) => {
                    start.wait();
                    let writer = layout.writer(0);
                    let mut credits = 0;
                    for records in units {
                        while credits == 0 {
                            if let Msg::Credit { n } = mb.recv()? {
                                credits += n;
                            }
                        }
                        credits -= 1;
                        mb.send(
                            writer,
                            Msg::Records {
                                worker: mb.id,
                                records,
                            },
                        )?;
                    }
                    while credits < CREDITS {
                        if let Msg::Credit { n } = mb.recv()? {
                            credits += n;
                        }
                    }
                    mb.send(writer, Msg::WorkerDone { worker: mb.id })
                }
                RoleKind::Writer(_) => {
                    let meta = lclstreamer::output::RunMeta {
                        experiment: "bench".into(),
                        run: 1,
                        ..Default::default()
                    };
                    lclstreamer::job::writer::run(mb, &layout, &cfg, meta, None)
                }
            }
        }));
    }
    for r in switch.run(0, |id| layout.rank_of(id), None, handles) {
        r?;
    }
    let (wall, stats) = rx.recv()?;
    anyhow::ensure!(stats.errors.is_empty(), "writer: {:?}", stats.errors);
    Ok((stats.events as f64 / wall.as_secs_f64(), stats))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("coordinator") => coordinator(&args[1..]),
        Some("writer") => writer(&args[1..]),
        _ => anyhow::bail!("usage: bench_scaling coordinator|writer ..."),
    }
}
