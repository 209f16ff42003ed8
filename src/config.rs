//! The job's YAML configuration: schema, strict validation (unknown keys are errors naming the
//! key path and line), and command-line overrides.

use crate::algo::peakfinder8::Pf8Params;
use crate::detector::model::Kind;
use crate::output::{Compression, Layout};
use crate::serialize::Format;
use crate::transport::{Distribute, Pattern, Role as SinkRole};
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};

/// Deserialises a value written as a string in its `FromStr` form (`zstd:3`).
fn parsed<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    String::deserialize(d)?
        .parse()
        .map_err(serde::de::Error::custom)
}

/// What a sink does with a message no consumer takes in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    /// Wait (up to `block_timeout` for NNG).
    #[default]
    Block,
    /// Write it into `spill_dir`.
    Spill,
    /// Count it and go on.
    Drop,
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub source: Source,
    #[serde(default)]
    pub detector: DetectorConfig,
    /// Per-event values forwarded beside (or instead of) the detector's frames.
    #[serde(default)]
    pub data: Vec<DataEntry>,
    #[serde(default)]
    pub processing: Processing,
    pub output: Output,
    #[serde(default)]
    pub parallel: Parallel,
    /// The live web monitor on rank 0; off when absent.
    #[serde(default)]
    pub monitor: Option<crate::monitor::MonitorConfig>,
}

/// Where the events come from.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Experiment name (with `run` and `root`), e.g. `mfxl1038923`.
    pub exp: Option<String>,
    pub run: Option<u32>,
    /// Data root laid out as at S3DF (`<root>/<hutch>/<exp>/xtc`).
    pub root: Option<PathBuf>,
    /// Explicit bigdata files (`-c000`) instead of exp/run/root.
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// Detector name (`detName`) whose raw frames are processed; absent when only `data` is
    /// forwarded.
    pub detector: Option<String>,
    /// Stop after this many events.
    pub max_events: Option<u64>,
    /// Index from small data when present (default true).
    #[serde(default = "yes")]
    pub use_smalldata: bool,
    /// Follow a run while the DAQ writes it (needs `exp`, `run` and `root`): the job waits for
    /// data and ends at EndRun, or after `live_idle_timeout` seconds without new data.
    #[serde(default)]
    pub live: bool,
    /// Live: streams to wait for before any event is built (default: those present once the
    /// first stream's Configure is written).
    pub live_streams: Option<usize>,
    /// Live: seconds without a new datagram before the job ends (also the longest wait for the
    /// run's files and for a payload being written; default 60, psana's `PS_R_MAX_RETRIES`).
    #[serde(default = "live_idle")]
    pub live_idle_timeout: f64,
    /// Live: seconds after which a partial batch is sent (default 0.5).
    #[serde(default = "live_flush")]
    pub live_flush: f64,
}

fn yes() -> bool {
    true
}
fn live_idle() -> f64 {
    60.0
}
fn live_flush() -> f64 {
    0.5
}

impl Source {
    /// The live idle timeout.
    pub fn idle_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.live_idle_timeout)
    }

    /// Checks the live keys.
    pub fn check_live(&self) -> anyhow::Result<()> {
        let live_keys = self.live_streams.is_some()
            || self.live_idle_timeout != live_idle()
            || self.live_flush != live_flush();
        if !self.live {
            if live_keys {
                anyhow::bail!("source: live_* keys need `live: true`");
            }
            return Ok(());
        }
        if !self.files.is_empty() || self.exp.is_none() || self.run.is_none() || self.root.is_none()
        {
            anyhow::bail!("source.live: give `exp`, `run` and `root` (not `files`)");
        }
        for (k, v) in [
            ("live_idle_timeout", self.live_idle_timeout),
            ("live_flush", self.live_flush),
        ] {
            if !(v > 0.0 && v.is_finite() && v < 1e6) {
                anyhow::bail!("source.{k}: {v} is not a positive number of seconds");
            }
        }
        if self.live_streams == Some(0) {
            anyhow::bail!("source.live_streams: at least 1");
        }
        Ok(())
    }
}

/// The detector's calibration inputs.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// A check of what the run declares: a family (`epix10ka`, `jungfrau`, `epix100`, `raw`) or
    /// a named detector (`epix10k2M`, `jungfrau16M`, …); absent = whatever the run holds.
    pub kind: Option<Kind>,
    /// Directory of psana-shaped constants (`pedestals.npy`, `pixel_gain.npy`, ...); absent for
    /// a raw pass-through detector without pedestals.
    pub constants: Option<PathBuf>,
    /// CrystFEL `.geom` of the slab, or psana geometry text (laid out for the segments the run
    /// holds); needed for peak finding.
    pub geometry: Option<PathBuf>,
    /// Optional user mask `.npy` (non-zero = good), psana segment shape.
    pub mask: Option<PathBuf>,
    /// psana common-mode parameters, e.g. `[7, 2, 100, 10]`; absent = none.
    pub common_mode: Option<Vec<f64>>,
}

/// Which events are sent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Keep {
    #[default]
    Hits,
    All,
}

/// Which frame goes with each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Send {
    #[default]
    Calibrated,
    Raw,
    None,
}

/// One optional processing step of the detector's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Raw → calibrated frames (needs `detector.constants`).
    Calibrate,
    /// Peak finding on the calibrated frames (needs `detector.geometry`).
    Peakfinder8,
    /// Sends only hits (needs `peakfinder8`).
    HitFilter,
}

/// `processing.steps`: a list of steps, or `none` (raw forwarding of every event).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Steps {
    List(Vec<Step>),
    Word(StepsWord),
}

/// The one word `processing.steps` may be instead of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepsWord {
    None,
}

/// What a data entry's value is to CrystFEL in the CXI layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Also `/LCLS/photon_energy_eV`.
    #[serde(rename = "photon_energy_eV")]
    PhotonEnergyEv,
    /// Also `/LCLS/detector_1/EncoderValue`.
    DetectorDistance,
}

impl Role {
    /// The alias path under `/LCLS` in the CXI layout.
    pub fn cxi_path(self) -> &'static str {
        match self {
            Role::PhotonEnergyEv => "photon_energy_eV",
            Role::DetectorDistance => "detector_1/EncoderValue",
        }
    }
}

/// Whether a data entry is a per-event value or a run-level attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// One value per event (held from the last transition that carried it when the event does
    /// not), with a presence flag.
    #[default]
    Event,
    /// One value per run: the last one carried before the first event, as an attribute.
    Run,
}

/// One selected value: a detector variable (`detector`, `var`, optional `alg`, `segment`) or
/// an EPICS PV (`pv`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataEntry {
    /// Dataset name in the batches.
    pub name: String,
    /// `detName` of the Names that declares the variable.
    pub detector: Option<String>,
    /// Algorithm name (`raw`, `fex`, `config`, …); any when absent.
    pub alg: Option<String>,
    /// Variable name.
    pub var: Option<String>,
    /// Segment; needed when the variable is declared for several.
    pub segment: Option<u32>,
    /// EPICS PV name (or its alias in the `epics` Names).
    pub pv: Option<String>,
    pub role: Option<Role>,
    #[serde(default)]
    pub scope: Scope,
    /// Value stored for events without it (default NaN for floats, 0 for integers, "" for
    /// strings); the `<name>_present` flag tells such events apart.
    pub fill: Option<f64>,
    /// Store the values flat with per-event offsets even when their shapes agree.
    #[serde(default)]
    pub ragged: bool,
}

/// Names the batches use themselves.
pub const RESERVED_NAMES: [&str; 6] = [
    "timestamp",
    "event_index",
    "run",
    "experiment",
    "hit",
    "n_peaks",
];

impl DataEntry {
    /// Checks the entry alone; `at` names it in messages (`data[2]`).
    fn check(&self, at: &str) -> anyhow::Result<()> {
        let n = &self.name;
        if n.is_empty()
            || n.contains('/')
            || n.contains('.')
            || RESERVED_NAMES.contains(&n.as_str())
            || crate::output::FIELD_SUFFIXES.iter().any(|s| n.ends_with(s))
        {
            anyhow::bail!(
                "{at}.name {n:?}: must be non-empty, without '/' or '.', not one of \
                 {RESERVED_NAMES:?} and not end in {:?}",
                crate::output::FIELD_SUFFIXES
            );
        }
        match (&self.pv, &self.detector, &self.var) {
            (Some(_), None, None) if self.alg.is_none() && self.segment.is_none() => {}
            (Some(_), ..) => {
                anyhow::bail!("{at} ({n}): `pv` stands alone (no detector, alg, var or segment)")
            }
            (None, Some(_), Some(_)) => {}
            (None, ..) => anyhow::bail!("{at} ({n}): give `detector` and `var`, or `pv`"),
        }
        if self.role.is_some() && self.scope == Scope::Run {
            anyhow::bail!("{at} ({n}): a `role` needs scope event");
        }
        Ok(())
    }
}

impl Config {
    /// Checks the `data` entries and the processing steps against the rest of the
    /// configuration; errors name the key.
    pub fn check_selection(&self) -> anyhow::Result<()> {
        let mut seen = std::collections::HashSet::new();
        let mut roles = std::collections::HashSet::new();
        for (i, e) in self.data.iter().enumerate() {
            let at = format!("data[{i}]");
            e.check(&at)?;
            if !seen.insert(e.name.as_str()) {
                anyhow::bail!("{at}.name {:?}: used twice", e.name);
            }
            if let Some(r) = e.role
                && !roles.insert(r)
            {
                anyhow::bail!("{at}.role {r:?}: given twice");
            }
        }
        if self.source.detector.is_none() && self.data.is_empty() {
            anyhow::bail!("source.detector: give a detector, or `data` entries to forward");
        }
        self.steps()?;
        Ok(())
    }

    /// The processing steps in force: `processing.steps`, or without it today's defaults
    /// (calibrate when there are constants, peak finding when there is also a geometry, hit
    /// filtering when `keep: hits`).
    pub fn steps(&self) -> anyhow::Result<Vec<Step>> {
        let p = &self.processing;
        let d = &self.detector;
        let steps = match &p.steps {
            Some(Steps::Word(StepsWord::None)) => Vec::new(),
            Some(Steps::List(l)) => {
                if p.keep.is_some() {
                    anyhow::bail!(
                        "processing.keep: give hit_filter in processing.steps instead (not both)"
                    );
                }
                l.clone()
            }
            None if self.source.detector.is_none() => Vec::new(),
            None => {
                let mut v = Vec::new();
                if d.constants.is_some() {
                    v.push(Step::Calibrate);
                    if d.geometry.is_some() {
                        v.push(Step::Peakfinder8);
                    }
                }
                if p.keep.unwrap_or_default() == Keep::Hits {
                    if !v.contains(&Step::Peakfinder8) {
                        anyhow::bail!(
                            "processing.keep: hits needs peak finding, which needs \
                             detector.geometry{}; or set keep: all",
                            if d.constants.is_none() {
                                " and pedestals"
                            } else {
                                ""
                            }
                        );
                    }
                    v.push(Step::HitFilter);
                }
                v
            }
        };
        if self.source.detector.is_none() && !steps.is_empty() {
            anyhow::bail!("processing.steps {steps:?}: need source.detector");
        }
        let has = |s: Step| steps.contains(&s);
        if has(Step::Calibrate) && d.constants.is_none() {
            anyhow::bail!("processing.steps: calibrate needs detector.constants");
        }
        if has(Step::Peakfinder8) && !(has(Step::Calibrate) && d.geometry.is_some()) {
            anyhow::bail!("processing.steps: peakfinder8 needs calibrate and detector.geometry");
        }
        if has(Step::HitFilter) && !has(Step::Peakfinder8) {
            anyhow::bail!("processing.steps: hit_filter needs peakfinder8");
        }
        if p.send == Some(Send::Calibrated) && !has(Step::Calibrate) {
            anyhow::bail!("processing.send: calibrated needs the calibrate step");
        }
        if self.source.detector.is_none() && matches!(p.send, Some(Send::Raw | Send::Calibrated)) {
            anyhow::bail!("processing.send: frames need source.detector");
        }
        Ok(steps)
    }

    /// The frame each event carries: `processing.send`, or calibrated when calibrating, raw
    /// when a detector is given, none otherwise.
    pub fn send(&self) -> Send {
        match self.processing.send {
            Some(s) => s,
            None if self.source.detector.is_none() => Send::None,
            None if self.steps().is_ok_and(|s| s.contains(&Step::Calibrate)) => Send::Calibrated,
            None => Send::Raw,
        }
    }
}

/// Per-event processing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Processing {
    /// Steps to run, in order: `[calibrate, peakfinder8, hit_filter]` or `none`; absent =
    /// today's defaults (see [`Config::steps`]).
    pub steps: Option<Steps>,
    /// OM's parameter names; `om_bit_exact: true` reproduces OM's f32 statistics bit for bit.
    #[serde(default)]
    pub peakfinder8: Pf8Params,
    #[serde(default = "min_peaks")]
    pub min_num_peaks_for_hit: usize,
    #[serde(default = "max_peaks")]
    pub max_num_peaks_for_hit: usize,
    /// Without `steps`: `hits` (default) or `all`.
    pub keep: Option<Keep>,
    /// `calibrated`, `raw` or `none`; absent = see [`Config::send`].
    pub send: Option<Send>,
    /// AI-ready images instead of the calibrated slab; absent = off.
    #[serde(default)]
    pub image: Option<ImageConfig>,
}

/// Element type of assembled images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ImageDtype {
    #[default]
    Float32,
    Float16,
}

/// The calibrated frame assembled with the detector geometry (gaps 0), padded or cropped to
/// `height × width`, with a channel axis: LCLStreamer's `PeaknetPreprocessingPipeline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// Target rows (with `width`); absent = the assembled size.
    pub height: Option<usize>,
    pub width: Option<usize>,
    #[serde(default)]
    pub pad_style: crate::detector::assemble::PadStyle,
    /// `(C, H, W)` per event (default); false = `(H, W)`.
    #[serde(default = "yes")]
    pub add_channel_dim: bool,
    /// Copies of the image along the channel axis.
    #[serde(default = "one")]
    pub num_channels: usize,
    #[serde(default)]
    pub dtype: ImageDtype,
}

fn one() -> usize {
    1
}

fn min_peaks() -> usize {
    10
}
fn max_peaks() -> usize {
    5000
}

impl Default for Processing {
    fn default() -> Self {
        Self {
            steps: None,
            peakfinder8: Pf8Params::default(),
            min_num_peaks_for_hit: min_peaks(),
            max_num_peaks_for_hit: max_peaks(),
            keep: None,
            send: None,
            image: None,
        }
    }
}

/// One destination of the writers, chosen by its `kind` key.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    /// NNG Push0 to consumers.
    Nng {
        urls: Vec<String>,
        /// `dial` (default) or `listen`.
        #[serde(default)]
        mode: Option<SinkRole>,
        /// `block` (default), `spill` (needs `spill_dir`) or `drop`.
        #[serde(default)]
        policy: Option<PolicyKind>,
        spill_dir: Option<PathBuf>,
        /// Send timeout in seconds before the policy applies.
        send_timeout: Option<f64>,
        /// `by_rank` (default) or `round_robin`.
        distribute: Option<Distribute>,
        /// Under `block`: seconds one message may wait for a consumer before the job stops
        /// with an error (default 600; 0 waits for ever).
        block_timeout: Option<f64>,
        /// Largest message sent: bigger batches are split, a bigger single event is refused.
        max_message_bytes: Option<usize>,
        /// Seconds `finish` waits for the end-of-stream delivery (spill, drop) and for
        /// consumers to disconnect (default 30).
        linger: Option<f64>,
    },
    /// ZeroMQ PUSH, PUB or REP to consumers, in the sink's message format.
    Zmq {
        urls: Vec<String>,
        /// `push` (default), `pub` or `rep` (each request `next` gets the next message).
        #[serde(default)]
        pattern: Option<Pattern>,
        /// `dial` (connect, default) or `listen` (bind).
        #[serde(default)]
        mode: Option<SinkRole>,
        /// `block` (default), `spill` (needs `spill_dir`) or `drop`.
        #[serde(default)]
        policy: Option<PolicyKind>,
        spill_dir: Option<PathBuf>,
        /// Send timeout in seconds before the policy applies.
        send_timeout: Option<f64>,
        /// `by_rank` (default) or `round_robin`.
        distribute: Option<Distribute>,
        /// Send high-water mark in messages (default 2).
        hwm: Option<i32>,
        /// Seconds `finish` waits for the end-of-stream delivery and for consumers to leave.
        linger: Option<f64>,
        /// `hdf5` (default), `stream2`, `simplon` or `msgpack`.
        format: Option<Format>,
        /// Simplon: prefix messages with one byte `c`/`m` as LCLStreamer before PR #51 did.
        #[serde(default)]
        simplon_prefix: bool,
        /// Photon energy (eV) for events without a `photon_energy_eV` scalar (event formats).
        photon_energy_ev: Option<f64>,
    },
    /// `.h5` files in a directory.
    Files { dir: PathBuf },
}

/// Batching, layout, compression and sinks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    #[serde(default = "batch_size")]
    pub batch_size: usize,
    /// `cxi` (default) or `lclstreamer`.
    #[serde(default)]
    pub layout: Layout,
    /// `bitshuffle_lz4` (default), `zstd[:L]`, `gzip[:L]`, `bitshuffle_zstd[:L]`, `none`.
    #[serde(default, deserialize_with = "parsed")]
    pub compression: Compression,
    pub sinks: Vec<SinkConfig>,
}

fn batch_size() -> usize {
    16
}

/// Rank layout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parallel {
    /// Writer ranks; default one per 4 workers when frames are sent, one per 48 without
    /// (`job::layout::WORKERS_PER_WRITER`), at least one.
    pub writers: Option<usize>,
    /// Events per work unit handed to a worker.
    #[serde(default = "unit")]
    pub events_per_unit: usize,
}

fn unit() -> usize {
    4
}

impl Default for Parallel {
    fn default() -> Self {
        Self {
            writers: None,
            events_per_unit: unit(),
        }
    }
}

/// Values the command line may override.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub exp: Option<String>,
    pub run: Option<u32>,
    pub root: Option<PathBuf>,
    pub max_events: Option<u64>,
    /// Follow the run while it is written (sets source.live).
    pub live: bool,
}

impl Config {
    /// Parses YAML text; `name` is used in messages. Relative paths are resolved against `base`.
    pub fn parse(text: &str, name: &str, base: &Path) -> anyhow::Result<Config> {
        let de = serde_yaml::Deserializer::from_str(text);
        let mut cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            if inner.contains(&path) {
                anyhow::anyhow!("{name}: {inner}")
            } else {
                anyhow::anyhow!("{name}: at `{path}`: {inner}")
            }
        })?;
        cfg.resolve_paths(base);
        cfg.check_selection()
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        Ok(cfg)
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, &path.display().to_string(), base)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        if let Some(r) = &mut self.source.root {
            fix(r);
        }
        self.source.files.iter_mut().for_each(fix);
        let d = &mut self.detector;
        for p in [&mut d.constants, &mut d.geometry, &mut d.mask]
            .into_iter()
            .flatten()
        {
            fix(p);
        }
        for s in &mut self.output.sinks {
            match s {
                SinkConfig::Files { dir } => fix(dir),
                SinkConfig::Nng { spill_dir, .. } | SinkConfig::Zmq { spill_dir, .. } => {
                    if let Some(d) = spill_dir {
                        fix(d);
                    }
                }
            }
        }
    }

    /// Applies command-line overrides.
    pub fn apply(&mut self, o: &Overrides) {
        if let Some(e) = &o.exp {
            self.source.exp = Some(e.clone());
        }
        if o.run.is_some() {
            self.source.run = o.run;
        }
        if let Some(r) = &o.root {
            self.source.root = Some(r.clone());
        }
        if o.max_events.is_some() {
            self.source.max_events = o.max_events;
        }
        self.source.live |= o.live;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Config> {
        Config::parse(text, "test.yaml", Path::new("/base"))
    }

    #[test]
    fn shipped_configs_parse() {
        for f in [
            "demo.yaml",
            "mfx-epix10k2m.yaml",
            "cxi-jungfrau4m.yaml",
            "mfx-jungfrau16m.yaml",
            "peaknet-epix10k2m.yaml",
            "tmo-hsd-waveforms.yaml",
        ] {
            let p = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("configs")
                .join(f);
            Config::load(&p).unwrap_or_else(|e| panic!("{f}: {e:#}"));
        }
    }

    #[test]
    fn unknown_keys_name_their_path_and_line() {
        let e = parse("source:\n  detector: d\ndetector:\n  kind: epix10k2M\n  constants: c\n  geometry: g\n  gain: 3\noutput:\n  sinks: []\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("detector") && e.contains("gain") && e.contains("line 7"),
            "{e}"
        );
        let e = parse("source: {detector: d}\ndetector: {kind: pnccd, constants: c, geometry: g}\noutput: {sinks: []}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pnccd"), "{e}");
    }

    #[test]
    fn relative_paths_and_overrides() {
        let mut c = parse("source: {detector: d, root: data}\ndetector: {kind: jungfrau4M, constants: c, geometry: /abs/g.geom}\noutput:\n  sinks:\n    - {kind: files, dir: out}\n").unwrap();
        assert_eq!(c.detector.constants.as_deref(), Some(Path::new("/base/c")));
        assert_eq!(
            c.detector.geometry.as_deref(),
            Some(Path::new("/abs/g.geom"))
        );
        assert_eq!(c.detector.kind, Some(Kind::Preset("jungfrau4M")));
        assert_eq!(c.processing.keep, None);
        c.apply(&Overrides {
            exp: Some("cxi1".into()),
            run: Some(9),
            root: None,
            max_events: Some(5),
            live: true,
        });
        assert!(c.source.live);
        assert!(c.source.check_live().is_ok());
        assert_eq!(
            (c.source.exp.as_deref(), c.source.run, c.source.max_events),
            (Some("cxi1"), Some(9), Some(5))
        );
        assert_eq!(c.source.root.as_deref(), Some(Path::new("/base/data")));
    }

    #[test]
    fn steps_default_from_the_older_keys_and_are_checked() {
        let base =
            "source: {detector: d}\ndetector: {constants: c, geometry: g}\noutput: {sinks: []}\n";
        let c = parse(base).unwrap();
        assert_eq!(
            c.steps().unwrap(),
            [Step::Calibrate, Step::Peakfinder8, Step::HitFilter]
        );
        assert_eq!(c.send(), Send::Calibrated);
        let c = parse(&format!("{base}processing: {{steps: none}}\n")).unwrap();
        assert!(c.steps().unwrap().is_empty());
        assert_eq!(c.send(), Send::Raw);
        for (p, want) in [
            ("{steps: [peakfinder8]}", "peakfinder8 needs calibrate"),
            (
                "{steps: [calibrate, hit_filter]}",
                "hit_filter needs peakfinder8",
            ),
            ("{steps: [calibrate], keep: all}", "processing.keep"),
            ("{steps: none, send: calibrated}", "calibrated needs"),
            ("{steps: [calibrat]}", "processing.steps"),
        ] {
            let e = parse(&format!("{base}processing: {p}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{p}: {e}");
        }
        let e = parse("source: {detector: d}\ndetector: {constants: c}\noutput: {sinks: []}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("keep: hits needs peak finding"), "{e}");
    }

    #[test]
    fn data_entries_are_checked_and_the_detector_may_be_absent() {
        let c = parse("source: {files: [f]}\ndata: [{name: e, pv: X, role: photon_energy_eV}]\noutput: {sinks: []}\n").unwrap();
        assert_eq!(c.source.detector, None);
        assert!(c.steps().unwrap().is_empty());
        assert_eq!(c.send(), Send::None);
        assert_eq!(c.data[0].role.map(Role::cxi_path), Some("photon_energy_eV"));
        for (d, want) in [
            ("[]", "source.detector"),
            ("[{name: a, pv: X}, {name: a, pv: Y}]", "used twice"),
            ("[{name: a, detector: d}]", "give `detector` and `var`"),
            ("[{name: a_present, pv: X}]", "_present"),
            (
                "[{name: a, pv: X, scope: run, role: detector_distance}]",
                "role",
            ),
            ("[{name: a, pv: X, colour: red}]", "colour"),
        ] {
            let e = parse(&format!(
                "source: {{files: [f]}}\ndata: {d}\noutput: {{sinks: []}}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(e.contains(want), "{d}: {e}");
        }
    }
}
