//! ePix10ka (ePix10k2M, epixquad): per-pixel gain ranges from the configuration bits and the
//! data gain bit (psana `UtilsEpix10ka`).
//!
//! Panel 352×384 = 2×2 ASICs of 176×192. The configuration panel is assembled from the four
//! `asicPixelConfig` ASIC blocks as `[[rot180(A2), rot180(A1)], [A3, A0]]`; bits 2 (g) and 3 (ga)
//! are kept, the ASIC's `trbit` becomes bit 4 and data bit 14 becomes bit 5.

/// Panel rows.
pub const ROWS: usize = 352;
/// Panel columns.
pub const COLS: usize = 384;
/// ASIC rows.
pub const ASIC_ROWS: usize = 176;
/// ASIC columns.
pub const ASIC_COLS: usize = 192;
/// Number of gain ranges in psana's constants.
pub const NUM_GAIN_RANGES: usize = 7;
/// ADC bits.
pub const DATA_MASK: u16 = 0x3FFF;
/// Gain-switch bit.
pub const GAIN_BIT: u16 = 0x4000;

/// psana gain-range indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum GainRange {
    FixedHigh = 0,
    FixedMedium = 1,
    FixedLow = 2,
    AutoHighLowHigh = 3,
    AutoMediumLowMedium = 4,
    AutoHighLowLow = 5,
    AutoMediumLowLow = 6,
}

impl GainRange {
    /// Ranges psana's common-mode algorithm 7 uses (high and medium: 0, 1, 3, 4).
    pub fn in_common_mode(self) -> bool {
        matches!(
            self,
            GainRange::FixedHigh
                | GainRange::FixedMedium
                | GainRange::AutoHighLowHigh
                | GainRange::AutoMediumLowMedium
        )
    }
}

/// Gain range from the combined control bits (bit 5 data, 4 trbit, 3 ga, 2 g), psana's table;
/// `None` for the unused combination g=1, ga=0.
pub fn gain_range(cbits: u8) -> Option<GainRange> {
    use GainRange::*;
    if cbits & 28 == 28 {
        Some(FixedHigh)
    } else if cbits & 28 == 12 {
        Some(FixedMedium)
    } else if cbits & 12 == 8 {
        Some(FixedLow)
    } else if cbits & 60 == 16 {
        Some(AutoHighLowHigh)
    } else if cbits & 60 == 0 {
        Some(AutoMediumLowMedium)
    } else if cbits & 60 == 48 {
        Some(AutoHighLowLow)
    } else if cbits & 60 == 32 {
        Some(AutoMediumLowLow)
    } else {
        None
    }
}

/// Errors in configuration inputs.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("segment {seg}: asicPixelConfig has {actual} bytes, expected {expected}")]
    PixelConfig {
        seg: usize,
        actual: usize,
        expected: usize,
    },
    #[error("segment {seg}: trbit has {actual} entries, expected 4")]
    Trbit { seg: usize, actual: usize },
}

/// Configuration of one panel as the DAQ records it (ePix10ka; ePixHR2x2 through
/// [`super::epixhr2x2`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanelConfig {
    /// `asicPixelConfig`, u8: (4, 176, 192) for ePix10ka, (288, 384) for ePixHR2x2.
    pub asic_pixel_config: Vec<u8>,
    /// `trbit`, one per ASIC.
    pub trbit: [u8; 4],
}

impl PanelConfig {
    /// A panel with every pixel in the same configuration (`pixel_config` byte and `trbit`).
    pub fn uniform(pixel_config: u8, trbit: u8) -> PanelConfig {
        PanelConfig {
            asic_pixel_config: vec![pixel_config; 4 * ASIC_ROWS * ASIC_COLS],
            trbit: [trbit; 4],
        }
    }

    /// From raw config arrays, checking sizes.
    pub fn new(
        seg: usize,
        asic_pixel_config: &[u8],
        trbit: &[u8],
    ) -> Result<PanelConfig, ConfigError> {
        let expected = 4 * ASIC_ROWS * ASIC_COLS;
        if asic_pixel_config.len() != expected {
            return Err(ConfigError::PixelConfig {
                seg,
                actual: asic_pixel_config.len(),
                expected,
            });
        }
        let trbit: [u8; 4] = trbit.try_into().map_err(|_| ConfigError::Trbit {
            seg,
            actual: trbit.len(),
        })?;
        Ok(PanelConfig {
            asic_pixel_config: asic_pixel_config.to_vec(),
            trbit,
        })
    }

    /// Control bits (2: g, 3: ga, 4: trbit) per panel pixel, 352×384 row-major.
    pub fn control_bits(&self) -> Vec<u8> {
        let mut out = vec![0u8; ROWS * COLS];
        let asic = |a: usize, r: usize, c: usize| {
            self.asic_pixel_config[(a * ASIC_ROWS + r) * ASIC_COLS + c]
        };
        for r in 0..ROWS {
            for c in 0..COLS {
                let top = r < ASIC_ROWS;
                let left = c < ASIC_COLS;
                let (a, ar, ac) = match (top, left) {
                    (true, true) => (2, ASIC_ROWS - 1 - r, ASIC_COLS - 1 - c),
                    (true, false) => (1, ASIC_ROWS - 1 - r, ASIC_COLS - 1 - (c - ASIC_COLS)),
                    (false, true) => (3, r - ASIC_ROWS, c),
                    (false, false) => (0, r - ASIC_ROWS, c - ASIC_COLS),
                };
                let tr = u8::from(self.trbit[a] != 0) << 4;
                out[r * COLS + c] = (asic(a, ar, ac) & 12) | tr;
            }
        }
        out
    }

    /// Gain range per panel pixel for data bit 14 clear (`[0]`) and set (`[1]`).
    pub fn gain_ranges(&self) -> [Vec<Option<GainRange>>; 2] {
        let cb = self.control_bits();
        [
            cb.iter().map(|&b| gain_range(b)).collect(),
            cb.iter().map(|&b| gain_range(b | 32)).collect(),
        ]
    }
}
