//! SIGINT and SIGTERM: the first asks the job to stop (the roles poll [`Interrupt::signal`]); a
//! second of the same kind ends the process at once. `mpirun` forwards both to every rank and
//! kills the ranks about a second later, so whatever a rank must do on a stop has to fit in that.

use signal_hook::consts::{SIGINT, SIGTERM};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

static INSTALLED: std::sync::OnceLock<Arc<AtomicUsize>> = std::sync::OnceLock::new();

/// The process-wide stop request.
#[derive(Clone, Debug)]
pub struct Interrupt {
    received: Arc<AtomicUsize>,
}

impl Interrupt {
    /// Installs the handlers (once per process; later calls share them).
    pub fn install() -> std::io::Result<Interrupt> {
        if let Some(r) = INSTALLED.get() {
            return Ok(Interrupt {
                received: Arc::clone(r),
            });
        }
        let received = Arc::new(AtomicUsize::new(0));
        for sig in [SIGINT, SIGTERM] {
            let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
            // Registered first, so it runs before the flag is set: a second signal exits.
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&flag))?;
            signal_hook::flag::register(sig, flag)?;
            signal_hook::flag::register_usize(sig, Arc::clone(&received), sig as usize)?;
        }
        let _ = INSTALLED.set(Arc::clone(&received));
        Ok(Interrupt { received })
    }

    /// The signal that asked this process to stop, if the handlers are installed and one came:
    /// for code far from the roles (a sink waiting for a consumer) that must give up on a stop.
    pub fn requested() -> Option<i32> {
        match INSTALLED.get()?.load(Ordering::Relaxed) {
            0 => None,
            s => Some(s as i32),
        }
    }

    /// A stop request no signal can set, for roles run in tests.
    pub fn never() -> Interrupt {
        Interrupt {
            received: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The signal that asked the job to stop, if any.
    pub fn signal(&self) -> Option<i32> {
        match self.received.load(Ordering::Relaxed) {
            0 => None,
            s => Some(s as i32),
        }
    }

    /// The exit status for a job stopped by `signal`: 128 + its number, as a shell reports it.
    pub fn exit_code(signal: i32) -> i32 {
        128 + signal
    }

    /// The signal's name for messages.
    pub fn name(signal: i32) -> &'static str {
        match signal {
            SIGINT => "SIGINT",
            SIGTERM => "SIGTERM",
            _ => "a signal",
        }
    }
}

static PROGRESS: std::sync::Mutex<std::collections::BTreeMap<String, String>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Records what role `who` has done so far, for [`progress_lines`].
pub fn note_progress(who: &str, line: String) {
    let mut p = PROGRESS.lock().unwrap_or_else(|e| e.into_inner());
    p.insert(who.to_string(), line);
}

/// The last progress line of every role of this process: what a rank says when it is stopped
/// before it could report through the job.
pub fn progress_lines() -> Vec<String> {
    let p = PROGRESS.lock().unwrap_or_else(|e| e.into_inner());
    p.iter()
        .map(|(who, line)| format!("{who}: {line}"))
        .collect()
}

/// Watches for a stop request in the background while the [`Watch`] lives: `grace` after the
/// signal, removes every unfinished output file ([`crate::atomic_file`]) and prints this
/// process's progress lines under `who`, so a rank killed soon after (as `mpirun` does) leaves
/// no partial file and says what it had done.
pub fn watch(who: String, grace: std::time::Duration) -> Watch {
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::clone(&finished);
    std::thread::spawn(move || {
        let step = std::time::Duration::from_millis(20);
        let sig = loop {
            if done.load(Ordering::Relaxed) {
                return;
            }
            if let Some(s) = Interrupt::requested() {
                break s;
            }
            std::thread::sleep(step);
        };
        let t = std::time::Instant::now();
        while t.elapsed() < grace {
            if done.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(step);
        }
        let removed = crate::atomic_file::remove_temporaries();
        let lines = progress_lines();
        if removed == 0 && lines.is_empty() {
            return;
        }
        let mut msg = format!(
            "lclstreamer: {who}: {} {:.1} s ago and not finished; removed {removed} unfinished output files",
            Interrupt::name(sig),
            t.elapsed().as_secs_f64()
        );
        for l in lines {
            msg += &format!("\nlclstreamer: {who}: {l}");
        }
        eprintln!("{msg}");
    });
    Watch { finished }
}

/// Stops the watch of [`watch`] when dropped (the work finished in time).
pub struct Watch {
    finished: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.finished.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_is_recorded_and_named() {
        let i = Interrupt::install().unwrap();
        assert_eq!(i.signal(), None);
        signal_hook::low_level::raise(SIGTERM).unwrap();
        assert_eq!(i.signal(), Some(SIGTERM));
        assert_eq!(Interrupt::requested(), Some(SIGTERM));
        assert_eq!(Interrupt::name(SIGTERM), "SIGTERM");
        assert_eq!(Interrupt::exit_code(SIGTERM), 143);
        assert_eq!(Interrupt::never().signal(), None);
    }
}
