//! The job in one process without MPI: every role is a thread of rank 0 and messages go through
//! the rank's switch only. Shares all of [`super::run`] but the MPI calls; for tests and
//! models (MPI stays the only transport between ranks).

use super::layout::Layout;
use super::summary::Summary;
use super::{Failure, Hooks, Ranks, RunOptions, Wire};
use crate::config::Config;

/// The one rank of an in-process job.
struct OneProcess;

impl Ranks for OneProcess {
    fn rank(&self) -> u32 {
        0
    }

    fn share_verdict(&mut self, ok: bool) -> bool {
        ok
    }

    /// The process's pool is shared by its workers as it is.
    fn size_pool(&mut self, _hosts_worker: bool) {}

    fn wire(&mut self) -> Option<&mut dyn Wire> {
        None
    }
}

/// Runs the whole job in this process with `workers` workers and `writers` writers; returns the
/// coordinator's summary (written to `opts.summary` if given). Start-up problems and a failed
/// role are errors; failed deliveries are in the summary's `errors` ([`super::exit_code`]).
pub fn run_in_process(
    cfg: Config,
    workers: u32,
    writers: u32,
    opts: &RunOptions,
) -> anyhow::Result<Summary> {
    run_with(
        cfg,
        &Layout::in_process(workers, writers),
        opts,
        Hooks::default(),
    )
}

/// [`run_in_process`] with any one-rank `layout`, some roles replaced by stand-ins and a tap on
/// every message delivered.
pub fn run_with(
    cfg: Config,
    layout: &Layout,
    opts: &RunOptions,
    hooks: Hooks,
) -> anyhow::Result<Summary> {
    if layout.size != 1 {
        anyhow::bail!(
            "an in-process job needs a one-rank layout, not {}",
            layout.size
        );
    }
    let ran =
        super::run_roles(cfg, layout, &mut OneProcess, opts.quiet, hooks).map_err(|f| match f {
            Failure::Startup(e) => e.unwrap_or_else(|| anyhow::anyhow!("start-up failed")),
            Failure::Rank(e) => e,
        })?;
    let s = ran
        .summary
        .ok_or_else(|| anyhow::anyhow!("the coordinator returned no summary"))?;
    if let Some(path) = &opts.summary {
        super::write_summary(&s, path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    Ok(s)
}
