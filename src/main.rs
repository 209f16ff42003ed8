use clap::{Parser, Subcommand};
use lclstreamer::inspect;
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
    /// Post eLog (ARP) progress counters as a job does.
    #[command(hide = true)]
    ArpPost(lclstreamer::arp::cli::PostArgs),
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
        Command::ArpPost(args) => lclstreamer::arp::cli::run(&args)?,
    }
    Ok(())
}
