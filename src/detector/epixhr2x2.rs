//! ePixHR2x2 (psana `epixhr2x2_raw_2_0_1`): ePix10ka's gain-range recipe on a 288×384 panel of
//! 2×2 ASICs of 144×192, with the data gain bit at 15 (bit 14 carries gain too and is ignored,
//! psana's `_data_gain_bit = B15`) below which `0x3FFF` is the ADC.
//!
//! The DAQ records `asicPixelConfig` as the whole panel, 288·384 bytes row-major; `trbit` is per
//! ASIC with the map `A1 | A3` over `A0 | A2` (psana `cbits_config_epixhr2x2`).

use super::epix10ka::{self, ConfigError, GainRange, PanelConfig};

/// Panel rows.
pub const ROWS: usize = 288;
/// Panel columns.
pub const COLS: usize = 384;
/// ASIC rows.
pub const ASIC_ROWS: usize = 144;
/// ASIC columns.
pub const ASIC_COLS: usize = 192;
/// Number of gain ranges in psana's constants.
pub const NUM_GAIN_RANGES: usize = 7;
/// ADC bits.
pub const DATA_MASK: u16 = 0x3FFF;
/// Gain-switch bit.
pub const GAIN_BIT: u16 = 0x8000;

/// A panel configuration from the DAQ's arrays, checking sizes.
pub fn panel_config(
    seg: usize,
    asic_pixel_config: &[u8],
    trbit: &[u8],
) -> Result<PanelConfig, ConfigError> {
    if asic_pixel_config.len() != ROWS * COLS {
        return Err(ConfigError::PixelConfig {
            seg,
            actual: asic_pixel_config.len(),
            expected: ROWS * COLS,
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

/// A panel with every pixel in the same configuration (`pixel_config` byte and `trbit`).
pub fn uniform(pixel_config: u8, trbit: u8) -> PanelConfig {
    PanelConfig {
        asic_pixel_config: vec![pixel_config; ROWS * COLS],
        trbit: [trbit; 4],
    }
}

/// The ASIC (index into `trbit`) of panel pixel `(r, c)`.
fn asic_of(r: usize, c: usize) -> usize {
    match (r < ASIC_ROWS, c < ASIC_COLS) {
        (true, true) => 1,
        (false, true) => 0,
        (true, false) => 3,
        (false, false) => 2,
    }
}

/// Control bits (2: g, 3: ga, 4: trbit) per panel pixel, 288×384 row-major; `None` when
/// `asicPixelConfig` is not one panel.
pub fn control_bits(cfg: &PanelConfig) -> Option<Vec<u8>> {
    if cfg.asic_pixel_config.len() != ROWS * COLS {
        return None;
    }
    let out = cfg
        .asic_pixel_config
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let tr = u8::from(cfg.trbit[asic_of(i / COLS, i % COLS)] != 0) << 4;
            (b & 12) | tr
        })
        .collect();
    Some(out)
}

/// Gain range per panel pixel for data bit 15 clear (`[0]`) and set (`[1]`).
pub fn gain_ranges(cfg: &PanelConfig) -> Option<[Vec<Option<GainRange>>; 2]> {
    let cb = control_bits(cfg)?;
    Some([
        cb.iter().map(|&b| epix10ka::gain_range(b)).collect(),
        cb.iter().map(|&b| epix10ka::gain_range(b | 32)).collect(),
    ])
}
