//! A worker's per-event pipeline: read the event's datagrams, take the selected data, assemble
//! the detector slab, and run the configured steps (calibrate, peakfinder8, hit filter). What a
//! detector's frames are (its model, its segments, its calibration) lives in
//! `crate::detector`; this module only applies it.

use super::messages::{EventDesc, FrameMsg, PixelType, RecordMsg, TransitionMsg};
use super::select::Selection;
use crate::algo::hit::HitCriteria;
use crate::algo::peakfinder8::{PeakFinder8, PeakList, Pf8Params};
use crate::config::{Config, DataEntry, ImageConfig, ImageDtype, Send, Step};
use crate::detector::assemble::Assembly;
use crate::detector::common_mode::CommonModeParams;
use crate::detector::constants::{ConstantFiles, GainConstants, read_checked};
use crate::detector::frame::{
    Configured, FrameCalibrator, SlabAssembler, is_raw_segment, raw_segment_shape,
};
use crate::detector::geometry::Geometry;
use crate::detector::model::{DetectorModel, Family};
use crate::detector::psana_geometry::{CrystfelOptions, PsanaGeometry, is_psana_text};
use crate::output::{Field, Value};
use crate::xtc::run::RunFiles;
use crate::xtc::{Dgram, DgramReader, NamesLookup, TransitionId, read_dgram_at};
use half::slice::HalfFloatSliceExt;
use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;

/// What does not change during a run: the detector model, constants, geometry, parameters.
pub struct Static {
    /// The detector whose frames are processed, if any.
    pub model: Option<DetectorModel>,
    pub constants: Option<GainConstants>,
    /// Geometry and its radius map, when peak finding runs.
    pub geometry: Option<(Geometry, Vec<f32>)>,
    pub user_mask: Option<Vec<u8>>,
    pub cm: Option<CommonModeParams>,
    pub pf8: Pf8Params,
    pub hit: HitCriteria,
    pub steps: Vec<Step>,
    pub send: Send,
    pub data: Vec<DataEntry>,
    /// Assembled images instead of the calibrated slab (`processing.image`).
    pub image: Option<ImageStep>,
    /// The filter frames are compressed with, on the worker that made them.
    pub compression: crate::output::Compression,
}

/// The image step: where slab pixels go, the channel axis and the element type.
pub struct ImageStep {
    pub assembly: Assembly,
    /// Copies along the channel axis; `None` = no channel axis.
    pub channels: Option<usize>,
    pub f16: bool,
}

impl ImageStep {
    /// The step `ic` asks for over `geometry` (read from `source`).
    pub fn new(ic: &ImageConfig, geometry: &Geometry, source: &str) -> anyhow::Result<ImageStep> {
        let target = match (ic.height, ic.width) {
            (Some(h), Some(w)) => Some((h, w, ic.pad_style)),
            (None, None) => None,
            _ => anyhow::bail!("processing.image: give both height and width, or neither"),
        };
        if ic.num_channels == 0 || (!ic.add_channel_dim && ic.num_channels != 1) {
            anyhow::bail!(
                "processing.image: num_channels {} needs add_channel_dim and must be at least 1",
                ic.num_channels
            );
        }
        let assembly = Assembly::new(geometry, target)
            .map_err(|e| anyhow::anyhow!("{source}: assembling images: {e}"))?;
        Ok(ImageStep {
            assembly,
            channels: ic.add_channel_dim.then_some(ic.num_channels),
            f16: ic.dtype == ImageDtype::Float16,
        })
    }

    /// The image of calibrated slab `cal`, assembled through `buf` and compressed.
    pub fn frame(
        &self,
        cal: &[f32],
        buf: &mut Vec<f32>,
        compression: crate::output::Compression,
    ) -> std::io::Result<FrameMsg> {
        let a = &self.assembly;
        let c = self.channels.unwrap_or(1);
        buf.resize(c * a.height * a.width, 0.0);
        a.assemble_channels(cal, c, buf);
        let mut dims = vec![a.height, a.width];
        if let Some(c) = self.channels {
            dims.insert(0, c);
        }
        if self.f16 {
            let mut h = vec![half::f16::ZERO; buf.len()];
            h.convert_from_f32_slice(buf);
            FrameMsg::compress(
                PixelType::F16,
                &dims,
                true,
                bytemuck::cast_slice(&h),
                compression,
            )
        } else {
            FrameMsg::compress(
                PixelType::F32,
                &dims,
                true,
                bytemuck::cast_slice(buf),
                compression,
            )
        }
    }
}

/// The detector as the run's first Configure declares it (each stream's first datagram); for a
/// raw pass-through detector the segment shape comes from its first event.
pub fn first_configure(det: &str, run: &RunFiles) -> anyhow::Result<Configured> {
    let mut per_stream = Vec::new();
    for s in &run.streams {
        let Some(c0) = s.chunks.first() else {
            continue;
        };
        let mut buf = Vec::new();
        let mut r = DgramReader::open(&c0.path)?;
        match r.next_into(&mut buf)? {
            Some(d) if d.service() == TransitionId::Configure => {}
            _ => anyhow::bail!("{}: does not start with a Configure", c0.path.display()),
        }
        per_stream.push((s.stream, c0.path.clone(), buf));
    }
    let refs: Vec<(u32, &[u8])> = per_stream.iter().map(|(s, _, b)| (*s, &b[..])).collect();
    // A raw detector's shape is set below, from its first event.
    let mut conf = Configured::from_configure(det, &refs, Some((0, 0)))?;
    if conf.model.family != Family::Raw {
        return Ok(conf);
    }
    for (stream, path, _) in &per_stream {
        let carries = conf.lookups[stream]
            .entries()
            .iter()
            .any(|(_, s)| is_raw_segment(s, det));
        if carries && let Some(shape) = raw_segment_shape(path, det)? {
            conf.model.segment_shape = shape;
            return Ok(conf);
        }
    }
    anyhow::bail!("detector {det:?}: no event of the run's first chunks holds its raw data")
}

/// A CrystFEL `.geom`, or psana geometry text laid out for the segments present.
fn load_geometry(path: &std::path::Path, model: &DetectorModel) -> anyhow::Result<Geometry> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("{}: cannot read geometry: {e}", path.display()))?;
    if !is_psana_text(&text) {
        return Ok(Geometry::parse(&text, &path.display().to_string())?);
    }
    let opts = CrystfelOptions {
        segments: Some(model.segments.iter().map(|&s| s as usize).collect()),
        ..CrystfelOptions::default()
    };
    Ok(PsanaGeometry::parse(&text, &path.display().to_string())?.to_crystfel(&opts)?)
}

impl Static {
    /// Loads and checks everything a worker needs for the run's detector (if any); errors
    /// name the offending file.
    pub fn load(cfg: &Config, model: Option<DetectorModel>) -> anyhow::Result<Static> {
        let steps = cfg.steps()?;
        let compression = cfg.output.compression;
        let Some(model) = model else {
            if cfg.processing.image.is_some() {
                anyhow::bail!(
                    "processing.image assembles a detector's frames: set source.detector"
                );
            }
            return Ok(Static {
                model: None,
                constants: None,
                geometry: None,
                user_mask: None,
                cm: None,
                pf8: cfg.processing.peakfinder8,
                hit: HitCriteria {
                    min_num_peaks_for_hit: cfg.processing.min_num_peaks_for_hit,
                    max_num_peaks_for_hit: cfg.processing.max_num_peaks_for_hit,
                },
                steps,
                send: cfg.send(),
                data: cfg.data.clone(),
                image: None,
                compression,
            });
        };
        if let Some(kind) = cfg.detector.kind {
            model.check_kind(kind)?;
        }
        let (rows, cols) = model.segment_shape;
        let nsegs = model.nsegs();
        let constants = match &cfg.detector.constants {
            Some(dir) => {
                let (planes, (prows, pcols)) = model.constant_planes();
                Some(GainConstants::load_segments(
                    &ConstantFiles::in_dir(dir),
                    model.spec().required.contains(&"pixel_gain"),
                    model.spec().gain_ranges,
                    &planes,
                    prows,
                    pcols,
                )?)
            }
            None if model.family == Family::Raw || !steps.contains(&Step::Calibrate) => None,
            None => anyhow::bail!(
                "detector.constants: detector {:?} ({} family) needs calibration constants",
                model.det_name,
                model.family
            ),
        };
        let geometry = match &cfg.detector.geometry {
            Some(path) if steps.contains(&Step::Peakfinder8) || cfg.processing.image.is_some() => {
                let geometry = load_geometry(path, &model)?;
                let (h, w) = geometry.slab_shape();
                if (h, w) != model.slab_shape() {
                    anyhow::bail!(
                        "{}: slab {h}x{w}, but the run's detector {} needs {}x{}",
                        path.display(),
                        model.describe(),
                        model.slab_shape().0,
                        model.slab_shape().1
                    );
                }
                geometry.layout(&path.display().to_string())?;
                let radius = geometry.radius_map();
                Some((geometry, radius))
            }
            _ => None,
        };
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
        let image = match (&cfg.processing.image, &geometry, &cfg.detector.geometry) {
            (None, _, _) => None,
            (Some(_), _, _) if cfg.send() != Send::Calibrated => anyhow::bail!(
                "processing.image assembles the calibrated frame: set processing.send: calibrated"
            ),
            (Some(ic), Some((g, _)), Some(path)) => {
                Some(ImageStep::new(ic, g, &path.display().to_string())?)
            }
            (Some(_), _, _) => {
                anyhow::bail!("processing.image needs detector.geometry and detector.constants")
            }
        };
        Ok(Static {
            image,
            model: Some(model),
            constants,
            geometry,
            user_mask,
            cm,
            pf8: cfg.processing.peakfinder8,
            hit: HitCriteria {
                min_num_peaks_for_hit: cfg.processing.min_num_peaks_for_hit,
                max_num_peaks_for_hit: cfg.processing.max_num_peaks_for_hit,
            },
            steps,
            send: cfg.send(),
            data: cfg.data.clone(),
            compression,
        })
    }

    /// Reads a Configure the coordinator forwarded; it must declare the detector the job was
    /// set up for.
    pub fn configure(&self, per_stream: &[(u32, &[u8])]) -> anyhow::Result<RunConf> {
        let det = match &self.model {
            None => None,
            Some(model) => {
                let conf = Configured::from_configure(
                    &model.det_name,
                    per_stream,
                    Some(model.segment_shape),
                )?;
                if &conf.model != model {
                    anyhow::bail!(
                        "the detector changed within the run: {} at the start, {} now",
                        model.describe(),
                        conf.model.describe()
                    );
                }
                Some(conf)
            }
        };
        let mut lookups = HashMap::new();
        for &(stream, bytes) in per_stream {
            let d = Dgram::parse(bytes, 0)?;
            lookups.insert(stream, NamesLookup::from_configure(&d.root())?);
        }
        Ok(RunConf {
            det,
            lookups,
            select: Selection::configure(&self.data, per_stream, false)?,
        })
    }
}

/// What the Configure in force defines: the detector (if any), every stream's schemas and the
/// data selection with its held values.
#[derive(Debug, Clone)]
pub struct RunConf {
    pub det: Option<Configured>,
    pub lookups: HashMap<u32, NamesLookup>,
    pub select: Selection,
}

impl RunConf {
    /// Holds the selected values a transition other than Configure carries.
    pub fn transition(&mut self, t: &TransitionMsg) -> anyhow::Result<()> {
        if self.select.resolved.is_empty() {
            return Ok(());
        }
        for (stream, bytes) in &t.per_stream {
            let Some(lookup) = self.lookups.get(stream) else {
                continue;
            };
            let d = Dgram::parse(bytes, 0)?;
            self.select.transition(*stream, &d, lookup)?;
        }
        Ok(())
    }
}

/// Why an event could not be processed.
#[derive(Debug)]
pub struct Damaged(pub String);

/// One thread's calibrator, peak finder and buffers (reused for every event).
pub struct Processor {
    calib: Option<FrameCalibrator>,
    pf8: Option<PeakFinder8>,
    raw: Vec<u16>,
    cal: Vec<f32>,
    peaks: PeakList,
    buf: Vec<u8>,
    slab: SlabAssembler,
    own: Vec<Option<Value>>,
    img: Vec<f32>,
}

/// Per-event timings in nanoseconds: read, calibrate, peak find, compress.
pub type Timings = (u64, u64, u64, u64);

impl Processor {
    /// Builds the calibrator and peak finder for the configuration in force.
    pub fn new(st: &Static, rc: &RunConf) -> anyhow::Result<Processor> {
        let own = vec![None; rc.select.resolved.len()];
        let Some(conf) = &rc.det else {
            return Ok(Processor {
                calib: None,
                pf8: None,
                raw: Vec::new(),
                cal: Vec::new(),
                peaks: PeakList::with_capacity(0),
                buf: Vec::new(),
                slab: SlabAssembler::default(),
                own,
                img: Vec::new(),
            });
        };
        let calib = if st.steps.contains(&Step::Calibrate) {
            FrameCalibrator::new(conf, st.constants.as_ref(), st.user_mask.as_deref(), st.cm)?
        } else {
            None
        };
        let pf8 = match (&st.geometry, &calib) {
            (Some((geometry, radius)), Some(c)) if st.steps.contains(&Step::Peakfinder8) => Some(
                PeakFinder8::new(st.pf8, geometry.layout("geometry")?, radius, Some(c.mask()))?,
            ),
            _ => None,
        };
        let n = conf.model.frame_len();
        Ok(Processor {
            pf8,
            raw: vec![0; n],
            cal: if calib.is_some() {
                vec![0.0; n]
            } else {
                Vec::new()
            },
            calib,
            peaks: PeakList::with_capacity(st.pf8.max_num_peaks),
            buf: Vec::new(),
            slab: SlabAssembler::default(),
            own,
            img: Vec::new(),
        })
    }

    /// The calibrated slab of the event processed last (empty without calibration).
    pub fn calibrated(&self) -> &[f32] {
        &self.cal
    }

    /// The peaks `(fs, ss)` of the event processed last.
    pub fn peak_positions(&self) -> Vec<(f32, f32)> {
        self.peaks.peaks.iter().map(|p| (p.fs, p.ss)).collect()
    }

    /// Processes one event; `Ok(None)` when it is not kept.
    pub fn process(
        &mut self,
        st: &Static,
        rc: &RunConf,
        files: &HashMap<(u32, u32), (PathBuf, File)>,
        ev: &EventDesc,
        timings: &mut Timings,
    ) -> Result<(Option<RecordMsg>, bool, usize), Damaged> {
        let t0 = std::time::Instant::now();
        if let Some(conf) = &rc.det {
            self.slab.begin(conf);
        }
        self.own.iter_mut().for_each(|v| *v = None);
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
            let at = |e: String| Damaged(format!("{} byte {}: {e}", path.display(), part.offset));
            if let Some(conf) = &rc.det {
                self.slab
                    .add(conf, part.stream, &d, &mut self.raw)
                    .map_err(|e| at(e.to_string()))?;
            }
            if let Some(lookup) = rc.lookups.get(&part.stream) {
                rc.select
                    .resolved
                    .extract(part.stream, &d, lookup, &mut self.own)
                    .map_err(|e| at(e.to_string()))?;
            }
        }
        if let Some(conf) = &rc.det {
            self.slab.finish(conf).map_err(|e| Damaged(e.to_string()))?;
        }
        let t1 = std::time::Instant::now();
        // Calibrated pixels nobody reads (no peak finding, raw frames sent) are not computed.
        let needed = self.pf8.is_some() || st.send == Send::Calibrated;
        if let Some(c) = &mut self.calib
            && needed
        {
            c.calibrate_slab(&self.raw, &mut self.cal)
                .map_err(|e| Damaged(e.to_string()))?;
        }
        let t2 = std::time::Instant::now();
        let n = match &mut self.pf8 {
            Some(pf8) => {
                pf8.find(&self.cal, &mut self.peaks)
                    .map_err(|e| Damaged(e.to_string()))?;
                self.peaks.len()
            }
            None => 0,
        };
        let t3 = std::time::Instant::now();
        timings.0 += (t1 - t0).as_nanos() as u64;
        timings.1 += (t2 - t1).as_nanos() as u64;
        timings.2 += (t3 - t2).as_nanos() as u64;
        let hit = self.pf8.is_some() && st.hit.is_hit(n);
        if !hit && st.steps.contains(&Step::HitFilter) {
            return Ok((None, hit, n));
        }
        let (h, w) = rc.det.as_ref().map_or((0, 0), |c| c.model.slab_shape());
        let send = if rc.det.is_some() {
            st.send
        } else {
            Send::None
        };
        let t4 = std::time::Instant::now();
        let frame = match send {
            Send::Calibrated if st.image.is_some() && self.calib.is_some() => st
                .image
                .as_ref()
                .map(|im| im.frame(&self.cal, &mut self.img, st.compression)),
            Send::Calibrated if self.calib.is_some() => Some(FrameMsg::compress(
                PixelType::F32,
                &[h, w],
                false,
                bytemuck::cast_slice(&self.cal),
                st.compression,
            )),
            // A raw pass-through detector without constants has only raw frames to send.
            Send::Calibrated | Send::Raw => Some(FrameMsg::compress(
                PixelType::U16,
                &[h, w],
                false,
                bytemuck::cast_slice(&self.raw),
                st.compression,
            )),
            Send::None => None,
        }
        .transpose()
        .map_err(|e| Damaged(format!("compressing the frame: {e}")))?;
        timings.3 += t4.elapsed().as_nanos() as u64;
        let mut cols: [Vec<f32>; 7] = Default::default();
        if self.pf8.is_some() {
            for p in &self.peaks.peaks {
                cols[0].push(p.fs);
                cols[1].push(p.ss);
                cols[2].push(p.intensity);
                cols[3].push(p.max_pixel);
                cols[4].push(p.npix as f32);
                cols[5].push(p.snr);
                cols[6].push(p.sigma);
            }
        }
        let mut fields = Vec::new();
        if self.pf8.is_some() {
            fields.push(Field::always("hit", f64::from(u8::from(hit))));
            fields.push(Field::always("n_peaks", n as f64));
        }
        fields.extend(rc.select.resolved.fields(&mut self.own, &rc.select.held));
        Ok((
            Some(RecordMsg {
                timestamp: ev.timestamp,
                index: ev.index,
                frame,
                peaks: cols,
                fields,
                seen_ns: ev.seen_ns,
            }),
            hit,
            n,
        ))
    }
}
