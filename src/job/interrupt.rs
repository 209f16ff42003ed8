//! SIGINT and SIGTERM: the first asks the job to stop (the roles poll [`Interrupt::signal`]); a
//! second of the same kind ends the process at once. `mpirun` forwards both to every rank and
//! kills the ranks about a second later, so whatever a rank must do on a stop has to fit in that.

use signal_hook::consts::{SIGINT, SIGTERM};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The process-wide stop request.
#[derive(Clone, Debug)]
pub struct Interrupt {
    received: Arc<AtomicUsize>,
}

impl Interrupt {
    /// Installs the handlers (once per process; later calls share them).
    pub fn install() -> std::io::Result<Interrupt> {
        static INSTALLED: std::sync::OnceLock<Arc<AtomicUsize>> = std::sync::OnceLock::new();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_is_recorded_and_named() {
        let i = Interrupt::install().unwrap();
        assert_eq!(i.signal(), None);
        signal_hook::low_level::raise(SIGTERM).unwrap();
        assert_eq!(i.signal(), Some(SIGTERM));
        assert_eq!(Interrupt::name(SIGTERM), "SIGTERM");
        assert_eq!(Interrupt::exit_code(SIGTERM), 143);
        assert_eq!(Interrupt::never().signal(), None);
    }
}
