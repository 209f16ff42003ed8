//! The worker role: asks the coordinator for work, applies transitions, reads its events'
//! payloads itself (positioned reads), runs the pipeline on rayon, and sends the kept events to
//! its writer within the writer's credit.

use super::feed::WorkerFeed;
use super::layout::Layout;
use super::messages::{Msg, RecordMsg, TransitionMsg, WorkerStats};
use super::pipeline::{Processor, RunConf, Static, Timings};
use super::router::Mailbox;
use crate::xtc::TransitionId;
use rayon::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Mutex;

/// Records messages a worker may have in flight to its writer.
pub const CREDITS: u32 = 2;
/// Work requests a worker keeps outstanding (one unit queued while another is processed).
const PREFETCH: u32 = 2;

struct State {
    conf: Option<RunConf>,
    pool: Vec<Processor>,
    files: HashMap<(u32, u32), (PathBuf, File)>,
    damaged_reports: u32,
}

impl State {
    fn apply(&mut self, st: &Static, t: &[TransitionMsg]) -> anyhow::Result<()> {
        for tr in t {
            if tr.service == TransitionId::Configure as u8 {
                let per_stream: Vec<(u32, &[u8])> =
                    tr.per_stream.iter().map(|(s, b)| (*s, &b[..])).collect();
                let conf = st.configure(&per_stream)?;
                let n = rayon::current_num_threads().max(1);
                self.pool = (0..n)
                    .map(|_| Processor::new(st, &conf))
                    .collect::<anyhow::Result<_>>()?;
                self.conf = Some(conf);
            } else if let Some(c) = &mut self.conf {
                c.transition(tr)?;
            }
        }
        Ok(())
    }
}

/// Threads of a rank's rayon pool: the node's `cores` shared by the `local_workers` ranks on
/// the node that host a worker, one thread on a rank without one (the coordinator and writers
/// do not compute in parallel); `RAYON_NUM_THREADS` overrides.
pub fn pool_threads(cores: usize, local_workers: usize, hosts_worker: bool) -> usize {
    if let Some(n) = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        return n;
    }
    if hosts_worker {
        (cores / local_workers.max(1)).max(1)
    } else {
        1
    }
}

/// Runs one worker until the coordinator ends the run; reports to the monitor through `feed`.
pub fn run(
    mb: Mailbox,
    layout: &Layout,
    st: &Static,
    mut feed: Option<WorkerFeed>,
) -> anyhow::Result<()> {
    let me = mb.id;
    let writer = layout.writer_of(me - 1);
    let mut stats = WorkerStats::default();
    let mut state = State {
        conf: None,
        pool: Vec::new(),
        files: HashMap::new(),
        damaged_reports: 0,
    };
    let mut credits = 0u32;
    let mut queue: VecDeque<Msg> = VecDeque::new();
    for _ in 0..PREFETCH {
        mb.send(Layout::COORDINATOR, Msg::Ready { worker: me, stats })?;
    }
    let mut outstanding = PREFETCH;
    let mut ended = false;
    while outstanding > 0 {
        let msg = match queue.pop_front() {
            Some(m) => m,
            None => mb.recv()?,
        };
        match msg {
            Msg::Credit { n } => credits += n,
            Msg::Work {
                transitions,
                files,
                events,
            } => {
                outstanding -= 1;
                state.apply(st, &transitions)?;
                for (stream, chunk, path) in files {
                    // Either name: a file being written may be renamed from `.inprogress`.
                    let (f, _) = crate::xtc::live::open_either(&path)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    state.files.insert((stream, chunk), (path, f));
                }
                let records = process(st, &mut state, &events, &mut stats, feed.as_mut())?;
                stats.units += 1;
                if !records.is_empty() {
                    while credits == 0 {
                        match mb.recv()? {
                            Msg::Credit { n } => credits += n,
                            other => queue.push_back(other),
                        }
                    }
                    credits -= 1;
                    stats.sent += records.len() as u64;
                    mb.send(
                        writer,
                        Msg::Records {
                            worker: me,
                            records,
                        },
                    )?;
                }
                if !ended {
                    mb.send(Layout::COORDINATOR, Msg::Ready { worker: me, stats })?;
                    outstanding += 1;
                }
                if let Some(t) = feed.as_mut().and_then(|f| f.tick(me, false)) {
                    mb.send(Layout::COORDINATOR, t)?;
                }
            }
            Msg::End { transitions } => {
                outstanding -= 1;
                ended = true;
                state.apply(st, &transitions)?;
            }
            other => anyhow::bail!("worker {me}: unexpected message {other:?}"),
        }
    }
    // Every Records message consumed before saying goodbye, so no credit arrives afterwards.
    while credits < CREDITS {
        match queue.pop_front().map_or_else(|| mb.recv(), Ok)? {
            Msg::Credit { n } => credits += n,
            other => anyhow::bail!("worker {me}: unexpected message {other:?} at the end"),
        }
    }
    mb.send(writer, Msg::WorkerDone { worker: me })?;
    if let Some(t) = feed.as_mut().and_then(|f| f.tick(me, true)) {
        mb.send(Layout::COORDINATOR, t)?;
    }
    mb.send(Layout::COORDINATOR, Msg::WorkerFinal { worker: me, stats })?;
    Ok(())
}

fn process(
    st: &Static,
    state: &mut State,
    events: &[super::messages::EventDesc],
    stats: &mut WorkerStats,
    mut feed: Option<&mut WorkerFeed>,
) -> anyhow::Result<Vec<RecordMsg>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let conf = state
        .conf
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("events arrived before any Configure"))?;
    let pool = Mutex::new(std::mem::take(&mut state.pool));
    let files = &state.files;
    if let Some(f) = &feed {
        f.arm();
    }
    let watch = feed.as_deref();
    let slab_shape = conf.det.as_ref().map(|c| c.model.slab_shape());
    let geometry = st.geometry.as_ref().map(|g| &g.0);
    let results: Vec<_> = events
        .par_iter()
        .map(|ev| {
            let popped = pool.lock().map(|mut p| p.pop()).unwrap_or(None);
            let mut p = match popped {
                Some(p) => p,
                None => Processor::new(st, conf).map_err(|e| e.to_string())?,
            };
            let mut t: Timings = (0, 0, 0, 0);
            let r = p.process(st, conf, files, ev, &mut t);
            let preview = match (&r, watch, slab_shape) {
                (Ok((_, true, _)), Some(f), Some(shape)) if f.take() => f.make(
                    geometry,
                    p.calibrated(),
                    shape,
                    &p.peak_positions(),
                    ev.index,
                ),
                _ => None,
            };
            if let Ok(mut g) = pool.lock() {
                g.push(p);
            }
            Ok::<_, String>((ev.index, r, t, preview))
        })
        .collect();
    state.pool = pool.into_inner().unwrap_or_default();
    let mut out = Vec::new();
    for r in results {
        let (index, r, t, preview) = r.map_err(|e| anyhow::anyhow!(e))?;
        if let (Some(f), Some(p)) = (feed.as_deref_mut(), preview) {
            f.offer(p);
        }
        stats.ns_read += t.0;
        stats.ns_calib += t.1;
        stats.ns_peaks += t.2;
        stats.ns_compress += t.3;
        match r {
            Ok((rec, hit, n)) => {
                stats.processed += 1;
                stats.hits += u64::from(hit);
                stats.peaks += n as u64;
                if let Some(f) = feed.as_deref_mut() {
                    f.count(n);
                }
                out.extend(rec);
            }
            Err(d) => {
                stats.damaged += 1;
                if state.damaged_reports < 20 {
                    state.damaged_reports += 1;
                    eprintln!("lclstreamer: event {index} damaged: {}", d.0);
                }
            }
        }
    }
    Ok(out)
}
