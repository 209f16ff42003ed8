//! psana's median common-mode correction (`UtilsCommonMode`, `common_mode_epix_multigain_apply`)
//! on one segment of pedestal-subtracted values.
//!
//! The segment is split into top/bottom halves and `nbanks` column banks. Mode bits run in the
//! order 4 (2-D bank median), 1 (per row inside each bank), 2 (per column inside each half).
//! Only eligible pixels (good and, for algorithm 7, in a high/medium gain range) enter a median
//! and only they are corrected. Rows and columns need more than `npixmin` eligible pixels, banks
//! at least `npixmin`; a correction with `|cm| ≥ cormax` is skipped.

use crate::algo::median::{LANES, MedianScratch, Row, lane_medians, pooled_median};

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
    rows: Vec<Row>,
    med: MedianScratch,
    col_cm: Vec<f32>,
}

/// Copies the `width` columns from `c0` of rows `r` (for each `r` in `rows_of`) of `arr`
/// (`cols` wide) into lanes, NaN where the pixel is not eligible or past `width`.
fn fill_row_major(
    out: &mut Vec<Row>,
    arr: &[f32],
    ok: &[u8],
    rows_of: std::ops::Range<usize>,
    cols: usize,
    c0: usize,
    width: usize,
) {
    out.clear();
    for r in rows_of {
        for j in (0..width).step_by(LANES) {
            let i = r * cols + c0 + j;
            if j + LANES <= width {
                let v: &Row = arr[i..i + LANES].try_into().expect("LANES values");
                let o: &[u8; LANES] = ok[i..i + LANES].try_into().expect("LANES flags");
                out.push(std::array::from_fn(
                    |l| if o[l] != 0 { v[l] } else { f32::NAN },
                ));
                continue;
            }
            out.push(std::array::from_fn(|l| {
                if j + l < width && ok[i + l] != 0 {
                    arr[i + l]
                } else {
                    f32::NAN
                }
            }));
        }
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
    let npixmin = p.npixmin as u32;
    let lanes = &mut scratch.rows;
    if p.mode & 4 != 0 {
        for b in 0..nbanks {
            fill_row_major(lanes, arr, ok, 0..hrows, cols, b * bw, bw);
            let g = pooled_median(lanes, p.cormax, &mut scratch.med);
            if let Some(cm) = g.median.filter(|_| g.count >= npixmin) {
                for r in 0..hrows {
                    let s = r * cols + b * bw;
                    subtract(&mut arr[s..s + bw], &ok[s..s + bw], cm);
                }
            }
        }
    }
    if p.mode & 1 != 0 {
        for r0 in (0..hrows).step_by(LANES) {
            for b in 0..nbanks {
                lanes.clear();
                for j in 0..bw {
                    lanes.push(std::array::from_fn(|l| {
                        let i = (r0 + l) * cols + b * bw + j;
                        if r0 + l < hrows && ok[i] != 0 {
                            arr[i]
                        } else {
                            f32::NAN
                        }
                    }));
                }
                let g = lane_medians(lanes, p.cormax, &mut scratch.med);
                for (l, g) in g.iter().enumerate().take(hrows - r0) {
                    if let Some(cm) = g.median.filter(|_| g.count > npixmin) {
                        let s = (r0 + l) * cols + b * bw;
                        subtract(&mut arr[s..s + bw], &ok[s..s + bw], cm);
                    }
                }
            }
        }
    }
    if p.mode & 2 != 0 {
        let cms = &mut scratch.col_cm;
        cms.clear();
        for c0 in (0..cols).step_by(LANES) {
            let width = LANES.min(cols - c0);
            fill_row_major(lanes, arr, ok, 0..hrows, cols, c0, width);
            let g = lane_medians(lanes, p.cormax, &mut scratch.med);
            cms.extend(
                g[..width]
                    .iter()
                    .map(|g| g.median.filter(|_| g.count > npixmin).unwrap_or(0.0)),
            );
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
