use clap::{Parser, Subcommand};

/// lclstreamer: read LCLS-II XTC2 runs, find Bragg peaks, stream HDF5 batches.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {}
}
