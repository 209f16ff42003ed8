//! Raw encoding as the hardware does it: deposited energy → photon statistics → gain selection →
//! pedestal + energy × gain + electronic noise → 14-bit ADC with the gain bits on top.
//! ePix10ka (auto high→low): bit 14 set when the pixel switched to low gain. Jungfrau: bits 15..14
//! `00` G0, `01` G1, `11` G2.

use super::constants::{BadPixel, SynthConstants};
use super::detector_spec::{DetectorModel, EPIX_AHL_RANGES, EPIX_SWITCH_KEV, JUNGFRAU_SWITCH_KEV};
use super::random::{FastNormal, poisson, uniform_hi32};
use crate::algo::spots::SplitMix64;

/// Which noise sources to simulate (both in real runs; none to test the encoding exactly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Noise {
    /// Poisson photon statistics.
    pub photon: bool,
    /// Electronic (Gaussian) noise of `pixel_rms`.
    pub electronic: bool,
}

impl Noise {
    /// Every noise source on.
    pub const ALL: Noise = Noise {
        photon: true,
        electronic: true,
    };
    /// No noise: the raw value is the rounded expected ADC.
    pub const NONE: Noise = Noise {
        photon: false,
        electronic: false,
    };
}

/// Largest ADC value.
pub const ADC_MAX: f32 = 16383.0;

/// Encodes one segment. `bg_photons` is the mean background in photons (scaled by `bg_scale`),
/// `spots_kev` the expected spot energy of the same pixels; writes raw words to `out`.
#[allow(clippy::too_many_arguments)]
pub fn encode_segment(
    c: &SynthConstants,
    seg: usize,
    bg_photons: &[f32],
    bg_scale: f32,
    spots_kev: &[f32],
    photon_kev: f32,
    noise: Noise,
    rng: &mut SplitMix64,
    out: &mut [u16],
) {
    let spec = c.spec;
    let n = spec.frame_len();
    let len = spec.seg_len();
    let base = seg * len;
    let normal = FastNormal::new();
    let range = |gr: usize| gr * n + base..gr * n + base + len;
    let ped: Vec<&[f32]> = (0..spec.ngr).map(|g| &c.pedestals[range(g)]).collect();
    let off: Vec<Option<&[f32]>> = (0..spec.ngr)
        .map(|g| c.pixel_offset.as_ref().map(|o| &o[range(g)]))
        .collect();
    let gain: Vec<&[f32]> = (0..spec.ngr).map(|g| &c.pixel_gain[range(g)]).collect();
    let rms: Vec<&[f32]> = (0..spec.ngr).map(|g| &c.pixel_rms[range(g)]).collect();
    let bad = &c.bad[base..base + len];
    let inv_e = 1.0 / photon_kev;
    // Bits of one u64 per pixel: 0..16 Poisson z, 16..32 electronic noise, 40..64 uniform.
    for i in 0..len {
        let bits = rng.next_u64();
        let mu_bg = bg_photons[i] * bg_scale;
        let spot = spots_kev[i];
        let energy = if noise.photon {
            let mut photons = poisson(mu_bg, uniform_hi32(bits), normal.from_bits(bits));
            if spot > 0.0 {
                let b2 = rng.next_u64();
                photons += poisson(spot * inv_e, uniform_hi32(b2), normal.from_bits(b2));
            }
            photons * photon_kev
        } else {
            mu_bg * photon_kev + spot
        };
        let (gr, code) = match spec.model {
            DetectorModel::Epix10k2M => {
                if energy <= EPIX_SWITCH_KEV {
                    (EPIX_AHL_RANGES[0], 0u16)
                } else {
                    (EPIX_AHL_RANGES[1], 0x4000)
                }
            }
            DetectorModel::Jungfrau4M => {
                if energy <= JUNGFRAU_SWITCH_KEV[0] {
                    (0, 0u16)
                } else if energy <= JUNGFRAU_SWITCH_KEV[1] {
                    (1, 0x4000)
                } else {
                    (2, 0xC000)
                }
            }
        };
        let baseline = ped[gr][i] + off[gr].map_or(0.0, |o| o[i]);
        let e_noise = if noise.electronic {
            rms[gr][i] * normal.from_bits(bits >> 16)
        } else {
            0.0
        };
        let adc = match bad[i] {
            BadPixel::Good => baseline + energy * gain[gr][i] + e_noise,
            BadPixel::Hot => ped[0][i] + 3000.0 + 40.0 * normal.from_bits(bits >> 24),
            BadPixel::Dead => 0.0,
            BadPixel::Stuck => ADC_MAX,
        };
        let code = if bad[i] == BadPixel::Good { code } else { 0 };
        out[i] = (adc.round().clamp(0.0, ADC_MAX) as u16) | code;
    }
}
