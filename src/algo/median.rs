//! Exact medians of many sample groups at once, without sorting.
//!
//! Samples sit in rows of [`LANES`] lanes. Either every lane is its own group (a strip of
//! columns, a stack of bank rows) or all lanes form one pooled group (a bank). NaN marks "not a
//! sample". Each group's two middle order statistics are bracketed by counting the samples at or
//! under per-lane thresholds, one vectorised pass over the rows per two probes (interpolation
//! guarded by bisection), until each statistic is one of the two smallest or the two largest
//! samples of its bracket, which a last pass reads off; a bracket of tied samples settles through
//! its extremes.
//! Only medians strictly inside `(-window, window)` are wanted (psana's `cormax`), which gives the
//! starting bracket. The result equals numpy's median (mean of the two middle values for even
//! counts) bit for bit, except that −0 and +0 count as equal; a group the search cannot settle
//! falls back to selection.

/// Lanes per row: one AVX2 vector of f32.
pub const LANES: usize = 8;

/// One row of samples, one per lane.
pub type Row = [f32; LANES];

/// Rows of samples (a column strip, a bank, transposed bank rows).
#[derive(Debug, Clone, Copy)]
pub struct Samples<'a> {
    rows: &'a [Row],
}

impl<'a> Samples<'a> {
    /// A plain list of rows.
    pub fn contiguous(rows: &'a [Row]) -> Samples<'a> {
        Samples { rows }
    }

    #[inline(always)]
    fn for_each(&self, mut f: impl FnMut(&Row)) {
        for v in self.rows {
            f(v);
        }
    }
}

/// Appends the transpose of an 8×8 block (`LANES` rows of `LANES` values, row-major) to
/// `out`: row `j` of the result holds column `j` of the block.
pub fn push_transposed(block: &[Row; LANES], out: &mut Vec<Row>) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        out.extend(unsafe { avx2::transpose(block) });
        return;
    }
    out.extend((0..LANES).map(|j| std::array::from_fn(|l| block[l][j])));
}

/// Median of one group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupMedian {
    /// Number of samples (non-NaN values) in the group.
    pub count: u32,
    /// The median, when the group is not empty and `|median| < window`.
    pub median: Option<f32>,
}

/// Reusable buffer for the selection fallback.
#[derive(Debug, Default, Clone)]
pub struct MedianScratch {
    gather: Vec<f32>,
}

/// Probe passes before a group falls back to selection.
const MAX_PASSES: usize = 40;
/// Largest window used for the starting bracket (keeps bracket arithmetic finite).
const MAX_WINDOW: f32 = 1e30;

/// Median as numpy computes it (mean of the two middle values for even counts); sorts partially.
pub fn median_in_place(v: &mut [f32]) -> f32 {
    let n = v.len();
    debug_assert!(n > 0);
    let k = n / 2;
    let (left, mid, _) = v.select_nth_unstable_by(k, f32::total_cmp);
    let hi = *mid;
    if n % 2 == 1 {
        hi
    } else {
        let lo = left.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        (lo + hi) * 0.5
    }
}

/// The median of each lane of `rows`.
pub fn lane_medians(
    rows: Samples<'_>,
    window: f32,
    scratch: &mut MedianScratch,
) -> [GroupMedian; LANES] {
    dispatch::<false>(rows, window, scratch)
}

/// The median of all samples of `rows`.
pub fn pooled_median(rows: Samples<'_>, window: f32, scratch: &mut MedianScratch) -> GroupMedian {
    dispatch::<true>(rows, window, scratch)[0]
}

fn dispatch<const POOLED: bool>(
    rows: Samples<'_>,
    window: f32,
    scratch: &mut MedianScratch,
) -> [GroupMedian; LANES] {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { medians_avx2::<POOLED>(rows, window, scratch) };
    }
    medians::<POOLED, Portable>(rows, window, scratch)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn medians_avx2<const POOLED: bool>(
    rows: Samples<'_>,
    window: f32,
    scratch: &mut MedianScratch,
) -> [GroupMedian; LANES] {
    medians::<POOLED, avx2::Avx2>(rows, window, scratch)
}

/// The two vectorised passes over the rows.
trait Passes {
    /// Per lane and threshold, the number of samples `<= t`.
    fn count_le<const K: usize>(rows: Samples<'_>, t: &[Row; K]) -> [[u32; LANES]; K];
    /// Per lane and bracket, the smallest and the largest sample in `(lo, hi]` (+∞ and −∞ when
    /// none).
    fn min_max_in(rows: Samples<'_>, lo: &[Row; 2], hi: &[Row; 2]) -> [[Row; 2]; 2];
    /// Per search and lane, the smallest and the second smallest (ties counted) sample, its
    /// sign flipped where `flip` is −0, that is `> t` (+∞ when none).
    fn min2_above(rows: Samples<'_>, flip: &[Row; 2], t: &[Row; 2]) -> [[Row; 2]; 2];
}

struct Portable;

impl Passes for Portable {
    #[inline(always)]
    fn count_le<const K: usize>(rows: Samples<'_>, t: &[Row; K]) -> [[u32; LANES]; K] {
        let mut c = [[0u32; LANES]; K];
        rows.for_each(|r| {
            for k in 0..K {
                for l in 0..LANES {
                    c[k][l] += u32::from(r[l] <= t[k][l]);
                }
            }
        });
        c
    }

    #[inline(always)]
    fn min_max_in(rows: Samples<'_>, lo: &[Row; 2], hi: &[Row; 2]) -> [[Row; 2]; 2] {
        let mut mn = [[f32::INFINITY; LANES]; 2];
        let mut mx = [[f32::NEG_INFINITY; LANES]; 2];
        rows.for_each(|r| {
            for s in 0..2 {
                for l in 0..LANES {
                    let v = r[l];
                    if v > lo[s][l] && v <= hi[s][l] {
                        mn[s][l] = mn[s][l].min(v);
                        mx[s][l] = mx[s][l].max(v);
                    }
                }
            }
        });
        [mn, mx]
    }

    #[inline(always)]
    fn min2_above(rows: Samples<'_>, flip: &[Row; 2], t: &[Row; 2]) -> [[Row; 2]; 2] {
        let mut m = [[[f32::INFINITY; LANES]; 2]; 2];
        rows.for_each(|r| {
            for (s, [m1, m2]) in m.iter_mut().enumerate() {
                for l in 0..LANES {
                    let v = f32::from_bits(r[l].to_bits() ^ flip[s][l].to_bits());
                    if v > t[s][l] {
                        m2[l] = m2[l].min(m1[l].max(v));
                        m1[l] = m1[l].min(v);
                    }
                }
            }
        });
        m
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{LANES, Passes, Row, Samples};
    use std::arch::x86_64::*;

    /// AVX2 passes; only used after `is_x86_feature_detected!("avx2")`.
    pub(super) struct Avx2;

    impl Passes for Avx2 {
        #[inline(always)]
        fn count_le<const K: usize>(rows: Samples<'_>, t: &[Row; K]) -> [[u32; LANES]; K] {
            // SAFETY: only reached through `medians_avx2`, after AVX2 was detected.
            unsafe { count_le(rows, t) }
        }

        #[inline(always)]
        fn min_max_in(rows: Samples<'_>, lo: &[Row; 2], hi: &[Row; 2]) -> [[Row; 2]; 2] {
            // SAFETY: as above.
            unsafe { min_max_in(rows, lo, hi) }
        }

        #[inline(always)]
        fn min2_above(rows: Samples<'_>, flip: &[Row; 2], t: &[Row; 2]) -> [[Row; 2]; 2] {
            // SAFETY: as above.
            unsafe { min2_above(rows, flip, t) }
        }
    }

    #[target_feature(enable = "avx2")]
    fn min2_above(rows: Samples<'_>, flip: &[Row; 2], t: &[Row; 2]) -> [[Row; 2]; 2] {
        let (f0, f1, t0, t1) = (load(&flip[0]), load(&flip[1]), load(&t[0]), load(&t[1]));
        let inf = _mm256_set1_ps(f32::INFINITY);
        let (mut a1, mut a2, mut b1, mut b2) = (inf, inf, inf, inf);
        rows.for_each(|r| {
            let v = load(r);
            let (v0, v1) = (_mm256_xor_ps(v, f0), _mm256_xor_ps(v, f1));
            let x = _mm256_blendv_ps(inf, v0, _mm256_cmp_ps::<_CMP_GT_OQ>(v0, t0));
            let y = _mm256_blendv_ps(inf, v1, _mm256_cmp_ps::<_CMP_GT_OQ>(v1, t1));
            a2 = _mm256_min_ps(a2, _mm256_max_ps(a1, x));
            a1 = _mm256_min_ps(a1, x);
            b2 = _mm256_min_ps(b2, _mm256_max_ps(b1, y));
            b1 = _mm256_min_ps(b1, y);
        });
        [[store(a1), store(a2)], [store(b1), store(b2)]]
    }

    #[target_feature(enable = "avx2")]
    fn count_le<const K: usize>(rows: Samples<'_>, t: &[Row; K]) -> [[u32; LANES]; K] {
        let tv: [__m256; K] = std::array::from_fn(|k| load(&t[k]));
        let mut c = [_mm256_setzero_si256(); K];
        rows.for_each(|r| {
            let a = load(r);
            for k in 0..K {
                let m = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(a, tv[k]));
                c[k] = _mm256_sub_epi32(c[k], m);
            }
        });
        std::array::from_fn(|k| {
            let mut out = [0u32; LANES];
            // SAFETY: `out` holds 8 u32 = 32 bytes.
            unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), c[k]) };
            out
        })
    }

    #[target_feature(enable = "avx2")]
    fn min_max_in(rows: Samples<'_>, lo: &[Row; 2], hi: &[Row; 2]) -> [[Row; 2]; 2] {
        let (lo0, lo1, hi0, hi1) = (load(&lo[0]), load(&lo[1]), load(&hi[0]), load(&hi[1]));
        let (inf, ninf) = (
            _mm256_set1_ps(f32::INFINITY),
            _mm256_set1_ps(f32::NEG_INFINITY),
        );
        let (mut mn0, mut mn1, mut mx0, mut mx1) = (inf, inf, ninf, ninf);
        rows.for_each(|r| {
            let v = load(r);
            let in0 = _mm256_and_ps(
                _mm256_cmp_ps::<_CMP_GT_OQ>(v, lo0),
                _mm256_cmp_ps::<_CMP_LE_OQ>(v, hi0),
            );
            let in1 = _mm256_and_ps(
                _mm256_cmp_ps::<_CMP_GT_OQ>(v, lo1),
                _mm256_cmp_ps::<_CMP_LE_OQ>(v, hi1),
            );
            mn0 = _mm256_min_ps(mn0, _mm256_blendv_ps(inf, v, in0));
            mx0 = _mm256_max_ps(mx0, _mm256_blendv_ps(ninf, v, in0));
            mn1 = _mm256_min_ps(mn1, _mm256_blendv_ps(inf, v, in1));
            mx1 = _mm256_max_ps(mx1, _mm256_blendv_ps(ninf, v, in1));
        });
        [[store(mn0), store(mn1)], [store(mx0), store(mx1)]]
    }

    /// The 8×8 transpose: pairs interleaved, then quads, then 128-bit halves.
    #[target_feature(enable = "avx2")]
    pub(super) fn transpose(b: &[Row; LANES]) -> [Row; LANES] {
        let r: [__m256; LANES] = std::array::from_fn(|i| load(&b[i]));
        let t: [__m256; LANES] = std::array::from_fn(|i| {
            let (x, y) = (r[i & !1], r[i | 1]);
            if i % 2 == 0 {
                _mm256_unpacklo_ps(x, y)
            } else {
                _mm256_unpackhi_ps(x, y)
            }
        });
        // t[0..4] from rows 0-3, t[4..8] from rows 4-7: q[4h + c] holds column c of rows 4h..4h+4
        // in each 128-bit half.
        let q: [__m256; LANES] = std::array::from_fn(|i| {
            let (h, c) = (i / 4, i % 4);
            let (x, y) = (t[4 * h + (c / 2)], t[4 * h + 2 + (c / 2)]);
            if c % 2 == 0 {
                _mm256_shuffle_ps::<0x44>(x, y)
            } else {
                _mm256_shuffle_ps::<0xEE>(x, y)
            }
        });
        std::array::from_fn(|j| {
            let (x, y) = (q[j % 4], q[4 + j % 4]);
            store(if j < 4 {
                _mm256_permute2f128_ps::<0x20>(x, y)
            } else {
                _mm256_permute2f128_ps::<0x31>(x, y)
            })
        })
    }

    #[inline(always)]
    fn load(r: &Row) -> __m256 {
        // SAFETY: a Row is 8 f32 = 32 bytes; AVX2 is enabled in every caller.
        unsafe { _mm256_loadu_ps(r.as_ptr()) }
    }

    #[inline(always)]
    fn store(v: __m256) -> Row {
        let mut out = [0.0f32; LANES];
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
        out
    }
}

/// Folds the per-lane values into every lane when the lanes form one group.
#[inline(always)]
fn pool<T: Copy, const POOLED: bool>(v: &mut [T; LANES], f: impl Fn(T, T) -> T) {
    if POOLED {
        let x = v[1..].iter().fold(v[0], |a, &b| f(a, b));
        *v = [x; LANES];
    }
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    Empty,
    Outside,
    Search,
    Fallback,
}

/// Searches per call: the lower middle order statistic of every lane, then the upper one.
const S: usize = 2 * LANES;

/// Per-search values (`s * LANES + lane`).
type Sv = [f32; S];

fn split(v: &Sv) -> [Row; 2] {
    std::array::from_fn(|s| std::array::from_fn(|l| v[s * LANES + l]))
}

fn join(v: [Row; 2]) -> Sv {
    std::array::from_fn(|i| v[i / LANES][i % LANES])
}

#[inline(always)]
fn min_max_pooled<const POOLED: bool, P: Passes>(rows: Samples<'_>, lo: &Sv, hi: &Sv) -> [Sv; 2] {
    let [mut mn, mut mx] = P::min_max_in(rows, &split(lo), &split(hi));
    for s in 0..2 {
        pool::<f32, POOLED>(&mut mn[s], f32::min);
        pool::<f32, POOLED>(&mut mx[s], f32::max);
    }
    [join(mn), join(mx)]
}

/// The two smallest of all lanes' pairs, in every lane, when the lanes form one group.
#[inline(always)]
fn pool2<const POOLED: bool>(m: &mut [Row; 2]) {
    if POOLED {
        let (mut a, mut b) = (f32::INFINITY, f32::INFINITY);
        for &v in m.iter().flatten() {
            b = b.min(a.max(v));
            a = a.min(v);
        }
        *m = [[a; LANES], [b; LANES]];
    }
}

/// The statistic of every search from its settled bracket (`lo`, `hi`, `clo`, `chi`, `k`) or
/// its known value, in one pass: the smallest or second smallest sample above `lo` when
/// `clo` is `k` or `k − 1`, else the largest or second largest at or under `hi`, found among
/// the negated samples at or over −`hi`.
#[inline(never)]
fn settle<const POOLED: bool, P: Passes>(rows: Samples<'_>, v: [&Sv; 6]) -> Sv {
    let [lo, hi, clo, chi, k, known] = v;
    // Branch-free: which side a search settled on is unpredictable.
    let (mut flip, mut t, mut second) = ([0.0f32; S], [0.0f32; S], [0u32; S]);
    for i in 0..S {
        let high = u32::from(clo[i] < k[i] - 1.0);
        let keep = high.wrapping_sub(1);
        flip[i] = f32::from_bits(high << 31);
        let nd = next_down_finite(-hi[i]).to_bits();
        t[i] = f32::from_bits((lo[i].to_bits() & keep) | (nd & !keep));
        second[i] = mask(pick(keep, k[i] - clo[i], chi[i] - 1.0 - k[i]) >= 1.0);
    }
    let [mut m0, mut m1] = P::min2_above(rows, &split(&flip), &split(&t));
    pool2::<POOLED>(&mut m0);
    pool2::<POOLED>(&mut m1);
    let (first, next) = (join([m0[0], m1[0]]), join([m0[1], m1[1]]));
    std::array::from_fn(|i| {
        let m = pick(second[i], next[i], first[i]);
        let v = f32::from_bits(m.to_bits() ^ flip[i].to_bits());
        if known[i].is_nan() { v } else { known[i] }
    })
}

/// Per-search lane masks: all ones for true, zero for false (what vector compares give).
type Sm = [u32; S];

/// The lane mask of `c`.
#[inline(always)]
fn mask(c: bool) -> u32 {
    u32::from(c).wrapping_neg()
}

/// `if m { a } else { b }` for a lane mask `m`, without a branch (the conditions of the search
/// are unpredictable).
#[inline(always)]
fn pick(m: u32, a: f32, b: f32) -> f32 {
    f32::from_bits((a.to_bits() & m) | (b.to_bits() & !m))
}

/// The largest f32 below a finite `x` (branch-free, unlike `f32::next_down`).
#[inline(always)]
fn next_down_finite(x: f32) -> f32 {
    let b = x.to_bits();
    // One ulp towards −∞: down in magnitude when positive, up when negative.
    let step = b.wrapping_sub(1).wrapping_add((b >> 31) << 1);
    let zero = u32::from(b << 1 == 0).wrapping_neg();
    f32::from_bits((0x8000_0001 & zero) | (step & !zero))
}

#[inline(always)]
fn medians<const POOLED: bool, P: Passes>(
    rows: Samples<'_>,
    window: f32,
    scratch: &mut MedianScratch,
) -> [GroupMedian; LANES] {
    let w = window.min(MAX_WINDOW);
    let mut out = [GroupMedian {
        count: 0,
        median: None,
    }; LANES];
    if w.is_nan() || w <= 0.0 {
        let [mut n] = P::count_le(rows, &[[f32::INFINITY; LANES]]);
        pool::<u32, POOLED>(&mut n, |a, b| a + b);
        for l in 0..LANES {
            out[l].count = n[l];
        }
        return out;
    }
    let [mut n, mut cneg, mut cpos] =
        P::count_le(rows, &[[f32::INFINITY; LANES], [-w; LANES], [w; LANES]]);
    for c in [&mut n, &mut cneg, &mut cpos] {
        pool::<u32, POOLED>(c, |a, b| a + b);
    }
    let mut state = [State::Search; LANES];
    // Search i = s * LANES + l brackets order statistic k[i] of lane l (s = 0 the lower middle,
    // s = 1 the upper) in (lo, hi], with clo samples at or under lo and chi at or under hi
    // (clo <= k < chi). It is settled once clo >= k - 1 (the statistic is the bracket's smallest
    // or second smallest sample) or chi <= k + 2 (its largest or second largest), or when its
    // value is known.
    let mut k: Sv = [0.0; S];
    let mut lo: Sv = [-w; S];
    let mut hi: Sv = [w; S];
    let mut clo: Sv = [0.0; S];
    let mut chi: Sv = [0.0; S];
    let mut known: Sv = [f32::NAN; S];
    let mut open: Sm = [0; S];
    for l in 0..LANES {
        out[l].count = n[l];
        if n[l] == 0 {
            state[l] = State::Empty;
            continue;
        }
        let ks = [(n[l] - 1) / 2, n[l] / 2];
        if cneg[l] > ks[1] || cpos[l] <= ks[0] {
            state[l] = State::Outside;
        } else if cneg[l] > ks[0] || cpos[l] <= ks[1] || n[l] > 1 << 24 {
            // A middle statistic on each side of a window edge, or counts past f32's exact range.
            state[l] = State::Fallback;
        } else {
            for (s, &kk) in ks.iter().enumerate() {
                let i = s * LANES + l;
                (k[i], clo[i], chi[i]) = (kk as f32, cneg[l] as f32, cpos[l] as f32);
                open[i] = mask(clo[i] < k[i] - 1.0 && chi[i] > k[i] + 2.0);
            }
        }
    }
    // Probe targets in ranks: just under the lower statistic, just over the upper one; a settled
    // search lends its probe to the other side of the open one.
    let aim: Sv = std::array::from_fn(|i| if i < LANES { k[i] - 1.0 } else { k[i] + 2.0 });
    let lend: Sv = std::array::from_fn(|i| if i < LANES { k[i] + 2.0 } else { k[i] - 1.0 });
    let mut bisect: Sm = [0; S];
    let mut stall: Sv = [0.0; S];
    let mut passes = 0;
    while open.iter().fold(0, |a, &o| a | o) != 0 {
        if passes == MAX_PASSES {
            for l in 0..LANES {
                if open[l] | open[LANES + l] != 0 {
                    state[l] = State::Fallback;
                }
            }
            break;
        }
        passes += 1;
        let mut snap = 0;
        let mut t: Sv = [0.0; S];
        let mut alt: Sv = [0.0; S];
        for i in 0..S {
            let width = hi[i] - lo[i];
            let span = chi[i] - clo[i];
            let mid = lo[i] * 0.5 + hi[i] * 0.5;
            let ti = lo[i] + width * ((aim[i] - clo[i]) / span);
            let ti = pick(bisect[i], mid, ti);
            t[i] = pick(mask(ti > lo[i]) & mask(ti < hi[i]), ti, mid);
            let ta = lo[i] + width * ((lend[i] - clo[i]) / span);
            alt[i] = pick(mask(ta > lo[i]) & mask(ta < hi[i]), ta, t[i]);
            let splits = mask(mid > lo[i]) & mask(mid < hi[i]);
            snap |= open[i] & (!splits | mask(stall[i] >= 2.0));
        }
        let mut probe = t;
        for l in 0..LANES {
            let (a, b) = (l, LANES + l);
            probe[a] = pick(!open[a] & open[b], alt[b], t[a]);
            probe[b] = pick(open[a] & !open[b], alt[a], t[b]);
        }
        if snap != 0 {
            // Shrink every open bracket to its extreme samples; a bracket whose samples are all
            // equal (ties, or a bracket too narrow to split) is settled.
            let [mn, mx] = min_max_pooled::<POOLED, P>(rows, &lo, &hi);
            for i in 0..S {
                if open[i] == 0 {
                    continue;
                }
                stall[i] = 0.0;
                if mn[i] == mx[i] {
                    known[i] = mx[i];
                    open[i] = 0;
                } else {
                    hi[i] = mx[i];
                    lo[i] = mn[i].next_down();
                }
            }
            continue;
        }
        let [mut ca, mut cb] = P::count_le(rows, &split(&probe));
        pool::<u32, POOLED>(&mut ca, |a, b| a + b);
        pool::<u32, POOLED>(&mut cb, |a, b| a + b);
        // Both probes of a lane, and their counts, seen from each of its two searches.
        let pa: Sv = std::array::from_fn(|i| probe[i % LANES]);
        let pb: Sv = std::array::from_fn(|i| probe[LANES + i % LANES]);
        let na: Sv = std::array::from_fn(|i| ca[i % LANES] as f32);
        let nb: Sv = std::array::from_fn(|i| cb[i % LANES] as f32);
        for i in 0..S {
            let (old_span, old_w, o) = (chi[i] - clo[i], hi[i] - lo[i], open[i]);
            for (tj, cj) in [(pa[i], na[i]), (pb[i], nb[i])] {
                let raise = o & mask(cj <= k[i]) & mask(tj > lo[i]);
                let lower = o & mask(cj > k[i]) & mask(tj < hi[i]);
                lo[i] = pick(raise, tj, lo[i]);
                clo[i] = pick(raise, cj, clo[i]);
                hi[i] = pick(lower, tj, hi[i]);
                chi[i] = pick(lower, cj, chi[i]);
            }
            bisect[i] = !bisect[i] & mask(hi[i] - lo[i] > 0.5 * old_w);
            stall[i] = pick(mask(chi[i] - clo[i] == old_span), stall[i] + 1.0, 0.0);
            open[i] = o & mask(clo[i] < k[i] - 1.0) & mask(chi[i] > k[i] + 2.0);
        }
    }
    let need_pass = (0..S).any(|i| state[i % LANES] == State::Search && known[i].is_nan());
    let x = if need_pass {
        settle::<POOLED, P>(rows, [&lo, &hi, &clo, &chi, &k, &known])
    } else {
        known
    };
    for l in 0..LANES {
        let med = match state[l] {
            State::Empty | State::Outside => None,
            State::Search => Some(if n[l] % 2 == 1 {
                x[LANES + l]
            } else {
                (x[l] + x[LANES + l]) * 0.5
            }),
            State::Fallback => {
                if POOLED && l > 0 {
                    out[l].median = out[0].median;
                    continue;
                }
                let g = &mut scratch.gather;
                g.clear();
                rows.for_each(|r| {
                    if POOLED {
                        g.extend(r.iter().copied().filter(|v| !v.is_nan()));
                    } else if !r[l].is_nan() {
                        g.push(r[l]);
                    }
                });
                Some(median_in_place(g))
            }
        };
        out[l].median = med.filter(|m| m.abs() < window);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(vals: &[f32], window: f32) -> GroupMedian {
        let mut v: Vec<f32> = vals.iter().copied().filter(|x| !x.is_nan()).collect();
        GroupMedian {
            count: v.len() as u32,
            median: if v.is_empty() {
                None
            } else {
                Some(median_in_place(&mut v)).filter(|m| m.abs() < window)
            },
        }
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn unit(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32
        }
    }

    /// Random groups: Gaussian-ish noise, photon tails, ties, gaps, masks, offsets near the
    /// window edges.
    fn random_rows(rng: &mut Rng, nrows: usize) -> Vec<Row> {
        let kind = rng.next() % 6;
        let offset = (rng.unit() - 0.5) * 40.0;
        let nan_frac = [0.0, 0.05, 0.5, 0.97][(rng.next() % 4) as usize];
        (0..nrows)
            .map(|_| {
                std::array::from_fn(|_| {
                    if rng.unit() < nan_frac {
                        return f32::NAN;
                    }
                    let noise = (rng.unit() + rng.unit() + rng.unit() - 1.5) * 6.0;
                    match kind {
                        0 => offset + noise,
                        1 => (offset + noise).round(),
                        2 => {
                            offset
                                + if rng.unit() < 0.3 {
                                    500.0 * rng.unit()
                                } else {
                                    noise
                                }
                        }
                        3 => (rng.next() % 3) as f32 - 1.0,
                        4 => offset + noise * 1e-4,
                        _ => f32::from(rng.next() as u16 & 0x3FFF) - 1000.5 + noise,
                    }
                })
            })
            .collect()
    }

    #[test]
    fn equals_sorting_median_on_random_groups() {
        let mut rng = Rng(7);
        let mut sc = MedianScratch::default();
        for case in 0..3000 {
            let nrows = 1 + (rng.next() % 200) as usize;
            let rows = random_rows(&mut rng, nrows);
            let window = [10.0, 100.0, 3.0, f32::INFINITY, 0.0][case % 5];
            let got = lane_medians(Samples::contiguous(&rows), window, &mut sc);
            assert_eq!(
                got,
                medians::<false, Portable>(Samples::contiguous(&rows), window, &mut sc),
                "case {case}: dispatched and portable passes differ"
            );
            for l in 0..LANES {
                let lane: Vec<f32> = rows.iter().map(|r| r[l]).collect();
                let want = reference(&lane, window);
                assert_eq!(got[l].count, want.count, "case {case} lane {l} count");
                assert_eq!(got[l].median, want.median, "case {case} lane {l}: {lane:?}");
            }
            let all: Vec<f32> = rows.iter().flatten().copied().collect();
            let got = pooled_median(Samples::contiguous(&rows), window, &mut sc);
            assert_eq!(
                got,
                medians::<true, Portable>(Samples::contiguous(&rows), window, &mut sc)[0]
            );
            let want = reference(&all, window);
            assert_eq!(got.count, want.count, "case {case} pooled count");
            assert_eq!(got.median, want.median, "case {case} pooled");
        }
    }

    #[test]
    fn transposes_blocks() {
        let block: [Row; LANES] =
            std::array::from_fn(|l| std::array::from_fn(|j| (l * 10 + j) as f32));
        let mut out = Vec::new();
        push_transposed(&block, &mut out);
        for (j, row) in out.iter().enumerate() {
            for (l, &v) in row.iter().enumerate() {
                assert_eq!(v, block[l][j], "row {j} lane {l}");
            }
        }
    }

    #[test]
    fn next_down_finite_matches_std() {
        for x in [
            0.0f32,
            -0.0,
            1.0,
            -1.0,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            f32::from_bits(1),
            f32::from_bits(0x8000_0001),
            f32::MAX,
            -f32::MAX,
            1e30,
            -3.7,
        ] {
            assert_eq!(
                next_down_finite(x).to_bits(),
                x.next_down().to_bits(),
                "{x:e}"
            );
        }
    }

    #[test]
    fn window_edges_and_degenerate_groups() {
        let mut sc = MedianScratch::default();
        let rows_of = |v: &[f32]| -> Vec<Row> { v.iter().map(|&x| [x; LANES]).collect() };
        let cases: &[(&[f32], f32, Option<f32>)] = &[
            (&[10.0, 10.0, 10.0], 10.0, None),
            (&[-10.0, 9.0], 10.0, Some(-0.5)),
            (&[-30.0, 29.0], 10.0, Some(-0.5)),
            (&[-30.0, -29.0, 40.0], 10.0, None),
            (&[9.999_999], 10.0, Some(9.999_999)),
            (&[-10.0], 10.0, None),
            (&[f32::NAN, 2.0, f32::NAN], 10.0, Some(2.0)),
            (&[f32::NAN], 10.0, None),
            (&[1.0, 1.0, 1.0, 1.0, 2.0, 2.0], 10.0, Some(1.0)),
            (&[1.0, 1.0, 1.0, 2.0, 2.0, 2.0], 10.0, Some(1.5)),
        ];
        for (vals, w, want) in cases {
            let got = lane_medians(Samples::contiguous(&rows_of(vals)), *w, &mut sc);
            assert!(
                got.iter().all(|g| g.median == *want),
                "{vals:?} window {w}: {:?}, want {want:?}",
                got[0]
            );
        }
    }
}
