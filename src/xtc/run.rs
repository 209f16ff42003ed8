//! Run layout: file names `<exp>-r<RRRR>-s<SSS>-c<CCC>.xtc2[.inprogress]`, small data in
//! `smalldata/`, and discovery of a run's streams and chunks under an S3DF-style data root.

use super::error::XtcError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Suffix of files the DAQ is still writing.
pub const IN_PROGRESS: &str = ".inprogress";

/// What a DAQ file name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName {
    pub exp: String,
    pub run: u32,
    pub stream: u32,
    pub chunk: u32,
    /// A small-data file (`.smd.xtc2`).
    pub smd: bool,
    /// Still being written (`.inprogress`).
    pub in_progress: bool,
}

impl FileName {
    /// Parses a file name (no directory); `None` when it does not follow the DAQ pattern.
    pub fn parse(name: &str) -> Option<Self> {
        let (name, in_progress) = match name.strip_suffix(IN_PROGRESS) {
            Some(n) => (n, true),
            None => (name, false),
        };
        let (stem, smd) = if let Some(s) = name.strip_suffix(".smd.xtc2") {
            (s, true)
        } else {
            (name.strip_suffix(".xtc2")?, false)
        };
        let mut parts = stem.rsplitn(4, '-');
        let c = parts.next()?.strip_prefix('c')?;
        let s = parts.next()?.strip_prefix('s')?;
        let r = parts.next()?.strip_prefix('r')?;
        let exp = parts.next()?;
        let num = |t: &str| {
            (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .then(|| t.parse().ok())
                .flatten()
        };
        Some(Self {
            exp: exp.to_string(),
            run: num(r)?,
            stream: num(s)?,
            chunk: num(c)?,
            smd,
            in_progress,
        })
    }

    /// The canonical bigdata name of this stream and chunk.
    pub fn bigdata_name(exp: &str, run: u32, stream: u32, chunk: u32) -> String {
        format!("{exp}-r{run:04}-s{stream:03}-c{chunk:03}.xtc2")
    }

    /// The canonical small-data name of this stream (always chunk 0).
    pub fn smd_name(exp: &str, run: u32, stream: u32) -> String {
        format!("{exp}-r{run:04}-s{stream:03}-c000.smd.xtc2")
    }
}

/// One chunk file of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkFile {
    pub chunk: u32,
    pub path: PathBuf,
    pub in_progress: bool,
}

/// The files of one stream: bigdata chunks in order and the optional small-data file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFiles {
    pub stream: u32,
    pub chunks: Vec<ChunkFile>,
    pub smd: Option<PathBuf>,
}

impl StreamFiles {
    /// The directory holding the bigdata chunks (chunkinfo names are relative to it).
    pub fn dir(&self) -> Option<&Path> {
        self.chunks.first().and_then(|c| c.path.parent())
    }
}

/// All streams of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFiles {
    pub exp: Option<String>,
    pub run: Option<u32>,
    pub streams: Vec<StreamFiles>,
}

impl RunFiles {
    /// Opens every listed bigdata chunk and small-data file for reading (under either name of a
    /// file being written): the first that is not a readable regular file is the error, naming it.
    pub fn check_readable(&self) -> Result<(), XtcError> {
        let paths = self.streams.iter().flat_map(|s| {
            s.chunks
                .iter()
                .map(|c| c.path.as_path())
                .chain(s.smd.as_deref())
        });
        for p in paths {
            // A file being written may be renamed from `.inprogress` meanwhile.
            let (file, found) = super::live::open_either(p).map_err(|e| XtcError::io(p, 0, e))?;
            let meta = file.metadata().map_err(|e| XtcError::io(&found, 0, e))?;
            if !meta.is_file() {
                return Err(XtcError::Layout(format!(
                    "{}: not a regular file, cannot be read as XTC2",
                    found.display()
                )));
            }
        }
        Ok(())
    }
}

/// The `xtc` directory of an experiment under an S3DF-style root:
/// `<root>/<hutch>/<exp>/xtc`, hutch = the first three letters of the experiment.
pub fn xtc_dir(root: &Path, exp: &str) -> PathBuf {
    let hutch: String = exp.chars().take(3).collect();
    root.join(hutch).join(exp).join("xtc")
}

fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>, XtcError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(XtcError::io(dir, 0, e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| XtcError::io(dir, 0, e))?;
        if let Some(name) = entry.file_name().to_str() {
            out.push((name.to_string(), entry.path()));
        }
    }
    Ok(out)
}

/// Finds every stream and chunk of `exp` run `run` in an `xtc` directory.
///
/// A completed file wins over an `.inprogress` one of the same name.
pub fn discover_in_dir(dir: &Path, exp: &str, run: u32) -> Result<RunFiles, XtcError> {
    let mut streams: BTreeMap<u32, StreamFiles> = BTreeMap::new();
    let entry = |streams: &mut BTreeMap<u32, StreamFiles>, s: u32| {
        streams.entry(s).or_insert_with(|| StreamFiles {
            stream: s,
            chunks: Vec::new(),
            smd: None,
        });
    };
    for (name, path) in list_dir(dir)? {
        let Some(f) = FileName::parse(&name) else {
            continue;
        };
        if f.exp != exp || f.run != run || f.smd {
            continue;
        }
        entry(&mut streams, f.stream);
        let s = streams.get_mut(&f.stream).expect("inserted above");
        match s.chunks.iter_mut().find(|c| c.chunk == f.chunk) {
            Some(c) if c.in_progress && !f.in_progress => {
                c.path = path;
                c.in_progress = false;
            }
            Some(_) => {}
            None => s.chunks.push(ChunkFile {
                chunk: f.chunk,
                path,
                in_progress: f.in_progress,
            }),
        }
    }
    for (name, path) in list_dir(&dir.join("smalldata"))? {
        let Some(f) = FileName::parse(&name) else {
            continue;
        };
        if f.exp != exp || f.run != run || !f.smd {
            continue;
        }
        entry(&mut streams, f.stream);
        let s = streams.get_mut(&f.stream).expect("inserted above");
        if s.smd.is_none() || !f.in_progress {
            s.smd = Some(path);
        }
    }
    let mut streams: Vec<StreamFiles> = streams.into_values().collect();
    for s in &mut streams {
        s.chunks.sort_by_key(|c| c.chunk);
        if s.chunks.first().map(|c| c.chunk) != Some(0) {
            return Err(XtcError::Layout(format!(
                "{}: stream s{:03} of {exp} run {run} has no c000 bigdata file",
                dir.display(),
                s.stream
            )));
        }
    }
    if streams.is_empty() {
        return Err(XtcError::Layout(format!(
            "{}: no files of {exp} run {run} (expected {})",
            dir.display(),
            FileName::bigdata_name(exp, run, 0, 0)
        )));
    }
    Ok(RunFiles {
        exp: Some(exp.to_string()),
        run: Some(run),
        streams,
    })
}

/// Finds a run under an S3DF-style data root.
pub fn discover(root: &Path, exp: &str, run: u32) -> Result<RunFiles, XtcError> {
    discover_in_dir(&xtc_dir(root, exp), exp, run)
}

/// Treats each given `c000` bigdata file as one stream; a matching
/// `smalldata/<stem>.smd.xtc2` next to it is used when present. Later chunks given in the list
/// join the stream with their stream number; others are found through the chunkinfo the data
/// carries. Small-data files given directly are rejected.
pub fn from_files(paths: &[PathBuf]) -> Result<RunFiles, XtcError> {
    let mut streams: Vec<StreamFiles> = Vec::new();
    let mut later = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let parsed = FileName::parse(name);
        if name.ends_with(".smd.xtc2") || parsed.as_ref().is_some_and(|f| f.smd) {
            return Err(XtcError::Layout(format!(
                "{}: give the bigdata file; its small data is found in smalldata/",
                path.display()
            )));
        }
        if !path.is_file() {
            return Err(XtcError::Layout(format!(
                "{}: no such file",
                path.display()
            )));
        }
        let stem = name.strip_suffix(IN_PROGRESS).unwrap_or(name);
        let stem = stem.strip_suffix(".xtc2").unwrap_or(stem);
        let smd = path
            .parent()
            .map(|d| d.join("smalldata").join(format!("{stem}.smd.xtc2")))
            .filter(|p| p.is_file());
        let chunk = ChunkFile {
            chunk: parsed.as_ref().map_or(0, |f| f.chunk),
            path: path.clone(),
            in_progress: name.ends_with(IN_PROGRESS),
        };
        let stream = parsed.as_ref().map_or(i as u32, |f| f.stream);
        if chunk.chunk > 0 {
            later.push((stream, chunk));
            continue;
        }
        streams.push(StreamFiles {
            stream,
            chunks: vec![chunk],
            smd,
        });
    }
    for (stream, chunk) in later {
        let mut owners = streams.iter_mut().filter(|s| s.stream == stream);
        match (owners.next(), owners.next()) {
            (Some(s), None) => s.chunks.push(chunk),
            _ => {
                return Err(XtcError::Layout(format!(
                    "{}: chunk {} needs exactly one c000 file of stream s{stream:03} in the list",
                    chunk.path.display(),
                    chunk.chunk
                )));
            }
        }
    }
    for s in &mut streams {
        s.chunks.sort_by_key(|c| c.chunk);
    }
    let first = paths
        .first()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .and_then(FileName::parse);
    Ok(RunFiles {
        exp: first.as_ref().map(|f| f.exp.clone()),
        run: first.map(|f| f.run),
        streams,
    })
}
