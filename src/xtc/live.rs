//! Following a run while the DAQ writes it: files named `.xtc2.inprogress` until they are
//! complete (an open descriptor survives the rename), streams whose files appear late, and
//! waiting for a run's first datagrams before anything is read.

use super::error::XtcError;
use super::header::TransitionId;
use super::reader::DgramReader;
use super::run::{IN_PROGRESS, RunFiles, discover_in_dir};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often a live reader looks again at files that have not grown.
pub const POLL: Duration = Duration::from_millis(10);

/// The other name of a DAQ file: `x.xtc2` ↔ `x.xtc2.inprogress`.
pub fn other_name(path: &Path) -> PathBuf {
    let s = path.as_os_str().to_string_lossy();
    match s.strip_suffix(IN_PROGRESS) {
        Some(done) => PathBuf::from(done),
        None => PathBuf::from(format!("{s}{IN_PROGRESS}")),
    }
}

/// Opens a DAQ file under either of its names (it may be renamed from `.inprogress` at any
/// moment); returns the file and the name it was found under.
pub fn open_either(path: &Path) -> std::io::Result<(File, PathBuf)> {
    let other = other_name(path);
    let mut first_err = None;
    for p in [path, other.as_path(), path] {
        match File::open(p) {
            Ok(f) => return Ok((f, p.to_path_buf())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                first_err.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(first_err.expect("three attempts failed"))
}

/// The name under which a DAQ file exists now, if any.
pub fn existing_name(path: &Path) -> Option<PathBuf> {
    let other = other_name(path);
    [path.to_path_buf(), other]
        .into_iter()
        .find(|p| p.is_file())
}

/// True when `path` is an `.inprogress` name that has been renamed to its final name: the
/// writer has finished the file.
pub fn renamed(path: &Path) -> bool {
    path.as_os_str().to_string_lossy().ends_with(IN_PROGRESS)
        && !path.exists()
        && other_name(path).is_file()
}

/// What to wait for before reading a live run.
#[derive(Debug, Clone)]
pub struct WaitFor {
    /// Streams the run must have (`None`: at least one).
    pub streams: Option<usize>,
    /// Use small data: when any stream has a small-data file, wait for every stream's.
    pub use_smd: bool,
    /// Give up after this long.
    pub timeout: Duration,
}

/// Waits until the run `exp`/`run` in the `xtc` directory `dir` has the streams asked for, each
/// with a complete first datagram (its Configure) in its first bigdata chunk and small data.
pub fn wait_for_run(dir: &Path, exp: &str, run: u32, want: &WaitFor) -> Result<RunFiles, XtcError> {
    let start = Instant::now();
    loop {
        let last = match discover_in_dir(dir, exp, run) {
            Ok(files) => match ready(&files, want) {
                Ok(()) => return Ok(files),
                Err(why) => why,
            },
            Err(e) => e.to_string(),
        };
        if start.elapsed() >= want.timeout {
            return Err(XtcError::Layout(format!(
                "{}: waited {:.0} s for live run {exp} {run}: {last}",
                dir.display(),
                want.timeout.as_secs_f64()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ready(files: &RunFiles, want: &WaitFor) -> Result<(), String> {
    let n = files.streams.len();
    if n < want.streams.unwrap_or(1) {
        return Err(format!(
            "{n} of {} streams present",
            want.streams.unwrap_or(1)
        ));
    }
    let any_smd = want.use_smd && files.streams.iter().any(|s| s.smd.is_some());
    for s in &files.streams {
        if any_smd && s.smd.is_none() {
            return Err(format!("stream s{:03} has no small data yet", s.stream));
        }
        let c0 = s.chunks.first().map(|c| c.path.as_path());
        for p in c0.into_iter().chain(s.smd.as_deref().filter(|_| any_smd)) {
            if !starts_with_configure(p) {
                return Err(format!("{}: no complete Configure yet", p.display()));
            }
        }
    }
    Ok(())
}

fn starts_with_configure(path: &Path) -> bool {
    let Some(path) = existing_name(path) else {
        return false;
    };
    let Ok(mut r) = DgramReader::open_live(&path) else {
        return false;
    };
    matches!(r.peek_service(), Ok(Some(TransitionId::Configure)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_names() {
        assert_eq!(
            other_name(Path::new("/d/a-r0001-s000-c000.xtc2")),
            Path::new("/d/a-r0001-s000-c000.xtc2.inprogress")
        );
        assert_eq!(
            other_name(Path::new("/d/a.smd.xtc2.inprogress")),
            Path::new("/d/a.smd.xtc2")
        );
    }

    #[test]
    fn a_renamed_file_is_found_and_an_open_one_keeps_reading() {
        let dir = tempfile::tempdir().unwrap();
        let done = dir.path().join("x-r0001-s000-c000.xtc2");
        let tmp = other_name(&done);
        std::fs::write(&tmp, b"abc").unwrap();
        let (f, found) = open_either(&done).unwrap();
        assert_eq!(found, tmp);
        assert!(!renamed(&tmp));
        std::fs::rename(&tmp, &done).unwrap();
        assert!(renamed(&tmp));
        assert_eq!(existing_name(&tmp).as_deref(), Some(done.as_path()));
        assert_eq!(f.metadata().unwrap().len(), 3);
    }
}
