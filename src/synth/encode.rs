//! Raw encoding as the hardware does it: deposited energy → photon statistics → gain selection →
//! pedestal + energy × gain + electronic noise → 14-bit ADC with the gain bits on top.
//! ePix10ka (auto high→low): bit 14 set when the pixel switched to low gain. Jungfrau: bits 15..14
//! `00` G0, `01` G1, `11` G2. ePix100: one gain, and an offset per row and bank (common mode).
//!
//! The hot loop streams 12 bytes per pixel (packed first-range constants and the packed
//! background); the other gain ranges are looked up only for the pixels that switch, and spot
//! pixels are re-encoded in a second pass over the spot windows.

use super::constants::{BadPixel, SynthConstants};
use super::detector_spec::EPIX100_BANK_COLS;
use super::random::{FastNormal, poisson, poisson_inversion, round_fast, uniform_hi32};
use super::scene::{
    BACKGROUND_SCALE_MAX, SPOT_HALF_WINDOW, TruthSpot, add_gaussian, unpack_background,
};
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
/// `pixel_rms` is generated on this grid (ADU) so that it packs exactly into 14 bits.
pub const RMS_QUANTUM: f32 = 1.0 / 1024.0;

#[derive(Debug, Clone, Copy)]
struct Packed {
    gain: f32,
    ped: u16,
    /// rms / RMS_QUANTUM in bits 0..14, the [`BadPixel`] code in bits 14..16.
    rms_bad: u16,
}

/// Per-event inputs of one segment.
#[derive(Debug, Clone, Copy)]
pub struct SegmentInput<'s> {
    /// Packed mean background at scale 1 (see [`crate::synth::Scene::segment_background`]).
    pub background: &'s [u32],
    /// The event's background scale (≤ [`BACKGROUND_SCALE_MAX`]).
    pub background_scale: f32,
    /// The event's spots (those of other segments are skipped).
    pub spots: &'s [TruthSpot],
    pub photon_kev: f32,
    pub noise: Noise,
}

/// Encodes segments of one detector with its constants.
#[derive(Debug, Clone)]
pub struct Encoder<'a> {
    c: &'a SynthConstants,
    /// First gain range (ePix10ka AHL high, Jungfrau G0), present segments in slab order.
    packed: Vec<Packed>,
    /// Constants ranges the hardware selects from, in switching order, and their gain bits.
    ranges: &'static [usize],
    codes: &'static [u16],
    switch: [f32; 2],
    normal: FastNormal,
}

impl<'a> Encoder<'a> {
    /// Packs the constants used on every pixel of the segments present.
    pub fn new(c: &'a SynthConstants) -> Encoder<'a> {
        let det = &c.det;
        let phys = det.physics;
        let len = det.seg_len();
        let packed = (0..det.frame_len())
            .map(|j| {
                let (seg, i) = (det.segment_id(j / len), j % len);
                let k = c.index(phys.ranges[0], seg, i);
                let bad = c.bad[seg * len + i];
                Packed {
                    gain: c.pixel_gain[k],
                    ped: c.baseline(k) as u16,
                    rms_bad: (c.pixel_rms[k] / RMS_QUANTUM) as u16 | ((bad as u16) << 14),
                }
            })
            .collect();
        Encoder {
            c,
            packed,
            ranges: phys.ranges,
            codes: phys.codes,
            switch: phys.switch_kev,
            normal: FastNormal::new(),
        }
    }

    /// Encodes the segment at slab position `k` of one event into `out` (raw words), drawing
    /// noise from `rng`.
    pub fn encode_segment(
        &self,
        k: usize,
        input: &SegmentInput<'_>,
        rng: &mut SplitMix64,
        out: &mut [u16],
    ) {
        let det = &self.c.det;
        let (rows, cols) = (det.rows(), det.cols());
        let len = det.seg_len();
        let seg = det.segment_id(k);
        // Offset of the segment in the whole detector's constants.
        let base = seg * len;
        let packed = &self.packed[k * len..(k + 1) * len];
        let bg = &input.background[..len];
        let out = &mut out[..len];
        let keep = input.background_scale / BACKGROUND_SCALE_MAX as f32;
        let keep_bits = (f64::from(keep) * (1u64 << 24) as f64) as u64;
        for (i, ((o, &px), &b)) in out.iter_mut().zip(packed).zip(bg).enumerate() {
            *o = self.pixel(base, px, b, 0.0, keep_bits, input, rng, i);
        }
        // Spot windows never overlap (spots are further apart than a window), so each pixel is
        // re-encoded once with its background and its spot.
        let h = SPOT_HALF_WINDOW;
        let w = (2 * h + 1) as usize;
        let mut win = [0f32; ((2 * SPOT_HALF_WINDOW + 1) * (2 * SPOT_HALF_WINDOW + 1)) as usize];
        let row0 = (k * rows) as f64;
        for s in input.spots.iter().filter(|s| s.segment == seg) {
            win.fill(0.0);
            let (r0, c0) = (s.ss.round() - row0, s.fs.round());
            add_gaussian(
                &mut win,
                w,
                w,
                s.ss - row0 - r0 + h as f64,
                s.fs - c0 + h as f64,
                s.sigma,
                s.intensity_kev,
            );
            for (k, &e) in win.iter().enumerate() {
                let r = r0 as i64 - h + (k / w) as i64;
                let c = c0 as i64 - h + (k % w) as i64;
                if r < 0 || c < 0 || r >= rows as i64 || c >= cols as i64 {
                    continue;
                }
                let i = r as usize * cols + c as usize;
                out[i] = self.pixel(base, packed[i], bg[i], e, keep_bits, input, rng, i);
            }
        }
        let cm = det.physics.common_mode_rms;
        if cm > 0.0 && input.noise.electronic {
            self.add_common_mode(cm, packed, cols, rng, out);
        }
    }

    /// Adds an offset of rms `cm` (whole ADU) per row and bank of [`EPIX100_BANK_COLS`] to the
    /// good pixels of a one-gain segment.
    fn add_common_mode(
        &self,
        cm: f32,
        packed: &[Packed],
        cols: usize,
        rng: &mut SplitMix64,
        out: &mut [u16],
    ) {
        for (o, p) in out.chunks_mut(cols).zip(packed.chunks(cols)) {
            for (o, p) in o
                .chunks_mut(EPIX100_BANK_COLS)
                .zip(p.chunks(EPIX100_BANK_COLS))
            {
                let off = round_fast(cm * self.normal.sample(rng)) as i32;
                for (o, p) in o.iter_mut().zip(p) {
                    if p.rms_bad >> 14 == BadPixel::Good as u16 {
                        *o = (i32::from(*o) + off).clamp(0, ADC_MAX as i32) as u16;
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn pixel(
        &self,
        base: usize,
        px: Packed,
        bgq: u32,
        spot_kev: f32,
        keep_bits: u64,
        input: &SegmentInput<'_>,
        rng: &mut SplitMix64,
        i: usize,
    ) -> u16 {
        let bits = rng.next_u64();
        let photon_kev = input.photon_kev;
        let (lambda, p0) = unpack_background(bgq);
        let energy = if input.noise.photon {
            let mut photons = 0.0;
            if (bits >> 40) >= u64::from(bgq >> 16) << 8 {
                let smax = BACKGROUND_SCALE_MAX as f32;
                let drawn = poisson_inversion(lambda * smax, p0, uniform_hi32(bits)) as u32;
                for _ in 0..drawn {
                    photons += f32::from(u8::from(rng.next_u64() >> 40 < keep_bits));
                }
            }
            if spot_kev > 0.0 {
                let b2 = rng.next_u64();
                photons += poisson(
                    spot_kev / photon_kev,
                    uniform_hi32(b2),
                    self.normal.from_bits(b2),
                );
            }
            photons * photon_kev
        } else {
            lambda * input.background_scale * photon_kev + spot_kev
        };
        let bad = px.rms_bad >> 14;
        let e_noise = |rms: f32| {
            if input.noise.electronic {
                rms * self.normal.from_bits(bits >> 16)
            } else {
                0.0
            }
        };
        let k = usize::from(energy > self.switch[0]) + usize::from(energy > self.switch[1]);
        let adc = if bad != BadPixel::Good as u16 {
            if bad == BadPixel::Hot as u16 {
                f32::from(px.ped) + 3000.0 + 40.0 * self.normal.from_bits(bits >> 24)
            } else if bad == BadPixel::Dead as u16 {
                0.0
            } else {
                ADC_MAX
            }
        } else if k == 0 {
            let rms = f32::from(px.rms_bad & 0x3FFF) * RMS_QUANTUM;
            f32::from(px.ped) + energy * px.gain + e_noise(rms)
        } else {
            let j = self.ranges[k] * self.c.range_len() + base + i;
            self.c.baseline(j) + energy * self.c.pixel_gain[j] + e_noise(self.c.pixel_rms[j])
        };
        let code = if bad == 0 { self.codes[k] } else { 0 };
        // Round half up without a libm call (x86-64 baseline has no SSE4.1 `roundss`).
        ((adc.clamp(0.0, ADC_MAX) + 0.5) as u16) | code
    }
}
