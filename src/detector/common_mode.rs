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
    let hrows = rows / 2;
    let bw = cols / nbanks;
    let buf = &mut scratch.buf;
    for half in 0..2 {
        let r0 = half * hrows;
        if p.mode & 4 != 0 {
            for b in 0..nbanks {
                buf.clear();
                for r in r0..r0 + hrows {
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
                    for r in r0..r0 + hrows {
                        let s = r * cols + b * bw;
                        for (v, &o) in arr[s..s + bw].iter_mut().zip(&ok[s..s + bw]) {
                            if o != 0 {
                                *v -= cm;
                            }
                        }
                    }
                }
            }
        }
        if p.mode & 1 != 0 {
            for r in r0..r0 + hrows {
                for b in 0..nbanks {
                    let s = r * cols + b * bw;
                    buf.clear();
                    for (v, &o) in arr[s..s + bw].iter().zip(&ok[s..s + bw]) {
                        if o != 0 {
                            buf.push(*v);
                        }
                    }
                    if buf.len() <= p.npixmin {
                        continue;
                    }
                    let cm = median_in_place(buf);
                    if cm.abs() < p.cormax {
                        for (v, &o) in arr[s..s + bw].iter_mut().zip(&ok[s..s + bw]) {
                            if o != 0 {
                                *v -= cm;
                            }
                        }
                    }
                }
            }
        }
        if p.mode & 2 != 0 {
            for c in 0..cols {
                buf.clear();
                for r in r0..r0 + hrows {
                    let i = r * cols + c;
                    if ok[i] != 0 {
                        buf.push(arr[i]);
                    }
                }
                if buf.len() <= p.npixmin {
                    continue;
                }
                let cm = median_in_place(buf);
                if cm.abs() < p.cormax {
                    for r in r0..r0 + hrows {
                        let i = r * cols + c;
                        if ok[i] != 0 {
                            arr[i] -= cm;
                        }
                    }
                }
            }
        }
    }
}
