//! A worker's per-event pipeline: read the event's datagrams, assemble the detector slab from
//! its segments, calibrate, run peakfinder8 and decide the hit.

use super::messages::{EventDesc, FrameMsg, RecordMsg};
use crate::algo::hit::HitCriteria;
use crate::algo::peakfinder8::{PeakFinder8, PeakList, Pf8Params};
use crate::config::{Config, DetectorKind, Keep, Send};
use crate::detector::calib::Calibrator;
use crate::detector::common_mode::CommonModeParams;
use crate::detector::constants::{ConstantFiles, GainConstants, read_checked};
use crate::detector::epix10ka::{self, PanelConfig};
use crate::detector::geometry::Geometry;
use crate::detector::jungfrau;
use crate::xtc::{Dgram, NamesLookup, TransitionId, read_dgram_at};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::PathBuf;

/// Segment count and shape of each detector model.
pub fn model(kind: DetectorKind) -> (usize, usize, usize, usize) {
    match kind {
        DetectorKind::Epix10k2M => (
            epix10ka::NUM_GAIN_RANGES,
            16,
            epix10ka::ROWS,
            epix10ka::COLS,
        ),
        DetectorKind::Jungfrau4M => (jungfrau::NUM_GAIN_RANGES, 8, jungfrau::ROWS, jungfrau::COLS),
    }
}

/// What does not change during a run: constants, geometry, parameters.
pub struct Static {
    pub kind: DetectorKind,
    pub detector: String,
    pub constants: GainConstants,
    pub geometry: Geometry,
    pub radius: Vec<f32>,
    pub user_mask: Option<Vec<u8>>,
    pub cm: Option<CommonModeParams>,
    pub pf8: Pf8Params,
    pub hit: HitCriteria,
    pub keep: Keep,
    pub send: Send,
}

impl Static {
    /// Loads and checks everything a worker needs; errors name the offending file.
    pub fn load(cfg: &Config) -> anyhow::Result<Static> {
        let kind = cfg.detector.kind;
        let (ngr, nsegs, rows, cols) = model(kind);
        let files = ConstantFiles::in_dir(&cfg.detector.constants);
        let constants = GainConstants::load(&files, ngr, nsegs, rows, cols)?;
        let geometry = Geometry::from_file(&cfg.detector.geometry)?;
        let (h, w) = geometry.slab_shape();
        if h * w != nsegs * rows * cols {
            anyhow::bail!(
                "{}: slab {h}x{w} does not hold {nsegs} segments of {rows}x{cols}",
                cfg.detector.geometry.display()
            );
        }
        geometry.layout(&cfg.detector.geometry.display().to_string())?;
        let user_mask = match &cfg.detector.mask {
            Some(p) => Some(
                read_checked(p, "mask", &[nsegs, rows, cols])?
                    .iter()
                    .map(|&v| u8::from(v != 0.0))
                    .collect(),
            ),
            None => None,
        };
        let cm = match &cfg.detector.common_mode {
            Some(v) => Some(CommonModeParams::from_psana(v).ok_or_else(|| {
                anyhow::anyhow!("detector.common_mode {v:?}: need (alg, mode, cormax[, npixmin])")
            })?),
            None => None,
        };
        let pf8 = cfg.processing.peakfinder8;
        Ok(Static {
            kind,
            detector: cfg.source.detector.clone(),
            radius: geometry.radius_map(),
            constants,
            geometry,
            user_mask,
            cm,
            pf8,
            hit: HitCriteria {
                min_num_peaks_for_hit: cfg.processing.min_num_peaks_for_hit,
                max_num_peaks_for_hit: cfg.processing.max_num_peaks_for_hit,
            },
            keep: cfg.processing.keep,
            send: cfg.processing.send,
        })
    }
}

/// What a Configure defines: per-stream schemas and the detector's segments.
pub struct Configured {
    pub lookups: HashMap<u32, NamesLookup>,
    /// Slab position of each segment number.
    pub seg_index: BTreeMap<u32, usize>,
    pub configs: Vec<PanelConfig>,
}

impl Configured {
    /// Reads the per-stream Configure datagrams.
    pub fn from_configure(
        st: &Static,
        per_stream: &[(u32, Vec<u8>)],
    ) -> anyhow::Result<Configured> {
        let mut lookups = HashMap::new();
        let mut segs = Vec::new();
        let mut cfgs: BTreeMap<u32, PanelConfig> = BTreeMap::new();
        for (stream, bytes) in per_stream {
            let d = Dgram::parse(bytes, 0)
                .map_err(|e| anyhow::anyhow!("stream {stream} Configure: {e}"))?;
            let lookup = NamesLookup::from_configure(&d.root())
                .map_err(|e| anyhow::anyhow!("stream {stream} Configure: {e}"))?;
            for (_, s) in lookup.entries() {
                if s.det_name == st.detector && s.alg.name == "raw" {
                    segs.push(s.segment);
                }
            }
            for b in d
                .blocks(&lookup)
                .map_err(|e| anyhow::anyhow!("stream {stream} Configure: {e}"))?
            {
                if b.schema.det_name != st.detector || b.schema.alg.name != "config" {
                    continue;
                }
                if let (Some(apc), Some(tr)) = (b.var("asicPixelConfig"), b.var("trbit")) {
                    let apc = apc.elements::<u8>().unwrap_or_default();
                    let tr = tr.elements::<u8>().unwrap_or_default();
                    let seg = b.schema.segment;
                    cfgs.insert(seg, PanelConfig::new(seg as usize, &apc, &tr)?);
                }
            }
            lookups.insert(*stream, lookup);
        }
        segs.sort_unstable();
        segs.dedup();
        let (_, nsegs, _, _) = model(st.kind);
        if segs.len() != nsegs {
            anyhow::bail!(
                "the Configure declares {} raw segments of detector {:?} ({segs:?}); a {:?} has {nsegs}",
                segs.len(),
                st.detector,
                st.kind
            );
        }
        let seg_index = segs.iter().enumerate().map(|(i, &s)| (s, i)).collect();
        let configs = match st.kind {
            DetectorKind::Epix10k2M => segs
                .iter()
                .map(|s| {
                    cfgs.remove(s).ok_or_else(|| {
                        anyhow::anyhow!(
                            "the Configure has no asicPixelConfig/trbit for segment {s}"
                        )
                    })
                })
                .collect::<anyhow::Result<_>>()?,
            DetectorKind::Jungfrau4M => Vec::new(),
        };
        Ok(Configured {
            lookups,
            seg_index,
            configs,
        })
    }
}

/// Why an event could not be processed.
#[derive(Debug)]
pub struct Damaged(pub String);

/// One thread's calibrator, peak finder and buffers (reused for every event).
pub struct Processor {
    calib: Calibrator,
    pf8: PeakFinder8,
    raw: Vec<u16>,
    cal: Vec<f32>,
    peaks: PeakList,
    buf: Vec<u8>,
    filled: Vec<bool>,
}

/// Per-event timings in nanoseconds: read, calibrate, peak find.
pub type Timings = (u64, u64, u64);

impl Processor {
    /// Builds the calibrator and peak finder for the configuration in force.
    pub fn new(st: &Static, conf: &Configured) -> anyhow::Result<Processor> {
        let calib = match st.kind {
            DetectorKind::Epix10k2M => {
                Calibrator::epix10ka(&st.constants, &conf.configs, st.user_mask.as_deref(), st.cm)?
            }
            DetectorKind::Jungfrau4M => {
                Calibrator::jungfrau(&st.constants, st.user_mask.as_deref(), st.cm)?
            }
        };
        let name = "geometry";
        let layout = st.geometry.layout(name)?;
        let pf8 = PeakFinder8::new(st.pf8, layout, &st.radius, Some(calib.mask()))?;
        let n = calib.frame_len();
        Ok(Processor {
            calib,
            pf8,
            raw: vec![0; n],
            cal: vec![0.0; n],
            peaks: PeakList::with_capacity(st.pf8.max_num_peaks),
            buf: Vec::new(),
            filled: Vec::new(),
        })
    }

    /// Processes one event; `Ok(None)` when it is not kept.
    pub fn process(
        &mut self,
        st: &Static,
        conf: &Configured,
        files: &HashMap<(u32, u32), (PathBuf, File)>,
        ev: &EventDesc,
        timings: &mut Timings,
    ) -> Result<(Option<RecordMsg>, bool, usize), Damaged> {
        let t0 = std::time::Instant::now();
        let seg_len = self.calib.segment_shape().0 * self.calib.segment_shape().1;
        self.filled.clear();
        self.filled.resize(conf.seg_index.len(), false);
        for part in &ev.parts {
            let (path, file) = files.get(&(part.stream, part.chunk)).ok_or_else(|| {
                Damaged(format!(
                    "no file for stream {} chunk {}",
                    part.stream, part.chunk
                ))
            })?;
            let d = read_dgram_at(file, path, part.offset, part.size, &mut self.buf)
                .map_err(|e| Damaged(e.to_string()))?;
            if d.service() != TransitionId::L1Accept || d.header.timestamp != ev.timestamp {
                return Err(Damaged(format!(
                    "{} byte {}: expected the L1Accept with key 0x{:016X}",
                    path.display(),
                    part.offset,
                    ev.timestamp
                )));
            }
            if d.damaged() {
                return Err(Damaged(format!(
                    "{} byte {}: damage 0x{:04X}",
                    path.display(),
                    part.offset,
                    d.header.root.damage.0
                )));
            }
            let Some(lookup) = conf.lookups.get(&part.stream) else {
                return Err(Damaged(format!(
                    "stream {} was never configured",
                    part.stream
                )));
            };
            let blocks = d
                .blocks(lookup)
                .map_err(|e| Damaged(format!("{}: {e}", path.display())))?;
            for b in blocks {
                if b.schema.det_name != st.detector || b.schema.alg.name != "raw" {
                    continue;
                }
                let Some(&i) = conf.seg_index.get(&b.schema.segment) else {
                    continue;
                };
                let px = b
                    .var("raw")
                    .and_then(|v| v.elements::<u16>())
                    .filter(|px| px.len() == seg_len)
                    .ok_or_else(|| {
                        Damaged(format!(
                            "segment {} raw is not {seg_len} UINT16",
                            b.schema.segment
                        ))
                    })?;
                self.raw[i * seg_len..(i + 1) * seg_len].copy_from_slice(&px);
                self.filled[i] = true;
            }
        }
        if let Some(missing) = self.filled.iter().position(|f| !f) {
            return Err(Damaged(format!(
                "segment at slab position {missing} missing"
            )));
        }
        let t1 = std::time::Instant::now();
        self.calib
            .calibrate_slab(&self.raw, &mut self.cal)
            .map_err(|e| Damaged(e.to_string()))?;
        let t2 = std::time::Instant::now();
        self.pf8
            .find(&self.cal, &mut self.peaks)
            .map_err(|e| Damaged(e.to_string()))?;
        let t3 = std::time::Instant::now();
        timings.0 += (t1 - t0).as_nanos() as u64;
        timings.1 += (t2 - t1).as_nanos() as u64;
        timings.2 += (t3 - t2).as_nanos() as u64;
        let n = self.peaks.len();
        let hit = st.hit.is_hit(n);
        if !hit && st.keep == Keep::Hits {
            return Ok((None, hit, n));
        }
        let (h, w) = st.geometry.slab_shape();
        let frame = match st.send {
            Send::Calibrated => Some(FrameMsg::F32 {
                ss: h as u32,
                fs: w as u32,
                data: serde_bytes::ByteBuf::from(
                    bytemuck::cast_slice::<f32, u8>(&self.cal).to_vec(),
                ),
            }),
            Send::Raw => Some(FrameMsg::U16 {
                ss: h as u32,
                fs: w as u32,
                data: serde_bytes::ByteBuf::from(
                    bytemuck::cast_slice::<u16, u8>(&self.raw).to_vec(),
                ),
            }),
            Send::None => None,
        };
        let mut cols: [Vec<f32>; 7] = Default::default();
        for p in &self.peaks.peaks {
            cols[0].push(p.fs);
            cols[1].push(p.ss);
            cols[2].push(p.intensity);
            cols[3].push(p.max_pixel);
            cols[4].push(p.npix as f32);
            cols[5].push(p.snr);
            cols[6].push(p.sigma);
        }
        Ok((
            Some(RecordMsg {
                timestamp: ev.timestamp,
                index: ev.index,
                frame,
                peaks: cols,
                scalars: vec![
                    ("hit".into(), f64::from(u8::from(hit))),
                    ("n_peaks".into(), n as f64),
                ],
            }),
            hit,
            n,
        ))
    }
}
