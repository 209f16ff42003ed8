use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// lclstreamer: read LCLS-II XTC2 runs, find Bragg peaks, stream HDF5 batches.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Receive batch images over NNG until every producer's end-of-stream arrived; verify counts.
    Pull {
        /// URL to listen on (or dial with --dial), e.g. tcp://0.0.0.0:12321 or ipc:///tmp/ls.ipc
        url: String,
        /// Dial the URL instead of listening on it.
        #[arg(long)]
        dial: bool,
        /// Number of end-of-stream messages to wait for (one per producer and URL).
        #[arg(long, default_value_t = 1)]
        producers: usize,
        /// Stop when nothing arrived for this many seconds.
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
        /// Largest message accepted, in bytes (larger ones are dropped by NNG).
        #[arg(long, default_value_t = 1 << 30)]
        recv_max_size: usize,
        /// Write each batch as an .h5 file here (default: discard, print rates).
        #[arg(long)]
        out: Option<PathBuf>,
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
}

fn main() -> anyhow::Result<()> {
    use lclstreamer::transport::{self, NngSinkConfig, PullConfig, Role};
    let cli = Cli::parse();
    match cli.command {
        Command::Pull {
            url,
            dial,
            producers,
            timeout,
            recv_max_size,
            out,
        } => {
            let cfg = PullConfig {
                role: if dial { Role::Dial } else { Role::Listen },
                producers,
                idle_timeout: Duration::from_secs_f64(timeout),
                recv_max_size,
                out_dir: out,
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
    }
    Ok(())
}
