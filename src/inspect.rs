//! `lclstreamer inspect`: what a set of XTC2 files holds (datagram and transition counts,
//! truncation, damage, run info, detectors and their variables, optionally the first events).

use crate::xtc::eventbuild::EventBuilder;
use crate::xtc::run::RunFiles;
use crate::xtc::{
    Dgram, DgramReader, NamesId, NamesLookup, Schema, TransitionId, Truncation, XtcError,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Summary of one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileSummary {
    pub path: PathBuf,
    pub bytes: u64,
    pub dgrams: u64,
    pub transitions: BTreeMap<String, u64>,
    pub truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncation: Option<TruncationInfo>,
    pub damaged: u64,
    /// False when the file has no Configure (a later chunk), so blocks were not decoded.
    pub decoded: bool,
    pub first_timestamp: Option<u64>,
    pub last_timestamp: Option<u64>,
}

/// Where a file was cut.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TruncationInfo {
    pub offset: u64,
    pub expected: u64,
    pub available: u64,
}

impl From<Truncation> for TruncationInfo {
    fn from(t: Truncation) -> Self {
        Self {
            offset: t.offset,
            expected: t.expected,
            available: t.available,
        }
    }
}

/// Run identity from a BeginRun's runinfo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunInfo {
    pub expt: Option<String>,
    pub runnum: Option<u32>,
}

/// One variable of a detector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VarSummary {
    pub name: String,
    #[serde(rename = "type")]
    pub dtype: &'static str,
    pub rank: u32,
}

/// One Names entry of a Configure: a detector segment's schema under its NamesId.
#[derive(Debug, Clone, Serialize)]
pub struct DetectorSummary {
    /// NamesId: the DRP node id and the names index within the node.
    pub node: u32,
    pub index: u32,
    pub name: String,
    #[serde(rename = "type")]
    pub det_type: String,
    pub alg: String,
    pub version: String,
    pub segment: u32,
    /// The segment's unique id (psana's `uniqueid` is built from these).
    pub det_id: String,
    pub vars: Vec<VarSummary>,
    /// The files whose Configure declares this entry.
    pub files: Vec<PathBuf>,
}

/// Everything `inspect` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub files: Vec<FileSummary>,
    pub run: RunInfo,
    pub runs: Vec<RunInfo>,
    /// Every distinct Names entry, by NamesId; the same NamesId appears again when another
    /// stream or a later Configure declares something different under it.
    pub detectors: Vec<DetectorSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<serde_json::Value>>,
}

impl Summary {
    /// The segments declared for detector `name` with algorithm `alg`, sorted, each once.
    pub fn segments(&self, name: &str, alg: &str) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .detectors
            .iter()
            .filter(|d| d.name == name && d.alg == alg)
            .map(|d| d.segment)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Runs and Names entries gathered across files.
#[derive(Default)]
pub struct Collect {
    runs: Vec<RunInfo>,
    detectors: Vec<DetectorSummary>,
}

impl Collect {
    fn add_configure(&mut self, lookup: &NamesLookup, file: &Path) {
        for (id, s) in lookup.entries() {
            let entry = detector_summary(id, s);
            match self.detectors.iter_mut().find(|d| d.same_entry(&entry)) {
                Some(d) => {
                    if !d.files.iter().any(|f| f == file) {
                        d.files.push(file.to_path_buf());
                    }
                }
                None => self.detectors.push(DetectorSummary {
                    files: vec![file.to_path_buf()],
                    ..entry
                }),
            }
        }
    }
}

impl DetectorSummary {
    /// Equal but for the files that declare them.
    fn same_entry(&self, o: &DetectorSummary) -> bool {
        (self.node, self.index, self.segment) == (o.node, o.index, o.segment)
            && (
                &self.name,
                &self.det_type,
                &self.alg,
                &self.version,
                &self.det_id,
            ) == (&o.name, &o.det_type, &o.alg, &o.version, &o.det_id)
            && self.vars == o.vars
    }
}

/// The entry for `s` under `id`, with no files yet.
fn detector_summary(id: NamesId, s: &Schema) -> DetectorSummary {
    DetectorSummary {
        node: id.node(),
        index: id.id(),
        name: s.det_name.clone(),
        det_type: s.det_type.clone(),
        alg: s.alg.name.clone(),
        version: s.alg.version_string(),
        segment: s.segment,
        det_id: s.det_id.clone(),
        vars: s
            .vars
            .iter()
            .map(|v| VarSummary {
                name: v.name.clone(),
                dtype: v.dtype.name(),
                rank: v.rank,
            })
            .collect(),
        files: Vec::new(),
    }
}

fn runinfo_of(
    d: &Dgram<'_>,
    lookup: &NamesLookup,
) -> Result<Option<RunInfo>, crate::xtc::FormatError> {
    for b in d.blocks(lookup)? {
        if b.schema.det_name == "runinfo" {
            return Ok(Some(RunInfo {
                expt: b.var("expt").and_then(|v| v.string()),
                runnum: b
                    .var("runnum")
                    .and_then(|v| v.scalar())
                    .and_then(|s| s.as_i64())
                    .map(|v| v as u32),
            }));
        }
    }
    Ok(None)
}

/// Reads every datagram of `path`, checking the structure of each and decoding every block
/// against the Configure in force.
pub fn summarize_file(path: &Path, into: &mut Collect) -> Result<FileSummary, XtcError> {
    let mut reader = DgramReader::open(path)?;
    let bytes = std::fs::metadata(path)
        .map_err(|e| XtcError::io(path, 0, e))?
        .len();
    let mut buf = Vec::new();
    let mut lookup = NamesLookup::new();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let (mut dgrams, mut damaged) = (0u64, 0u64);
    let (mut first, mut last) = (None, None);
    let mut decoded = true;
    let fmt = |e| XtcError::format(path, e);
    while let Some(d) = reader.next_into(&mut buf)? {
        dgrams += 1;
        *counts.entry(d.service().name().to_string()).or_default() += 1;
        first.get_or_insert(d.header.timestamp);
        last = Some(d.header.timestamp);
        let leaves = d.leaves().map_err(fmt)?;
        if d.damaged() || leaves.iter().any(|l| l.header.damage.any()) {
            damaged += 1;
        }
        if d.service() == TransitionId::Configure {
            lookup = NamesLookup::from_configure(&d.root()).map_err(fmt)?;
            into.add_configure(&lookup, path);
            continue;
        }
        if lookup.is_empty() {
            decoded = false;
            continue;
        }
        d.blocks(&lookup).map_err(fmt)?;
        if d.service() == TransitionId::BeginRun
            && let Some(r) = runinfo_of(&d, &lookup).map_err(fmt)?
        {
            into.runs.push(r);
        }
    }
    let truncation = reader.truncation().map(TruncationInfo::from);
    Ok(FileSummary {
        path: path.to_path_buf(),
        bytes,
        dgrams,
        transitions: counts,
        truncated: truncation.is_some(),
        truncation,
        damaged,
        decoded,
        first_timestamp: first,
        last_timestamp: last,
    })
}

/// Summarizes `files`; when `events > 0`, also decodes the first `events` L1Accept events of
/// `run` (built across its streams).
pub fn summarize(
    files: &[PathBuf],
    run: Option<&RunFiles>,
    events: usize,
) -> Result<Summary, XtcError> {
    let mut collect = Collect::default();
    let mut out = Vec::new();
    for f in files {
        out.push(summarize_file(f, &mut collect)?);
    }
    let mut runs: Vec<RunInfo> = Vec::new();
    for r in collect.runs {
        if !runs.contains(&r) {
            runs.push(r);
        }
    }
    let events = match (run, events) {
        (Some(run), n) if n > 0 => Some(first_events(run, n)?),
        _ => None,
    };
    Ok(Summary {
        files: out,
        run: runs.first().cloned().unwrap_or(RunInfo {
            expt: None,
            runnum: None,
        }),
        runs,
        detectors: {
            // By NamesId; entries sharing one keep the order they were found in (stable sort).
            let mut d = collect.detectors;
            d.sort_by_key(|d| (d.node, d.index));
            d
        },
        events,
    })
}

/// Decodes the first `n` L1Accept events of a run: per stream, per block, each variable's
/// type, shape and (for small ones) value.
pub fn first_events(run: &RunFiles, n: usize) -> Result<Vec<serde_json::Value>, XtcError> {
    let mut builder = EventBuilder::for_run(run, true)?;
    let mut files: BTreeMap<PathBuf, File> = BTreeMap::new();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while out.len() < n {
        let Some(ev) = builder.next_event()? else {
            break;
        };
        if ev.service != TransitionId::L1Accept {
            continue;
        }
        let mut streams = Vec::new();
        for part in &ev.parts {
            let Some((path, d)) = builder.read_part(part, &mut files, &mut buf)? else {
                continue;
            };
            let ix = builder.stream(part.stream).expect("stream of a built part");
            let blocks = d
                .blocks(ix.lookup())
                .map_err(|e| XtcError::format(&path, e))?;
            let dets: Vec<serde_json::Value> = blocks
                .iter()
                .map(|b| {
                    serde_json::json!({
                        "name": b.schema.det_name,
                        "alg": b.schema.alg.name,
                        "segment": b.schema.segment,
                        "vars": b.vars.iter().map(|v| serde_json::json!({
                            "name": v.desc.name,
                            "type": v.desc.dtype.name(),
                            "shape": v.shape.dims(),
                            "value": v.to_json(16),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            streams.push(serde_json::json!({
                "stream": part.stream,
                "file": path,
                "offset": part.entry.location.map(|l| l.offset),
                "size": part.entry.location.map(|l| l.size),
                "damage": d.header.root.damage.0,
                "detectors": dets,
            }));
        }
        out.push(serde_json::json!({
            "timestamp": ev.timestamp,
            "sec": ev.timestamp >> 32,
            "nsec": ev.timestamp & 0xFFFF_FFFF,
            "missing_streams": ev.missing,
            "streams": streams,
        }));
    }
    Ok(out)
}

/// What the command line named: the files to summarize and the run they form (if any).
#[derive(Debug, Clone)]
pub struct Inputs {
    pub files: Vec<PathBuf>,
    pub run: Option<RunFiles>,
}

fn run_file_list(run: &RunFiles) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for s in &run.streams {
        files.extend(s.chunks.iter().map(|c| c.path.clone()));
        files.extend(s.smd.iter().cloned());
    }
    files
}

fn xtc2_files(dir: &Path) -> Result<Vec<PathBuf>, XtcError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(XtcError::io(dir, 0, e)),
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(".xtc2") || n.ends_with(".xtc2.inprogress"))
        })
        .collect();
    v.sort();
    Ok(v)
}

fn parse_run_spec(s: &str) -> Option<(String, u32)> {
    let (exp, run) = s.split_once(':')?;
    let run = run.trim_start_matches('r').parse().ok()?;
    (!exp.is_empty() && !exp.contains('/')).then(|| (exp.to_string(), run))
}

/// Resolves command-line inputs: files, directories (a run's `xtc` directory), or `EXP:RUN`
/// looked up under `root`.
pub fn resolve_inputs(inputs: &[String], root: &Path) -> Result<Inputs, XtcError> {
    use crate::xtc::run::{FileName, discover, discover_in_dir, from_files};
    let mut files = Vec::new();
    let mut bigdata = Vec::new();
    let mut run = None;
    for inp in inputs {
        let p = PathBuf::from(inp);
        if p.is_dir() {
            let mut runs: Vec<(String, u32)> = std::fs::read_dir(&p)
                .map_err(|e| XtcError::io(&p, 0, e))?
                .filter_map(|e| e.ok())
                .filter_map(|e| FileName::parse(e.file_name().to_str()?))
                .filter(|f| f.chunk == 0)
                .map(|f| (f.exp, f.run))
                .collect();
            runs.sort();
            runs.dedup();
            match runs.as_slice() {
                [(exp, r)] => {
                    run = Some(discover_in_dir(&p, exp, *r)?);
                    files.extend(xtc2_files(&p)?);
                    files.extend(xtc2_files(&p.join("smalldata"))?);
                }
                [] => {
                    return Err(XtcError::Layout(format!(
                        "{}: no DAQ-named .xtc2 files here",
                        p.display()
                    )));
                }
                _ => {
                    return Err(XtcError::Layout(format!(
                        "{}: holds several runs ({runs:?}); name one as EXP:RUN or give files",
                        p.display()
                    )));
                }
            }
        } else if p.exists() {
            if !inp.contains(".smd.") {
                bigdata.push(p.clone());
            }
            files.push(p);
        } else if let Some((exp, r)) = parse_run_spec(inp) {
            let found = discover(root, &exp, r)?;
            files.extend(run_file_list(&found));
            run = Some(found);
        } else {
            return Err(XtcError::Layout(format!(
                "{inp}: not a file, a directory, or EXP:RUN"
            )));
        }
    }
    if run.is_none() && !bigdata.is_empty() {
        run = Some(from_files(&bigdata)?);
    }
    Ok(Inputs { files, run })
}

/// `sNNN` for a DAQ-named file (bigdata or small data of stream NNN), else the file name.
fn stream_label(path: &Path) -> String {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    match crate::xtc::run::FileName::parse(name) {
        Some(f) => format!("s{:03}", f.stream),
        None => name.to_string(),
    }
}

/// The human-readable report.
pub fn render_text(s: &Summary) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    for f in &s.files {
        let _ = writeln!(
            o,
            "{}: {} bytes, {} datagrams, {} damaged{}",
            f.path.display(),
            f.bytes,
            f.dgrams,
            f.damaged,
            match &f.truncation {
                Some(t) => format!(
                    ", TRUNCATED at byte {} ({} of {} bytes present)",
                    t.offset, t.available, t.expected
                ),
                None => String::new(),
            }
        );
        let counts: Vec<String> = TransitionId::ALL
            .iter()
            .filter_map(|t| f.transitions.get(t.name()).map(|n| format!("{t} {n}")))
            .collect();
        let _ = writeln!(o, "    {}", counts.join(", "));
    }
    for r in &s.runs {
        let _ = writeln!(
            o,
            "run: expt {} run {}",
            r.expt.as_deref().unwrap_or("?"),
            r.runnum.map_or("?".into(), |n| n.to_string())
        );
    }
    // Entries name their streams (or files) when several declare Names.
    let labels = |d: &DetectorSummary| {
        let mut v: Vec<String> = d.files.iter().map(|f| stream_label(f)).collect();
        v.sort();
        v.dedup();
        v
    };
    let mut all: Vec<String> = s.detectors.iter().flat_map(labels).collect();
    all.sort();
    all.dedup();
    let _ = writeln!(
        o,
        "detectors (one line per Names entry: NamesId (node, index), name (type), alg version):"
    );
    for d in &s.detectors {
        let vars: Vec<String> = d
            .vars
            .iter()
            .take(8)
            .map(|v| {
                format!(
                    "{} {}{}",
                    v.name,
                    v.dtype,
                    if v.rank > 0 {
                        format!("[{}]", v.rank)
                    } else {
                        String::new()
                    }
                )
            })
            .collect();
        let more = d.vars.len().saturating_sub(8);
        let _ = writeln!(
            o,
            "  ({}, {}) {} ({}) {} {} segment {}: {}{}{}",
            d.node,
            d.index,
            d.name,
            d.det_type,
            d.alg,
            d.version,
            d.segment,
            vars.join(", "),
            if more > 0 {
                format!(" … +{more} more")
            } else {
                String::new()
            },
            if all.len() > 1 {
                format!(" [{}]", labels(d).join(", "))
            } else {
                String::new()
            }
        );
    }
    if let Some(evs) = &s.events {
        for e in evs {
            let _ = writeln!(o, "event {}", serde_json::to_string(e).unwrap_or_default());
        }
    }
    o
}
