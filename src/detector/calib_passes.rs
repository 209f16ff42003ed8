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
    /// `(raw & 0x3FFF) − ped` where `ok`, NaN elsewhere, into `cmv` (strip-major); true when
    /// any pixel is eligible.
    pedestal,
    pedestal_body,
    (h: Half<'_>, ok: &[u8], cmv: &mut [f32]) -> bool
);
with_avx2!(
    /// `out = (cmv − cms[column] where cmv is not NaN, else (raw & 0x3FFF) − ped) · gain`.
    gain,
    gain_body,
    (h: Half<'_>, gain: &[f32], cmv: &[f32], cms: &[f32], out: &mut [f32]) -> ()
);

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

/// `(raw & 0x3FFF) − ped` where `ok`, NaN elsewhere, into `cmv` (strip-major); true when any
/// pixel is eligible.
#[inline(always)]
fn pedestal_body(h: Half<'_>, ok: &[u8], cmv: &mut [f32]) -> bool {
    let Half { raw, ped, cols, st } = h;
    let n = raw.len();
    let hrows = n / cols;
    let (ped, ok, cmv) = (&ped[..n], &ok[..n], &mut cmv[..st.len(cols)]);
    let mut any = [0u8; LANES];
    for r in 0..hrows {
        let at = r * cols..(r + 1) * cols;
        let rw = raw[at.clone()].as_chunks::<LANES>().0;
        let p = ped[at.clone()].as_chunks::<LANES>().0;
        let k = ok[at].as_chunks::<LANES>().0;
        for (s, ((rw, p), k)) in rw.iter().zip(p).zip(k).enumerate() {
            let c: &mut [f32; LANES] = (&mut cmv[st.index(r, s * LANES)..][..LANES])
                .try_into()
                .expect("a strip row is LANES wide");
            for l in 0..LANES {
                let d = f32::from(rw[l] & 0x3FFF) - p[l];
                c[l] = if k[l] != 0 { d } else { f32::NAN };
                any[l] |= k[l];
            }
        }
    }
    any != [0; LANES]
}

/// `out = (cmv − cms[column] where cmv is not NaN, else (raw & 0x3FFF) − ped) · gain`, `cmv`
/// strip-major.
#[inline(always)]
fn gain_body(h: Half<'_>, gain: &[f32], cmv: &[f32], cms: &[f32], out: &mut [f32]) {
    let Half { raw, ped, cols, st } = h;
    const PIECE: usize = 256;
    let n = raw.len();
    let hrows = n / cols;
    let (ped, gain, cms, out) = (&ped[..n], &gain[..n], &cms[..cols], &mut out[..n]);
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
            let o = &mut out[at.clone()];
            let (rw, p, g) = (&raw[at.clone()], &ped[at.clone()], &gain[at]);
            let (m, c) = (&cms[p0..p0 + pw], &tmp[..pw]);
            for i in 0..pw {
                let v = c[i] - m[i];
                let d = f32::from(rw[i] & 0x3FFF) - p[i];
                o[i] = (if v.is_nan() { d } else { v }) * g[i];
            }
        }
    }
}
