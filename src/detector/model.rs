//! The detector-model table: every family lclstreamer decodes, what the DAQ calls it, its
//! segment and ASIC shapes, its gain ranges and the constants psana calibrates it with; and
//! [`DetectorModel`], one run's detector as its Configure declares it (family, segments present,
//! segment shape). Configuration, calibration, the pipeline and `synth` all read this table.

use super::{epix10ka, epix100, epixhr2x2, epixm320, jungfrau};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Detector families, each calibrated with psana's recipe for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// ePix10ka panels (quad, 2M): 7 gain ranges from configuration bits and data bit 14.
    Epix10ka,
    /// ePixHR2x2 panels: ePix10ka's 7 gain ranges on 288×384, data gain bit 15.
    EpixHr2x2,
    /// Jungfrau modules (0.5M … 16M): 3 gains from data bits 15..14.
    Jungfrau,
    /// ePix100: one gain, 704×768.
    Epix100,
    /// ePixM320: 4 ASICs of 192×384 per segment, pedestals chosen by data bit 15, no gain.
    EpixM320,
    /// Any other area detector with a UINT16 `raw` array: sent raw; pedestal-subtracted for
    /// peak finding when pedestals are given.
    Raw,
}

/// One row of the model table.
#[derive(Debug, Clone, Copy)]
pub struct FamilySpec {
    pub family: Family,
    /// The name users and the configuration give the family.
    pub name: &'static str,
    /// `det_type` values of the XTC2 Names that select this family.
    pub det_types: &'static [&'static str],
    /// Segment shape `(rows, cols)`; `None` when it comes from the data.
    pub segment: Option<(usize, usize)>,
    /// ASIC grid of a segment `(rows, cols)` of ASICs.
    pub asics: (usize, usize),
    /// Gain ranges in psana's constants (the leading axis of `pedestals`).
    pub gain_ranges: usize,
    /// Constants that must be present (psana ctype names).
    pub required: &'static [&'static str],
    /// Constants used when present.
    pub optional: &'static [&'static str],
    /// Planes of the constants' segment axis per DAQ segment (psana stores an ePixM320 segment
    /// as its 4 ASICs).
    pub planes_per_segment: usize,
}

/// Every family, in the order the table is searched.
pub const FAMILIES: &[FamilySpec] = &[
    FamilySpec {
        family: Family::Epix10ka,
        name: "epix10ka",
        det_types: &["epix10ka", "epix10ka2m", "epix10kaquad"],
        segment: Some((epix10ka::ROWS, epix10ka::COLS)),
        asics: (2, 2),
        gain_ranges: epix10ka::NUM_GAIN_RANGES,
        required: &["pedestals", "pixel_gain"],
        optional: &["pixel_status", "pixel_mask"],
        planes_per_segment: 1,
    },
    FamilySpec {
        family: Family::EpixHr2x2,
        name: "epixhr2x2",
        det_types: &["epixhr2x2"],
        segment: Some((epixhr2x2::ROWS, epixhr2x2::COLS)),
        asics: (2, 2),
        gain_ranges: epixhr2x2::NUM_GAIN_RANGES,
        required: &["pedestals", "pixel_gain"],
        optional: &["pixel_status", "pixel_mask"],
        planes_per_segment: 1,
    },
    FamilySpec {
        family: Family::Jungfrau,
        name: "jungfrau",
        det_types: &["jungfrau"],
        segment: Some((jungfrau::ROWS, jungfrau::COLS)),
        asics: (2, 4),
        gain_ranges: jungfrau::NUM_GAIN_RANGES,
        required: &["pedestals", "pixel_gain"],
        optional: &["pixel_offset", "pixel_status", "pixel_mask"],
        planes_per_segment: 1,
    },
    FamilySpec {
        family: Family::Epix100,
        name: "epix100",
        det_types: &["epix100", "epix100a"],
        segment: Some((epix100::ROWS, epix100::COLS)),
        asics: (2, 2),
        gain_ranges: 1,
        required: &["pedestals", "pixel_gain"],
        optional: &["pixel_status", "pixel_mask"],
        planes_per_segment: 1,
    },
    FamilySpec {
        family: Family::EpixM320,
        name: "epixm320",
        det_types: &["epixm320"],
        segment: Some((4 * epixm320::ROWS, epixm320::COLS)),
        asics: (4, 1),
        gain_ranges: epixm320::NUM_GAIN_RANGES,
        required: &["pedestals"],
        optional: &["pixel_status", "pixel_mask"],
        planes_per_segment: 4,
    },
    FamilySpec {
        family: Family::Raw,
        name: "raw",
        det_types: &[],
        segment: None,
        asics: (1, 1),
        gain_ranges: 1,
        required: &[],
        optional: &["pedestals", "pixel_status", "pixel_mask"],
        planes_per_segment: 1,
    },
];

impl Family {
    /// The family's row of the table.
    pub fn spec(self) -> &'static FamilySpec {
        FAMILIES
            .iter()
            .find(|s| s.family == self)
            .expect("every family has a row")
    }

    /// The family whose `det_type` list holds `det_type`; [`Family::Raw`] otherwise.
    pub fn of_det_type(det_type: &str) -> Family {
        FAMILIES
            .iter()
            .find(|s| s.det_types.iter().any(|t| t.eq_ignore_ascii_case(det_type)))
            .map_or(Family::Raw, |s| s.family)
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.spec().name)
    }
}

/// Named detectors users know, by family and full segment count.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    pub name: &'static str,
    pub family: Family,
    /// Segments of the full detector (a run may hold fewer).
    pub segments: usize,
}

/// The named detectors (`detector.kind`, `synth --detector`).
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "epixquad",
        family: Family::Epix10ka,
        segments: 4,
    },
    Preset {
        name: "epix10k2M",
        family: Family::Epix10ka,
        segments: 16,
    },
    Preset {
        name: "jungfrau05M",
        family: Family::Jungfrau,
        segments: 1,
    },
    Preset {
        name: "jungfrau1M",
        family: Family::Jungfrau,
        segments: 2,
    },
    Preset {
        name: "jungfrau4M",
        family: Family::Jungfrau,
        segments: 8,
    },
    Preset {
        name: "jungfrau16M",
        family: Family::Jungfrau,
        segments: 32,
    },
    Preset {
        name: "epix100",
        family: Family::Epix100,
        segments: 1,
    },
];

/// What `detector.kind` may say: a family (any size) or a named detector (family and size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Family(Family),
    Preset(&'static str),
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        if let Some(p) = PRESETS.iter().find(|p| p.name.eq_ignore_ascii_case(s)) {
            return Ok(Kind::Preset(p.name));
        }
        if let Some(f) = FAMILIES.iter().find(|f| f.name.eq_ignore_ascii_case(s)) {
            return Ok(Kind::Family(f.family));
        }
        Err(format!(
            "unknown detector kind {s:?}: expected {}",
            kind_names()
        ))
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The accepted `detector.kind` values, for messages.
pub fn kind_names() -> String {
    let mut v: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
    v.extend(PRESETS.iter().map(|p| p.name));
    v.join(", ")
}

impl Kind {
    /// The preset of this name.
    pub fn preset(name: &str) -> Option<&'static Preset> {
        PRESETS.iter().find(|p| p.name == name)
    }
}

/// Errors deriving a model from a run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("no stream of this run declares detector {0:?} with a `raw` algorithm")]
    NotInRun(String),
    #[error("detector {det:?}: its raw segments declare different types or versions ({a} and {b})")]
    Mixed { det: String, a: String, b: String },
    #[error("detector {det:?} segment {segment} is declared twice")]
    Duplicate { det: String, segment: u32 },
    #[error("detector {det:?} has no UINT16 `raw` array in its raw algorithm")]
    NoRawArray { det: String },
    #[error("detector {det:?}: {msg}")]
    Shape { det: String, msg: String },
    #[error("detector.kind {kind} contradicts the data: {msg}")]
    Kind { kind: String, msg: String },
}

/// One run's detector as its Configure declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectorModel {
    pub family: Family,
    /// `detName` in the run.
    pub det_name: String,
    /// `det_type` in the run.
    pub det_type: String,
    /// Version of the raw algorithm, `major.minor.micro`.
    pub raw_version: String,
    /// Segment ids present, ascending: the slab stacks them in this order.
    pub segments: Vec<u32>,
    /// Shape of one segment `(rows, cols)`.
    pub segment_shape: (usize, usize),
}

impl DetectorModel {
    /// A model of `family` with the given segments (its fixed segment shape).
    pub fn new(family: Family, det_name: &str, segments: Vec<u32>) -> DetectorModel {
        DetectorModel {
            family,
            det_name: det_name.to_string(),
            det_type: family
                .spec()
                .det_types
                .first()
                .unwrap_or(&"raw")
                .to_string(),
            raw_version: String::new(),
            segments,
            segment_shape: family.spec().segment.unwrap_or((0, 0)),
        }
    }

    /// The family's table row.
    pub fn spec(&self) -> &'static FamilySpec {
        self.family.spec()
    }

    /// Segments present.
    pub fn nsegs(&self) -> usize {
        self.segments.len()
    }

    /// Pixels per segment.
    pub fn segment_len(&self) -> usize {
        self.segment_shape.0 * self.segment_shape.1
    }

    /// The slab `(nsegs·rows, cols)`: present segments stacked in segment-id order.
    pub fn slab_shape(&self) -> (usize, usize) {
        (self.nsegs() * self.segment_shape.0, self.segment_shape.1)
    }

    /// Pixels per frame.
    pub fn frame_len(&self) -> usize {
        self.nsegs() * self.segment_len()
    }

    /// Slab position of segment id `seg`.
    pub fn slab_index(&self, seg: u32) -> Option<usize> {
        self.segments.binary_search(&seg).ok()
    }

    /// The ASIC shape `(rows, cols)` inside a segment.
    pub fn asic_shape(&self) -> (usize, usize) {
        let (ar, ac) = self.spec().asics;
        (self.segment_shape.0 / ar, self.segment_shape.1 / ac)
    }

    /// How the constants hold this model: the planes of their segment axis for the segments
    /// present and the shape of one plane.
    pub fn constant_planes(&self) -> (Vec<u32>, (usize, usize)) {
        let k = self.spec().planes_per_segment as u32;
        let planes = self
            .segments
            .iter()
            .flat_map(|&s| s * k..(s + 1) * k)
            .collect();
        let (rows, cols) = self.segment_shape;
        (planes, (rows / k as usize, cols))
    }

    /// Checks the model against `detector.kind`.
    pub fn check_kind(&self, kind: Kind) -> Result<(), ModelError> {
        let (name, family, max) = match kind {
            Kind::Family(f) => (f.to_string(), f, None),
            Kind::Preset(p) => {
                let p = Kind::preset(p).expect("parsed presets exist");
                (p.name.to_string(), p.family, Some(p.segments))
            }
        };
        let bad = |msg: String| {
            Err(ModelError::Kind {
                kind: name.clone(),
                msg,
            })
        };
        if family != self.family {
            return bad(format!(
                "detector {:?} has det_type {:?}, a {} detector, not {}",
                self.det_name, self.det_type, self.family, family
            ));
        }
        if let Some(max) = max
            && let Some(&s) = self.segments.iter().find(|&&s| s as usize >= max)
        {
            return bad(format!(
                "detector {:?} has segment {s}; a {name} has segments 0..{}",
                self.det_name,
                max - 1
            ));
        }
        Ok(())
    }

    /// One line for logs and summaries.
    pub fn describe(&self) -> String {
        format!(
            "{} ({} {}, raw {}): {} segments {:?} of {}x{}, slab {}x{}",
            self.det_name,
            self.family,
            self.det_type,
            self.raw_version,
            self.nsegs(),
            self.segments,
            self.segment_shape.0,
            self.segment_shape.1,
            self.slab_shape().0,
            self.slab_shape().1
        )
    }
}

/// Parses a segment list such as `0,3,5-9` (ids ascending after parsing, no repeats).
pub fn parse_segment_list(s: &str) -> Result<Vec<u32>, String> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim) {
        let num = |t: &str| {
            t.trim()
                .parse::<u32>()
                .map_err(|_| format!("segments {s:?}: {t:?} is not a segment id"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("segments {s:?}: range {part} runs backwards"));
                }
                v.extend(a..=b);
            }
            None => v.push(num(part)?),
        }
    }
    let n = v.len();
    v.sort_unstable();
    v.dedup();
    if v.len() != n {
        return Err(format!("segments {s:?} names a segment twice"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn det_types_select_families() {
        assert_eq!(Family::of_det_type("epix10ka"), Family::Epix10ka);
        assert_eq!(Family::of_det_type("jungfrau"), Family::Jungfrau);
        assert_eq!(Family::of_det_type("epixhr2x2"), Family::EpixHr2x2);
        assert_eq!(Family::EpixHr2x2.spec().segment, Some((288, 384)));
        assert_eq!(Family::of_det_type("epix100"), Family::Epix100);
        assert_eq!(Family::of_det_type("archon"), Family::Raw);
    }

    #[test]
    fn kinds_parse_and_check() {
        assert_eq!("epix10k2m".parse::<Kind>(), Ok(Kind::Preset("epix10k2M")));
        assert_eq!(
            "jungfrau".parse::<Kind>(),
            Ok(Kind::Family(Family::Jungfrau))
        );
        assert!("pnccd".parse::<Kind>().unwrap_err().contains("jungfrau16M"));
        let m = DetectorModel::new(Family::Jungfrau, "jf", vec![0, 5, 31]);
        assert_eq!(m.slab_shape(), (3 * 512, 1024));
        assert_eq!(m.slab_index(31), Some(2));
        assert!(m.check_kind(Kind::Preset("jungfrau16M")).is_ok());
        let e = m.check_kind(Kind::Preset("jungfrau4M")).unwrap_err();
        assert!(e.to_string().contains("segment 31"), "{e}");
        let e = m.check_kind(Kind::Preset("epix10k2M")).unwrap_err();
        assert!(e.to_string().contains("jungfrau"), "{e}");
    }

    #[test]
    fn segment_lists_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse_segment_list("0,3,5-9").unwrap(),
            [0, 3, 5, 6, 7, 8, 9]
        );
        assert_eq!(parse_segment_list("31, 2").unwrap(), [2, 31]);
        assert!(parse_segment_list("1,1").unwrap_err().contains("twice"));
        assert!(parse_segment_list("4-2").unwrap_err().contains("backwards"));
        assert!(parse_segment_list("a").unwrap_err().contains("\"a\""));
    }
}
