//! OM's peakfinder8 (v23.8.3 semantics) over a slab with a regular ASIC grid.
//!
//! Steps as in OM: radial statistics with five two-sided clipping iterations, a seed scan inside
//! each ASIC (one-pixel border excluded) in ASIC raster order, 8-connected growth with signed
//! weights `v − roffset`, a local background disk of radius `2·local_bg_radius`, re-integration
//! with raw weights, SNR and `bg_max` acceptance. Coordinates use the index convention (pixel
//! centre at the integer index). Unlike OM's Python wrapper, the true SNR and the local sigma are
//! both reported.
//!
//! Speed: the radial statistics take one streaming pass (see [`super::radial`]); seeds come from
//! the pixels above threshold collected on the way, so there is no second full-frame scan, and the
//! peak map is cleared only where it was written.

use serde::{Deserialize, Serialize};

use super::radial::RadialStats;
use crate::detector::geometry::SlabLayout;

/// peakfinder8 parameters, named as in OM's configuration files.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pf8Params {
    pub max_num_peaks: usize,
    pub adc_threshold: f32,
    pub minimum_snr: f32,
    pub min_pixel_count: usize,
    pub max_pixel_count: usize,
    pub local_bg_radius: usize,
    /// Inclusive lower radius limit, pixels.
    pub min_res: f32,
    /// Inclusive upper radius limit, pixels.
    pub max_res: f32,
    /// Reproduce OM bit for bit: its f32 five-pass radial statistics (slower) and its stale
    /// list-slot read during growth (see the reference note). Off: f64 statistics, clean growth.
    #[serde(default)]
    pub om_bit_exact: bool,
}

impl Default for Pf8Params {
    /// OM's MFX ePix10k2M monitor configuration.
    fn default() -> Self {
        Pf8Params {
            max_num_peaks: 2048,
            adc_threshold: 100.0,
            minimum_snr: 5.0,
            min_pixel_count: 1,
            max_pixel_count: 30,
            local_bg_radius: 4,
            min_res: 80.0,
            max_res: 800.0,
            om_bit_exact: false,
        }
    }
}

/// One accepted peak.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    /// Centroid, fast scan, slab coordinates, index convention.
    pub fs: f32,
    /// Centroid, slow scan.
    pub ss: f32,
    /// `rint(fs) + rint(ss)·width`.
    pub index: u32,
    /// Background-subtracted integrated intensity.
    pub intensity: f32,
    /// Brightest background-subtracted pixel.
    pub max_pixel: f32,
    /// Number of pixels.
    pub npix: u32,
    /// Local background standard deviation (what OM's wrapper calls "snr").
    pub sigma: f32,
    /// True SNR `intensity / sigma`.
    pub snr: f32,
}

/// Peaks of one frame, in OM order (ASIC raster, then seed raster inside each ASIC).
#[derive(Debug, Clone, Default)]
pub struct PeakList {
    pub peaks: Vec<Peak>,
    /// All accepted peaks, including those beyond `max_num_peaks` that were not stored.
    pub num_found: usize,
}

impl PeakList {
    /// An empty list with room for `n` peaks.
    pub fn with_capacity(n: usize) -> PeakList {
        PeakList {
            peaks: Vec::with_capacity(n),
            num_found: 0,
        }
    }
    /// Number of stored peaks (what OM's hit decision counts).
    pub fn len(&self) -> usize {
        self.peaks.len()
    }
    /// True when no peak is stored.
    pub fn is_empty(&self) -> bool {
        self.peaks.is_empty()
    }
}

/// Errors from setting up or running peakfinder8.
#[derive(Debug, thiserror::Error)]
pub enum Pf8Error {
    #[error("peakfinder8: {what} has {actual} elements, the {h}x{w} slab needs {expected}")]
    Size {
        what: &'static str,
        actual: usize,
        expected: usize,
        h: usize,
        w: usize,
    },
    #[error("peakfinder8: radius map has a non-finite or negative value at pixel {0}")]
    BadRadius(usize),
    #[error("peakfinder8: maximum radius {0} px needs more than 65535 radial bins")]
    TooManyBins(f32),
    #[error("peakfinder8: bad parameter: {0}")]
    Param(String),
}

/// A peakfinder8 set up for one geometry and mask; reuse it for every frame.
#[derive(Debug, Clone)]
pub struct PeakFinder8 {
    params: Pf8Params,
    layout: SlabLayout,
    width: usize,
    /// Radial bin per pixel; `nbins` (sentinel) where the mask is 0.
    bins: Vec<u16>,
    /// Radial bin per pixel regardless of the mask (for the empty-background fallback).
    real_bins: Vec<u16>,
    stats: RadialStats,
    ring: Vec<(i32, i32)>,
    peak_map: Vec<u8>,
    touched: Vec<u32>,
    seeds: Vec<u64>,
    slot_fs: Vec<i32>,
    slot_ss: Vec<i32>,
    slot_high_water: usize,
    peak_pixels: Vec<u32>,
}

impl PeakFinder8 {
    /// `pix_r`: radius in pixels per slab pixel; `mask`: non-zero = usable (optional). The radius
    /// window `min_res ≤ r ≤ max_res` is folded into the mask, as OM does.
    pub fn new(
        params: Pf8Params,
        layout: SlabLayout,
        pix_r: &[f32],
        mask: Option<&[u8]>,
    ) -> Result<PeakFinder8, Pf8Error> {
        let (h, w) = (layout.height(), layout.width());
        let n = layout.len();
        if pix_r.len() != n {
            return Err(Pf8Error::Size {
                what: "radius map",
                actual: pix_r.len(),
                expected: n,
                h,
                w,
            });
        }
        if let Some(m) = mask
            && m.len() != n
        {
            return Err(Pf8Error::Size {
                what: "mask",
                actual: m.len(),
                expected: n,
                h,
                w,
            });
        }
        if params.max_pixel_count == 0 || params.min_pixel_count > params.max_pixel_count {
            return Err(Pf8Error::Param(format!(
                "min_pixel_count {} / max_pixel_count {}",
                params.min_pixel_count, params.max_pixel_count
            )));
        }
        if layout.asic_nx < 3 || layout.asic_ny < 3 || layout.asic_nx > 1 << 16 {
            return Err(Pf8Error::Param(
                "ASICs must be at least 3x3 and at most 65536 pixels wide".into(),
            ));
        }
        let mut max_r = -1e9f32;
        for (i, &r) in pix_r.iter().enumerate() {
            if !r.is_finite() || r < 0.0 {
                return Err(Pf8Error::BadRadius(i));
            }
            max_r = max_r.max(r);
        }
        let nbins = max_r.ceil() as usize + 1;
        if nbins >= u16::MAX as usize {
            return Err(Pf8Error::TooManyBins(max_r));
        }
        let real_bins: Vec<u16> = pix_r.iter().map(|r| r.round_ties_even() as u16).collect();
        let bins: Vec<u16> = pix_r
            .iter()
            .zip(&real_bins)
            .enumerate()
            .map(|(i, (&r, &b))| {
                let good =
                    mask.is_none_or(|m| m[i] != 0) && r >= params.min_res && r <= params.max_res;
                if good { b } else { nbins as u16 }
            })
            .collect();
        let stats = RadialStats::new(
            layout,
            &bins,
            nbins,
            params.minimum_snr,
            params.adc_threshold,
        );
        let rw = 2 * params.local_bg_radius as i32;
        let mut ring = Vec::new();
        for dss in -rw..rw {
            for dfs in -rw..rw {
                if dfs * dfs + dss * dss <= rw * rw {
                    ring.push((dfs, dss));
                }
            }
        }
        Ok(PeakFinder8 {
            params,
            layout,
            width: w,
            bins,
            real_bins,
            stats,
            ring,
            peak_map: vec![0; n],
            touched: Vec::with_capacity(4096),
            seeds: Vec::with_capacity(4096),
            slot_fs: vec![0; 64],
            slot_ss: vec![0; 64],
            slot_high_water: 0,
            peak_pixels: vec![0; params.max_pixel_count],
        })
    }

    /// Set up from a CrystFEL geometry: the slab layout as OM derives it and the radius map.
    pub fn from_geometry(
        params: Pf8Params,
        geometry: &crate::detector::Geometry,
        geometry_name: &str,
        mask: Option<&[u8]>,
    ) -> Result<PeakFinder8, Pf8Error> {
        let layout = geometry
            .layout(geometry_name)
            .map_err(|e| Pf8Error::Param(e.to_string()))?;
        PeakFinder8::new(params, layout, &geometry.radius_map(), mask)
    }

    /// The parameters in use.
    pub fn params(&self) -> &Pf8Params {
        &self.params
    }

    /// The slab layout in use.
    pub fn layout(&self) -> SlabLayout {
        self.layout
    }

    /// Radial statistics of the last frame.
    pub fn radial_stats(&self) -> &RadialStats {
        &self.stats
    }

    /// The effective mask (1 = used), radius window included.
    pub fn effective_mask(&self) -> Vec<u8> {
        let s = self.stats.nbins() as u16;
        self.bins.iter().map(|&b| u8::from(b != s)).collect()
    }

    /// Finds the peaks of one calibrated frame (slab order) into `out` (cleared first).
    pub fn find(&mut self, data: &[f32], out: &mut PeakList) -> Result<(), Pf8Error> {
        let n = self.layout.len();
        if data.len() != n {
            return Err(Pf8Error::Size {
                what: "frame",
                actual: data.len(),
                expected: n,
                h: self.layout.height(),
                w: self.width,
            });
        }
        out.peaks.clear();
        out.num_found = 0;
        if self.params.om_bit_exact {
            self.stats.compute_om_f32(data, &self.bins);
        } else {
            self.stats.compute(data);
        }

        let SlabLayout {
            asic_nx, asic_ny, ..
        } = self.layout;
        let w = self.width;
        let asic_len = (asic_nx * asic_ny) as u64;
        let nasics_x = self.layout.nasics_x;
        let seeds = &mut self.seeds;
        seeds.clear();
        self.stats.for_each_above(data, |idx| {
            let (ss, fs) = (idx as usize / w, idx as usize % w);
            let (lss, lfs) = (ss % asic_ny, fs % asic_nx);
            if lss == 0 || lfs == 0 || lss == asic_ny - 1 || lfs == asic_nx - 1 {
                return;
            }
            let asic = ((ss / asic_ny) * nasics_x + fs / asic_nx) as u64;
            let key = asic * asic_len + (lss * asic_nx + lfs) as u64;
            seeds.push((key << 32) | idx as u64);
        });
        seeds.sort_unstable();

        if self.params.om_bit_exact {
            let hw = self.slot_high_water.min(self.slot_fs.len());
            self.slot_fs[..hw].fill(0);
            self.slot_ss[..hw].fill(0);
            self.slot_high_water = 0;
        }
        for si in 0..self.seeds.len() {
            let idx = (self.seeds[si] & 0xFFFF_FFFF) as usize;
            if self.peak_map[idx] != 0 {
                continue;
            }
            self.process_seed(data, idx, out);
        }
        for &t in &self.touched {
            self.peak_map[t as usize] = 0;
        }
        self.touched.clear();
        Ok(())
    }

    #[inline]
    fn above(&self, data: &[f32], pi: usize) -> bool {
        data[pi] > self.stats.rthr[self.bins[pi] as usize]
    }

    fn process_seed(&mut self, data: &[f32], idx: usize, out: &mut PeakList) {
        let SlabLayout {
            asic_nx, asic_ny, ..
        } = self.layout;
        let (nx, ny) = (asic_nx as i32, asic_ny as i32);
        let w = self.width;
        let (ss, fs) = (idx / w, idx % w);
        let (aiss, aifs) = (ss / asic_ny, fs / asic_nx);
        let (ox, oy) = ((aifs * asic_nx) as i32, (aiss * asic_ny) as i32);
        let maxpix = self.params.max_pixel_count;
        let quirk = self.params.om_bit_exact;

        self.slot_fs[0] = fs as i32 - ox;
        self.slot_ss[0] = ss as i32 - oy;
        self.peak_pixels[0] = idx as u32;
        let mut count = 0usize;
        let (mut sum_i, mut sum_fs, mut sum_ss) = (0.0f32, 0.0f32, 0.0f32);
        const SEARCH: [(i32, i32); 9] = [
            (0, 0),
            (-1, -1),
            (0, -1),
            (1, -1),
            (-1, 0),
            (1, 0),
            (-1, 1),
            (0, 1),
            (1, 1),
        ];
        loop {
            let before = count;
            let mut p = 0usize;
            while if quirk { p <= count } else { p < count.max(1) } {
                if p >= self.slot_fs.len() {
                    self.slot_fs.resize(p + 1, 0);
                    self.slot_ss.resize(p + 1, 0);
                }
                let (pfs, pss) = (self.slot_fs[p], self.slot_ss[p]);
                for &(dfs, dss) in &SEARCH {
                    let (lfs, lss) = (pfs + dfs, pss + dss);
                    if lfs < 0 || lfs >= nx || lss < 0 || lss >= ny {
                        continue;
                    }
                    let (cfs, css) = (lfs + ox, lss + oy);
                    let pi = css as usize * w + cfs as usize;
                    if self.peak_map[pi] == 0 && self.above(data, pi) {
                        let v = data[pi] - self.stats.offset[self.bins[pi] as usize];
                        sum_i += v;
                        sum_fs += v * cfs as f32;
                        sum_ss += v * css as f32;
                        if count >= self.slot_fs.len() {
                            let len = (count + 1).max(2 * self.slot_fs.len());
                            self.slot_fs.resize(len, 0);
                            self.slot_ss.resize(len, 0);
                        }
                        self.slot_fs[count] = lfs;
                        self.slot_ss[count] = lss;
                        self.peak_map[pi] = 1;
                        self.touched.push(pi as u32);
                        if count < maxpix {
                            self.peak_pixels[count] = pi as u32;
                        }
                        count += 1;
                    }
                }
                p += 1;
            }
            if count == before {
                break;
            }
        }
        self.slot_high_water = self.slot_high_water.max(count + 1);

        if count < self.params.min_pixel_count || count > maxpix {
            return;
        }
        if sum_i.abs() < 1e-10 {
            return;
        }
        let com_fs = sum_fs / sum_i.abs();
        let com_ss = sum_ss / sum_i.abs();
        let cfs_i = com_fs.round_ties_even() as i64;
        let css_i = com_ss.round_ties_even() as i64;
        let (cx, cy) = (cfs_i - ox as i64, css_i - oy as i64);

        let (mut bsum, mut bsum2, mut bn, mut bg_max) = (0.0f32, 0.0f32, 0u32, 0.0f32);
        for &(dfs, dss) in &self.ring {
            let (lfs, lss) = (cx + dfs as i64, cy + dss as i64);
            if lfs < 0 || lfs >= nx as i64 || lss < 0 || lss >= ny as i64 {
                continue;
            }
            let pi = (lss + oy as i64) as usize * w + (lfs + ox as i64) as usize;
            let v = data[pi];
            let b = self.bins[pi] as usize;
            if v < self.stats.rthr[b] && self.peak_map[pi] == 0 {
                bn += 1;
                bsum += v;
                bsum2 += v * v;
                if v > bg_max {
                    bg_max = v;
                }
            }
        }
        let (loc_off, loc_sigma) = if bn != 0 {
            let off = bsum / bn as f32;
            let var = bsum2 / bn as f32 - off * off;
            (off, if var >= 0.0 { var.sqrt() } else { 0.01 })
        } else {
            let ci = cfs_i + css_i * w as i64;
            let b = if (0..self.real_bins.len() as i64).contains(&ci) {
                self.real_bins[ci as usize] as usize
            } else {
                self.stats.nbins()
            };
            (self.stats.offset[b], 0.01)
        };

        let (mut tot, mut raw, mut max_i, mut sfs, mut sss) =
            (0.0f32, 0.0f32, 0.0f32, 0.0f32, 0.0f32);
        for &pi in &self.peak_pixels[..count.min(maxpix)] {
            let pi = pi as usize;
            let v_raw = data[pi];
            let v = v_raw - loc_off;
            tot += v;
            raw += v_raw;
            sfs += v_raw * (pi % w) as f32;
            sss += v_raw * (pi / w) as f32;
            if v > max_i {
                max_i = v;
            }
        }
        if raw.abs() < 1e-10 {
            return;
        }
        let pfs = sfs / raw.abs();
        let pss = sss / raw.abs();
        let snr = if loc_sigma.abs() > 1e-10 {
            tot / loc_sigma
        } else {
            0.0
        };
        if snr < self.params.minimum_snr {
            return;
        }
        if max_i < bg_max - loc_off {
            return;
        }
        if pfs < ox as f32
            || pfs > (ox + nx - 1) as f32
            || pss < oy as f32
            || pss > (oy + ny - 1) as f32
        {
            return;
        }
        for &pi in &self.peak_pixels[..count.min(maxpix)] {
            self.peak_map[pi as usize] = 2;
        }
        if out.peaks.len() < self.params.max_num_peaks {
            let index = pfs.round_ties_even() as i64 + pss.round_ties_even() as i64 * w as i64;
            out.peaks.push(Peak {
                fs: pfs,
                ss: pss,
                index: index as u32,
                intensity: tot,
                max_pixel: max_i,
                npix: count as u32,
                sigma: loc_sigma,
                snr,
            });
        }
        out.num_found += 1;
    }
}
