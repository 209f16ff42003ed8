//! What the synthetic detectors look like to the DAQ and to calibration: names, raw layout,
//! gain ranges, gain-switch points and default constants.

use crate::detector::geometry::{Geometry, SlabLayout};
use crate::detector::{epix10ka, jungfrau};
use crate::xtc::{Alg, DataType, Schema, VarDesc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The detectors `synth` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DetectorModel {
    /// ePix10k2M: 16 ePix10ka panels of 352×384, auto high→low gain (as at MFX).
    #[serde(rename = "epix10k2M")]
    Epix10k2M,
    /// Jungfrau 4M: 8 modules of 512×1024, dynamic gain switching G0→G1→G2.
    #[serde(rename = "jungfrau4M")]
    Jungfrau4M,
}

impl FromStr for DetectorModel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "epix10k2m" => Ok(Self::Epix10k2M),
            "jungfrau4m" => Ok(Self::Jungfrau4M),
            _ => Err(format!(
                "unknown detector {s:?}: expected epix10k2M or jungfrau4M"
            )),
        }
    }
}

impl fmt::Display for DetectorModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.spec().det_name)
    }
}

/// Static description of one detector model.
#[derive(Debug, Clone, Copy)]
pub struct DetectorSpec {
    pub model: DetectorModel,
    pub det_name: &'static str,
    pub det_type: &'static str,
    pub nsegs: usize,
    pub rows: usize,
    pub cols: usize,
    /// Gain ranges in psana's constants.
    pub ngr: usize,
    pub layout: SlabLayout,
    /// ASIC grid inside one segment (rows, cols of ASICs).
    pub asics: (usize, usize),
    /// Nominal gain per constants range, ADU/keV.
    pub gains: &'static [f32],
    /// Nominal pedestal per constants range, ADU.
    pub pedestals: &'static [f32],
    /// Nominal electronic noise per constants range, ADU.
    pub noise: &'static [f32],
    /// psana common-mode parameters written next to the run.
    pub cmpars: [f64; 4],
}

/// ePix10ka AHL mode: a pixel switches to low gain above this deposited energy (keV).
pub const EPIX_SWITCH_KEV: f32 = 600.0;
/// Jungfrau: G0 → G1 and G1 → G2 switch points (keV).
pub const JUNGFRAU_SWITCH_KEV: [f32; 2] = [250.0, 8000.0];
/// ePix10ka constants ranges used by auto high→low: still high, switched low.
pub const EPIX_AHL_RANGES: [usize; 2] = [3, 5];

const EPIX: DetectorSpec = DetectorSpec {
    model: DetectorModel::Epix10k2M,
    det_name: "epix10k2M",
    det_type: "epix10ka",
    nsegs: 16,
    rows: epix10ka::ROWS,
    cols: epix10ka::COLS,
    ngr: epix10ka::NUM_GAIN_RANGES,
    layout: SlabLayout::EPIX10K2M,
    asics: (2, 2),
    // FH FM FL AHL_H AML_M AHL_L AML_L, psana's default gains.
    gains: &[16.4, 5.466, 0.164, 16.4, 5.466, 0.164, 0.164],
    pedestals: &[1550.0, 1450.0, 1350.0, 1500.0, 1400.0, 1300.0, 1280.0],
    noise: &[5.0, 3.0, 1.5, 5.0, 3.0, 1.5, 1.5],
    cmpars: [7.0, 2.0, 100.0, 10.0],
};

const JUNGFRAU: DetectorSpec = DetectorSpec {
    model: DetectorModel::Jungfrau4M,
    det_name: "jungfrau4M",
    det_type: "jungfrau",
    nsegs: 8,
    rows: jungfrau::ROWS,
    cols: jungfrau::COLS,
    ngr: jungfrau::NUM_GAIN_RANGES,
    layout: SlabLayout::JUNGFRAU4M,
    asics: (2, 4),
    // G1 and G2 count down from a high baseline, as the hardware does.
    gains: &[41.0, -1.53, -0.115],
    pedestals: &[3000.0, 14000.0, 14500.0],
    noise: &[7.0, 3.0, 2.0],
    cmpars: [7.0, 3.0, 100.0, 10.0],
};

impl DetectorModel {
    /// The model's description.
    pub fn spec(self) -> &'static DetectorSpec {
        match self {
            Self::Epix10k2M => &EPIX,
            Self::Jungfrau4M => &JUNGFRAU,
        }
    }
}

impl DetectorSpec {
    /// Pixels per segment.
    pub fn seg_len(&self) -> usize {
        self.rows * self.cols
    }

    /// Pixels per frame (slab).
    pub fn frame_len(&self) -> usize {
        self.nsegs * self.seg_len()
    }

    /// The raw algorithm (ePix10ka 2.0.1, Jungfrau 0.2.0).
    pub fn raw_alg(&self) -> Alg {
        match self.model {
            DetectorModel::Epix10k2M => Alg::new("raw", 2, 0, 1),
            DetectorModel::Jungfrau4M => Alg::new("raw", 0, 2, 0),
        }
    }

    fn schema(&self, alg: Alg, segment: u32, vars: Vec<VarDesc>) -> Schema {
        Schema {
            det_type: self.det_type.into(),
            det_name: self.det_name.into(),
            det_id: format!("synthetic_{}_{segment:02}", self.det_type),
            alg,
            segment,
            vars,
        }
    }

    /// The raw event schema of one segment.
    pub fn raw_schema(&self, segment: u32) -> Schema {
        let vars = match self.model {
            DetectorModel::Epix10k2M => vec![VarDesc::new("raw", DataType::UINT16, 2)],
            DetectorModel::Jungfrau4M => vec![
                VarDesc::new("raw", DataType::UINT16, 3),
                VarDesc::new("frame_cnt", DataType::UINT64, 0),
                VarDesc::new("timestamp", DataType::UINT64, 0),
                VarDesc::new("hotPixelThresh", DataType::UINT16, 0),
                VarDesc::new("numHotPixels", DataType::UINT32, 0),
                VarDesc::new("maxHotPixels", DataType::UINT32, 0),
            ],
        };
        self.schema(self.raw_alg(), segment, vars)
    }

    /// The per-segment configuration schema (ePix10ka only: `asicPixelConfig`, `trbit`).
    pub fn config_schema(&self, segment: u32) -> Option<Schema> {
        match self.model {
            DetectorModel::Epix10k2M => Some(self.schema(
                Alg::new("config", 2, 0, 1),
                segment,
                vec![
                    VarDesc::new("asicPixelConfig", DataType::UINT8, 3),
                    VarDesc::new("trbit", DataType::UINT8, 1),
                ],
            )),
            DetectorModel::Jungfrau4M => None,
        }
    }

    /// The ePix10ka configuration written for every panel: auto high→low (pixel bits g = ga = 0,
    /// `trbit` = 1).
    pub fn epix_panel_config(&self) -> epix10ka::PanelConfig {
        epix10ka::PanelConfig::uniform(0, 1)
    }

    /// The idealised geometry in slab layout with the globals a CrystFEL user needs.
    pub fn geometry(&self, photon_energy_kev: f64, clen_m: f64) -> Geometry {
        let (bx, by) = (2.5, -1.5);
        let mut g = match self.model {
            DetectorModel::Epix10k2M => Geometry::synthetic_epix10k2m(bx, by),
            DetectorModel::Jungfrau4M => Geometry::synthetic_jungfrau4m(bx, by),
        };
        let res = g
            .globals
            .iter()
            .find(|(k, _)| k == "res")
            .map_or_else(String::new, |(_, v)| v.clone());
        g.globals = vec![
            (
                "photon_energy".into(),
                format!("{}", photon_energy_kev * 1000.0),
            ),
            ("clen".into(), format!("{clen_m}")),
            ("res".into(), res),
            ("adu_per_eV".into(), "0.001".into()),
            ("max_adu".into(), "100000000".into()),
            ("data".into(), "/entry_1/data_1/data".into()),
            ("dim0".into(), "%".into()),
            ("dim1".into(), "ss".into()),
            ("dim2".into(), "fs".into()),
            ("peak_list".into(), "/entry_1/result_1".into()),
            ("peak_list_type".into(), "cxi".into()),
        ];
        g
    }

    /// Pixels per metre of the geometry (`res`).
    pub fn res(&self) -> f64 {
        match self.model {
            DetectorModel::Epix10k2M => 10000.0,
            DetectorModel::Jungfrau4M => 13333.333,
        }
    }
}
