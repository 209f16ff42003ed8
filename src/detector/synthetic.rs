//! Synthetic ePix10k2M constants, configuration and raw frames (benchmarks and tests).

use super::calib::{CalibError, Calibrator};
use super::common_mode::CommonModeParams;
use super::constants::GainConstants;
use super::epix10ka::{self, PanelConfig};
use crate::algo::spots::SplitMix64;

/// psana default gains H : M : L in ADU/keV.
pub const DEFAULT_GAINS: [f32; 3] = [16.4, 5.466, 0.164];

/// A calibrator and raw frames to feed it.
#[derive(Debug, Clone)]
pub struct CalibCase {
    pub calibrator: Calibrator,
    pub constants: GainConstants,
    pub configs: Vec<PanelConfig>,
    pub raw_frames: Vec<Vec<u16>>,
}

/// Constants `(7, nsegs, 352, 384)`: pedestals near 1500 ADU, gains ±3 % around psana's
/// defaults per range, a few bad-status pixels.
pub fn epix10ka_constants(nsegs: usize, rng: &mut SplitMix64) -> GainConstants {
    let n = nsegs * epix10ka::ROWS * epix10ka::COLS;
    let ngr = epix10ka::NUM_GAIN_RANGES;
    let mut ped = vec![0.0f32; ngr * n];
    let mut gain = vec![0.0f32; ngr * n];
    let mut status = vec![0u32; ngr * n];
    // Ranges 0..6: H M L H M L L (auto ranges reuse the fixed-range gains).
    let g_of = [0usize, 1, 2, 0, 1, 2, 2];
    for gr in 0..ngr {
        for i in 0..n {
            ped[gr * n + i] = 1500.0 + 60.0 * rng.normal() as f32 + 100.0 * gr as f32;
            gain[gr * n + i] = DEFAULT_GAINS[g_of[gr]] * (1.0 + 0.03 * rng.normal() as f32);
            if rng.uniform() < 2e-4 {
                status[gr * n + i] = 1 << (gr % 4);
            }
        }
    }
    GainConstants {
        ngr,
        nsegs,
        rows: epix10ka::ROWS,
        cols: epix10ka::COLS,
        pedestals: ped,
        pixel_gain: gain,
        pixel_status: status,
        pixel_mask: None,
    }
}

/// Raw frames in auto high-to-low mode (`asicPixelConfig` 0, `trbit` 1): dark noise of 3 ADU,
/// a common-mode offset per row and bank, 1 % of pixels with 8 keV photons, 0.2 % switched to
/// low gain.
pub fn epix10ka_raw_frames(
    c: &GainConstants,
    nframes: usize,
    rng: &mut SplitMix64,
) -> Vec<Vec<u16>> {
    let n = c.frame_len();
    let (rows, cols) = (c.rows, c.cols);
    let (hi, lo) = (3usize, 5usize);
    (0..nframes)
        .map(|_| {
            let mut raw = vec![0u16; n];
            for s in 0..c.nsegs {
                for r in 0..rows {
                    for b in 0..8 {
                        let cm = 8.0 * rng.normal();
                        for col in b * 48..(b + 1) * 48 {
                            let i = (s * rows + r) * cols + col;
                            let u = rng.uniform();
                            let (gr, bit, e_kev) = if u < 0.002 {
                                (lo, 0x4000u16, 2000.0 * rng.uniform())
                            } else if u < 0.012 {
                                (hi, 0, 8.0)
                            } else {
                                (hi, 0, 0.0)
                            };
                            let k = gr * n + i;
                            let adc = c.pedestals[k] as f64
                                + e_kev * c.pixel_gain[k] as f64
                                + if gr == hi {
                                    cm + 3.0 * rng.normal()
                                } else {
                                    0.0
                                };
                            raw[i] = (adc.round().clamp(0.0, 16383.0) as u16) | bit;
                        }
                    }
                }
            }
            raw
        })
        .collect()
}

/// An ePix10k2M case: 16 segments in auto high-to-low mode with `nframes` raw frames.
pub fn epix10k2m_case(
    nframes: usize,
    seed: u64,
    cm: Option<CommonModeParams>,
) -> Result<CalibCase, CalibError> {
    let mut rng = SplitMix64::new(seed);
    let constants = epix10ka_constants(16, &mut rng);
    let configs = vec![PanelConfig::uniform(0, 1); 16];
    let raw_frames = epix10ka_raw_frames(&constants, nframes, &mut rng);
    let calibrator = Calibrator::epix10ka(&constants, &configs, None, cm)?;
    Ok(CalibCase {
        calibrator,
        constants,
        configs,
        raw_frames,
    })
}
