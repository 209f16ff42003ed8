//! A detector's frames in a run: what its Configure declares (the [`DetectorModel`], per-stream
//! schemas, ePix10ka panel configurations) and the slab of one event assembled from the `raw`
//! arrays of its segments, wherever the streams put them.
//!
//! The rule: the detector's data is the UINT16 variable `raw` of the algorithm `raw` of every
//! Names whose `detName` is the configured detector; each Names is one segment.

use super::calib::{CalibError, Calibrator};
use super::common_mode::CommonModeParams;
use super::constants::GainConstants;
use super::epix10ka::{ConfigError, PanelConfig};
use super::epixhr2x2;
use super::model::{DetectorModel, Family, ModelError};
use crate::xtc::{Dgram, DgramReader, NamesLookup, Schema, TransitionId};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The algorithm that carries a detector's frames.
pub const RAW_ALG: &str = "raw";
/// The variable that holds a segment's pixels.
pub const RAW_VAR: &str = "raw";

/// Whether `s` is one raw segment of detector `det`.
pub fn is_raw_segment(s: &Schema, det: &str) -> bool {
    s.det_name == det && s.alg.name == RAW_ALG
}

/// What one Configure defines for the detector.
#[derive(Debug, Clone)]
pub struct Configured {
    /// Schemas of every stream, by stream id.
    pub lookups: HashMap<u32, NamesLookup>,
    pub model: DetectorModel,
    /// ePix10ka, ePixHR2x2: one panel configuration per present segment, in slab order; empty
    /// otherwise.
    pub panel_configs: Vec<PanelConfig>,
}

/// Errors reading a Configure for the detector.
#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    #[error("stream {stream} Configure: {msg}")]
    Format { stream: u32, msg: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("detector {det:?} segment {segment}: {msg}")]
    PanelConfig {
        det: String,
        segment: u32,
        msg: String,
    },
}

impl Configured {
    /// Reads the per-stream Configure datagrams `(stream id, bytes)` of a run. The segment shape
    /// of a [`Family::Raw`] detector is not in the Configure: give it as `raw_shape` (from
    /// [`raw_segment_shape`]); it is ignored for the other families.
    pub fn from_configure(
        det: &str,
        per_stream: &[(u32, &[u8])],
        raw_shape: Option<(usize, usize)>,
    ) -> Result<Configured, ConfigureError> {
        let mut lookups = HashMap::new();
        let mut first: Option<Schema> = None;
        let mut segments = Vec::new();
        // Per segment: `asicPixelConfig` and `trbit`, read once the family is known.
        let mut configs: BTreeMap<u32, (Vec<u8>, Vec<u8>)> = BTreeMap::new();
        for &(stream, bytes) in per_stream {
            let fmt = |msg: String| ConfigureError::Format { stream, msg };
            let d = Dgram::parse(bytes, 0).map_err(|e| fmt(e.to_string()))?;
            let lookup = NamesLookup::from_configure(&d.root()).map_err(|e| fmt(e.to_string()))?;
            for (_, s) in lookup.entries() {
                if !is_raw_segment(s, det) {
                    continue;
                }
                match &first {
                    None => first = Some((**s).clone()),
                    Some(f) if f.det_type != s.det_type || f.alg != s.alg => {
                        return Err(ModelError::Mixed {
                            det: det.into(),
                            a: format!("{} {}", f.det_type, f.alg.version_string()),
                            b: format!("{} {}", s.det_type, s.alg.version_string()),
                        }
                        .into());
                    }
                    Some(_) => {}
                }
                if segments.contains(&s.segment) {
                    return Err(ModelError::Duplicate {
                        det: det.into(),
                        segment: s.segment,
                    }
                    .into());
                }
                segments.push(s.segment);
            }
            for b in d.blocks(&lookup).map_err(|e| fmt(e.to_string()))? {
                if b.schema.det_name != det || b.schema.alg.name != "config" {
                    continue;
                }
                if let (Some(apc), Some(tr)) = (b.var("asicPixelConfig"), b.var("trbit")) {
                    let seg = b.schema.segment;
                    let apc = apc.elements::<u8>().unwrap_or_default();
                    let tr = tr.elements::<u8>().unwrap_or_default();
                    configs.insert(seg, (apc.into_owned(), tr.into_owned()));
                }
            }
            lookups.insert(stream, lookup);
        }
        let Some(first) = first else {
            return Err(ModelError::NotInRun(det.into()).into());
        };
        let raw = first
            .vars
            .iter()
            .find(|v| v.name == RAW_VAR && v.dtype == crate::xtc::DataType::UINT16 && v.rank >= 2);
        if raw.is_none() {
            return Err(ModelError::NoRawArray { det: det.into() }.into());
        }
        segments.sort_unstable();
        let family = Family::of_det_type(&first.det_type);
        let segment_shape = match (family.spec().segment, raw_shape) {
            (Some(s), _) | (None, Some(s)) => s,
            (None, None) => {
                return Err(ModelError::Shape {
                    det: det.into(),
                    msg: "the segment shape of a raw pass-through detector is needed".into(),
                }
                .into());
            }
        };
        let model = DetectorModel {
            family,
            det_name: det.to_string(),
            det_type: first.det_type.clone(),
            raw_version: first.alg.version_string(),
            segments,
            segment_shape,
        };
        type PanelConfigFn = fn(usize, &[u8], &[u8]) -> Result<PanelConfig, ConfigError>;
        let panel_config: Option<PanelConfigFn> = match family {
            Family::Epix10ka => Some(PanelConfig::new),
            Family::EpixHr2x2 => Some(epixhr2x2::panel_config),
            _ => None,
        };
        let panel_configs = if let Some(panel_config) = panel_config {
            let err = |segment: u32, msg: String| ConfigureError::PanelConfig {
                det: det.into(),
                segment,
                msg,
            };
            model
                .segments
                .iter()
                .map(|&s| {
                    let (apc, tr) = configs.remove(&s).ok_or_else(|| {
                        err(
                            s,
                            "the Configure has no asicPixelConfig/trbit for it".into(),
                        )
                    })?;
                    panel_config(s as usize, &apc, &tr).map_err(|e| err(s, e.to_string()))
                })
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        Ok(Configured {
            lookups,
            model,
            panel_configs,
        })
    }
}

/// The shape `(rows, cols)` of one raw segment of `det`, from the first L1Accept of `path` that
/// carries it (product of all but the last dimension, and the last); `Ok(None)` when no event of
/// the file has it.
pub fn raw_segment_shape(path: &Path, det: &str) -> anyhow::Result<Option<(usize, usize)>> {
    let mut r = DgramReader::open(path)?;
    let mut buf = Vec::new();
    let mut lookup = NamesLookup::new();
    while let Some(d) = r.next_into(&mut buf)? {
        match d.service() {
            TransitionId::Configure => lookup = NamesLookup::from_configure(&d.root())?,
            TransitionId::L1Accept => {
                for b in d.blocks(&lookup)? {
                    if !is_raw_segment(b.schema, det) {
                        continue;
                    }
                    if let Some(v) = b.var(RAW_VAR) {
                        let dims = v.shape.dims();
                        let (last, lead) = dims.split_last().unwrap_or((&0, &[]));
                        let rows = lead.iter().map(|&d| d as usize).product::<usize>();
                        return Ok(Some((rows, *last as usize)));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(None)
}

/// Why an event's slab could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum SlabError {
    #[error("stream {0} was never configured")]
    Unconfigured(u32),
    #[error("{0}")]
    Format(String),
    #[error("segment {segment} raw is not {expected} UINT16")]
    Size { segment: u32, expected: usize },
    #[error("segment {0} missing")]
    Missing(u32),
}

/// Fills a slab from the datagrams of one event; reuse it for every event.
#[derive(Debug, Default)]
pub struct SlabAssembler {
    filled: Vec<bool>,
}

impl SlabAssembler {
    /// Starts an event.
    pub fn begin(&mut self, conf: &Configured) {
        self.filled.clear();
        self.filled.resize(conf.model.nsegs(), false);
    }

    /// Copies the detector's segments found in datagram `d` of `stream` into `slab`.
    pub fn add(
        &mut self,
        conf: &Configured,
        stream: u32,
        d: &Dgram<'_>,
        slab: &mut [u16],
    ) -> Result<(), SlabError> {
        let m = &conf.model;
        let seg_len = m.segment_len();
        let lookup = conf
            .lookups
            .get(&stream)
            .ok_or(SlabError::Unconfigured(stream))?;
        let blocks = d
            .blocks(lookup)
            .map_err(|e| SlabError::Format(e.to_string()))?;
        for b in blocks {
            if !is_raw_segment(b.schema, &m.det_name) {
                continue;
            }
            let seg = b.schema.segment;
            let Some(i) = m.slab_index(seg) else {
                continue;
            };
            let px = b
                .var(RAW_VAR)
                .and_then(|v| v.elements::<u16>())
                .filter(|px| px.len() == seg_len)
                .ok_or(SlabError::Size {
                    segment: seg,
                    expected: seg_len,
                })?;
            slab[i * seg_len..(i + 1) * seg_len].copy_from_slice(&px);
            self.filled[i] = true;
        }
        Ok(())
    }

    /// Checks that every segment was filled.
    pub fn finish(&self, conf: &Configured) -> Result<(), SlabError> {
        match self.filled.iter().position(|f| !f) {
            Some(i) => Err(SlabError::Missing(conf.model.segments[i])),
            None => Ok(()),
        }
    }
}

/// Raw → calibrated frames of one model: psana's recipe of the family, or pedestal subtraction
/// for a raw pass-through detector.
#[derive(Debug, Clone)]
pub enum FrameCalibrator {
    Gain(Box<Calibrator>),
    /// `(raw − pedestal) · mask` (raw pass-through detectors with pedestals).
    Pedestal {
        ped: Vec<f32>,
        mask: Vec<u8>,
    },
}

/// Errors building a calibrator for a model.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Calib(#[from] CalibError),
    #[error("{0}")]
    Missing(String),
}

impl FrameCalibrator {
    /// The calibrator psana would use for `conf`'s model, with `constants` for the segments
    /// present; `None` for a raw pass-through detector without constants.
    pub fn new(
        conf: &Configured,
        constants: Option<&GainConstants>,
        user_mask: Option<&[u8]>,
        cm: Option<CommonModeParams>,
    ) -> Result<Option<FrameCalibrator>, SetupError> {
        let m = &conf.model;
        let Some(c) = constants else {
            return match m.family {
                Family::Raw => Ok(None),
                f => Err(SetupError::Missing(format!(
                    "a {f} detector needs calibration constants (detector.constants)"
                ))),
            };
        };
        Ok(Some(match m.family {
            Family::Epix10ka => FrameCalibrator::Gain(Box::new(Calibrator::epix10ka(
                c,
                &conf.panel_configs,
                user_mask,
                cm,
            )?)),
            Family::EpixHr2x2 => FrameCalibrator::Gain(Box::new(Calibrator::epixhr2x2(
                c,
                &conf.panel_configs,
                user_mask,
                cm,
            )?)),
            Family::Jungfrau => {
                FrameCalibrator::Gain(Box::new(Calibrator::jungfrau(c, user_mask, cm)?))
            }
            Family::Epix100 => {
                FrameCalibrator::Gain(Box::new(Calibrator::epix100(c, user_mask, cm)?))
            }
            Family::EpixM320 => {
                FrameCalibrator::Gain(Box::new(Calibrator::epixm320(c, user_mask)?))
            }
            Family::Raw => {
                let n = c.frame_len();
                let mut mask = super::mask::status_mask(
                    &c.pixel_status,
                    n,
                    &[0],
                    super::mask::DEFAULT_STATUS_BITS,
                );
                for extra in [c.pixel_mask.as_deref(), user_mask].into_iter().flatten() {
                    super::mask::and_into(&mut mask, extra);
                }
                FrameCalibrator::Pedestal {
                    ped: c.pedestals[..n].to_vec(),
                    mask,
                }
            }
        }))
    }

    /// The merged pixel mask, 1 = good.
    pub fn mask(&self) -> &[u8] {
        match self {
            FrameCalibrator::Gain(c) => c.mask(),
            FrameCalibrator::Pedestal { mask, .. } => mask,
        }
    }

    /// Calibrates a slab.
    pub fn calibrate_slab(&mut self, raw: &[u16], out: &mut [f32]) -> Result<(), CalibError> {
        match self {
            FrameCalibrator::Gain(c) => c.calibrate_slab(raw, out),
            FrameCalibrator::Pedestal { ped, mask } => {
                if raw.len() != ped.len() || out.len() != ped.len() {
                    return Err(CalibError::Size {
                        what: "raw frame / output".into(),
                        actual: raw.len().min(out.len()),
                        expected: ped.len(),
                    });
                }
                for (((o, &r), &p), &m) in out.iter_mut().zip(raw).zip(ped.iter()).zip(mask.iter())
                {
                    *o = (f32::from(r) - p) * f32::from(m);
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xtc::writer::{DgramBuilder, VarData};
    use crate::xtc::{Alg, DataType, NamesId, VarDesc};

    fn schema(det_type: &str, alg: Alg, segment: u32, vars: Vec<VarDesc>) -> Schema {
        Schema {
            det_type: det_type.into(),
            det_name: "hr".into(),
            det_id: format!("hr_{segment}"),
            alg,
            segment,
            vars,
        }
    }

    /// A Configure with ePixHR2x2 segments 3 and 1 and their flat `asicPixelConfig` / `trbit`.
    fn epixhr2x2_configure(apc_len: usize) -> Vec<u8> {
        let mut b = DgramBuilder::new(1, TransitionId::Configure, 1, 0);
        for (k, seg) in [3u32, 1].into_iter().enumerate() {
            let raw = vec![VarDesc::new("raw", DataType::UINT16, 2)];
            let raw = schema("epixhr2x2", Alg::new(RAW_ALG, 2, 0, 1), seg, raw);
            b.add_names(NamesId::new(0, k as u8), &raw).unwrap();
            let vars = vec![
                VarDesc::new("asicPixelConfig", DataType::UINT8, 1),
                VarDesc::new("trbit", DataType::UINT8, 1),
            ];
            let cs = schema("epixhr2x2hw", Alg::new("config", 2, 0, 0), seg, vars);
            let id = NamesId::new(0, 64 + k as u8);
            b.add_names(id, &cs).unwrap();
            let apc = vec![seg as u8 * 4; apc_len];
            let trbit = [1u8, 0, u8::from(seg == 3), 0];
            b.add_data(
                id,
                &cs,
                &[
                    VarData::array(&[apc_len as u32], &apc),
                    VarData::array(&[4], &trbit),
                ],
            )
            .unwrap();
        }
        b.bytes().to_vec()
    }

    #[test]
    fn epixhr2x2_configure_gives_model_and_panel_configs_in_slab_order() {
        let bytes = epixhr2x2_configure(288 * 384);
        let conf = Configured::from_configure("hr", &[(0, &bytes)], None).unwrap();
        assert_eq!(conf.model.family, Family::EpixHr2x2);
        assert_eq!(conf.model.segments, vec![1, 3]);
        assert_eq!(conf.model.segment_shape, (288, 384));
        let cfgs = &conf.panel_configs;
        assert_eq!(cfgs.len(), 2);
        assert_eq!(cfgs[0].asic_pixel_config[0], 4);
        assert_eq!(cfgs[0].trbit, [1, 0, 0, 0]);
        assert_eq!(cfgs[1].asic_pixel_config[0], 12);
        assert_eq!(cfgs[1].trbit, [1, 0, 1, 0]);

        // An ePix10ka-sized asicPixelConfig is refused with the segment named.
        let bytes = epixhr2x2_configure(4 * 176 * 192);
        let err = Configured::from_configure("hr", &[(0, &bytes)], None).unwrap_err();
        assert!(err.to_string().contains("segment 1"), "{err}");
    }
}
