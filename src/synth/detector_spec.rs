//! The detector a synthetic run holds: a preset of the model table ([`crate::detector::model`])
//! with the segments present, and synth's own physics of its family (nominal constants, gain
//! switching, what the DAQ writes for it).

use super::SynthError;
use crate::detector::epix10ka;
use crate::detector::geometry::{Geometry, SlabLayout, synthetic_res};
use crate::detector::model::{DetectorModel, Family, PRESETS, Preset};
use crate::xtc::{Alg, DataType, Schema, VarDesc};
use serde::{Serialize, Serializer};
use std::fmt;

/// synth's physics of one family: nominal constants per gain range, how the hardware picks a
/// range and marks it in the raw word, and the common mode it adds.
#[derive(Debug)]
pub struct Physics {
    /// Nominal gain per constants range, ADU/keV.
    pub gains: &'static [f32],
    /// Nominal pedestal per constants range, ADU.
    pub pedestals: &'static [f32],
    /// Nominal electronic noise per constants range, ADU.
    pub noise: &'static [f32],
    /// Constants ranges the hardware selects from, in switching order.
    pub ranges: &'static [usize],
    /// Raw-word gain bits of each of `ranges`.
    pub codes: &'static [u16],
    /// Deposited energies (keV) at which the hardware switches to the next of `ranges`.
    pub switch_kev: [f32; 2],
    /// Whether a `pixel_offset` constant is written (added to the pedestals, as psana does).
    pub pixel_offset: bool,
    /// rms (ADU) of an offset per row and bank of 96 columns, drawn per event and segment with
    /// the electronic noise; 0 for none.
    pub common_mode_rms: f32,
    /// psana common-mode parameters written next to the run.
    pub cmpars: [f64; 4],
    /// Version of the `raw` algorithm the DAQ writes.
    pub raw_version: (u8, u8, u8),
    /// How the gain is chosen, for `synth.json`.
    pub gain_mode: &'static str,
}

/// ePix10ka: auto high→low (as at MFX), ranges 3 (high) and 5 (switched, bit 14).
const EPIX10KA: Physics = Physics {
    // FH FM FL AHL_H AML_M AHL_L AML_L, psana's default gains.
    gains: &[16.4, 5.466, 0.164, 16.4, 5.466, 0.164, 0.164],
    pedestals: &[1550.0, 1450.0, 1350.0, 1500.0, 1400.0, 1300.0, 1280.0],
    noise: &[5.0, 3.0, 1.5, 5.0, 3.0, 1.5, 1.5],
    ranges: &[3, 5],
    codes: &[0, 0x4000],
    switch_kev: [600.0, f32::INFINITY],
    pixel_offset: false,
    common_mode_rms: 0.0,
    cmpars: [7.0, 2.0, 100.0, 10.0],
    raw_version: (2, 0, 1),
    gain_mode: "auto high-to-low (asicPixelConfig 0, trbit 1): constants ranges 3 (high) and 5 \
                (switched, bit 14)",
};

/// Jungfrau: dynamic switching G0→G1→G2 (bits 15..14 = 00/01/11).
const JUNGFRAU: Physics = Physics {
    // G1 and G2 count down from a high baseline, as the hardware does.
    gains: &[41.0, -1.53, -0.115],
    pedestals: &[3000.0, 14000.0, 14500.0],
    noise: &[7.0, 3.0, 2.0],
    ranges: &[0, 1, 2],
    codes: &[0, 0x4000, 0xC000],
    switch_kev: [250.0, 8000.0],
    pixel_offset: true,
    common_mode_rms: 0.0,
    cmpars: [7.0, 3.0, 100.0, 10.0],
    raw_version: (0, 2, 0),
    gain_mode: "dynamic G0/G1/G2 (bits 15..14 = 00/01/11); G1 and G2 gains negative",
};

/// ePix100: one gain (psana's default 1/0.06 ADU/keV), all 16 raw bits ADC, and a common-mode
/// offset per row and bank that psana's `common_mode_apply` (mode 1) removes.
const EPIX100: Physics = Physics {
    gains: &[16.667],
    pedestals: &[1500.0],
    noise: &[4.0],
    ranges: &[0],
    codes: &[0],
    switch_kev: [f32::INFINITY, f32::INFINITY],
    pixel_offset: false,
    common_mode_rms: 3.0,
    cmpars: [0.0, 1.0, 100.0, 10.0],
    raw_version: (2, 0, 1),
    gain_mode: "one gain; a common-mode offset per row and bank of 96 columns",
};

/// Columns of one ePix100 common-mode bank (psana: 8 banks per row).
pub const EPIX100_BANK_COLS: usize = 96;

impl Physics {
    /// The physics of `family`; `None` for families synth does not write.
    pub fn of(family: Family) -> Option<&'static Physics> {
        match family {
            Family::Epix10ka => Some(&EPIX10KA),
            Family::Jungfrau => Some(&JUNGFRAU),
            Family::Epix100 => Some(&EPIX100),
            Family::EpixHr2x2 | Family::EpixM320 | Family::Raw => None,
        }
    }
}

/// The preset names, for messages.
pub fn preset_names() -> String {
    PRESETS
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One synthetic run's detector: a preset, the segments present, the family's physics.
#[derive(Debug, Clone)]
pub struct SynthDetector {
    pub preset: &'static Preset,
    /// The detector as the run's Configure declares it (`det_name` is the preset name).
    pub model: DetectorModel,
    pub physics: &'static Physics,
}

impl Serialize for SynthDetector {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("SynthDetector", 2)?;
        st.serialize_field("preset", self.preset.name)?;
        st.serialize_field("segments", &self.model.segments)?;
        st.end()
    }
}

impl fmt::Display for SynthDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.preset.name)
    }
}

impl SynthDetector {
    /// Preset `name` (case-insensitive) with `segments` present (all when `None`).
    pub fn new(name: &str, segments: Option<Vec<u32>>) -> Result<SynthDetector, SynthError> {
        let bad = |m: String| Err(SynthError::Invalid(m));
        let Some(preset) = PRESETS.iter().find(|p| p.name.eq_ignore_ascii_case(name)) else {
            return bad(format!(
                "unknown detector {name:?}: expected one of {}",
                preset_names()
            ));
        };
        let Some(physics) = Physics::of(preset.family) else {
            return bad(format!("synth cannot write a {} detector", preset.family));
        };
        let full = preset.segments as u32;
        let segments = segments.unwrap_or_else(|| (0..full).collect());
        if segments.is_empty() {
            return bad("--segments: at least one segment".into());
        }
        if !segments.windows(2).all(|w| w[0] < w[1]) {
            return bad(format!(
                "--segments {segments:?} must be ascending without repeats"
            ));
        }
        if let Some(&s) = segments.iter().find(|&&s| s >= full) {
            return bad(format!(
                "--segments: a {} has segments 0..{}, not {s}",
                preset.name,
                full - 1
            ));
        }
        let (ma, mi, mc) = physics.raw_version;
        let mut model = DetectorModel::new(preset.family, preset.name, segments);
        model.raw_version = Alg::new("raw", ma, mi, mc).version_string();
        Ok(SynthDetector {
            preset,
            model,
            physics,
        })
    }

    /// Every segment of preset `name`.
    pub fn full(name: &str) -> Result<SynthDetector, SynthError> {
        SynthDetector::new(name, None)
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.model.family
    }

    /// Segments of the whole detector (the constants cover them all).
    pub fn full_segments(&self) -> usize {
        self.preset.segments
    }

    /// Segments present (the slab's).
    pub fn nsegs(&self) -> usize {
        self.model.nsegs()
    }

    /// Segment rows.
    pub fn rows(&self) -> usize {
        self.model.segment_shape.0
    }

    /// Segment columns.
    pub fn cols(&self) -> usize {
        self.model.segment_shape.1
    }

    /// Gain ranges of the constants.
    pub fn ngr(&self) -> usize {
        self.model.spec().gain_ranges
    }

    /// Pixels per segment.
    pub fn seg_len(&self) -> usize {
        self.model.segment_len()
    }

    /// Pixels per frame (slab of the present segments).
    pub fn frame_len(&self) -> usize {
        self.model.frame_len()
    }

    /// Segment id of slab position `k`.
    pub fn segment_id(&self, k: usize) -> usize {
        self.model.segments[k] as usize
    }

    /// The slab's ASIC grid.
    pub fn layout(&self) -> SlabLayout {
        SlabLayout::of_model(&self.model)
    }

    /// The raw algorithm the DAQ writes.
    pub fn raw_alg(&self) -> Alg {
        let (ma, mi, mc) = self.physics.raw_version;
        Alg::new("raw", ma, mi, mc)
    }

    fn schema(&self, alg: Alg, segment: u32, vars: Vec<VarDesc>) -> Schema {
        let m = &self.model;
        Schema {
            det_type: m.det_type.clone(),
            det_name: m.det_name.clone(),
            det_id: format!("synthetic_{}_{segment:02}", m.det_type),
            alg,
            segment,
            vars,
        }
    }

    /// The raw event schema of segment id `segment`: Jungfrau `(1, 512, 1024)` with the module
    /// scalars, the others one rank-2 array.
    pub fn raw_schema(&self, segment: u32) -> Schema {
        let vars = match self.family() {
            Family::Jungfrau => vec![
                VarDesc::new("raw", DataType::UINT16, 3),
                VarDesc::new("frame_cnt", DataType::UINT64, 0),
                VarDesc::new("timestamp", DataType::UINT64, 0),
                VarDesc::new("hotPixelThresh", DataType::UINT16, 0),
                VarDesc::new("numHotPixels", DataType::UINT32, 0),
                VarDesc::new("maxHotPixels", DataType::UINT32, 0),
            ],
            _ => vec![VarDesc::new("raw", DataType::UINT16, 2)],
        };
        self.schema(self.raw_alg(), segment, vars)
    }

    /// The per-segment configuration schema (ePix10ka only: `asicPixelConfig`, `trbit`).
    pub fn config_schema(&self, segment: u32) -> Option<Schema> {
        (self.family() == Family::Epix10ka).then(|| {
            self.schema(
                Alg::new("config", 2, 0, 1),
                segment,
                vec![
                    VarDesc::new("asicPixelConfig", DataType::UINT8, 3),
                    VarDesc::new("trbit", DataType::UINT8, 1),
                ],
            )
        })
    }

    /// The ePix10ka configuration written for every panel: auto high→low (pixel bits g = ga = 0,
    /// `trbit` = 1).
    pub fn epix_panel_config(&self) -> epix10ka::PanelConfig {
        epix10ka::PanelConfig::uniform(0, 1)
    }

    /// The idealised geometry of the present segments with the globals a CrystFEL user needs.
    pub fn geometry(&self, photon_energy_kev: f64, clen_m: f64) -> Geometry {
        let (bx, by) = (2.5, -1.5);
        let mut g = Geometry::synthetic(&self.model, self.full_segments(), bx, by);
        g.globals = vec![
            (
                "photon_energy".into(),
                format!("{}", photon_energy_kev * 1000.0),
            ),
            ("clen".into(), format!("{clen_m}")),
            ("res".into(), format!("{}", self.res())),
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
        synthetic_res(self.family())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::model::FAMILIES;

    #[test]
    fn physics_has_one_value_per_gain_range_of_the_table() {
        for f in FAMILIES {
            let Some(p) = Physics::of(f.family) else {
                continue;
            };
            let n = f.gain_ranges;
            assert_eq!((p.gains.len(), p.pedestals.len(), p.noise.len()), (n, n, n));
            assert_eq!(p.ranges.len(), p.codes.len());
            assert!(p.ranges.iter().all(|&r| r < n));
        }
    }

    #[test]
    fn segment_lists_parse_and_bad_ones_are_refused() {
        let e = SynthDetector::new("jungfrau4M", Some(vec![8])).unwrap_err();
        assert!(e.to_string().contains("segments 0..7, not 8"), "{e}");
        let e = SynthDetector::new("cspad", None).unwrap_err();
        assert!(e.to_string().contains("jungfrau16M"), "{e}");
        let d = SynthDetector::new("JUNGFRAU16M", Some(vec![3, 17, 30])).unwrap();
        assert_eq!((d.nsegs(), d.full_segments(), d.segment_id(2)), (3, 32, 30));
        assert_eq!(d.model.raw_version, "0.2.0");
    }
}
