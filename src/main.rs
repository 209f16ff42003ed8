use clap::{Parser, Subcommand};
use lclstreamer::inspect;
use lclstreamer::synth::{self, SynthDetector, SynthParams};
use std::path::PathBuf;
use std::time::Duration;

/// lclstreamer: read LCLS-II XTC2 runs, find Bragg peaks, stream HDF5 batches.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Summarize XTC2 files or a run: datagrams, transitions, damage, detectors, events.
    Inspect {
        /// Files, a run's xtc directory, or EXP:RUN (looked up under --root).
        #[arg(required = true)]
        inputs: Vec<String>,
        /// Data root laid out as at S3DF (<root>/<hutch>/<exp>/xtc).
        #[arg(long, env = "SIT_PSDM_DATA", default_value = "/sdf/data/lcls/ds")]
        root: PathBuf,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
        /// Also decode the first N events.
        #[arg(long, default_value_t = 0)]
        events: usize,
    },
    /// Run the SPMD job (under mpirun/srun, or alone): read, calibrate, find peaks, stream.
    Run {
        /// The YAML configuration.
        #[arg(long)]
        config: PathBuf,
        /// Experiment (overrides source.exp).
        #[arg(long)]
        exp: Option<String>,
        /// Run number (overrides source.run).
        #[arg(long)]
        run: Option<u32>,
        /// Data root (overrides source.root).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Stop after this many events (overrides source.max_events).
        #[arg(long)]
        max_events: Option<u64>,
        /// Write the summary as JSON here.
        #[arg(long)]
        summary: Option<PathBuf>,
        /// No progress output.
        #[arg(long)]
        quiet: bool,
        /// Follow the run while it is being written (sets source.live).
        #[arg(long)]
        live: bool,
    },
    /// Score received batch files against a synthetic run's ground truth (truth.jsonl).
    Score {
        /// The truth file written by `synth`.
        #[arg(long)]
        truth: PathBuf,
        /// Directory of received .h5 batch files.
        #[arg(long)]
        batches: PathBuf,
        /// Spots at least this bright (integrated keV) count as well above noise.
        #[arg(long, default_value_t = 200.0)]
        bright_kev: f64,
        /// Match distance in pixels.
        #[arg(long, default_value_t = 2.0)]
        max_dist: f64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Receive messages (any format) over NNG or ZeroMQ until every producer's end-of-stream
    /// arrived; verify counts.
    Pull {
        /// URL to listen on (or dial with --dial), e.g. tcp://0.0.0.0:12321 or ipc:///tmp/ls.ipc
        url: String,
        /// Dial the URL instead of listening on it.
        #[arg(long)]
        dial: bool,
        /// Socket: nng (Pull0), zmq-pull, zmq-sub or zmq-req (asks `next` of a REP sink).
        #[arg(long, default_value = "nng")]
        socket: String,
        /// Number of end-of-stream messages to wait for (one per producer and URL).
        #[arg(long, default_value_t = 1)]
        producers: usize,
        /// Stop when nothing arrived for this many seconds.
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
        /// Largest message accepted, in bytes (NNG and ZeroMQ drop the connection on larger ones).
        #[arg(long, default_value_t = 1 << 30)]
        recv_max_size: usize,
        /// Write each message as a .h5/.cbor/.msgpack file here (default: discard, print rates).
        #[arg(long)]
        out: Option<PathBuf>,
        /// zmq-req: seconds without a reply before asking again on a new socket (doubling up
        /// to 30 s while none comes).
        #[arg(long, default_value_t = 2.0)]
        req_retry: f64,
    },
    /// Resend spilled .h5 batch files from DIR to URL, then an end-of-stream message.
    Push {
        dir: PathBuf,
        url: String,
        /// Listen on the URL instead of dialling it.
        #[arg(long)]
        listen: bool,
        /// Seconds to wait for end-of-stream delivery and consumer disconnect.
        #[arg(long, default_value_t = 30.0)]
        linger: f64,
        /// Remove the files once everything was delivered.
        #[arg(long)]
        delete: bool,
    },
    /// Copy a finished run into another xtc directory in real time, as the DAQ writes it
    /// (.inprogress names, bigdata before small data, chunk rotation), for live tests and demos.
    Replay(ReplayArgs),
    /// Write a synthetic S3DF-style run with calibration constants, geometry and ground truth.
    Synth(SynthArgs),
    /// Convert psana geometry text (calibration type `geometry`) to a CrystFEL .geom.
    Geometry(GeometryArgs),
    /// Post eLog (ARP) progress counters as a job does.
    #[command(hide = true)]
    ArpPost(lclstreamer::arp::cli::PostArgs),
}

#[derive(clap::Args)]
struct SynthArgs {
    /// Data root: the run goes to DIR/<hutch>/<exp>/xtc, side products to DIR/<hutch>/<exp>/synth/rRRRR.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Experiment name (its first three letters are the hutch).
    #[arg(long)]
    exp: String,
    /// Run number.
    #[arg(long)]
    run: u32,
    /// A detector of the model table: epixquad, epix10k2M, jungfrau05M, jungfrau1M, jungfrau4M,
    /// jungfrau16M or epix100.
    #[arg(long)]
    detector: String,
    /// Segment ids present, e.g. 0,3,5-9 (default: all of the detector's).
    #[arg(long, value_name = "LIST")]
    segments: Option<String>,
    /// Number of L1Accept events.
    #[arg(long, default_value_t = 1000)]
    events: u64,
    /// Seed: the same seed writes the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fraction of events with Bragg spots.
    #[arg(long, default_value_t = 0.3)]
    hit_rate: f64,
    /// Start a new chunk at the first Enable after a chunk exceeds this many bytes.
    #[arg(long, default_value_t = 2 << 30)]
    chunk_bytes: u64,
    /// L1Accepts between Disable/Enable pairs.
    #[arg(long, default_value_t = 100)]
    events_per_enable: u64,
    /// Number of streams the present segments are split over (default: up to 4).
    #[arg(long)]
    streams: Option<usize>,
    /// Write the constants as .npy only, without psana's text .data files (a Jungfrau 16M's
    /// text constants are about 2.3 GB).
    #[arg(long)]
    npy_only: bool,
    /// Beamline sources, each in its own stream: any of ebeam,gmd,epics,hsd, or `beamline`
    /// for all four (ebeam photon energy per shot, GMD pulse energy, EPICS PVs in
    /// SlowUpdates, an hsd-like digitizer on some events).
    #[arg(long, value_name = "LIST", default_value = "none")]
    extras: String,
    /// L1Accepts between SlowUpdates (the first comes after half as many).
    #[arg(long, default_value_t = 120)]
    events_per_slow_update: u64,
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// The source run's xtc directory (holding one run).
    #[arg(long, value_name = "DIR")]
    from: PathBuf,
    /// The xtc directory to write (small data goes to DIR/smalldata).
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// L1Accepts per second.
    #[arg(long, default_value_t = 120.0)]
    rate: f64,
    /// Stream S's files appear only SECONDS after the start, e.g. 1:2.5 (repeatable).
    #[arg(long, value_name = "S:SECONDS")]
    late_stream: Vec<String>,
    /// Write each event's key and the wall time its last datagram was written (JSON lines,
    /// `{"timestamp":K,"written_ns":NS}`) here.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Write the datagrams before the first L1Accept, then wait until FILE exists before
    /// starting the event clock (lets a reader start up first).
    #[arg(long, value_name = "FILE")]
    wait_for: Option<PathBuf>,
}

#[derive(clap::Args)]
struct GeometryArgs {
    /// psana geometry file (e.g. from `cdb get ... -c geometry` or psana's geometry-def-*.data).
    #[arg(long, value_name = "FILE")]
    psana: PathBuf,
    /// Segment ids present in the data, e.g. 0,3,5-7 (default: all); the slab holds them in id order.
    #[arg(long, value_name = "IDS")]
    segments: Option<String>,
    /// `clen`, metres or an HDF5 path (default: the panels' mean distance from the geometry).
    #[arg(long)]
    clen: Option<String>,
    /// `photon_energy`, eV or an HDF5 path (default: none written).
    #[arg(long)]
    photon_energy: Option<String>,
    /// `adu_per_eV` (default: none written).
    #[arg(long)]
    adu_per_ev: Option<String>,
    /// Write the .geom here (atomically) instead of to stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    use lclstreamer::transport::{self, NngSinkConfig, PullConfig, Role};
    transport::heap::keep_large_buffers_in_heap();
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect {
            inputs,
            root,
            json,
            events,
        } => {
            let inputs = inspect::resolve_inputs(&inputs, &root)?;
            let summary = inspect::summarize(&inputs.files, inputs.run.as_ref(), events)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", inspect::render_text(&summary));
            }
        }
        Command::Run {
            config,
            exp,
            run,
            root,
            max_events,
            summary,
            quiet,
            live,
        } => {
            let mut cfg = match lclstreamer::config::Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    // Every rank reads the configuration; only the first one says what is wrong.
                    if lclstreamer::job::launcher_rank().unwrap_or(0) == 0 {
                        eprintln!("lclstreamer: {e:#}");
                    }
                    std::process::exit(1);
                }
            };
            cfg.apply(&lclstreamer::config::Overrides {
                exp,
                run,
                root,
                max_events,
                live,
            });
            let code = lclstreamer::job::run(cfg, lclstreamer::job::RunOptions { quiet, summary });
            std::process::exit(code);
        }
        Command::Score {
            truth,
            batches,
            bright_kev,
            max_dist,
            json,
        } => {
            let s = lclstreamer::eval::score_dir(&truth, &batches, bright_kev, max_dist)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", s.render());
            }
        }
        Command::Pull {
            url,
            dial,
            socket,
            producers,
            timeout,
            recv_max_size,
            out,
            req_retry,
        } => {
            let cfg = PullConfig {
                socket: socket
                    .parse()
                    .map_err(|e: String| anyhow::anyhow!("--socket: {e}"))?,
                role: if dial { Role::Dial } else { Role::Listen },
                producers,
                idle_timeout: Duration::from_secs_f64(timeout),
                recv_max_size,
                out_dir: out,
                req_retry: Duration::try_from_secs_f64(req_retry)
                    .map_err(|e| anyhow::anyhow!("--req-retry {req_retry}: {e}"))?,
                ..PullConfig::new(url)
            };
            let summary = transport::pull(&cfg, |_, _| Ok(()))?;
            print!("{}", summary.report());
            if !summary.complete {
                anyhow::bail!("stream incomplete");
            }
        }
        Command::Push {
            dir,
            url,
            listen,
            linger,
            delete,
        } => {
            let mut cfg = NngSinkConfig::new(vec![url]);
            cfg.role = if listen { Role::Listen } else { Role::Dial };
            cfg.linger = Duration::from_secs_f64(linger);
            let stats = transport::push_dir(&dir, cfg, delete)?;
            println!(
                "push: sent {} batches, {} events, {} bytes from {}",
                stats.batches,
                stats.events,
                stats.bytes,
                dir.display()
            );
        }
        Command::Synth(a) => {
            let segments = segment_list(a.segments.as_deref())?;
            let detector = SynthDetector::new(&a.detector, segments)?;
            let mut params = SynthParams::new(&a.out, &a.exp, a.run, detector);
            params.events = a.events;
            if let Some(s) = a.streams {
                params.streams = s;
            }
            params.seed = a.seed;
            params.hit_rate = a.hit_rate;
            params.chunk_bytes = a.chunk_bytes;
            params.events_per_enable = a.events_per_enable;
            params.text_constants = !a.npy_only;
            params.extras = synth::Extras::parse(&a.extras).map_err(anyhow::Error::msg)?;
            params.events_per_slow_update = a.events_per_slow_update;
            let t0 = std::time::Instant::now();
            let s = synth::generate(&params)?;
            eprintln!(
                "synth: {} events ({} hits, {} spots), {} streams, chunks {:?}, {} files in {:.2} s; side products in {}",
                s.events,
                s.hits,
                s.spots,
                params.streams,
                s.chunks,
                s.xtc_files.len(),
                t0.elapsed().as_secs_f64(),
                s.side_dir.display()
            );
        }
        Command::Replay(a) => {
            let late = a
                .late_stream
                .iter()
                .map(|t| parse_late(t))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let p = lclstreamer::xtc::replay::ReplayParams {
                from: a.from,
                to: a.to,
                rate: a.rate,
                late,
                wait_for: a.wait_for,
            };
            let s = lclstreamer::xtc::replay::replay(&p)?;
            if let Some(log) = &a.log {
                lclstreamer::atomic_file::write(log, s.written_jsonl().as_bytes())
                    .map_err(|e| anyhow::anyhow!("{}: {e}", log.display()))?;
            }
            eprintln!(
                "replay: {} events, {} datagrams, {} streams, chunks {:?}, in {:.2} s ({:.1} events/s) to {}",
                s.events,
                s.datagrams,
                s.streams,
                s.chunks,
                s.seconds,
                s.events as f64 / s.seconds.max(1e-9),
                p.to.display()
            );
        }
        Command::Geometry(a) => {
            use lclstreamer::detector::psana_geometry::{self as pg, CrystfelOptions};
            let segments = segment_list(a.segments.as_deref())?;
            let opts = CrystfelOptions {
                segments: segments.map(|v| v.into_iter().map(|s| s as usize).collect()),
                clen: a.clen,
                photon_energy: a.photon_energy,
                adu_per_ev: a.adu_per_ev,
            };
            let geom = pg::PsanaGeometry::from_file(&a.psana)?.to_crystfel(&opts)?;
            match a.out {
                Some(out) => {
                    geom.write(&out)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
                    let (ss, fs) = geom.slab_shape();
                    eprintln!(
                        "geometry: {} panels, slab {ss}x{fs}, written to {}",
                        geom.panels.len(),
                        out.display()
                    );
                }
                None => print!("{}", geom.to_geom_string()),
            }
        }
        Command::ArpPost(args) => lclstreamer::arp::cli::run(&args)?,
    }
    Ok(())
}

/// A `--segments` list (`0,3,5-9`), when given.
fn segment_list(arg: Option<&str>) -> anyhow::Result<Option<Vec<u32>>> {
    arg.map(lclstreamer::detector::model::parse_segment_list)
        .transpose()
        .map_err(anyhow::Error::msg)
}

/// A `--late-stream S:SECONDS` value.
fn parse_late(t: &str) -> anyhow::Result<(u32, Duration)> {
    let bad = || anyhow::anyhow!("--late-stream {t:?}: expected S:SECONDS, e.g. 1:2.5");
    let (s, secs) = t.split_once(':').ok_or_else(bad)?;
    let s: u32 = s.parse().map_err(|_| bad())?;
    let secs: f64 = secs.parse().map_err(|_| bad())?;
    if !(secs >= 0.0 && secs.is_finite()) {
        return Err(bad());
    }
    Ok((s, Duration::from_secs_f64(secs)))
}
