//! Jungfrau: gain from raw bits 15..14 (`00` → 0, `01` → 1, `11` → 2, `10` → bad), ADC in bits
//! 13..0; module 512×1024 = 2×4 ASICs of 256×256 (psana `UtilsJungfrau`).

/// Module rows.
pub const ROWS: usize = 512;
/// Module columns.
pub const COLS: usize = 1024;
/// Number of gain ranges in psana's constants.
pub const NUM_GAIN_RANGES: usize = 3;
/// ADC bits.
pub const DATA_MASK: u16 = 0x3FFF;

/// Gain range of a raw value, `None` for the bad code `10`.
pub fn gain_range(raw: u16) -> Option<u8> {
    match raw >> 14 {
        0 => Some(0),
        1 => Some(1),
        3 => Some(2),
        _ => None,
    }
}
