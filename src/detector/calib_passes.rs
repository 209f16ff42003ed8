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
with_avx2!(
    /// `out = (raw & 0x3FFF) − ped`, and the same where `ok`, NaN elsewhere, into `cmv`
    /// (strip-major); true when any pixel is eligible.
    pedestal,
    pedestal_body,
    (h: Half<'_>, ok: &[u8], out: &mut [f32], cmv: &mut [f32]) -> bool
);

/// `out = (cmv − cms[column] where cmv is not NaN, else out) · gain`.
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
fn pedestal_body(h: Half<'_>, ok: &[u8], out: &mut [f32], cmv: &mut [f32]) -> bool {
    let Half { raw, ped, cols, st } = h;
    let n = raw.len();
    let hrows = n / cols;
    let (ped, ok, out, cmv) = (&ped[..n], &ok[..n], &mut out[..n], &mut cmv[..st.len(cols)]);
    let mut any = [0u8; LANES];
    for r in 0..hrows {
        let at = r * cols..(r + 1) * cols;
        let rw = raw[at.clone()].as_chunks::<LANES>().0;
        let p = ped[at.clone()].as_chunks::<LANES>().0;
        let k = ok[at.clone()].as_chunks::<LANES>().0;
        let o = out[at].as_chunks_mut::<LANES>().0;
        for (s, (((rw, p), k), o)) in rw.iter().zip(p).zip(k).zip(o).enumerate() {
            let c: &mut [f32; LANES] = (&mut cmv[st.index(r, s * LANES)..][..LANES])
                .try_into()
                .expect("a strip row is LANES wide");
            for l in 0..LANES {
                let d = f32::from(rw[l] & 0x3FFF) - p[l];
                o[l] = d;
                c[l] = if k[l] != 0 { d } else { f32::NAN };
                any[l] |= k[l];
            }
        }
    }
    any != [0; LANES]
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
                let v = _mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), _mm256_loadu_ps(m.as_ptr()));
                let keep = _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v);
                let x = _mm256_blendv_ps(v, _mm256_loadu_ps(o.as_ptr()), keep);
                let y = _mm256_mul_ps(x, _mm256_loadu_ps(g.as_ptr()));
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
                let v = c[i] - m[i];
                o[i] = (if v.is_nan() { o[i] } else { v }) * g[i];
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
                cmv[st.index(r, c)] = if v < -60.0 { f32::NAN } else { v };
            }
        }
        let cms: Vec<f32> = (0..cols).map(|_| next() * 0.1).collect();
        let gain: Vec<f32> = (0..hrows * cols).map(|_| next() * 0.01).collect();
        let out0: Vec<f32> = (0..hrows * cols).map(|_| next()).collect();
        let (mut a, mut b) = (out0.clone(), out0.clone());
        gain_body(st, &gain, &cmv, &cms, &mut a);
        super::gain(st, &gain, &cmv, &cms, &mut b);
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            assert_eq!(p.to_bits(), q.to_bits(), "pixel {i}");
            let v = cmv[st.index(i / cols, i % cols)] - cms[i % cols];
            let want = if v.is_nan() { out0[i] } else { v } * gain[i];
            assert_eq!(p.to_bits(), want.to_bits(), "pixel {i}");
        }
        assert!(cmv.iter().any(|v| v.is_nan()) && cmv.iter().any(|v| !v.is_nan()));
    }
}
