//! psana's median common-mode correction (`UtilsCommonMode`, `common_mode_epix_multigain_apply`)
//! on pedestal-subtracted values.
//!
//! A segment is split into top/bottom halves and `nbanks` column banks. Mode bits run in the
//! order 4 (2-D bank median), 1 (per row inside each bank), 2 (per column inside each half);
//! each group lies inside one bank of one half, so a bank is corrected on its own.
//! Only eligible pixels (good and, for algorithm 7, in a high/medium gain range) enter a median
//! and only they are corrected: the caller passes the others as NaN, which no median counts and
//! no subtraction changes. Rows and columns need more than `npixmin` eligible pixels, banks
//! at least `npixmin`; a correction with `|cm| ≥ cormax` is skipped.

use super::calib_passes::Strips;
use crate::algo::median::{
    LANES, MedianScratch, Row, Samples, lane_medians, pooled_median, push_transposed,
};

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

/// Applies modes 4 and 1 to one bank of a half segment (whole strips laid out as `st`, NaN = not
/// eligible) in place, and returns the per-column corrections of mode 2 (zeros without it) for
/// the caller to subtract from the eligible pixels in its next pass.
pub fn apply_bank_but_columns<'s>(
    bank: &mut [f32],
    st: Strips,
    p: &CommonModeParams,
    scratch: &'s mut CmScratch,
) -> &'s [f32] {
    debug_assert!(bank.len().is_multiple_of(st.stride));
    let bw = bank.len() / st.stride * LANES;
    let hrows = st.rows;
    let npixmin = p.npixmin as u32;
    let (strip, used) = (st.stride, st.rows * LANES);
    if p.mode & 4 != 0 {
        let g = pooled_median(
            Samples::contiguous(bank.as_chunks::<LANES>().0),
            p.cormax,
            &mut scratch.med,
        );
        if let Some(cm) = g.median.filter(|_| g.count >= npixmin) {
            for v in bank.iter_mut() {
                *v -= cm;
            }
        }
    }
    if p.mode & 1 != 0 {
        let lanes = &mut scratch.rows;
        for r0 in (0..hrows).step_by(LANES) {
            let nr = LANES.min(hrows - r0);
            // Rows r0.. of the bank's strips, transposed so that lane l is row r0 + l.
            lanes.clear();
            for s in bank.chunks_exact(strip) {
                let block = &s[r0 * LANES..(r0 + nr) * LANES];
                if let Ok(full) = <&[Row; LANES]>::try_from(block.as_chunks::<LANES>().0) {
                    push_transposed(full, lanes);
                    continue;
                }
                for j in 0..LANES {
                    lanes.push(std::array::from_fn(|l| {
                        if l < nr {
                            block[l * LANES + j]
                        } else {
                            f32::NAN
                        }
                    }));
                }
            }
            let g = lane_medians(Samples::contiguous(lanes), p.cormax, &mut scratch.med);
            for (l, g) in g.iter().enumerate().take(nr) {
                if let Some(cm) = g.median.filter(|_| g.count > npixmin) {
                    for s in bank.chunks_exact_mut(strip) {
                        for v in &mut s[(r0 + l) * LANES..(r0 + l + 1) * LANES] {
                            *v -= cm;
                        }
                    }
                }
            }
        }
    }
    let cms = &mut scratch.col_cm;
    cms.clear();
    if p.mode & 2 != 0 {
        for s in bank.chunks_exact(strip) {
            let g = lane_medians(
                Samples::contiguous(s[..used].as_chunks::<LANES>().0),
                p.cormax,
                &mut scratch.med,
            );
            cms.extend(
                g.iter()
                    .map(|g| g.median.filter(|_| g.count > npixmin).unwrap_or(0.0)),
            );
        }
    } else {
        cms.resize(bw, 0.0);
    }
    cms
}
