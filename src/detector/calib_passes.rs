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
/// Pixel role bit in the `role` table of [`pedestal`]: eligible for common mode.
pub const ELIGIBLE: u8 = 1;
/// Pixel role bit: not eligible, and its gain factor is not zero, so its value is needed.
pub const KEPT: u8 = 2;

/// `d = (raw & 0x3FFF) − ped` into `cmv` (strip-major) where the role is [`ELIGIBLE`]; a NaN
/// carrying the sign of `d` elsewhere; `(index, d)` appended to `kept` for the pixels that are
/// not eligible but [`KEPT`], and those whose `d` is NaN. True when any pixel is eligible.
pub fn pedestal(h: Half<'_>, role: &[u8], cmv: &mut [f32], kept: &mut Vec<(u32, f32)>) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { pedestal_avx2(h, role, cmv, kept) };
    }
    pedestal_body(h, role, cmv, kept)
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

#[inline(always)]
fn pedestal_body(h: Half<'_>, role: &[u8], cmv: &mut [f32], kept: &mut Vec<(u32, f32)>) -> bool {
    let Half { raw, ped, cols, st } = h;
    let n = raw.len();
    let hrows = n / cols;
    let (ped, role, cmv) = (&ped[..n], &role[..n], &mut cmv[..st.len(cols)]);
    let mut any = [0u8; LANES];
    for r in 0..hrows {
        let at = r * cols..(r + 1) * cols;
        let rw = raw[at.clone()].as_chunks::<LANES>().0;
        let p = ped[at.clone()].as_chunks::<LANES>().0;
        let k = role[at].as_chunks::<LANES>().0;
        for (s, ((rw, p), k)) in rw.iter().zip(p).zip(k).enumerate() {
            let c: &mut [f32; LANES] = (&mut cmv[st.index(r, s * LANES)..][..LANES])
                .try_into()
                .expect("a strip row is LANES wide");
            let mut need = [0u8; LANES];
            for l in 0..LANES {
                let d = f32::from(rw[l] & 0x3FFF) - p[l];
                let eligible = k[l] & ELIGIBLE != 0;
                c[l] = if eligible {
                    d
                } else {
                    f32::from_bits(d.to_bits() | 0x7FC0_0000)
                };
                need[l] = u8::from((!eligible & (k[l] & KEPT != 0)) | d.is_nan());
                any[l] |= k[l] & ELIGIBLE;
            }
            if u64::from_ne_bytes(need) != 0 {
                let i0 = r * cols + s * LANES;
                for l in 0..LANES {
                    if need[l] != 0 {
                        kept.push(((i0 + l) as u32, f32::from(rw[l] & 0x3FFF) - p[l]));
                    }
                }
            }
        }
    }
    any != [0; LANES]
}

/// Eight pixels at a time, the rare kept ones through a mask test.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn pedestal_avx2(h: Half<'_>, role: &[u8], cmv: &mut [f32], kept: &mut Vec<(u32, f32)>) -> bool {
    use std::arch::x86_64::*;
    let Half { raw, ped, cols, st } = h;
    let n = raw.len();
    let hrows = n / cols;
    let (ped, role, cmv) = (&ped[..n], &role[..n], &mut cmv[..st.len(cols)]);
    let adc = _mm256_set1_epi32(0x3FFF);
    let qnan = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FC0_0000));
    let (elig_bit, kept_bit) = (
        _mm256_set1_epi32(i32::from(ELIGIBLE)),
        _mm256_set1_epi32(i32::from(KEPT)),
    );
    let mut any = _mm256_setzero_si256();
    for r in 0..hrows {
        let at = r * cols..(r + 1) * cols;
        let rw = raw[at.clone()].as_chunks::<LANES>().0;
        let p = ped[at.clone()].as_chunks::<LANES>().0;
        let k = role[at].as_chunks::<LANES>().0;
        for (s, ((rw, p), k)) in rw.iter().zip(p).zip(k).enumerate() {
            let c: &mut [f32; LANES] = (&mut cmv[st.index(r, s * LANES)..][..LANES])
                .try_into()
                .expect("a strip row is LANES wide");
            // SAFETY: 8 u16 = 16 bytes, 8 u8 = 8 bytes, 8 f32 = 32 bytes behind each pointer.
            let need = unsafe {
                let w = _mm256_cvtepu16_epi32(_mm_loadu_si128(rw.as_ptr().cast()));
                let d = _mm256_sub_ps(
                    _mm256_cvtepi32_ps(_mm256_and_si256(w, adc)),
                    _mm256_loadu_ps(p.as_ptr()),
                );
                let role = _mm256_cvtepu8_epi32(_mm_loadl_epi64(k.as_ptr().cast()));
                let e = _mm256_and_si256(role, elig_bit);
                any = _mm256_or_si256(any, e);
                let eligible = _mm256_castsi256_ps(_mm256_cmpeq_epi32(e, elig_bit));
                _mm256_storeu_ps(
                    c.as_mut_ptr(),
                    _mm256_blendv_ps(_mm256_or_ps(d, qnan), d, eligible),
                );
                let keep = _mm256_castsi256_ps(_mm256_cmpeq_epi32(
                    _mm256_and_si256(role, kept_bit),
                    kept_bit,
                ));
                let need = _mm256_or_ps(
                    _mm256_andnot_ps(eligible, keep),
                    _mm256_cmp_ps::<_CMP_UNORD_Q>(d, d),
                );
                _mm256_movemask_ps(need)
            };
            if need != 0 {
                let i0 = r * cols + s * LANES;
                for l in (0..LANES).filter(|l| need >> l & 1 != 0) {
                    kept.push(((i0 + l) as u32, f32::from(rw[l] & 0x3FFF) - p[l]));
                }
            }
        }
    }
    _mm256_testz_si256(any, any) == 0
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
                if (c.is_sign_negative() != gain[i].is_sign_negative()) {
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
