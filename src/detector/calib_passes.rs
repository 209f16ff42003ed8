//! The vectorised passes of calibration, compiled twice: for AVX2 (picked at run time) and for
//! the baseline target.
//!
//! With common mode, a half segment's eligible values are kept in *strip-major* order
//! ([`Strips`]): strip `s` (columns `8s..8s+8`) holds its rows one after another. A column
//! strip, a bank (whole strips) and an 8×8 block are then contiguous for the median search.
//! The passes stream whole rows: calibrating bank-wide or half-width slabs, to keep more in
//! cache between the passes, was slower (short strided runs defeat the hardware prefetchers),
//! while running one half's gain pass fused with the next half's pedestal pass is faster.

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
    /// `out = ((raw & adc) − ped) · gain`.
    plain,
    plain_body,
    (raw: &[u16], adc: u16, ped: &[f32], gain: &[f32], out: &mut [f32]) -> ()
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

/// A pedestal pass: `d = (raw & adc) − ped` into the strips where the pixel is eligible, a
/// NaN carrying the sign of `d` elsewhere, and the pixels to fix up listed in `aside`.
#[derive(Debug)]
pub struct PedestalPass<'a> {
    pub h: Half<'a>,
    /// The half's roles, one entry per [`LANES`] pixels.
    pub role: &'a [Roles],
    pub aside: Aside<'a>,
}

/// A gain pass: `out = (cmv − cms[column]) · gain`; where `cmv` is NaN, zero with the sign of
/// `cmv · gain` (the value of a pixel that is not kept: its gain factor is zero).
#[derive(Debug)]
pub struct GainPass<'a> {
    pub gain: &'a [f32],
    /// Column corrections.
    pub cms: &'a [f32],
    pub out: &'a mut [f32],
}

/// Runs a pedestal pass into `cmv` (strip-major, layout `p.h.st`); true when any pixel is
/// eligible.
pub fn pedestal(p: PedestalPass<'_>, cmv: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        let (st, cols, hrows) = (p.h.st, p.h.cols, p.h.raw.len() / p.h.cols);
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { passes_avx2::<false, true>(st, cols, hrows, cmv, None, Some(p)) };
    }
    pedestal_body(p, cmv)
}

/// Runs a gain pass from `cmv` (strip-major, layout `st`).
pub fn gain(st: Strips, g: GainPass<'_>, cmv: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        let (cols, hrows) = (g.cms.len(), g.out.len() / g.cms.len());
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { passes_avx2::<true, false>(st, cols, hrows, cmv, Some(g), None) };
        return;
    }
    gain_body(st, g, cmv);
}

/// The gain pass of one half segment and the pedestal pass of another of the same shape on the
/// same strips, row by row: each strip row is read for the first and then overwritten by the
/// second, so its cache line is already at hand when written. True when any pixel of the
/// pedestal pass is eligible.
pub fn gain_then_pedestal(g: GainPass<'_>, p: PedestalPass<'_>, cmv: &mut [f32]) -> bool {
    let (st, cols, hrows) = (p.h.st, p.h.cols, p.h.raw.len() / p.h.cols);
    assert!(g.cms.len() == cols && g.out.len() == hrows * cols);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { passes_avx2::<true, true>(st, cols, hrows, cmv, Some(g), Some(p)) };
    }
    gain_body(st, g, cmv);
    pedestal_body(p, cmv)
}

/// A half segment's raw words and pedestals, `cols` columns (a multiple of [`LANES`]) wide, and
/// the strip layout of its eligible values.
#[derive(Debug, Clone, Copy)]
pub struct Half<'a> {
    pub raw: &'a [u16],
    /// The ADC bits of a raw word (`0x3FFF` with gain bits above them, `0xFFFF` without).
    pub adc: u16,
    pub ped: &'a [f32],
    pub cols: usize,
    pub st: Strips,
}

/// `out = ((raw & adc) − ped) · gain`.
#[inline(always)]
fn plain_body(raw: &[u16], adc: u16, ped: &[f32], gain: &[f32], out: &mut [f32]) {
    let n = out.len();
    let (raw, ped, gain) = (&raw[..n], &ped[..n], &gain[..n]);
    for (((o, &r), &p), &g) in out.iter_mut().zip(raw).zip(ped).zip(gain) {
        *o = (f32::from(r & adc) - p) * g;
    }
}

/// Lists the lanes `need` (a bit per lane) of the pixels `i0..i0 + LANES`.
#[cold]
#[inline(never)]
fn set_aside(i0: usize, need: u32, h: (&[u16], u16, &[f32]), aside: &mut Aside<'_>) {
    let (raw, adc, ped) = h;
    for l in (0..LANES).filter(|l| need >> l & 1 != 0) {
        let (i, r) = (i0 + l, raw[i0 + l]);
        if r & aside.code_bits != 0 {
            aside.switched.push(i as u32);
        } else {
            aside.kept.push((i as u32, f32::from(r & adc) - ped[i]));
        }
    }
}

fn pedestal_body(p: PedestalPass<'_>, cmv: &mut [f32]) -> bool {
    let PedestalPass {
        h:
            Half {
                raw,
                adc,
                ped,
                cols,
                st,
            },
        role,
        mut aside,
    } = p;
    let n = raw.len();
    let (ped, role) = (&ped[..n], &role[..n / LANES]);
    let mut any = false;
    for i0 in (0..n).step_by(LANES) {
        let (r, c) = (i0 / cols, i0 % cols);
        let strip = &mut cmv[st.index(r, c)..][..LANES];
        let mut need = 0;
        for (l, v) in strip.iter_mut().enumerate() {
            let (w, k) = (raw[i0 + l], role[i0 / LANES] >> l);
            let d = f32::from(w & adc) - ped[i0 + l];
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
            set_aside(i0, need, (raw, adc, ped), &mut aside);
        }
    }
    any
}

/// The value of a pixel whose strip value `c` is NaN: zero with the sign of `c · g`.
#[inline(always)]
fn signed_zero(c: f32, g: f32) -> f32 {
    f32::from_bits((c.to_bits() ^ g.to_bits()) & 0x8000_0000)
}

/// The gain pass (`G`) and the pedestal pass (`P`) of `hrows` rows of `cols` columns, eight
/// pixels at a time straight from and into the strips (the portable gain loop needs a row copy
/// to vectorise); the rare pixels of the pedestal pass set aside through a mask test.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn passes_avx2<const G: bool, const P: bool>(
    st: Strips,
    cols: usize,
    hrows: usize,
    cmv: &mut [f32],
    g: Option<GainPass<'_>>,
    p: Option<PedestalPass<'_>>,
) -> bool {
    use std::arch::x86_64::*;
    let n = hrows * cols;
    assert!(cols.is_multiple_of(LANES) && hrows <= st.rows && cmv.len() >= st.len(cols));
    let (gp, mp, op) = match g {
        Some(g) => {
            assert!(g.gain.len() >= n && g.cms.len() >= cols && g.out.len() >= n);
            (g.gain.as_ptr(), g.cms.as_ptr(), g.out.as_mut_ptr())
        }
        None => (std::ptr::null(), std::ptr::null(), std::ptr::null_mut()),
    };
    let (raw, adc_bits, ped, role, mut aside): (&[u16], u16, &[f32], &[Roles], _) = match p {
        Some(p) => {
            assert!(p.h.raw.len() >= n && p.h.ped.len() >= n && p.role.len() >= n / LANES);
            (p.h.raw, p.h.adc, p.h.ped, p.role, Some(p.aside))
        }
        None => (&[], 0, &[], &[], None),
    };
    assert!(G != gp.is_null() && P == aside.is_some());
    let adc = _mm256_set1_epi32(i32::from(adc_bits));
    let qnan = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FC0_0000));
    let code_bits = aside.as_ref().map_or(0, |a| a.code_bits);
    let code = _mm256_set1_epi32(i32::from(code_bits));
    let zero = _mm256_setzero_si256();
    let sign = _mm256_set1_ps(-0.0);
    let lane_e = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    let lane_k = _mm256_slli_epi32::<8>(lane_e);
    let mut any = zero;
    for r in 0..hrows {
        let at = r * cols;
        // SAFETY: row `r` of every per-pixel input and of `out` holds `cols` values, `cms`
        // holds `cols`, and strip `s` of `cmv` holds row `r` at `s * stride + r * LANES`, all
        // in range by the assertions above; the pointers of a pass that does not run are not
        // used; AVX2 is enabled.
        unsafe {
            let mut cp = cmv.as_mut_ptr().add(r * LANES);
            for c in (0..cols).step_by(LANES) {
                if G {
                    let v = _mm256_loadu_ps(cp);
                    let gv = _mm256_loadu_ps(gp.add(at + c));
                    let y = _mm256_mul_ps(_mm256_sub_ps(v, _mm256_loadu_ps(mp.add(c))), gv);
                    let z = _mm256_and_ps(_mm256_xor_ps(v, gv), sign);
                    let y = _mm256_blendv_ps(y, z, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
                    _mm256_storeu_ps(op.add(at + c), y);
                }
                if P {
                    let w = _mm256_cvtepu16_epi32(_mm_loadu_si128(raw.as_ptr().add(at + c).cast()));
                    let d = _mm256_sub_ps(
                        _mm256_cvtepi32_ps(_mm256_and_si256(w, adc)),
                        _mm256_loadu_ps(ped.as_ptr().add(at + c)),
                    );
                    let k = _mm256_set1_epi32(i32::from(*role.as_ptr().add((at + c) / LANES)));
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
                    if need != 0
                        && let Some(a) = aside.as_mut()
                    {
                        set_aside(at + c, need, (raw, adc_bits, ped), a);
                    }
                }
                cp = cp.add(st.stride);
            }
        }
    }
    P && _mm256_testz_si256(any, _mm256_set1_epi32(0xFF)) == 0
}

#[inline(always)]
fn gain_body(st: Strips, g: GainPass<'_>, cmv: &[f32]) {
    const PIECE: usize = 256;
    let GainPass { gain, cms, out } = g;
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
    use crate::algo::spots::SplitMix64;

    #[test]
    fn gain_pass_paths_agree() {
        let (hrows, cols) = (24, 64);
        let st = Strips::new(hrows);
        let mut rng = SplitMix64::new(0x2545_F491_4F6C_DD1D);
        let mut next = move || rng.uniform() as f32 * 200.0 - 100.0;
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
        let g = |out| GainPass {
            gain: &gain,
            cms: &cms,
            out,
        };
        gain_body(st, g(&mut a), &cmv);
        super::gain(st, g(&mut b), &mut cmv.clone());
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

    #[test]
    fn fused_passes_equal_the_passes_in_turn() {
        let (hrows, cols) = (20, 48);
        let n = hrows * cols;
        let st = Strips::new(hrows);
        let mut rng = SplitMix64::new(0x9E37_79B9_7F4A_7C15);
        let mut next = move || rng.next_u64() >> 11;
        let raw: Vec<u16> = (0..n).map(|_| next() as u16).collect();
        let ped: Vec<f32> = (0..n)
            .map(|i| {
                if i % 97 == 5 {
                    f32::NAN
                } else {
                    (next() % 20000) as f32 * 0.7
                }
            })
            .collect();
        let gain: Vec<f32> = (0..n)
            .map(|_| (next() % 1000) as f32 * 0.01 - 2.0)
            .collect();
        let role: Vec<Roles> = (0..n / LANES).map(|_| next() as u16).collect();
        let cms: Vec<f32> = (0..cols).map(|_| (next() % 100) as f32 * 0.1).collect();
        let mut cmv0 = vec![f32::NAN; st.len(cols)];
        for (i, v) in cmv0.iter_mut().enumerate() {
            if i % 3 != 0 {
                *v = (next() % 4000) as f32 * 0.25 - 500.0;
            }
        }
        let h = Half {
            raw: &raw,
            adc: 0x3FFF,
            ped: &ped,
            cols,
            st,
        };
        let run = |fused: bool| {
            let (mut cmv, mut out) = (cmv0.clone(), vec![0.0f32; n]);
            let (mut switched, mut kept) = (Vec::new(), Vec::new());
            let aside = Aside {
                code_bits: 0x4000,
                switched: &mut switched,
                kept: &mut kept,
            };
            let g = GainPass {
                gain: &gain,
                cms: &cms,
                out: &mut out,
            };
            let p = PedestalPass {
                h,
                role: &role,
                aside,
            };
            let any = if fused {
                gain_then_pedestal(g, p, &mut cmv)
            } else {
                gain_body(st, g, &cmv);
                pedestal_body(p, &mut cmv)
            };
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let kept: Vec<(u32, u32)> = kept.iter().map(|&(i, d)| (i, d.to_bits())).collect();
            (any, bits(&cmv), bits(&out), switched, kept)
        };
        let (a, b) = (run(false), run(true));
        assert!(a.0 && !a.3.is_empty() && !a.4.is_empty());
        assert!(a == b, "fused and sequential passes differ");
    }
}
