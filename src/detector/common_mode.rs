//! psana's median common-mode correction (`UtilsCommonMode`, `common_mode_epix_multigain_apply`)
//! on one segment of pedestal-subtracted values.
//!
//! The segment is split into top/bottom halves and `nbanks` column banks. Mode bits run in the
//! order 4 (2-D bank median), 1 (per row inside each bank), 2 (per column inside each half).
//! Only eligible pixels (good and, for algorithm 7, in a high/medium gain range) enter a median
//! and only they are corrected. Rows and columns need more than `npixmin` eligible pixels, banks
//! at least `npixmin`; a correction with `|cm| ≥ cormax` is skipped.

/// psana `cmpars = (alg, mode, cormax[, npixmin = 10])`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CommonModeParams {
    pub alg: u32,
    pub mode: u32,
    pub cormax: f32,
    pub npixmin: usize,
}

impl CommonModeParams {
    /// From psana's numeric tuple; `None` when it is too short.
    pub fn from_psana(cmpars: &[f64]) -> Option<CommonModeParams> {
        if cmpars.len() < 3 {
            return None;
        }
        Some(CommonModeParams {
            alg: cmpars[0] as u32,
            mode: cmpars[1] as u32,
            cormax: cmpars[2] as f32,
            npixmin: cmpars.get(3).map_or(10, |&v| v as usize),
        })
    }

    /// True when any correction is enabled.
    pub fn enabled(&self) -> bool {
        self.mode & 7 != 0
    }
}

/// Scratch reused between frames.
#[derive(Debug, Default, Clone)]
pub struct CmScratch {
    buf: Vec<f32>,
    transposed: Vec<f32>,
    counts: Vec<u32>,
    col_cm: Vec<f32>,
}

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

/// Applies the correction to one segment `arr` (`rows×cols`, row-major) in place.
/// `ok[i] != 0` marks eligible pixels.
pub fn apply_segment(
    arr: &mut [f32],
    ok: &[u8],
    rows: usize,
    cols: usize,
    nbanks: usize,
    p: &CommonModeParams,
    scratch: &mut CmScratch,
) {
    let half = rows / 2 * cols;
    for h in 0..2 {
        let r = h * half..(h + 1) * half;
        apply_half(&mut arr[r.clone()], &ok[r], cols, nbanks, p, scratch);
    }
}

/// Applies the correction to one half segment (`rows/2 × cols`): modes 4, 1, then 2.
pub fn apply_half(
    arr: &mut [f32],
    ok: &[u8],
    cols: usize,
    nbanks: usize,
    p: &CommonModeParams,
    scratch: &mut CmScratch,
) {
    let hrows = arr.len() / cols;
    let bw = cols / nbanks;
    let buf = &mut scratch.buf;
    if p.mode & 4 != 0 {
        for b in 0..nbanks {
            buf.clear();
            for r in 0..hrows {
                let s = r * cols + b * bw;
                for (v, &o) in arr[s..s + bw].iter().zip(&ok[s..s + bw]) {
                    if o != 0 {
                        buf.push(*v);
                    }
                }
            }
            if buf.is_empty() || buf.len() < p.npixmin {
                continue;
            }
            let cm = median_in_place(buf);
            if cm.abs() < p.cormax {
                for r in 0..hrows {
                    let s = r * cols + b * bw;
                    subtract(&mut arr[s..s + bw], &ok[s..s + bw], cm);
                }
            }
        }
    }
    if p.mode & 1 != 0 {
        let mut small = [0.0f32; 128];
        for s in (0..hrows * cols).step_by(bw) {
            let (vals, oks) = (&arr[s..s + bw], &ok[s..s + bw]);
            let n = if bw <= small.len() {
                let mut n = 0;
                for (&v, &o) in vals.iter().zip(oks) {
                    small[n] = v;
                    n += usize::from(o != 0);
                }
                n
            } else {
                0
            };
            let cm = if bw <= small.len() {
                if n <= p.npixmin {
                    continue;
                }
                median_in_place(&mut small[..n])
            } else {
                buf.clear();
                buf.extend(
                    vals.iter()
                        .zip(oks)
                        .filter(|(_, o)| **o != 0)
                        .map(|(v, _)| *v),
                );
                if buf.len() <= p.npixmin {
                    continue;
                }
                median_in_place(buf)
            };
            if cm.abs() < p.cormax {
                subtract(&mut arr[s..s + bw], &ok[s..s + bw], cm);
            }
        }
    }
    if p.mode & 2 != 0 {
        // All columns at once: transpose the eligible values column by column.
        let cnt = &mut scratch.counts;
        cnt.clear();
        cnt.resize(cols, 0);
        let tr = &mut scratch.transposed;
        tr.resize(cols * hrows, 0.0);
        for r in 0..hrows {
            let row = &arr[r * cols..(r + 1) * cols];
            let orow = &ok[r * cols..(r + 1) * cols];
            for c in 0..cols {
                let k = cnt[c] as usize;
                tr[c * hrows + k] = row[c];
                cnt[c] += u32::from(orow[c] != 0);
            }
        }
        let cms = &mut scratch.col_cm;
        cms.clear();
        for c in 0..cols {
            let n = cnt[c] as usize;
            let cm = if n > p.npixmin {
                median_in_place(&mut tr[c * hrows..c * hrows + n])
            } else {
                0.0
            };
            cms.push(if cm.abs() < p.cormax { cm } else { 0.0 });
        }
        for r in 0..hrows {
            let row = &mut arr[r * cols..(r + 1) * cols];
            let orow = &ok[r * cols..(r + 1) * cols];
            for ((v, &o), &cm) in row.iter_mut().zip(orow).zip(cms.iter()) {
                if o != 0 {
                    *v -= cm;
                }
            }
        }
    }
}

fn subtract(vals: &mut [f32], ok: &[u8], cm: f32) {
    for (v, &o) in vals.iter_mut().zip(ok) {
        if o != 0 {
            *v -= cm;
        }
    }
}
