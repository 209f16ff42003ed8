//! Raw encoding as the hardware does it: deposited energy → photon statistics → gain selection →
//! pedestal + energy × gain + electronic noise → 14-bit ADC with the gain bits on top.
//! ePix10ka (auto high→low): bit 14 set when the pixel switched to low gain. Jungfrau: bits 15..14
//! `00` G0, `01` G1, `11` G2.

use super::constants::{BadPixel, SynthConstants};
use super::detector_spec::{DetectorModel, EPIX_AHL_RANGES, EPIX_SWITCH_KEV, JUNGFRAU_SWITCH_KEV};
use super::random::{FastNormal, poisson, poisson_inversion, uniform_hi32};
use super::scene::BACKGROUND_SCALE_MAX;
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

/// Encodes one segment. `bg_photons` is the mean background in photons (scaled by `bg_scale`
/// ≤ [`BACKGROUND_SCALE_MAX`]) and `bg_p0` its zero-photon probability at the largest scale,
/// `spots_kev` the expected spot energy of the same pixels; writes raw words to `out`.
///
/// Background photons are drawn at the largest scale (mostly one comparison with `bg_p0`) and
/// each is kept with probability `bg_scale / BACKGROUND_SCALE_MAX`, which is exactly Poisson of
/// the event's mean.
#[allow(clippy::too_many_arguments)]
pub fn encode_segment<'a>(
    c: &'a SynthConstants,
    seg: usize,
    bg_photons: &[f32],
    bg_p0: &[f32],
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
    let slice = |v: &'a [f32], gr: usize| &v[gr * n + base..gr * n + base + len];
    // The constants ranges the hardware can select, in switching order, and their gain bits.
    let (ranges, codes, switch): (&[usize], &[u16], [f32; 2]) = match spec.model {
        DetectorModel::Epix10k2M => (
            &EPIX_AHL_RANGES,
            &[0, 0x4000],
            [EPIX_SWITCH_KEV, f32::INFINITY],
        ),
        DetectorModel::Jungfrau4M => (&[0, 1, 2], &[0, 0x4000, 0xC000], JUNGFRAU_SWITCH_KEV),
    };
    let ped: Vec<&[f32]> = ranges.iter().map(|&g| slice(&c.pedestals, g)).collect();
    let off: Vec<Option<&[f32]>> = ranges
        .iter()
        .map(|&g| c.pixel_offset.as_deref().map(|o| slice(o, g)))
        .collect();
    let gain: Vec<&[f32]> = ranges.iter().map(|&g| slice(&c.pixel_gain, g)).collect();
    let rms: Vec<&[f32]> = ranges.iter().map(|&g| slice(&c.pixel_rms, g)).collect();
    let bad = &c.bad[base..base + len];
    let (bg_photons, bg_p0) = (&bg_photons[..len], &bg_p0[..len]);
    let (spots_kev, out) = (&spots_kev[..len], &mut out[..len]);
    let smax = BACKGROUND_SCALE_MAX as f32;
    let keep = bg_scale / smax;
    // A photon survives thinning when the top 24 bits of a draw fall below this.
    let keep_bits = (f64::from(keep) * (1u64 << 24) as f64) as u64;
    let inv_e = 1.0 / photon_kev;
    // Bits of one u64 per pixel: 0..16 Poisson z, 16..32 electronic noise, 40..64 uniform.
    for i in 0..len {
        let bits = rng.next_u64();
        let mu_bg = bg_photons[i] * bg_scale;
        let spot = spots_kev[i];
        let energy = if noise.photon {
            let u = uniform_hi32(bits);
            let mut photons = 0.0;
            if u > bg_p0[i] {
                let drawn = poisson_inversion(bg_photons[i] * smax, bg_p0[i], u) as u32;
                for _ in 0..drawn {
                    photons += f32::from(u8::from(rng.next_u64() >> 40 < keep_bits));
                }
            }
            if spot > 0.0 {
                let b2 = rng.next_u64();
                photons += poisson(spot * inv_e, uniform_hi32(b2), normal.from_bits(b2));
            }
            photons * photon_kev
        } else {
            mu_bg * photon_kev + spot
        };
        let k = usize::from(energy > switch[0]) + usize::from(energy > switch[1]);
        let code = codes[k];
        let baseline = ped[k][i] + off[k].map_or(0.0, |o| o[i]);
        let e_noise = if noise.electronic {
            rms[k][i] * normal.from_bits(bits >> 16)
        } else {
            0.0
        };
        let adc = match bad[i] {
            BadPixel::Good => baseline + energy * gain[k][i] + e_noise,
            BadPixel::Hot => ped[0][i] + 3000.0 + 40.0 * normal.from_bits(bits >> 24),
            BadPixel::Dead => 0.0,
            BadPixel::Stuck => ADC_MAX,
        };
        let code = if bad[i] == BadPixel::Good { code } else { 0 };
        // Round half up without a libm call (x86-64 baseline has no SSE4.1 `roundss`).
        out[i] = ((adc.clamp(0.0, ADC_MAX) + 0.5) as u16) | code;
    }
}
