//! Synthetic runs: S3DF-style XTC2 streams of any preset of the model table (ePix10ka quad and
//! 2M, Jungfrau 0.5M to 16M, ePix100), all or some of its segments, encoded as the hardware does,
//! with the calibration constants, CrystFEL geometry and ground truth that make them a test
//! bench for calibration, peak finding and hit finding.
//!
//! Everything is a pure function of the parameters and the seed: the constants, each event's
//! truth (seeded by (seed, event)) and each segment's noise (seeded by (seed, event, segment)),
//! so the parallel generation writes identical bytes whatever the thread count.

pub mod beamline;
pub mod constants;
pub mod detector_spec;
pub mod encode;
pub mod random;
pub mod run;
pub mod scene;

use crate::detector::constants::text::TextMeta;
pub use beamline::Extras;
pub use constants::{BadPixel, SynthConstants};
pub use detector_spec::{Physics, SynthDetector};
pub use encode::{Encoder, Noise, SegmentInput};
pub use scene::{EventScene, Scene, SceneParams, TruthSpot};

use crate::atomic_file::AtomicFile;
use crate::xtc::XtcError;
use crate::xtc::run::{FileName, xtc_dir};
use rayon::prelude::*;
use run::{Clock, RunWriter, stream_segments};
use serde::Serialize;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Errors of `synth`.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("invalid synth parameters: {0}")]
    Invalid(String),
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error(transparent)]
    Xtc(#[from] XtcError),
    #[error("building a datagram: {0}")]
    Format(#[from] crate::xtc::FormatError),
    #[error("{0}: already exists; synth never overwrites a run (choose another --run or --out)")]
    Exists(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SynthError + '_ {
    move |err| SynthError::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// Writes `path` atomically with `f`.
pub fn atomic_write_with(
    path: &Path,
    f: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<(), SynthError> {
    let mut a = AtomicFile::create(path, ".tmp").map_err(io_err(path))?;
    f(a.writer()).map_err(io_err(path))?;
    a.commit().map_err(io_err(path))?;
    Ok(())
}

/// What to generate.
#[derive(Debug, Clone, Serialize)]
pub struct SynthParams {
    /// Data root; the run goes to `<out>/<hutch>/<exp>/xtc` (not in `synth.json`, which must not
    /// depend on where the run was written).
    #[serde(skip)]
    pub out: PathBuf,
    pub exp: String,
    pub run: u32,
    pub detector: SynthDetector,
    pub events: u64,
    pub streams: usize,
    pub seed: u64,
    /// Fraction of events with Bragg spots.
    pub hit_rate: f64,
    /// A stream starts a new chunk at the first Enable after its chunk exceeds this size.
    pub chunk_bytes: u64,
    /// L1Accepts between Disable/Enable pairs (chunks can only rotate at an Enable).
    pub events_per_enable: u64,
    /// Also write the constants as psana's text `.data` files.
    pub text_constants: bool,
    /// Beamline sources, each in its own stream after the detector's ([`beamline`]).
    pub extras: Extras,
    /// L1Accepts between SlowUpdates (the first comes after half as many).
    pub events_per_slow_update: u64,
}

impl SynthParams {
    /// Defaults for everything but the location and identity of the run.
    pub fn new(out: &Path, exp: &str, run: u32, detector: SynthDetector) -> SynthParams {
        SynthParams {
            out: out.to_path_buf(),
            exp: exp.to_string(),
            run,
            streams: detector.nsegs().min(4),
            detector,
            events: 1000,
            seed: 1,
            hit_rate: 0.3,
            chunk_bytes: 2 << 30,
            events_per_enable: run::EVENTS_PER_ENABLE,
            text_constants: true,
            extras: Extras::default(),
            events_per_slow_update: run::EVENTS_PER_SLOW_UPDATE,
        }
    }

    fn validate(&self) -> Result<(), SynthError> {
        let bad = |m: String| Err(SynthError::Invalid(m));
        if self.exp.len() < 3 || !self.exp.bytes().all(|c| c.is_ascii_alphanumeric()) {
            return bad(format!(
                "experiment {:?} must be at least 3 letters/digits (the hutch is its first three)",
                self.exp
            ));
        }
        let nsegs = self.detector.nsegs();
        if self.streams == 0 || self.streams > nsegs {
            return bad(format!(
                "--streams {} must be between 1 and {nsegs} (the run has {nsegs} segments of the {})",
                self.streams, self.detector
            ));
        }
        if !(0.0..=1.0).contains(&self.hit_rate) {
            return bad(format!("--hit-rate {} must be in [0, 1]", self.hit_rate));
        }
        if self.chunk_bytes == 0 {
            return bad("--chunk-bytes must be positive".into());
        }
        if self.events_per_enable == 0 {
            return bad("--events-per-enable must be positive".into());
        }
        if self.events_per_slow_update < 2 {
            return bad("--events-per-slow-update must be at least 2".into());
        }
        Ok(())
    }

    /// Detector streams plus one per beamline stream.
    pub fn total_streams(&self) -> usize {
        self.streams + self.extras.streams().len()
    }

    /// `<out>/<hutch>/<exp>/xtc`.
    pub fn xtc_dir(&self) -> PathBuf {
        xtc_dir(&self.out, &self.exp)
    }

    /// `<out>/<hutch>/<exp>/synth/r<RRRR>`: constants, geometry, truth, summary.
    pub fn side_dir(&self) -> PathBuf {
        self.xtc_dir()
            .parent()
            .unwrap_or(&self.out)
            .join("synth")
            .join(format!("r{:04}", self.run))
    }
}

/// What `generate` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct SynthSummary {
    pub xtc_files: Vec<PathBuf>,
    pub side_dir: PathBuf,
    pub side_files: Vec<PathBuf>,
    pub events: u64,
    pub hits: u64,
    pub spots: u64,
    pub bad_pixels: usize,
    /// Chunks per stream.
    pub chunks: Vec<u32>,
    /// Datagrams per stream.
    pub dgrams_per_stream: u64,
    pub first_timestamp: u64,
    pub last_timestamp: u64,
}

#[derive(Serialize)]
struct TruthLine<'a> {
    timestamp: u64,
    #[serde(flatten)]
    scene: &'a EventScene,
    #[serde(flatten)]
    beamline: Option<BeamlineTruth<'a>>,
}

/// The beamline values of one event as psana would give them: BLD of the shot, the PV values
/// of the last SlowUpdate before it (`null` before the first), the digitizer record or `null`.
#[derive(Serialize)]
struct BeamlineTruth<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ebeam: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gmd: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epics: Option<serde_json::Value>,
    /// Index of the SlowUpdate whose values are in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    epics_update: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hsd: Option<Option<&'a [beamline::HsdChannel]>>,
}

impl<'a> BeamlineTruth<'a> {
    fn new(e: Extras, ev: &'a beamline::BeamlineEvent, slow: Option<u64>, nominal_ev: f64) -> Self {
        let b = &ev.bld;
        BeamlineTruth {
            ebeam: e.ebeam.then(|| {
                serde_json::json!({
                    "ebeamPhotonEnergy": b.photon_energy_ev,
                    "ebeamCharge": b.charge_nc,
                    "ebeamL3Energy": b.l3_energy_mev,
                })
            }),
            gmd: e.gmd.then(
                || serde_json::json!({"energy": b.gmd_mj, "xpos": b.gmd_xpos, "ypos": b.gmd_ypos}),
            ),
            epics: e.epics.then(|| {
                let values = slow.map(|u| beamline::epics_values(u, nominal_ev));
                beamline::EPICS_PVS
                    .iter()
                    .enumerate()
                    .map(|(k, p)| {
                        let v = values.as_ref().map(|v| v[k].clone());
                        (p.alias.to_string(), serde_json::json!(v))
                    })
                    .collect()
            }),
            epics_update: e.epics.then_some(slow),
            hsd: e.hsd.then_some(ev.hsd.as_deref()),
        }
    }
}

fn check_fresh(p: &SynthParams) -> Result<(), SynthError> {
    let dir = p.xtc_dir();
    for d in [dir.clone(), dir.join("smalldata")] {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            if let Some(f) = name.to_str().and_then(FileName::parse)
                && f.exp == p.exp
                && f.run == p.run
            {
                return Err(SynthError::Exists(e.path()));
            }
        }
    }
    let side = p.side_dir();
    if side.exists() {
        return Err(SynthError::Exists(side));
    }
    Ok(())
}

/// Writes the run, constants, geometry and truth described by `p` (all noise on, default scene).
pub fn generate(p: &SynthParams) -> Result<SynthSummary, SynthError> {
    generate_with(p, SceneParams::default(), Noise::ALL)
}

/// Events rendered together (one raw frame buffer each, two batches alive).
fn batch_size(det: &SynthDetector) -> usize {
    (64 << 20) / (2 * det.frame_len()).max(1)
}

/// [`generate`] with an explicit scene recipe and noise model.
pub fn generate_with(
    p: &SynthParams,
    scene_params: SceneParams,
    noise: Noise,
) -> Result<SynthSummary, SynthError> {
    p.validate()?;
    check_fresh(p)?;
    let det = &p.detector;
    let side = p.side_dir();
    std::fs::create_dir_all(&side).map_err(io_err(&side))?;
    let constants = SynthConstants::generate(det, p.seed);
    let mut clock = Clock::for_run(p.run);
    let meta = TextMeta {
        host: "lclstreamer-synth".into(),
        work_dir: side
            .strip_prefix(&p.out)
            .unwrap_or(&side)
            .to_string_lossy()
            .into_owned(),
        date_time: run::utc_iso8601(clock.unix_secs()),
        uid: "synth".into(),
    };
    let mut side_files = constants.write(&side, p.text_constants.then_some(&meta))?;
    let scene = Scene::new(det, scene_params, p.seed, p.hit_rate);
    let encoder = Encoder::new(&constants);

    let geom_path = side.join("geometry.geom");
    let text = scene.geometry.to_geom_string();
    atomic_write_with(&geom_path, |w| w.write_all(text.as_bytes()))?;
    side_files.push(geom_path);
    let cm_path = side.join("common_mode.json");
    let cm = serde_json::json!({
        "cmpars": det.physics.cmpars,
        "meaning": if det.physics.common_mode_rms > 0.0 {
            "psana cmpars (alg, mode, cormax, npixmin); the synthetic raw data carry an offset per row and bank of 96 columns that these remove"
        } else {
            "psana cmpars (alg, mode, cormax, npixmin); the synthetic raw data carry no common-mode offsets"
        },
    });
    atomic_write_with(&cm_path, |w| {
        serde_json::to_writer_pretty(&mut *w, &cm)?;
        w.write_all(b"\n")
    })?;
    side_files.push(cm_path);

    let nominal_ev = scene.params.photon_kev * 1000.0;
    let setup = (p.extras != Extras::default()).then_some(run::BeamlineSetup {
        extras: p.extras,
        seed: p.seed,
        nominal_ev,
    });
    let mut writer = RunWriter::create(
        &p.xtc_dir(),
        &p.exp,
        p.run,
        det,
        p.streams,
        p.chunk_bytes,
        setup,
    )?;
    let mut slow_update_ts = Vec::new();
    let truth_path = side.join("truth.jsonl");
    let mut truth = AtomicFile::create(&truth_path, ".tmp").map_err(io_err(&truth_path))?;
    let first_timestamp = clock.timestamp();
    use crate::xtc::TransitionId as T;
    for t in [T::Configure, T::BeginRun, T::BeginStep, T::Enable] {
        writer.transition(clock.take(), t)?;
    }

    let n = det.frame_len();
    let batch = batch_size(det).max(1);
    let mut front = vec![0u16; batch * n];
    let mut back = vec![0u16; batch * n];
    let mut pending: Option<Vec<EventScene>> = None;
    let (mut hits, mut spots) = (0u64, 0u64);
    let mut write_batch = |raw: &[u16], scenes: &[EventScene]| -> Result<(), SynthError> {
        for (k, ev) in scenes.iter().enumerate() {
            let e = ev.event;
            if e > 0 && e % p.events_per_enable == 0 {
                writer.transition(clock.take(), T::Disable)?;
                clock.tick += run::PAUSE_TICKS;
                writer.transition(clock.take(), T::Enable)?;
            }
            if e % p.events_per_slow_update == p.events_per_slow_update / 2 {
                let ts = clock.take();
                writer.transition(ts, T::SlowUpdate)?;
                slow_update_ts.push(ts);
            }
            let tick = clock.tick;
            let ts = clock.take();
            let extra =
                setup.map(|s| beamline::BeamlineEvent::new(p.seed, e, nominal_ev, s.extras));
            writer.event(ts, e, tick, &raw[k * n..(k + 1) * n], extra.as_ref())?;
            let slow = writer.slow_updates.checked_sub(1);
            let line = TruthLine {
                timestamp: ts,
                scene: ev,
                beamline: extra
                    .as_ref()
                    .map(|x| BeamlineTruth::new(p.extras, x, slow, nominal_ev)),
            };
            let w = truth.writer();
            serde_json::to_writer(&mut *w, &line).map_err(|e| SynthError::Io {
                path: truth_path.clone(),
                err: e.into(),
            })?;
            w.write_all(b"\n").map_err(io_err(&truth_path))?;
            hits += u64::from(ev.hit);
            spots += ev.spots.len() as u64;
        }
        Ok(())
    };
    let mut start = 0u64;
    while start < p.events {
        let end = (start + batch as u64).min(p.events);
        let scenes: Vec<EventScene> = (start..end)
            .into_par_iter()
            .map(|e| scene.event(e))
            .collect();
        let (_, written) = rayon::join(
            || fill_batch(&scene, &encoder, noise, &scenes, &mut front),
            || match pending.take() {
                Some(prev) => write_batch(&back, &prev),
                None => Ok(()),
            },
        );
        written?;
        std::mem::swap(&mut front, &mut back);
        pending = Some(scenes);
        start = end;
    }
    if let Some(prev) = pending.take() {
        write_batch(&back, &prev)?;
    }
    let mut last_timestamp = first_timestamp;
    for t in [T::Disable, T::EndStep, T::EndRun] {
        last_timestamp = clock.take();
        writer.transition(last_timestamp, t)?;
    }
    let chunks = writer.chunks();
    let dgrams_per_stream = writer.dgrams;
    let xtc_files = writer.finish()?;
    side_files.push(truth.commit().map_err(io_err(&truth_path))?);

    let summary = SynthSummary {
        xtc_files,
        side_dir: side.clone(),
        side_files: side_files.clone(),
        events: p.events,
        hits,
        spots,
        bad_pixels: constants.num_bad(),
        chunks,
        dgrams_per_stream,
        first_timestamp,
        last_timestamp,
    };
    let info_path = side.join("synth.json");
    let mut info = synth_json(p, &scene, &summary);
    if p.extras != Extras::default() {
        info["beamline"] = beamline_json(p, nominal_ev, &slow_update_ts);
    }
    atomic_write_with(&info_path, |w| {
        serde_json::to_writer_pretty(&mut *w, &info)?;
        w.write_all(b"\n")
    })?;
    let mut summary = summary;
    summary.side_files.push(info_path);
    Ok(summary)
}

fn fill_batch(
    scene: &Scene,
    encoder: &Encoder<'_>,
    noise: Noise,
    scenes: &[EventScene],
    raw: &mut [u16],
) {
    let det = &scene.det;
    let nsegs = det.nsegs();
    let photon_kev = scene.params.photon_kev as f32;
    raw[..scenes.len() * det.frame_len()]
        .par_chunks_mut(det.seg_len())
        .enumerate()
        .for_each(|(j, out)| {
            let ev = &scenes[j / nsegs];
            let k = j % nsegs;
            let input = SegmentInput {
                background: scene.segment_background(k),
                background_scale: ev.background_scale as f32,
                spots: &ev.spots,
                photon_kev,
                noise,
            };
            // Noise by segment id: a segment's noise does not depend on the others present.
            let seg = det.segment_id(k) as u64;
            let mut rng = random::substream(scene.seed, 4 + ev.event, seg);
            encoder.encode_segment(k, &input, &mut rng, out);
        });
}

fn beamline_json(p: &SynthParams, nominal_ev: f64, slow_update_ts: &[u64]) -> serde_json::Value {
    let e = p.extras;
    let streams: Vec<serde_json::Value> = e
        .streams()
        .iter()
        .enumerate()
        .map(|(k, s)| serde_json::json!({"stream": p.streams + k, "carries": s}))
        .collect();
    let updates: Vec<serde_json::Value> = slow_update_ts
        .iter()
        .enumerate()
        .map(|(u, ts)| {
            serde_json::json!({"timestamp": ts, "values": beamline::epics_values(u as u64, nominal_ev)})
        })
        .collect();
    serde_json::json!({
        "extras": e,
        "streams": streams,
        "nominal_photon_energy_ev": nominal_ev,
        "ebeam": "detName ebeam, alg raw 2.0.0 (lcls2 EBeamDataV7); ebeamPhotonEnergy (eV) varies per shot",
        "gmd": "detName gmd, alg raw 2.1.0 (lcls2 GmdV1); energy in mJ per pulse",
        "epics_pvs": if e.epics { serde_json::json!(beamline::EPICS_PVS) } else { serde_json::Value::Null },
        "slow_updates": if e.epics { serde_json::json!(updates) } else { serde_json::Value::Null },
        "hsd": if e.hsd {
            serde_json::json!({
                "channels": beamline::HSD_CHANNELS,
                "samples": beamline::HSD_SAMPLES,
                "rate": beamline::HSD_RATE,
                "fex_threshold": beamline::HSD_FEX_THRESHOLD,
                "fex_pad": beamline::HSD_FEX_PAD,
                "layout": "raw: chanNN UINT16 (samples); fex: chanNN_startpos UINT32 (n), chanNN_peaklen UINT32 (n), chanNN_peaks UINT16 (sum of peaklen), peak i = waveform[startpos[i]..][..peaklen[i]]",
            })
        } else { serde_json::Value::Null },
    })
}

fn synth_json(p: &SynthParams, scene: &Scene, s: &SynthSummary) -> serde_json::Value {
    let det = &scene.det;
    let m = &det.model;
    let phys = det.physics;
    let rel = |f: &PathBuf| {
        f.strip_prefix(&p.out)
            .unwrap_or(f)
            .to_string_lossy()
            .into_owned()
    };
    let streams: Vec<Vec<u32>> = (0..p.streams)
        .map(|st| {
            stream_segments(det.nsegs(), p.streams, st)
                .map(|k| m.segments[k])
                .collect()
        })
        .collect();
    serde_json::json!({
        "generator": format!("lclstreamer {} synth", env!("CARGO_PKG_VERSION")),
        "params": p,
        "scene": scene.params,
        "detector": {
            "preset": det.preset.name,
            "family": m.family,
            "det_name": m.det_name,
            "det_type": m.det_type,
            "raw_alg": det.raw_alg().version_string(),
            "full_segments": det.full_segments(),
            "segments": m.segments,
            "segment_shape": [det.rows(), det.cols()],
            "slab_shape": [m.slab_shape().0, m.slab_shape().1],
            "constants_shape": [det.ngr(), det.full_segments(), det.rows(), det.cols()],
            "nominal_gain_adu_per_kev": phys.gains,
            "streams": streams,
            "gain_mode": phys.gain_mode,
            "switch_kev": phys.switch_kev.iter().filter(|k| k.is_finite()).collect::<Vec<_>>(),
            "common_mode_rms_adu": phys.common_mode_rms,
            "pixel_status": {"1": "hot", "2": "dead (ADC 0)", "4": "stuck (ADC 0x3FFF)"},
        },
        "counts": {
            "events": s.events,
            "hits": s.hits,
            "spots": s.spots,
            "bad_pixels": s.bad_pixels,
            "dgrams_per_stream": s.dgrams_per_stream,
            "chunks_per_stream": s.chunks,
        },
        "first_timestamp": s.first_timestamp,
        "last_timestamp": s.last_timestamp,
        "xtc_files": s.xtc_files.iter().map(rel).collect::<Vec<_>>(),
        "side_files": s.side_files.iter().map(rel).collect::<Vec<_>>(),
    })
}
