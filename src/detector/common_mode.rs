//! psana's median common-mode correction (`UtilsCommonMode`, `common_mode_epix_multigain_apply`)
//! on one half segment of pedestal-subtracted values.
//!
//! The segment is split into top/bottom halves and `nbanks` column banks. Mode bits run in the
//! order 4 (2-D bank median), 1 (per row inside each bank), 2 (per column inside each half).
//! Only eligible pixels (good and, for algorithm 7, in a high/medium gain range) enter a median
//! and only they are corrected: the caller passes the others as NaN, which no median counts and
//! no subtraction changes. Rows and columns need more than `npixmin` eligible pixels, banks
//! at least `npixmin`; a correction with `|cm| ≥ cormax` is skipped.

use crate::algo::median::{LANES, MedianScratch, Row, Samples, lane_medians, pooled_median};

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

/// Applies modes 4 and 1 to one half segment (`rows/2 × cols`, row-major, NaN = not eligible)
/// in place, and returns the per-column corrections of mode 2 (empty without it) for the caller
/// to subtract from the eligible pixels in its next pass.
pub fn apply_half_but_columns<'s>(
    vals: &mut [f32],
    cols: usize,
    nbanks: usize,
    p: &CommonModeParams,
    scratch: &'s mut CmScratch,
) -> &'s [f32] {
    scratch.col_cm.clear();
    let hrows = vals.len() / cols;
    let bw = cols / nbanks;
    let npixmin = p.npixmin as u32;
    let lanes = &mut scratch.rows;
    if p.mode & 4 != 0 {
        for b in 0..nbanks {
            let g = if bw.is_multiple_of(LANES) {
                let data = &vals[b * bw..];
                pooled_median(
                    Samples::strided(data, hrows, bw / LANES, cols),
                    p.cormax,
                    &mut scratch.med,
                )
            } else {
                lanes.clear();
                for r in 0..hrows {
                    push_padded(lanes, &vals[r * cols + b * bw..r * cols + (b + 1) * bw]);
                }
                pooled_median(Samples::contiguous(lanes), p.cormax, &mut scratch.med)
            };
            if let Some(cm) = g.median.filter(|_| g.count >= npixmin) {
                for r in 0..hrows {
                    for v in &mut vals[r * cols + b * bw..r * cols + (b + 1) * bw] {
                        *v -= cm;
                    }
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
                        if r0 + l < hrows {
                            vals[(r0 + l) * cols + b * bw + j]
                        } else {
                            f32::NAN
                        }
                    }));
                }
                let g = lane_medians(Samples::contiguous(lanes), p.cormax, &mut scratch.med);
                for (l, g) in g.iter().enumerate().take(hrows - r0) {
                    if let Some(cm) = g.median.filter(|_| g.count > npixmin) {
                        let s = (r0 + l) * cols + b * bw;
                        for v in &mut vals[s..s + bw] {
                            *v -= cm;
                        }
                    }
                }
            }
        }
    }
    if p.mode & 2 != 0 {
        let cms = &mut scratch.col_cm;
        for c0 in (0..cols).step_by(LANES) {
            let width = LANES.min(cols - c0);
            // A contiguous copy of the strip: the search passes over it several times.
            lanes.clear();
            for r in 0..hrows {
                push_padded(lanes, &vals[r * cols + c0..r * cols + c0 + width]);
            }
            let g = lane_medians(Samples::contiguous(lanes), p.cormax, &mut scratch.med);
            cms.extend(
                g[..width]
                    .iter()
                    .map(|g| g.median.filter(|_| g.count > npixmin).unwrap_or(0.0)),
            );
        }
    }
    &scratch.col_cm
}

/// Appends `vals` as rows of lanes, the last one padded with NaN.
fn push_padded(out: &mut Vec<Row>, vals: &[f32]) {
    let (full, rest) = vals.as_chunks::<LANES>();
    for v in full {
        out.push(*v);
    }
    for ch in rest.chunks(LANES) {
        out.push(std::array::from_fn(|l| {
            ch.get(l).copied().unwrap_or(f32::NAN)
        }));
    }
}
