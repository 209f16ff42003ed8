//! ePixM320 (psana `epixm320_raw_0_0_0`, `_0_1_0`): one DAQ segment of four 192×384 ASICs
//! (raw `(4, 192, 384)`), the ADC in bits 14..0 and the gain switch in bit 15.

/// ASICs in the raw array.
pub const NUM_ASICS: usize = 4;
/// ASIC rows.
pub const ROWS: usize = 192;
/// ASIC columns.
pub const COLS: usize = 384;
/// Pedestal planes (gain bit clear, set).
pub const NUM_GAIN_RANGES: usize = 2;
/// ADC bits.
pub const DATA_MASK: u16 = 0x7FFF;
/// Gain-switch bit.
pub const GAIN_BIT: u16 = 0x8000;
