//! The vectorised passes of calibration, compiled twice: for AVX2 (picked at run time) and for
//! the baseline target.
//!
//! With common mode, a half segment's eligible values are kept in *strip-major* order
//! ([`Strips`]): strip `s` (columns `8s..8s+8`) holds its rows one after another. A column
//! strip, a bank (whole strips) and an 8×8 block are then contiguous for the median search. (Calibrating bank-wide slabs instead of whole rows,
//! to keep the pedestals cached between the passes, was slower: short strided runs defeat the
//! hardware prefetchers.)

use crate::algo::median::LANES;

/// Strip-major order of a half segment. Strips start an odd number of cache lines apart, so
/// that walking a row through all strips does not pile onto a few cache sets; the padding
/// between strips holds NaN, which no median counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strips {
    /// Rows per strip.
    pub rows: usize,
    /// Values from one strip's start to the next.
    pub stride: usize,
}

impl Strips {
    /// The layout for `rows` rows.
    pub fn new(rows: usize) -> Strips {
        const LINE: usize = 64 / std::mem::size_of::<f32>();
        Strips {
            rows,
            stride: ((rows * LANES).div_ceil(LINE) | 1) * LINE,
        }
    }

    /// Position of pixel `(r, c)`.
    #[inline(always)]
    pub fn index(&self, r: usize, c: usize) -> usize {
        (c / LANES) * self.stride + r * LANES + c % LANES
    }

    /// Values needed for `cols` columns (a multiple of [`LANES`]).
    pub fn len(&self, cols: usize) -> usize {
        cols / LANES * self.stride
    }
}

/// Runs `$body` through an AVX2-enabled copy when the CPU has AVX2.
macro_rules! with_avx2 {
    ($(#[$doc:meta])* $name:ident, $body:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

with_avx2!(
    /// `out = ((raw & 0x3FFF) − ped) · gain`.
    plain,
    plain_body,
    (raw: &[u16], ped: &[f32], gain: &[f32], out: &mut [f32]) -> ()
);
/// The roles of [`LANES`] consecutive pixels for [`pedestal`]: bit `l` is set when pixel `l` is
/// eligible for common mode, bit `8 + l` when it is not but is kept (its gain factor is not
/// zero, so its value is needed).
pub type Roles = u16;

/// Packs per-pixel eligibility and gain factors into [`Roles`], [`LANES`] pixels each.
pub fn pack_roles(eligible: &[u8], gain: &[f32]) -> Vec<Roles> {
    let packed = eligible
        .chunks(LANES)
        .zip(gain.chunks(LANES))
        .map(|(e, g)| {
            let mut r = 0;
            for (l, (&e, &g)) in e.iter().zip(g).enumerate() {
                if e != 0 {
                    r |= 1 << l;
                } else if g != 0.0 {
                    r |= 1 << (LANES + l);
                }
            }
            r
        });
    crate::huge_pages::collect(eligible.len().div_ceil(LANES), packed)
}

/// The pixels a [`pedestal`] pass sets aside for a scalar fix-up.
#[derive(Debug)]
pub struct Aside<'a> {
    /// Raw gain bits that select another table than the first one (0: none does).
    pub code_bits: u16,
    /// Pixels with any of `code_bits` set.
    pub switched: &'a mut Vec<u32>,
    /// The other pixels that are kept (see [`Roles`]) or whose `d` is NaN, with `d`.
    pub kept: &'a mut Vec<(u32, f32)>,
}

/// `d = (raw & 0x3FFF) − ped` into `cmv` (strip-major) where the pixel is eligible, a NaN
/// carrying the sign of `d` elsewhere, and the pixels to fix up listed in `aside`. True when
/// any pixel is eligible.
pub fn pedestal(h: Half<'_>, role: &[Roles], cmv: &mut [f32], aside: Aside<'_>) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { pedestal_avx2(h, role, cmv, aside) };
    }
    pedestal_body(h, role, cmv, aside)
}

/// `out = (cmv − cms[column]) · gain`; where `cmv` is NaN, zero with the sign of
/// `cmv · gain` (the value of a pixel that is not kept: its gain factor is zero).
pub fn gain(st: Strips, gain: &[f32], cmv: &[f32], cms: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { gain_avx2(st, gain, cmv, cms, out) };
    }
    gain_body(st, gain, cmv, cms, out);
}

/// A half segment's raw words and pedestals, `cols` columns (a multiple of [`LANES`]) wide, and
/// the strip layout of its eligible values.
#[derive(Debug, Clone, Copy)]
pub struct Half<'a> {
    pub raw: &'a [u16],
    pub ped: &'a [f32],
    pub cols: usize,
    pub st: Strips,
}

/// `out = ((raw & 0x3FFF) − ped) · gain`.
#[inline(always)]
fn plain_body(raw: &[u16], ped: &[f32], gain: &[f32], out: &mut [f32]) {
    let n = out.len();
    let (raw, ped, gain) = (&raw[..n], &ped[..n], &gain[..n]);
    for (((o, &r), &p), &g) in out.iter_mut().zip(raw).zip(ped).zip(gain) {
        *o = (f32::from(r & 0x3FFF) - p) * g;
    }
}

/// Lists the lanes `need` (a bit per lane) of the pixels `i0..i0 + LANES`.
#[cold]
#[inline(never)]
fn set_aside(i0: usize, need: u32, raw: &[u16], ped: &[f32], aside: &mut Aside<'_>) {
    for l in (0..LANES).filter(|l| need >> l & 1 != 0) {
        let (i, r) = (i0 + l, raw[i0 + l]);
        if r & aside.code_bits != 0 {
            aside.switched.push(i as u32);
        } else {
            aside.kept.push((i as u32, f32::from(r & 0x3FFF) - ped[i]));
        }
    }
}

fn pedestal_body(h: Half<'_>, role: &[Roles], cmv: &mut [f32], mut aside: Aside<'_>) -> bool {
    let Half { raw, ped, cols, st } = h;
    let n = raw.len();
    let (ped, role) = (&ped[..n], &role[..n / LANES]);
    let mut any = false;
    for i0 in (0..n).step_by(LANES) {
        let (r, c) = (i0 / cols, i0 % cols);
        let strip = &mut cmv[st.index(r, c)..][..LANES];
        let mut need = 0;
        for (l, v) in strip.iter_mut().enumerate() {
            let (w, k) = (raw[i0 + l], role[i0 / LANES] >> l);
            let d = f32::from(w & 0x3FFF) - ped[i0 + l];
            let eligible = k & 1 != 0;
            *v = if eligible {
                d
            } else {
                f32::from_bits(d.to_bits() | 0x7FC0_0000)
            };
            let kept = k >> LANES & 1 != 0;
            let set = (!eligible & kept) | d.is_nan() | (w & aside.code_bits != 0);
            need |= u32::from(set) << l;
            any |= eligible;
        }
        if need != 0 {
            set_aside(i0, need, raw, ped, &mut aside);
        }
    }
    any
}

/// Eight pixels at a time, straight into their strips; the rare pixels set aside through a
/// mask test.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn pedestal_avx2(h: Half<'_>, role: &[Roles], cmv: &mut [f32], mut aside: Aside<'_>) -> bool {
    use std::arch::x86_64::*;
    let Half { raw, ped, cols, st } = h;
    let n = raw.len();
    let hrows = n / cols;
    assert!(
        cols.is_multiple_of(LANES)
            && ped.len() >= n
            && role.len() >= n / LANES
            && hrows <= st.rows
            && cmv.len() >= st.len(cols)
    );
    let adc = _mm256_set1_epi32(0x3FFF);
    let qnan = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FC0_0000));
    let code = _mm256_set1_epi32(i32::from(aside.code_bits));
    let zero = _mm256_setzero_si256();
    let lane_e = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    let lane_k = _mm256_slli_epi32::<8>(lane_e);
    let mut any = zero;
    for r in 0..hrows {
        let at = r * cols;
        // SAFETY: row `r` of `raw`, `ped` and `role` holds `cols` values and strip `s` of `cmv`
        // holds row `r` at `s * stride + r * LANES`, all in range by the assertion above;
        // AVX2 is enabled.
        unsafe {
            let (rp, pp) = (raw.as_ptr().add(at), ped.as_ptr().add(at));
            let kp = role.as_ptr().add(at / LANES);
            let mut cp = cmv.as_mut_ptr().add(r * LANES);
            for c in (0..cols).step_by(LANES) {
                let w = _mm256_cvtepu16_epi32(_mm_loadu_si128(rp.add(c).cast()));
                let d = _mm256_sub_ps(
                    _mm256_cvtepi32_ps(_mm256_and_si256(w, adc)),
                    _mm256_loadu_ps(pp.add(c)),
                );
                let k = _mm256_set1_epi32(i32::from(*kp.add(c / LANES)));
                any = _mm256_or_si256(any, k);
                let eligible = _mm256_cmpeq_epi32(_mm256_and_si256(k, lane_e), lane_e);
                let eligible = _mm256_castsi256_ps(eligible);
                let kept = _mm256_cmpeq_epi32(_mm256_and_si256(k, lane_k), lane_k);
                let kept = _mm256_castsi256_ps(kept);
                _mm256_storeu_ps(cp, _mm256_blendv_ps(_mm256_or_ps(d, qnan), d, eligible));
                let coded = _mm256_cmpgt_epi32(_mm256_and_si256(w, code), zero);
                let need = _mm256_or_ps(
                    _mm256_or_ps(
                        _mm256_andnot_ps(eligible, kept),
                        _mm256_cmp_ps::<_CMP_UNORD_Q>(d, d),
                    ),
                    _mm256_castsi256_ps(coded),
                );
                let need = _mm256_movemask_ps(need) as u32;
                if need != 0 {
                    set_aside(at + c, need, raw, ped, &mut aside);
                }
                cp = cp.add(st.stride);
            }
        }
    }
    _mm256_testz_si256(any, _mm256_set1_epi32(0xFF)) == 0
}

/// The value of a pixel whose strip value `c` is NaN: zero with the sign of `c · g`.
#[inline(always)]
fn signed_zero(c: f32, g: f32) -> f32 {
    f32::from_bits((c.to_bits() ^ g.to_bits()) & 0x8000_0000)
}

/// Straight from the strips, eight pixels at a time (the portable loop needs a row copy to
/// vectorise).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn gain_avx2(st: Strips, gain: &[f32], cmv: &[f32], cms: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let cols = cms.len();
    let n = out.len();
    let gain = &gain[..n];
    let m = cms.as_chunks::<LANES>().0;
    let sign = _mm256_set1_ps(-0.0);
    for (r, (orow, grow)) in out
        .chunks_exact_mut(cols)
        .zip(gain.chunks_exact(cols))
        .enumerate()
    {
        let o = orow.as_chunks_mut::<LANES>().0;
        let g = grow.as_chunks::<LANES>().0;
        for (s, ((o, g), m)) in o.iter_mut().zip(g).zip(m).enumerate() {
            let c: &[f32; LANES] = cmv[st.index(r, s * LANES)..][..LANES]
                .try_into()
                .expect("a strip row is LANES wide");
            // SAFETY: every pointer is to an 8-f32 array.
            unsafe {
                let c = _mm256_loadu_ps(c.as_ptr());
                let g = _mm256_loadu_ps(g.as_ptr());
                let y = _mm256_mul_ps(_mm256_sub_ps(c, _mm256_loadu_ps(m.as_ptr())), g);
                let z = _mm256_and_ps(_mm256_xor_ps(c, g), sign);
                let y = _mm256_blendv_ps(y, z, _mm256_cmp_ps::<_CMP_UNORD_Q>(c, c));
                _mm256_storeu_ps(o.as_mut_ptr(), y);
            }
        }
    }
}

#[inline(always)]
fn gain_body(st: Strips, gain: &[f32], cmv: &[f32], cms: &[f32], out: &mut [f32]) {
    const PIECE: usize = 256;
    let cols = cms.len();
    let n = out.len();
    let hrows = n / cols;
    let gain = &gain[..n];
    let mut tmp = [0.0f32; PIECE];
    for r in 0..hrows {
        for p0 in (0..cols).step_by(PIECE) {
            let pw = PIECE.min(cols - p0);
            // The row's piece gathered from its strips, so that the arithmetic runs on
            // contiguous slices (and vectorises).
            for (j, t) in tmp[..pw].chunks_exact_mut(LANES).enumerate() {
                t.copy_from_slice(&cmv[st.index(r, p0 + j * LANES)..][..LANES]);
            }
            let at = r * cols + p0..r * cols + p0 + pw;
            let (o, g) = (&mut out[at.clone()], &gain[at]);
            let (m, c) = (&cms[p0..p0 + pw], &tmp[..pw]);
            for i in 0..pw {
                o[i] = if c[i].is_nan() {
                    signed_zero(c[i], g[i])
                } else {
                    (c[i] - m[i]) * g[i]
                };
            }
        }
    }
}

/// Appends to `idx` the positions of the raw words with any of `code_bits` set.
pub fn coded(raw: &[u16], code_bits: u16, idx: &mut Vec<u32>) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { coded_avx2(raw, code_bits, idx) };
    }
    coded_from(raw, 0, code_bits, idx);
}

fn coded_from(raw: &[u16], start: usize, code_bits: u16, idx: &mut Vec<u32>) {
    for (j, &r) in raw[start..].iter().enumerate() {
        if r & code_bits != 0 {
            idx.push((start + j) as u32);
        }
    }
}

/// 16 words per vector; a set word gives two set bits of the byte mask.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn coded_avx2(raw: &[u16], code_bits: u16, idx: &mut Vec<u32>) {
    use std::arch::x86_64::*;
    let (blocks, _) = raw.as_chunks::<16>();
    let bits = _mm256_set1_epi16(code_bits as i16);
    let zero = _mm256_setzero_si256();
    for (b, block) in blocks.iter().enumerate() {
        // SAFETY: a block is 16 u16 = 32 bytes.
        let v = unsafe { _mm256_loadu_si256(block.as_ptr().cast()) };
        let clear = _mm256_cmpeq_epi16(_mm256_and_si256(v, bits), zero);
        let mut m = !(_mm256_movemask_epi8(clear) as u32);
        while m != 0 {
            idx.push((b * 16) as u32 + m.trailing_zeros() / 2);
            m &= m - 1;
            m &= m - 1;
        }
    }
    coded_from(raw, blocks.len() * 16, code_bits, idx);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gain_pass_paths_agree() {
        let (hrows, cols) = (24, 64);
        let st = Strips::new(hrows);
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1 << 24) as f32 * 200.0 - 100.0
        };
        let mut cmv = vec![f32::NAN; st.len(cols)];
        for r in 0..hrows {
            for c in 0..cols {
                let v = next();
                cmv[st.index(r, c)] = if !(-60.0..=80.0).contains(&v) {
                    f32::from_bits(v.to_bits() | 0x7FC0_0000)
                } else {
                    v
                };
            }
        }
        let cms: Vec<f32> = (0..cols).map(|_| next() * 0.1).collect();
        let gain: Vec<f32> = (0..hrows * cols).map(|_| next() * 0.01).collect();
        let (mut a, mut b) = (vec![1.0; hrows * cols], vec![2.0; hrows * cols]);
        gain_body(st, &gain, &cmv, &cms, &mut a);
        super::gain(st, &gain, &cmv, &cms, &mut b);
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            assert_eq!(p.to_bits(), q.to_bits(), "pixel {i}");
            let c = cmv[st.index(i / cols, i % cols)];
            let want = if c.is_nan() {
                if c.is_sign_negative() != gain[i].is_sign_negative() {
                    -0.0
                } else {
                    0.0
                }
            } else {
                (c - cms[i % cols]) * gain[i]
            };
            assert_eq!(p.to_bits(), want.to_bits(), "pixel {i}");
        }
        for sign in [false, true] {
            assert!(
                cmv.iter()
                    .any(|v| v.is_nan() && v.is_sign_negative() == sign)
            );
        }
        assert!(cmv.iter().any(|v| !v.is_nan()));
    }
}
