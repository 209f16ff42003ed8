//! The SPMD job behind `lclstreamer run`: one binary, one role per rank (coordinator on rank 0,
//! workers, writers on the last ranks; roles share a rank as threads when there are fewer than
//! three). MPI is called only from each rank's main thread (Funneled); roles compute on their
//! own threads and rayon.
//!
//! Everything MPI does for the job sits behind [`Ranks`]: MPI's in this file, and [`local`]'s,
//! where every role is a thread of one process (tests and models; no transport between ranks).

pub mod coordinator;
pub mod feed;
pub mod latency;
pub mod layout;
pub mod local;
pub mod messages;
pub mod pipeline;
pub mod router;
pub mod select;
pub mod summary;
pub mod worker;
pub mod writer;

pub use local::{run_in_process, run_with};

use crate::config::Config;
use crate::output::RunMeta;
use crate::xtc::run::{RunFiles, discover, from_files};
use layout::{Layout, RoleKind};
use messages::{Msg, RoleId};
use mpi::Threading;
use mpi::point_to_point::{Destination, Source};
use mpi::topology::{Communicator, SimpleCommunicator};
use router::{Mailbox, Switch, Wire};
use std::path::PathBuf;
use std::sync::Arc;
use summary::{Progress, Summary};

/// MPI tag of every role message.
const TAG: i32 = 7;

/// How long a rank may finish its work after SIGINT/SIGTERM before it removes its unfinished
/// files and reports: `mpirun` kills the ranks about a second after forwarding a signal.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_millis(600);

/// Options of `lclstreamer run` besides the configuration.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub quiet: bool,
    pub summary: Option<PathBuf>,
}

/// What a job needs from the transport between its ranks.
trait Ranks {
    /// This process's rank.
    fn rank(&self) -> u32;
    /// Every rank learns whether rank 0's start-up checks passed (`ok` on rank 0).
    fn share_verdict(&mut self, ok: bool) -> bool;
    /// Sizes this process's rayon pool; `hosts_worker` when a worker role runs here.
    fn size_pool(&mut self, hosts_worker: bool);
    /// The wire to the other ranks; none when every role is in this process.
    fn wire(&mut self) -> Option<&mut dyn Wire>;
}

/// Why a rank's part of the job did not run to its end.
enum Failure {
    /// Rank 0's start-up checks failed (its error; none on the other ranks): nothing ran.
    Startup(Option<anyhow::Error>),
    /// This rank could not prepare its roles, or one of them failed: the job cannot go on.
    Rank(anyhow::Error),
}

/// A role body standing in for the configured one (tests and models).
pub type StandIn = Box<dyn FnOnce(Mailbox) -> anyhow::Result<()> + Send>;

/// Sees every message as it is delivered to a role of this rank (tests and models).
pub type Tap = Box<dyn Fn(RoleId, &Msg) + Send>;

/// Roles replaced by stand-ins and a tap on deliveries; empty in production.
#[derive(Default)]
pub struct Hooks {
    pub stand_ins: std::collections::HashMap<RoleId, StandIn>,
    pub tap: Option<Tap>,
}

/// What a rank's roles left: the summary on the coordinator's rank, and the monitor.
struct Ran {
    summary: Option<Summary>,
    monitor: Option<Arc<crate::monitor::Monitor>>,
}

struct MpiWire<'a> {
    world: &'a SimpleCommunicator,
}

impl Wire for MpiWire<'_> {
    fn send(&mut self, rank: u32, bytes: &[u8]) {
        self.world
            .process_at_rank(rank as i32)
            .send_with_tag(bytes, TAG);
    }

    fn try_recv(&mut self) -> Option<Vec<u8>> {
        use mpi::point_to_point::MatchedReceiveVec;
        let (msg, status) = self
            .world
            .any_process()
            .immediate_matched_probe_with_tag(TAG)?;
        Some((msg, status).matched_receive_vec::<u8>().0)
    }
}

/// This process's rank as the launcher tells it before MPI starts (Open MPI, MPICH/PMI,
/// Slurm), if launched by one.
pub fn launcher_rank() -> Option<u32> {
    [
        "OMPI_COMM_WORLD_RANK",
        "PMI_RANK",
        "PMIX_RANK",
        "SLURM_PROCID",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// Finds the run's files from the configuration.
pub fn run_files(cfg: &Config) -> anyhow::Result<RunFiles> {
    let s = &cfg.source;
    s.check_live()?;
    if s.live
        && let (Some(exp), Some(run), Some(root)) = (&s.exp, s.run, &s.root)
    {
        let want = crate::xtc::live::WaitFor {
            streams: s.live_streams,
            use_smd: s.use_smalldata,
            timeout: s.idle_timeout(),
        };
        let dir = crate::xtc::run::xtc_dir(root, exp);
        return Ok(crate::xtc::live::wait_for_run(&dir, exp, run, &want)?);
    }
    if !s.files.is_empty() {
        return Ok(from_files(&s.files)?);
    }
    match (&s.exp, s.run, &s.root) {
        (Some(exp), Some(run), Some(root)) => Ok(discover(root, exp, run)?),
        _ => anyhow::bail!(
            "source: give `files`, or `exp`, `run` and `root` (or --exp/--run/--root)"
        ),
    }
}

/// The run's detector model and everything workers need for it.
fn load_static(cfg: &Config, run: &RunFiles) -> anyhow::Result<pipeline::Static> {
    let model = match &cfg.source.detector {
        Some(det) => Some(pipeline::first_configure(det, run)?.model),
        None => None,
    };
    pipeline::Static::load(cfg, model)
}

/// Everything checked before any data moves.
struct Checked {
    run: RunFiles,
    stat: pipeline::Static,
    run_values: Vec<(String, crate::output::Value)>,
    monitor: Option<crate::monitor::Monitor>,
}

fn check(cfg: &Config) -> anyhow::Result<Checked> {
    let run = run_files(cfg)?;
    // A live run's files were opened while waiting for them, and may be renamed any time.
    if !cfg.source.live {
        run.check_readable()?;
    }
    let stat = load_static(cfg, &run)?;
    let run_values = select::check_and_run_values(&cfg.data, &run)?;
    if cfg.output.sinks.is_empty() {
        anyhow::bail!("output.sinks: at least one sink is needed");
    }
    if cfg.output.batch_size == 0 {
        anyhow::bail!("output.batch_size must be at least 1");
    }
    for s in &cfg.output.sinks {
        match s {
            crate::config::SinkConfig::Nng { .. } => {
                writer::nng_sink_config(s)?;
            }
            crate::config::SinkConfig::Zmq { .. } => {
                writer::zmq_sink_config(s)?;
            }
            crate::config::SinkConfig::Files { dir } => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
            }
        }
    }
    // Last, so that nothing is served for a job that does not start.
    let monitor = match &cfg.monitor {
        Some(m) => {
            m.check()?;
            let snapshot = crate::monitor::state::Snapshot::new(
                cfg.source.exp.clone().or_else(|| run.exp.clone()),
                cfg.source.run.or(run.run),
                cfg.source.detector.as_deref().unwrap_or(""),
            );
            Some(crate::monitor::Monitor::start(&m.listen, snapshot)?)
        }
        None => None,
    };
    Ok(Checked {
        run,
        stat,
        run_values,
        monitor,
    })
}

struct MpiRanks<'a> {
    world: &'a SimpleCommunicator,
    wire: MpiWire<'a>,
}

impl Ranks for MpiRanks<'_> {
    fn rank(&self) -> u32 {
        self.world.rank() as u32
    }

    fn share_verdict(&mut self, ok: bool) -> bool {
        let mut verdict = u8::from(!ok);
        mpi::collective::Root::broadcast_into(&self.world.process_at_rank(0), &mut verdict);
        verdict == 0
    }

    /// Shares the node's cores among the ranks on it that host a worker.
    fn size_pool(&mut self, hosts_worker: bool) {
        use mpi::collective::{CommunicatorCollectives, SystemOperation};
        let node = self.world.split_shared(self.world.rank());
        let mut local_workers = 0i32;
        node.all_reduce_into(
            &i32::from(hosts_worker),
            &mut local_workers,
            SystemOperation::sum(),
        );
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let n = worker::pool_threads(cores, local_workers as usize, hosts_worker);
        // Fails only when a pool already exists (a second job in one process); it is kept then.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }

    fn wire(&mut self) -> Option<&mut dyn Wire> {
        (self.world.size() > 1).then_some(&mut self.wire as &mut dyn Wire)
    }
}

/// Runs the job on this rank; returns the process exit code (rank 0 prints the summary).
pub fn run(cfg: Config, opts: RunOptions) -> i32 {
    let Some((universe, threading)) = mpi::initialize_with_threading(Threading::Funneled) else {
        eprintln!("lclstreamer: MPI was already initialised");
        return 2;
    };
    if threading < Threading::Funneled {
        eprintln!("lclstreamer: the MPI library does not provide MPI_THREAD_FUNNELED");
        return 2;
    }
    let world = universe.world();
    let rank = world.rank() as u32;
    if let Err(e) = crate::interrupt::Interrupt::install() {
        eprintln!("lclstreamer: rank {rank}: cannot handle SIGINT/SIGTERM: {e}");
    }
    let watch = crate::interrupt::watch(format!("rank {rank}"), STOP_GRACE);
    let frames = cfg.send() != crate::config::Send::None;
    let layout = Layout::new(world.size() as u32, cfg.parallel.writers, frames);
    let linger = cfg.monitor.as_ref().map_or(0.0, |m| m.linger);
    let mut ranks = MpiRanks {
        world: &world,
        wire: MpiWire { world: &world },
    };
    let ran = run_roles(cfg, &layout, &mut ranks, opts.quiet, Hooks::default());
    drop(watch);
    match ran {
        Ok(ran) => report(ran, &opts, linger),
        Err(Failure::Startup(e)) => {
            if let Some(e) = e {
                eprintln!("lclstreamer: {e:#}");
            }
            1
        }
        Err(Failure::Rank(e)) => {
            eprintln!("lclstreamer: rank {rank}, {e:#}");
            world.abort(1);
        }
    }
}

/// Checks (rank 0), prepares and runs this rank's roles until they have all finished.
fn run_roles(
    cfg: Config,
    layout: &Layout,
    ranks: &mut dyn Ranks,
    quiet: bool,
    mut hooks: Hooks,
) -> Result<Ran, Failure> {
    if cfg.source.live {
        crate::xtc::reader::set_short_read_patience(cfg.source.idle_timeout());
    }
    let rank = ranks.rank();
    // Start-up checks on rank 0, reported once; every rank learns the verdict.
    let mut checked = None;
    let mut startup_error = None;
    if rank == 0 {
        match check(&cfg) {
            Ok(c) => {
                if !quiet && let Some(m) = &c.stat.model {
                    eprintln!("lclstreamer: detector {}", m.describe());
                }
                // Printed even when quiet: with port 0 it is the only way to find the page.
                if let Some(m) = &c.monitor {
                    eprintln!("lclstreamer: monitor: {}", m.url());
                }
                checked = Some(c);
            }
            Err(e) => startup_error = Some(e),
        }
    }
    if !ranks.share_verdict(startup_error.is_none()) {
        return Err(Failure::Startup(startup_error));
    }
    let local = layout.roles_on(rank);
    let needs_static = local
        .iter()
        .any(|&id| matches!(layout.kind(id), RoleKind::Worker(_)));
    ranks.size_pool(needs_static);
    let (run, stat, run_values, monitor) = match checked {
        Some(c) => (
            Some(c.run),
            Some(c.stat),
            Some(c.run_values),
            c.monitor.map(Arc::new),
        ),
        None => (None, None, None, None),
    };
    let needs_values = local
        .iter()
        .any(|&id| matches!(layout.kind(id), RoleKind::Writer(_)));
    let run_values = match run_values {
        Some(v) => v,
        None if needs_values => run_files(&cfg)
            .and_then(|r| select::check_and_run_values(&cfg.data, &r))
            .map_err(Failure::Rank)?,
        None => Vec::new(),
    };
    let stat = match (stat, needs_static) {
        (Some(s), _) => Some(Arc::new(s)),
        (None, true) => Some(Arc::new(
            run_files(&cfg)
                .and_then(|r| load_static(&cfg, &r))
                .map_err(Failure::Rank)?,
        )),
        (None, false) => None,
    };
    let meta = run_meta(&cfg, run.as_ref(), stat.as_deref(), run_values);
    let cfg = Arc::new(cfg);
    let (mut switch, boxes) = Switch::new(&local);
    if let Some(t) = hooks.tap.take() {
        switch.tap(t);
    }
    let mut handles = Vec::new();
    for mb in boxes {
        if let Some(f) = hooks.stand_ins.remove(&mb.id) {
            handles.push(std::thread::spawn(move || f(mb).map(|()| None)));
            continue;
        }
        let (cfg, layout, stat, run, meta, monitor) = (
            cfg.clone(),
            layout.clone(),
            stat.clone(),
            run.clone(),
            meta.clone(),
            monitor.clone(),
        );
        let watched = cfg.monitor.is_some();
        let kind = layout.kind(mb.id);
        let progress = Progress::new(quiet);
        handles.push(std::thread::spawn(
            move || -> anyhow::Result<Option<Summary>> {
                match kind {
                    RoleKind::Coordinator => {
                        let run =
                            run.ok_or_else(|| anyhow::anyhow!("coordinator without a run"))?;
                        coordinator::run(mb, &layout, &cfg, &run, progress, monitor).map(Some)
                    }
                    RoleKind::Worker(_) => {
                        let stat =
                            stat.ok_or_else(|| anyhow::anyhow!("worker without constants"))?;
                        let feed = watched.then(|| feed::WorkerFeed::new(layout.workers));
                        worker::run(mb, &layout, &stat, feed).map(|_| None)
                    }
                    RoleKind::Writer(_) => {
                        let feed = watched.then(feed::WriterFeed::default);
                        writer::run(mb, &layout, &cfg, meta, feed).map(|_| None)
                    }
                }
            },
        ));
    }
    let results = switch.run(rank, |id| layout.rank_of(id), ranks.wire(), handles);
    let mut summary = None;
    for (id, r) in local.iter().zip(results) {
        match r {
            Ok(Some(s)) => summary = Some(s),
            Ok(None) => {}
            Err(e) => {
                return Err(Failure::Rank(e.context(format!("{:?}", layout.kind(*id)))));
            }
        }
    }
    Ok(Ran { summary, monitor })
}

/// What every batch says about the run and the job's parameters.
fn run_meta(
    cfg: &Config,
    run: Option<&RunFiles>,
    stat: Option<&pipeline::Static>,
    values: Vec<(String, crate::output::Value)>,
) -> RunMeta {
    RunMeta {
        experiment: cfg
            .source
            .exp
            .clone()
            .or_else(|| run.and_then(|r| r.exp.clone()))
            .unwrap_or_default(),
        run: cfg
            .source
            .run
            .or_else(|| run.and_then(|r| r.run))
            .unwrap_or(0),
        source: cfg.source.detector.clone().unwrap_or_default(),
        segments: stat
            .and_then(|s| s.model.as_ref())
            .map(|m| m.segments.clone())
            .unwrap_or_default(),
        software_version: format!("lclstreamer {}", env!("CARGO_PKG_VERSION")),
        parameters: vec![
            (
                "peakfinder8".into(),
                format!("{:?}", cfg.processing.peakfinder8),
            ),
            (
                "min_num_peaks_for_hit".into(),
                cfg.processing.min_num_peaks_for_hit.to_string(),
            ),
            (
                "max_num_peaks_for_hit".into(),
                cfg.processing.max_num_peaks_for_hit.to_string(),
            ),
            (
                "steps".into(),
                serde_json::to_string(&cfg.steps().unwrap_or_default()).unwrap_or_default(),
            ),
            ("send".into(), format!("{:?}", cfg.send())),
        ]
        .into_iter()
        .chain(
            [
                ("constants", &cfg.detector.constants),
                ("geometry", &cfg.detector.geometry),
            ]
            .into_iter()
            .filter_map(|(k, p)| p.as_ref().map(|p| (k.into(), p.display().to_string()))),
        )
        .chain(
            cfg.processing
                .image
                .map(|i| ("image".to_string(), format!("{i:?}"))),
        )
        .collect(),
        values,
        cxi_aliases: cfg
            .data
            .iter()
            .filter_map(|e| e.role.map(|r| (e.name.clone(), r.cxi_path().to_string())))
            .collect(),
    }
}

/// Prints and writes the summary (on the coordinator's rank), keeps the monitor up `linger`
/// seconds; returns the process exit code.
fn report(ran: Ran, opts: &RunOptions, linger: f64) -> i32 {
    let stopped = crate::interrupt::Interrupt::requested();
    let Some(s) = ran.summary else {
        return stopped.map_or(0, crate::interrupt::Interrupt::exit_code);
    };
    print!("{}", s.render());
    if let Some(path) = &opts.summary
        && let Err(e) = write_summary(&s, path)
    {
        eprintln!("lclstreamer: {}: {e}", path.display());
        return 1;
    }
    if let Some(m) = ran.monitor
        && linger > 0.0
        && stopped.is_none()
    {
        eprintln!(
            "lclstreamer: monitor: serving the final numbers at {} for {linger} s",
            m.url()
        );
        std::thread::sleep(std::time::Duration::from_secs_f64(linger));
    }
    match stopped {
        Some(sig) => crate::interrupt::Interrupt::exit_code(sig),
        None => exit_code(&s),
    }
}

/// The exit status of a job that ran to its end: 1 when deliveries failed.
pub fn exit_code(s: &Summary) -> i32 {
    i32::from(!s.errors.is_empty())
}

/// Writes the summary as JSON, atomically.
fn write_summary(s: &Summary, path: &std::path::Path) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(s).map_err(std::io::Error::other)?;
    crate::atomic_file::write(path, &bytes)
}
