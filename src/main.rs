use clap::{Parser, Subcommand};
use lclstreamer::inspect;
use lclstreamer::synth::{self, DetectorModel, SynthParams};
use std::path::PathBuf;

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
    /// Write a synthetic S3DF-style run with calibration constants, geometry and ground truth.
    Synth(SynthArgs),
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
    /// epix10k2M or jungfrau4M.
    #[arg(long)]
    detector: DetectorModel,
    /// Number of L1Accept events.
    #[arg(long, default_value_t = 1000)]
    events: u64,
    /// Number of streams the detector's segments are split over.
    #[arg(long, default_value_t = 4)]
    streams: usize,
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
}

fn main() -> anyhow::Result<()> {
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
        Command::Synth(a) => {
            let params = SynthParams {
                out: a.out,
                exp: a.exp,
                run: a.run,
                detector: a.detector,
                events: a.events,
                streams: a.streams,
                seed: a.seed,
                hit_rate: a.hit_rate,
                chunk_bytes: a.chunk_bytes,
                events_per_enable: a.events_per_enable,
            };
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
    }
    Ok(())
}
