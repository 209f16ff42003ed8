//! A live writer for tests and demos: copies a finished run datagram by datagram into another
//! `xtc` directory at a given L1Accept rate, the way the DAQ writes it: files under
//! `.inprogress` names, each datagram's bigdata before its small data, the source's chunk
//! rotation (a chunk is renamed when the next one starts) and every name made final at the end.
//! A stream may start late: its files appear after a delay and it then catches up.

use super::error::{FormatError, XtcError};
use super::header::{DgramHeader, TransitionId};
use super::reader::DgramReader;
use super::run::{FileName, IN_PROGRESS, RunFiles, StreamFiles, discover_in_dir};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What to replay and how fast.
#[derive(Debug, Clone)]
pub struct ReplayParams {
    /// The source run's `xtc` directory (one run).
    pub from: PathBuf,
    /// The `xtc` directory to write (created; small data in `smalldata/`).
    pub to: PathBuf,
    /// L1Accepts per second (transitions are written as soon as they are due).
    pub rate: f64,
    /// Streams whose files appear only this long after the start.
    pub late: Vec<(u32, Duration)>,
    /// Write the datagrams before the first L1Accept, then wait (up to `WAIT_FOR_LIMIT`) until
    /// this file exists before starting the L1Accept clock (a reader signals it is ready).
    pub wait_for: Option<PathBuf>,
}

/// The longest wait for [`ReplayParams::wait_for`].
pub const WAIT_FOR_LIMIT: Duration = Duration::from_secs(300);

/// What a replay wrote.
#[derive(Debug, Clone, Default)]
pub struct ReplayStats {
    pub streams: usize,
    pub datagrams: u64,
    pub events: u64,
    /// Chunks written per stream.
    pub chunks: Vec<u32>,
    pub seconds: f64,
    /// Event key → wall time (ns since the Unix epoch) at which its last datagram (bigdata
    /// and small data of every stream holding it) was written.
    pub written: BTreeMap<u64, u64>,
}

impl ReplayStats {
    /// `written` as JSON lines `{"timestamp": KEY, "written_ns": NS}`.
    pub fn written_jsonl(&self) -> String {
        self.written
            .iter()
            .map(|(k, ns)| format!("{{\"timestamp\":{k},\"written_ns\":{ns}}}\n"))
            .collect()
    }
}

/// A file being written under its `.inprogress` name, unbuffered so readers see each datagram
/// as soon as it is written.
struct Out {
    file: File,
    path: PathBuf,
}

impl Out {
    fn create(path: PathBuf) -> Result<Out, XtcError> {
        let tmp = in_progress(&path);
        let file = File::create(&tmp).map_err(|e| XtcError::io(&tmp, 0, e))?;
        Ok(Out { file, path })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), XtcError> {
        self.file
            .write_all(bytes)
            .map_err(|e| XtcError::io(&in_progress(&self.path), 0, e))
    }

    fn finish(self) -> Result<(), XtcError> {
        let tmp = in_progress(&self.path);
        std::fs::rename(&tmp, &self.path).map_err(|e| XtcError::io(&tmp, 0, e))
    }
}

fn in_progress(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}{IN_PROGRESS}", path.display()))
}

fn final_name(path: &Path) -> Result<String, XtcError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| XtcError::Layout(format!("{}: not a file name", path.display())))?;
    Ok(name.strip_suffix(IN_PROGRESS).unwrap_or(name).to_string())
}

struct Head {
    header: DgramHeader,
    big: Vec<u8>,
    smd: Option<Vec<u8>>,
}

struct Stream {
    src: StreamFiles,
    chunk_idx: usize,
    big: DgramReader,
    smd: Option<DgramReader>,
    head: Option<Head>,
    starts: Instant,
    out: Option<(Out, Option<Out>)>,
    chunks: u32,
}

impl Stream {
    fn open(src: StreamFiles, starts: Instant) -> Result<Stream, XtcError> {
        let big = DgramReader::open(&src.chunks[0].path)?;
        let smd = src.smd.as_deref().map(DgramReader::open).transpose()?;
        let mut s = Stream {
            src,
            chunk_idx: 0,
            big,
            smd,
            head: None,
            starts,
            out: None,
            chunks: 0,
        };
        s.advance()?;
        Ok(s)
    }

    /// Reads the next datagram (and its small-data twin) into `head`.
    fn advance(&mut self) -> Result<(), XtcError> {
        let mut big = Vec::new();
        let header = loop {
            if let Some(d) = self.big.next_into(&mut big)? {
                break d.header;
            }
            if let Some(t) = self.big.truncation() {
                return Err(XtcError::Layout(format!(
                    "{}: ends inside the datagram at byte {}",
                    self.big.path().display(),
                    t.offset
                )));
            }
            if self.chunk_idx + 1 >= self.src.chunks.len() {
                self.head = None;
                return Ok(());
            }
            self.chunk_idx += 1;
            self.big = DgramReader::open(&self.src.chunks[self.chunk_idx].path)?;
        };
        let smd = match &mut self.smd {
            Some(r) => {
                let mut buf = Vec::new();
                let path = r.path().to_path_buf();
                let d = r.next_into(&mut buf)?.ok_or_else(|| {
                    XtcError::Layout(format!(
                        "{}: small data ends before its bigdata",
                        path.display()
                    ))
                })?;
                if d.header.timestamp != header.timestamp || d.service() != header.service() {
                    return Err(XtcError::format(
                        &path,
                        FormatError::new(
                            d.offset,
                            format!(
                                "small data {:?} 0x{:016X} does not match bigdata {:?} 0x{:016X}",
                                d.service(),
                                d.header.timestamp,
                                header.service(),
                                header.timestamp
                            ),
                        ),
                    ));
                }
                Some(buf)
            }
            None => None,
        };
        self.head = Some(Head { header, big, smd });
        Ok(())
    }

    fn start(&mut self, to: &Path) -> Result<(), XtcError> {
        let big = Out::create(to.join(final_name(&self.src.chunks[0].path)?))?;
        let smd = match &self.src.smd {
            Some(p) => Some(Out::create(to.join("smalldata").join(final_name(p)?))?),
            None => None,
        };
        self.out = Some((big, smd));
        self.chunks = 1;
        Ok(())
    }

    /// Writes the head (bigdata, then small data), reads the next one, rotates the output
    /// chunk when the source chunk ended, and renames every file when the stream ended.
    fn write_head(&mut self, to: &Path) -> Result<(), XtcError> {
        let head = self.head.take().expect("caller checked");
        let (big, smd) = self.out.as_mut().expect("stream started");
        big.write(&head.big)?;
        if let (Some(out), Some(bytes)) = (smd.as_mut(), &head.smd) {
            out.write(bytes)?;
        }
        let chunk = self.chunk_idx;
        self.advance()?;
        let (big, smd) = self.out.take().expect("stream started");
        if self.head.is_none() {
            big.finish()?;
            if let Some(s) = smd {
                s.finish()?;
            }
            return Ok(());
        }
        if self.chunk_idx != chunk {
            big.finish()?;
            let next = Out::create(to.join(final_name(&self.src.chunks[self.chunk_idx].path)?))?;
            self.chunks += 1;
            self.out = Some((next, smd));
        } else {
            self.out = Some((big, smd));
        }
        Ok(())
    }
}

fn single_run(dir: &Path) -> Result<RunFiles, XtcError> {
    let rd = std::fs::read_dir(dir).map_err(|e| XtcError::io(dir, 0, e))?;
    let mut runs = Vec::new();
    for e in rd {
        let e = e.map_err(|e| XtcError::io(dir, 0, e))?;
        if let Some(f) = e.file_name().to_str().and_then(FileName::parse)
            && !runs.contains(&(f.exp.clone(), f.run))
        {
            runs.push((f.exp, f.run));
        }
    }
    match runs.as_slice() {
        [(exp, run)] => discover_in_dir(dir, exp, *run),
        [] => Err(XtcError::Layout(format!(
            "{}: no XTC2 run files",
            dir.display()
        ))),
        _ => Err(XtcError::Layout(format!(
            "{}: files of several runs {runs:?}; give a directory with one",
            dir.display()
        ))),
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Replays the run in `p.from` into `p.to` in real time; returns when every file is complete.
pub fn replay(p: &ReplayParams) -> Result<ReplayStats, XtcError> {
    if !(p.rate > 0.0 && p.rate.is_finite()) {
        return Err(XtcError::Layout(format!(
            "replay rate {} Hz: must be positive",
            p.rate
        )));
    }
    let run = single_run(&p.from)?;
    for (s, _) in &p.late {
        if !run.streams.iter().any(|f| f.stream == *s) {
            return Err(XtcError::Layout(format!(
                "late stream s{s:03}: the run has streams {:?}",
                run.streams.iter().map(|s| s.stream).collect::<Vec<_>>()
            )));
        }
    }
    let smd_dir = p.to.join("smalldata");
    std::fs::create_dir_all(&smd_dir).map_err(|e| XtcError::io(&smd_dir, 0, e))?;
    let t0 = Instant::now();
    let mut streams = Vec::new();
    for s in run.streams {
        let delay = p
            .late
            .iter()
            .find(|(id, _)| *id == s.stream)
            .map_or(Duration::ZERO, |(_, d)| *d);
        streams.push(Stream::open(s, t0 + delay)?);
    }
    let period = Duration::from_secs_f64(1.0 / p.rate);
    let mut stats = ReplayStats {
        streams: streams.len(),
        ..ReplayStats::default()
    };
    let mut last_l1: Option<u64> = None;
    let mut clock0 = t0;
    let mut go = p.wait_for.clone();
    loop {
        let now = Instant::now();
        for s in &mut streams {
            if s.out.is_none() && s.head.is_some() && s.starts <= now {
                s.start(&p.to)?;
            }
        }
        let next_start = streams
            .iter()
            .filter(|s| s.out.is_none() && s.head.is_some())
            .map(|s| s.starts)
            .min();
        let pick = streams
            .iter()
            .enumerate()
            .filter(|(_, s)| s.out.is_some())
            .filter_map(|(i, s)| s.head.as_ref().map(|h| (h.header, i)))
            .min_by_key(|(h, _)| (h.timestamp, h.service() == TransitionId::L1Accept));
        let Some((header, i)) = pick else {
            match next_start {
                Some(t) => {
                    std::thread::sleep(t.saturating_duration_since(Instant::now()));
                    continue;
                }
                None => break,
            }
        };
        let is_l1 = header.service() == TransitionId::L1Accept;
        if is_l1 && let Some(f) = go.take() {
            wait_for_file(&f)?;
            clock0 = Instant::now();
        }
        if is_l1 && last_l1.is_none_or(|k| header.timestamp > k) {
            let due = clock0 + period.mul_f64(stats.events as f64);
            let wake = next_start.map_or(due, |t| t.min(due));
            let now = Instant::now();
            if wake > now {
                std::thread::sleep(wake - now);
                continue;
            }
            if due > now {
                continue;
            }
            stats.events += 1;
            last_l1 = Some(header.timestamp);
        }
        streams[i].write_head(&p.to)?;
        stats.datagrams += 1;
        if is_l1 {
            stats.written.insert(header.timestamp, now_ns());
        }
    }
    stats.chunks = streams.iter().map(|s| s.chunks).collect();
    stats.seconds = t0.elapsed().as_secs_f64();
    Ok(stats)
}

fn wait_for_file(f: &Path) -> Result<(), XtcError> {
    let start = Instant::now();
    while !f.exists() {
        if start.elapsed() > WAIT_FOR_LIMIT {
            return Err(XtcError::Layout(format!(
                "{}: did not appear within {} s",
                f.display(),
                WAIT_FOR_LIMIT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
