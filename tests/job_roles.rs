//! The roles' protocol without MPI: the whole job in one process (`job::run_in_process`), with a
//! tap on every message a role receives and stand-ins for some roles. Every event delivered
//! once with 1, 3 and 6 workers and 1 or 2 writers; credits bound what a worker has in flight
//! to a slow writer; every worker sees every transition, in order, before the events after it;
//! the end of the run reaches everyone; damaged events are counted; a failing role or sink ends
//! the job with an error, never a hang.

use lclstreamer::config::Config;
use lclstreamer::job::layout::Layout;
use lclstreamer::job::messages::{Msg, RoleId, WorkerStats, WriterStats};
use lclstreamer::job::summary::Summary;
use lclstreamer::job::worker::CREDITS;
use lclstreamer::job::{Hooks, RunOptions, run_in_process, run_with};
use lclstreamer::synth::{self, SynthDetector, SynthParams};
use lclstreamer::xtc::{DgramReader, TransitionId};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const EXP: &str = "mfxtest01";
const EVENTS: u64 = 30;
/// Longer than any of these runs takes; past it the job is taken to hang.
const HANG: Duration = Duration::from_secs(120);

/// A synthetic two-stream epixquad run with a transition every few events (Enable/Disable
/// every 4 events, a SlowUpdate every 5).
fn synth_run(root: &Path) {
    let det = SynthDetector::new("epixquad", None).unwrap();
    let mut p = SynthParams::new(root, EXP, 3, det);
    p.events = EVENTS;
    p.streams = 2;
    p.seed = 11;
    p.hit_rate = 0.5;
    p.events_per_enable = 4;
    p.events_per_slow_update = 5;
    p.text_constants = false;
    synth::generate(&p).unwrap();
}

fn xtc(root: &Path) -> PathBuf {
    root.join("mfx").join(EXP).join("xtc")
}

/// A job configuration writing batches of 3 to `out`, two events per work unit.
fn config(root: &Path, out: &Path) -> Config {
    let side = root.join("mfx").join(EXP).join("synth/r0003");
    let text = format!(
        "source:\n  exp: {EXP}\n  run: 3\n  root: {root}\n  detector: epixquad\ndetector:\n  kind: epixquad\n  constants: {s}\n  geometry: {s}/geometry.geom\n  common_mode: [7, 2, 100, 10]\nprocessing:\n  peakfinder8: {{adc_threshold: 25.0, minimum_snr: 6.0, min_pixel_count: 2, max_pixel_count: 200, local_bg_radius: 3, min_res: 0, max_res: 3000, max_num_peaks: 2048}}\n  min_num_peaks_for_hit: 10\n  max_num_peaks_for_hit: 5000\noutput:\n  batch_size: 3\n  sinks:\n    - kind: files\n      dir: {o}\nparallel:\n  events_per_unit: 2\n",
        root = root.display(),
        s = side.display(),
        o = out.display(),
    );
    Config::parse(&text, "job_roles.yaml", root).unwrap()
}

fn quiet() -> RunOptions {
    RunOptions {
        quiet: true,
        summary: None,
    }
}

/// Runs `f` on its own thread; panics if it has not returned after [`HANG`].
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(HANG)
        .unwrap_or_else(|_| panic!("the job did not end within {HANG:?}"))
}

/// Event key → number of peaks, over every batch file in `dir`; panics on an event sent twice.
fn delivered(dir: &Path) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            continue;
        }
        let bytes = std::fs::read(path).unwrap();
        let (b, _) = lclstreamer::output::read_batch(&bytes).unwrap();
        for ev in b.events {
            assert!(
                m.insert(ev.timestamp, ev.peaks.fs.len()).is_none(),
                "event 0x{:016X} delivered twice",
                ev.timestamp
            );
        }
    }
    m
}

/// Every message delivered, in delivery order: (addressee, message).
type Log = Arc<Mutex<Vec<(RoleId, Msg)>>>;

fn tap(log: &Log) -> Hooks {
    let log = Arc::clone(log);
    Hooks {
        tap: Some(Box::new(move |to, m: &Msg| {
            log.lock().unwrap().push((to, m.clone()))
        })),
        ..Hooks::default()
    }
}

/// Runs the job in process on `layout` with a tap; returns the summary and the message log.
fn run_tapped(root: &Path, out: &Path, layout: Layout) -> (Summary, Vec<(RoleId, Msg)>) {
    let cfg = config(root, out);
    let log: Log = Arc::default();
    let hooks = tap(&log);
    let s = within(move || run_with(cfg, &layout, &quiet(), hooks)).unwrap();
    let log = std::mem::take(&mut *log.lock().unwrap());
    (s, log)
}

#[test]
fn every_event_once_and_the_same_results_with_1_3_6_workers_and_1_or_2_writers() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    synth_run(root);
    let mut reference = None;
    for (workers, writers) in [(1, 1), (3, 1), (3, 2), (6, 2)] {
        let out = root.join(format!("out-{workers}-{writers}"));
        let (s, log) = run_tapped(root, &out, Layout::in_process(workers, writers));
        let what = format!("{workers} workers, {writers} writers");
        assert_eq!((s.workers, s.writers), (workers, writers), "{what}");
        assert_eq!(
            (s.events_read, s.processed, s.damaged),
            (EVENTS, EVENTS, 0),
            "{what}"
        );
        assert!(s.errors.is_empty(), "{what}: {:?}", s.errors);
        // The coordinator handed out every event exactly once.
        let mut handed: Vec<u64> = log
            .iter()
            .filter_map(|(_, m)| match m {
                Msg::Work { events, .. } => Some(events.iter().map(|e| e.index)),
                _ => None,
            })
            .flatten()
            .collect();
        handed.sort_unstable();
        assert_eq!(handed, (0..EVENTS).collect::<Vec<_>>(), "{what}");
        let got = delivered(&out);
        assert_eq!(got.len() as u64, s.events_sent, "{what}");
        assert_eq!(s.events_sent, s.hits, "{what}: hits are sent");
        match &reference {
            None => {
                assert!(s.hits > 5 && s.hits < EVENTS, "{s:?}");
                reference = Some(got);
            }
            Some(r) => assert_eq!(&got, r, "{what}: results differ from 1 worker's"),
        }
    }
}

/// A writer standing in for the real one: grants the initial credits, then takes
/// `delay` per Records message before granting one more; reports the records it got.
fn slow_writer(layout: &Layout, delay: Duration) -> lclstreamer::job::StandIn {
    let layout = layout.clone();
    Box::new(move |mb| {
        let workers = layout.workers_of(0);
        for &w in &workers {
            mb.send(w, Msg::Credit { n: CREDITS })?;
        }
        let mut stats = WriterStats::default();
        let mut done = 0;
        while done < workers.len() {
            match mb.recv()? {
                Msg::Records { worker, records } => {
                    std::thread::sleep(delay);
                    stats.events += records.len() as u64;
                    mb.send(worker, Msg::Credit { n: 1 })?;
                }
                Msg::WorkerDone { .. } => done += 1,
                other => anyhow::bail!("slow writer: unexpected {other:?}"),
            }
        }
        let writer = mb.id;
        mb.send(Layout::COORDINATOR, Msg::WriterDone { writer, stats })
    })
}

#[test]
fn credits_bound_what_a_worker_has_in_flight_to_a_slow_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    synth_run(root);
    let layout = Layout::in_process(3, 1);
    let writer = layout.writer(0);
    let log: Log = Arc::default();
    let mut hooks = tap(&log);
    hooks
        .stand_ins
        .insert(writer, slow_writer(&layout, Duration::from_millis(250)));
    let cfg = config(root, &root.join("out"));
    let s = within(move || run_with(cfg, &layout, &quiet(), hooks)).unwrap();
    assert_eq!(s.processed, EVENTS);
    let log = log.lock().unwrap();
    // Records messages a worker has sent and the writer not yet answered with a credit.
    let mut in_flight: HashMap<RoleId, i64> = HashMap::new();
    let mut most: HashMap<RoleId, i64> = HashMap::new();
    let mut records = 0u64;
    for (to, m) in log.iter() {
        match m {
            Msg::Credit { n } => *in_flight.entry(*to).or_insert(0) -= i64::from(*n),
            Msg::Records { worker, records: r } => {
                records += r.len() as u64;
                let f = in_flight.entry(*worker).or_insert(0);
                *f += 1;
                let m = most.entry(*worker).or_insert(i64::MIN);
                *m = (*m).max(*f + i64::from(CREDITS));
            }
            _ => {}
        }
    }
    assert_eq!(records, s.events_sent);
    assert_eq!(s.events_sent, s.hits);
    assert!(!most.is_empty(), "no records at all");
    for (w, m) in &most {
        assert!(
            *m <= i64::from(CREDITS),
            "worker {w} had {m} Records messages in flight (credits {CREDITS})"
        );
    }
    // The slow writer made at least one worker use all its credits: the bound was tested.
    assert!(
        most.values().any(|&m| m == i64::from(CREDITS)),
        "no worker ever used all its credits: {most:?}"
    );
}

/// Every transition of the run, from stream 0's small data: (service, timestamp).
fn transitions_in_files(root: &Path) -> Vec<(u8, u64)> {
    let smd = xtc(root).join(format!("smalldata/{EXP}-r0003-s000-c000.smd.xtc2"));
    let mut r = DgramReader::open(&smd).unwrap();
    let mut out = Vec::new();
    while let Some((_, h)) = r.next_header().unwrap() {
        if h.service() != TransitionId::L1Accept {
            out.push((h.service() as u8, h.timestamp));
        }
    }
    out
}

#[test]
fn every_worker_gets_every_transition_in_order_before_the_events_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    synth_run(root);
    let truth = transitions_in_files(root);
    let services: Vec<u8> = truth.iter().map(|t| t.0).collect();
    for s in [
        TransitionId::Configure,
        TransitionId::BeginRun,
        TransitionId::BeginStep,
        TransitionId::Enable,
        TransitionId::Disable,
        TransitionId::SlowUpdate,
    ] {
        assert!(services.contains(&(s as u8)), "the run has no {s:?}");
    }
    let layout = Layout::in_process(3, 1);
    let (s, log) = run_tapped(root, &root.join("out"), layout.clone());
    assert_eq!(s.processed, EVENTS);
    let mut total = 0;
    for i in 0..layout.workers {
        let id = layout.worker(i);
        let mut seen: Vec<(u8, u64)> = Vec::new();
        let mut events = 0;
        for (_, m) in log.iter().filter(|(to, _)| *to == id) {
            let (transitions, evs) = match m {
                Msg::Work {
                    transitions,
                    events,
                    ..
                } => (transitions, &events[..]),
                Msg::End { transitions } => (transitions, &[][..]),
                _ => continue,
            };
            seen.extend(transitions.iter().map(|t| (t.service, t.timestamp)));
            for e in evs {
                events += 1;
                let before: Vec<(u8, u64)> = truth
                    .iter()
                    .copied()
                    .filter(|t| t.1 < e.timestamp)
                    .collect();
                assert_eq!(
                    seen, before,
                    "worker {id}, event {} (0x{:016X}): transitions seen before it",
                    e.index, e.timestamp
                );
            }
        }
        total += events;
        assert_eq!(
            seen, truth,
            "worker {id}: transitions by the end of the run"
        );
    }
    assert_eq!(total, EVENTS, "events handed out");
}

#[test]
fn the_end_of_the_run_reaches_every_role_once_and_last() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    synth_run(root);
    let layout = Layout::in_process(6, 2);
    let (s, log) = run_tapped(root, &root.join("out"), layout.clone());
    assert_eq!(s.processed + s.damaged, s.events_read);
    let pos = |f: &dyn Fn(&(RoleId, Msg)) -> bool| -> Vec<usize> {
        log.iter()
            .enumerate()
            .filter(|(_, x)| f(x))
            .map(|(i, _)| i)
            .collect()
    };
    let mut finals = WorkerStats::default();
    for i in 0..layout.workers {
        let id = layout.worker(i);
        // Every request still outstanding is answered with an End; only the first carries
        // transitions, and no work follows it.
        let ends = pos(&|(to, m)| *to == id && matches!(m, Msg::End { .. }));
        assert!(!ends.is_empty(), "worker {id}: no End");
        for &e in &ends[1..] {
            assert!(
                matches!(&log[e].1, Msg::End { transitions } if transitions.is_empty()),
                "worker {id}: a later End carries transitions"
            );
        }
        let work = pos(&|(to, m)| *to == id && matches!(m, Msg::Work { .. }));
        assert!(
            work.iter().all(|&w| w < ends[0]),
            "worker {id}: work after its End"
        );
        let done = pos(&|(to, m)| {
            *to == layout.writer_of(i) && matches!(m, Msg::WorkerDone { worker } if *worker == id)
        });
        assert_eq!(done.len(), 1, "worker {id}: WorkerDone to its writer");
        let recs = pos(&|(_, m)| matches!(m, Msg::Records { worker, .. } if *worker == id));
        assert!(
            recs.iter().all(|&r| r < done[0]),
            "worker {id}: records after WorkerDone"
        );
        let fin: Vec<&WorkerStats> = log
            .iter()
            .filter_map(|(to, m)| match m {
                Msg::WorkerFinal { worker, stats } if *worker == id && *to == 0 => Some(stats),
                _ => None,
            })
            .collect();
        assert_eq!(fin.len(), 1, "worker {id}: WorkerFinal");
        finals.processed += fin[0].processed;
        finals.sent += fin[0].sent;
    }
    for j in 0..layout.writers {
        let id = layout.writer(j);
        let n = pos(&|(to, m)| {
            *to == 0 && matches!(m, Msg::WriterDone { writer, .. } if *writer == id)
        });
        assert_eq!(n.len(), 1, "writer {id}: WriterDone");
    }
    assert_eq!(
        (finals.processed, finals.sent),
        (s.processed, s.events_sent)
    );
}

/// Offset of the `k`-th L1Accept in a bigdata file.
fn l1_offset(file: &Path, k: usize) -> u64 {
    let mut r = DgramReader::open(file).unwrap();
    let mut n = 0;
    while let Some((off, h)) = r.next_header().unwrap() {
        if h.service() == TransitionId::L1Accept {
            if n == k {
                return off;
            }
            n += 1;
        }
    }
    panic!("no L1Accept {k}");
}

#[test]
fn damaged_events_are_counted_and_the_rest_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    synth_run(root);
    let mut damaged_keys = Vec::new();
    for (stream, k) in [(1, 5), (0, 17)] {
        let f = xtc(root).join(format!("{EXP}-r0003-s{stream:03}-c000.xtc2"));
        let off = l1_offset(&f, k) as usize;
        let mut b = std::fs::read(&f).unwrap();
        b[off + 16] |= 1 << 5; // MissingData
        damaged_keys.push(u64::from_le_bytes(b[off..off + 8].try_into().unwrap()));
        std::fs::write(&f, b).unwrap();
    }
    let out = root.join("out");
    let s = within({
        let cfg = config(root, &out);
        move || run_in_process(cfg, 3, 2, &quiet())
    })
    .unwrap();
    assert_eq!(
        (s.events_read, s.damaged, s.processed),
        (EVENTS, 2, EVENTS - 2),
        "{s:?}"
    );
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    let got = delivered(&out);
    assert_eq!(got.len() as u64, s.events_sent);
    for k in damaged_keys {
        assert!(!got.contains_key(&k), "damaged event 0x{k:016X} delivered");
    }
}

#[test]
fn a_sink_that_fails_mid_run_ends_the_job_with_its_error() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    synth_run(root);
    let out = root.join("out");
    // Writer 0's second batch cannot take its name: a directory is in the way.
    let blocked = out.join("r0003_w000_s000001.h5");
    std::fs::create_dir_all(&blocked).unwrap();
    let s = within({
        let cfg = config(root, &out);
        move || run_in_process(cfg, 3, 1, &quiet())
    })
    .unwrap();
    assert_eq!(lclstreamer::job::exit_code(&s), 1);
    assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
    assert!(
        s.errors[0].contains("r0003_w000_s000001.h5"),
        "{:?}",
        s.errors
    );
    assert!(s.undelivered > 0, "{s:?}");
    // What reached the sink before the failure is one batch, and no temporary file is left.
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["r0003_w000_s000000.h5", "r0003_w000_s000001.h5"],
        "{names:?}"
    );
    assert_eq!(delivered(&out).len(), 3);
    assert_eq!(s.sinks.len(), 1);
    assert_eq!(s.sinks[0].batches, 1, "{s:?}");
}

#[test]
fn a_role_that_fails_ends_the_job_with_its_error_and_no_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    synth_run(root);
    let layout = Layout::in_process(3, 1);
    let mut hooks = Hooks::default();
    // Worker 1 asks for work like a real one and fails on the answer (work, or the end).
    hooks.stand_ins.insert(
        layout.worker(1),
        Box::new(|mb| {
            let worker = mb.id;
            let stats = WorkerStats::default();
            mb.send(Layout::COORDINATOR, Msg::Ready { worker, stats })?;
            loop {
                if let Msg::Work { .. } | Msg::End { .. } = mb.recv()? {
                    anyhow::bail!("cannot read its events (test)");
                }
            }
        }),
    );
    let cfg = config(root, &root.join("out"));
    let e = within(move || run_with(cfg, &layout, &quiet(), hooks))
        .expect_err("the job ended without the worker's error");
    let text = format!("{e:#}");
    assert!(
        text.contains("Worker(1)") && text.contains("cannot read its events (test)"),
        "{text}"
    );
}

#[test]
fn a_sink_directory_that_cannot_be_made_is_a_start_up_error() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    synth_run(root);
    let file = root.join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let out = file.join("out");
    let e = within({
        let cfg = config(root, &out);
        move || run_in_process(cfg, 2, 1, &quiet())
    })
    .expect_err("a sink under a file started");
    assert!(
        format!("{e:#}").contains(&out.display().to_string()),
        "{e:#}"
    );
}
