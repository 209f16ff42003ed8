//! ePix100 (psana `epix100_raw_2_0_1`): one 704×768 segment of 2×2 ASICs (352×384), one gain
//! range, the ADC in all 16 raw bits (`_data_bit_mask = 0xffff`).

/// Segment rows.
pub const ROWS: usize = 704;
/// Segment columns.
pub const COLS: usize = 768;
/// ADC bits.
pub const DATA_MASK: u16 = 0xFFFF;
/// psana's gain factor when the `pixel_gain` constant is missing (`GAIN_FACTOR_DEFAULT`, keV/ADU).
pub const GAIN_FACTOR_DEFAULT: f32 = 0.06;
