//! Radial background statistics with OM's iterative two-sided sigma clipping, computed exactly but
//! without OM's five full passes.
//!
//! One streaming pass splits the frame per radial bin into an *inner window* `[a, c]` (accumulated
//! as sums) and the few pixels outside it (kept as candidates). Every clipping iteration whose
//! thresholds enclose the window strictly then only revisits the candidates. The window comes from
//! the previous frame's statistics; a bin whose window is not enclosed falls back to an exact
//! gather over its own pixels, so the included pixel sets are exactly OM's whatever the history.

use crate::detector::geometry::SlabLayout;

/// Number of clipping iterations (hard-coded in OM).
pub const ITERATIONS: usize = 5;

/// Window half-width as a fraction of `minimum_snr·σ` of the previous frame.
const WINDOW_FRACTION: f64 = 0.6;

/// Bins with fewer pixels than this are always gathered exactly.
const MIN_WINDOWED_PIXELS: u32 = 16;

/// A pixel outside its bin's inner window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub idx: u32,
    pub bin: u32,
    pub v: f32,
}

/// Per-bin statistics after the last iteration, and the machinery to compute them.
#[derive(Debug, Clone)]
pub struct RadialStats {
    nbins: usize,
    min_snr: f32,
    adc_threshold: f32,
    /// Mean of the clipped values per bin (`roffset`).
    pub offset: Vec<f32>,
    /// Standard deviation per bin (`rsigma`; negative variance kept as OM does).
    pub sigma: Vec<f32>,
    /// Upper threshold per bin, plus a NaN sentinel bin for masked pixels.
    pub rthr: Vec<f32>,
    /// Lower threshold per bin, plus a NaN sentinel bin.
    pub lthr: Vec<f32>,
    /// Pixel count of the last iteration per bin.
    pub count: Vec<u32>,
    window: Vec<[f32; 2]>,
    have_window: bool,
    full: Vec<bool>,
    inner: Vec<[f64; 3]>,
    cand_count: Vec<u32>,
    cand_acc: Vec<[f64; 3]>,
    pub(crate) cands: Vec<Candidate>,
    bin_start: Vec<u32>,
    bin_pix: Vec<u32>,
    layout: SlabLayout,
    /// Unmasked band-local pixel indices, per band sorted by bin.
    perm: Vec<u16>,
    runs: Vec<Run>,
    blocks: Vec<Block>,
    lane_acc: Vec<[[f32; 8]; 2]>,
    tile: Vec<f32>,
    om_sums: Vec<[f32; 2]>,
}

/// Most rows of an ASIC handled together (whole ASICs for ePix10ka and Jungfrau): the tile
/// (`asic_nx × BAND_ROWS` f32) stays in L2. Tested: 32- and 64-row bands are slower.
const BAND_ROWS: usize = 256;

/// A band of ASIC rows: slab index of its first pixel, its row count, and the end of its runs.
#[derive(Debug, Clone, Copy)]
struct Block {
    origin: u32,
    rows: u32,
    runs_end: u32,
}

/// The shift subtracted before accumulating a bin's inner values: the window centre rounded to
/// an integer, so integer-valued data (zeros, raw ADU) are summed exactly.
fn window_shift([a, c]: [f32; 2]) -> f32 {
    if a.is_finite() && c.is_finite() {
        (0.5 * (a + c)).round()
    } else {
        0.0
    }
}

/// A run of `perm` entries sharing one bin; `end` is exclusive, the start is the previous end.
#[derive(Debug, Clone, Copy)]
struct Run {
    bin: u32,
    end: u32,
}

impl RadialStats {
    /// `bins[i]` is the radial bin of slab pixel i, or `nbins` (the sentinel) when masked.
    pub fn new(
        layout: SlabLayout,
        bins: &[u16],
        nbins: usize,
        min_snr: f32,
        adc_threshold: f32,
    ) -> RadialStats {
        assert_eq!(bins.len(), layout.len());
        assert!(layout.asic_nx <= 1 << 16, "ASIC wider than 65536 pixels");
        let band_rows = ((1usize << 16) / layout.asic_nx).clamp(1, BAND_ROWS);
        let w = layout.width();
        let mut perm = Vec::with_capacity(bins.len());
        let mut runs = Vec::new();
        let mut blocks = Vec::new();
        let mut keyed: Vec<(u16, u16)> = Vec::with_capacity(layout.asic_nx * band_rows);
        for ay in 0..layout.nasics_y {
            for ax in 0..layout.nasics_x {
                for band in (0..layout.asic_ny).step_by(band_rows) {
                    let rows = band_rows.min(layout.asic_ny - band);
                    let origin = (ay * layout.asic_ny + band) * w + ax * layout.asic_nx;
                    keyed.clear();
                    for l in 0..layout.asic_nx * rows {
                        let i = origin + (l / layout.asic_nx) * w + l % layout.asic_nx;
                        if (bins[i] as usize) < nbins {
                            keyed.push((bins[i], l as u16));
                        }
                    }
                    keyed.sort_unstable();
                    for (k, &(b, l)) in keyed.iter().enumerate() {
                        if k == 0 || keyed[k - 1].0 != b {
                            runs.push(Run {
                                bin: b as u32,
                                end: 0,
                            });
                        }
                        perm.push(l);
                        runs.last_mut().expect("run pushed above").end = perm.len() as u32;
                    }
                    blocks.push(Block {
                        origin: origin as u32,
                        rows: rows as u32,
                        runs_end: runs.len() as u32,
                    });
                }
            }
        }
        let mut bin_start = vec![0u32; nbins + 2];
        for &b in bins {
            bin_start[b as usize + 1] += 1;
        }
        for i in 0..=nbins {
            bin_start[i + 1] += bin_start[i];
        }
        let mut fill = bin_start.clone();
        let mut bin_pix = vec![0u32; bins.len()];
        for (i, &b) in bins.iter().enumerate() {
            let slot = &mut fill[b as usize];
            bin_pix[*slot as usize] = i as u32;
            *slot += 1;
        }
        bin_pix.truncate(bin_start[nbins] as usize);
        let mut rthr = vec![0.0f32; nbins + 1];
        let mut lthr = vec![0.0f32; nbins + 1];
        rthr[nbins] = f32::NAN;
        lthr[nbins] = f32::NAN;
        RadialStats {
            nbins,
            min_snr,
            adc_threshold,
            offset: vec![0.0; nbins + 1],
            sigma: vec![0.0; nbins + 1],
            rthr,
            lthr,
            count: vec![0; nbins + 1],
            window: vec![[f32::NEG_INFINITY, f32::INFINITY]; nbins + 1],
            have_window: false,
            full: vec![true; nbins + 1],
            inner: vec![[0.0; 3]; nbins + 1],
            cand_count: vec![0; nbins + 1],
            cand_acc: vec![[0.0; 3]; nbins + 1],
            cands: Vec::with_capacity(bins.len() / 16 + 1024),
            bin_start,
            bin_pix,
            layout,
            perm,
            runs,
            blocks,
            lane_acc: vec![[[0.0; 8]; 2]; nbins + 1],
            tile: vec![0.0; layout.asic_nx * band_rows],
            om_sums: Vec::new(),
        }
    }

    /// Number of real radial bins (`ceil(max r) + 1`).
    pub fn nbins(&self) -> usize {
        self.nbins
    }

    /// Computes the statistics of `data` (slab order) with OM's five clipping iterations.
    /// On return `rthr`/`offset` hold the final values and the candidate list holds every
    /// pixel of a windowed bin that lies outside the window.
    pub fn compute(&mut self, data: &[f32]) {
        let nb = self.nbins;
        for b in 0..nb {
            self.full[b] = !self.have_window
                || self.bin_start[b + 1] - self.bin_start[b] < MIN_WINDOWED_PIXELS;
            if self.full[b] {
                self.window[b] = [f32::NEG_INFINITY, f32::INFINITY];
            }
        }
        self.window[nb] = [f32::NEG_INFINITY, f32::INFINITY];
        self.full[nb] = false;
        self.cands.clear();
        self.split_pass(data);

        for b in 0..nb {
            self.lthr[b] = -1e9;
            self.rthr[b] = 1e9;
        }
        for _ in 0..ITERATIONS {
            self.fill_and_update(data);
        }
        // Final check: every above-threshold pixel of a windowed bin must be a candidate.
        for b in 0..nb {
            if !self.full[b] && !self.window_enclosed(b) {
                self.full[b] = true;
            }
        }
        // Next frame's windows from this frame's statistics.
        let k = self.min_snr as f64 * WINDOW_FRACTION;
        for b in 0..nb {
            let mu = self.offset[b] as f64;
            let s = self.sigma[b] as f64;
            self.window[b] = if self.count[b] >= MIN_WINDOWED_PIXELS && s > 0.0 {
                [(mu - k * s) as f32, (mu + k * s) as f32]
            } else {
                [f32::NEG_INFINITY, f32::INFINITY]
            };
        }
        self.have_window = true;
    }

    /// OM's computation literally: five full passes in slab order with f32 sums, so `offset`
    /// and the thresholds are bit-identical to OM's (several times slower than [`Self::compute`]).
    pub fn compute_om_f32(&mut self, data: &[f32], bins: &[u16]) {
        let nb = self.nbins;
        let mut sums = std::mem::take(&mut self.om_sums);
        sums.resize(nb + 1, [0.0; 2]);
        for b in 0..nb {
            self.lthr[b] = -1e9;
            self.rthr[b] = 1e9;
            self.full[b] = true;
        }
        self.cands.clear();
        for _ in 0..ITERATIONS {
            sums.iter_mut().for_each(|x| *x = [0.0; 2]);
            self.count.iter_mut().for_each(|x| *x = 0);
            for (&v, &b) in data.iter().zip(bins) {
                let b = b as usize;
                if b < nb && v < self.rthr[b] && v > self.lthr[b] {
                    sums[b][0] += v;
                    sums[b][1] += v * v;
                    self.count[b] += 1;
                }
            }
            for (b, &[sum, sum2]) in sums[..nb].iter().enumerate() {
                if self.count[b] == 0 {
                    self.offset[b] = 0.0;
                    self.sigma[b] = 0.0;
                    self.rthr[b] = f32::MAX;
                    self.lthr[b] = f32::MIN_POSITIVE;
                } else {
                    let n = self.count[b] as f32;
                    let mu = sum / n;
                    let var = sum2 / n - mu * mu;
                    let sigma = if var >= 0.0 { var.sqrt() } else { var };
                    self.offset[b] = mu;
                    self.sigma[b] = sigma;
                    let r = mu + self.min_snr * sigma;
                    self.rthr[b] = if r < self.adc_threshold {
                        self.adc_threshold
                    } else {
                        r
                    };
                    self.lthr[b] = mu - self.min_snr * sigma;
                }
            }
        }
        self.om_sums = sums;
        self.have_window = false;
    }

    /// Forgets the window learned from earlier frames (the next frame is gathered exactly).
    pub fn reset_window(&mut self) {
        self.have_window = false;
    }

    fn window_enclosed(&self, b: usize) -> bool {
        let [a, c] = self.window[b];
        self.lthr[b] < a && c < self.rthr[b]
    }

    /// One pass over the frame, band by band: the band of ASIC rows is copied into an
    /// L1-resident tile and visited in bin order, so each bin's window sits in registers and its
    /// shifted values (`x = v − centre`) accumulate into eight f32 lanes per bin. Values outside
    /// the window become candidates. Masked pixels are never visited.
    fn split_pass(&mut self, data: &[f32]) {
        let asic_nx = self.layout.asic_nx;
        let w = self.layout.width();
        self.lane_acc.iter_mut().for_each(|a| *a = [[0.0; 8]; 2]);
        self.cand_count.iter_mut().for_each(|c| *c = 0);
        let tile = &mut self.tile[..];
        let mut start = 0usize;
        let mut run0 = 0usize;
        for block in &self.blocks {
            let origin = block.origin as usize;
            for r in 0..block.rows as usize {
                let s = origin + r * w;
                tile[r * asic_nx..(r + 1) * asic_nx].copy_from_slice(&data[s..s + asic_nx]);
            }
            for run in &self.runs[run0..block.runs_end as usize] {
                let b = run.bin as usize;
                let end = run.end as usize;
                let [a, c] = self.window[b];
                let m = window_shift([a, c]);
                let [mut sx, mut sq] = self.lane_acc[b];
                let idx = &self.perm[start..end];
                let mut chunks = idx.chunks_exact(8);
                for ch in &mut chunks {
                    let v: [f32; 8] = std::array::from_fn(|j| tile[ch[j] as usize]);
                    let inside = v.iter().fold(true, |acc, &x| acc & (x >= a) & (x <= c));
                    if inside {
                        for j in 0..8 {
                            let x = v[j] - m;
                            sx[j] += x;
                            sq[j] += x * x;
                        }
                    } else {
                        for j in 0..8 {
                            if v[j] >= a && v[j] <= c {
                                let x = v[j] - m;
                                sx[j] += x;
                                sq[j] += x * x;
                            } else {
                                let l = ch[j] as usize;
                                self.cands.push(Candidate {
                                    idx: (origin + (l / asic_nx) * w + l % asic_nx) as u32,
                                    bin: b as u32,
                                    v: v[j],
                                });
                                self.cand_count[b] += 1;
                            }
                        }
                    }
                }
                for &l in chunks.remainder() {
                    let v = tile[l as usize];
                    if v >= a && v <= c {
                        let x = v - m;
                        sx[0] += x;
                        sq[0] += x * x;
                    } else {
                        let l = l as usize;
                        self.cands.push(Candidate {
                            idx: (origin + (l / asic_nx) * w + l % asic_nx) as u32,
                            bin: b as u32,
                            v,
                        });
                        self.cand_count[b] += 1;
                    }
                }
                self.lane_acc[b] = [sx, sq];
                start = end;
            }
            run0 = block.runs_end as usize;
        }
        for b in 0..self.nbins {
            let n = f64::from(self.bin_start[b + 1] - self.bin_start[b] - self.cand_count[b]);
            let m = f64::from(window_shift(self.window[b]));
            let [lx, lq] = &self.lane_acc[b];
            let sx: f64 = lx.iter().map(|&x| f64::from(x)).sum();
            let sq: f64 = lq.iter().map(|&x| f64::from(x)).sum();
            self.inner[b] = [sx + n * m, sq + 2.0 * m * sx + n * m * m, n];
        }
    }

    fn fill_and_update(&mut self, data: &[f32]) {
        let nb = self.nbins;
        for b in 0..nb {
            if !self.full[b] && !self.window_enclosed(b) {
                self.full[b] = true;
            }
        }
        self.cand_acc.iter_mut().for_each(|a| *a = [0.0; 3]);
        for c in &self.cands {
            let b = c.bin as usize;
            if c.v > self.lthr[b] && c.v < self.rthr[b] {
                let acc = &mut self.cand_acc[b];
                let v = c.v as f64;
                acc[0] += v;
                acc[1] += v * v;
                acc[2] += 1.0;
            }
        }
        let k = self.min_snr as f64;
        let adc = self.adc_threshold;
        for b in 0..nb {
            let (mut sum, mut sum2, mut n) = if self.full[b] {
                self.gather(data, b)
            } else {
                let i = self.inner[b];
                let c = self.cand_acc[b];
                (i[0] + c[0], i[1] + c[1], i[2] + c[2])
            };
            if !self.full[b] && n > 0.0 {
                // A (near-)constant bin: its variance is decided by rounding, so take the
                // plain f64 sums over the bin's own pixels instead, from now on.
                let mu = sum / n;
                if (sum2 / n - mu * mu).abs() <= 1e-6 * (mu * mu).max(1.0) {
                    self.full[b] = true;
                    (sum, sum2, n) = self.gather(data, b);
                }
            }
            self.count[b] = n as u32;
            if n == 0.0 {
                self.offset[b] = 0.0;
                self.sigma[b] = 0.0;
                self.rthr[b] = f32::MAX;
                self.lthr[b] = f32::MIN_POSITIVE;
            } else {
                let mu = sum / n;
                let var = sum2 / n - mu * mu;
                let sigma = if var >= 0.0 { var.sqrt() } else { var };
                let mut r = (mu + k * sigma) as f32;
                if r < adc {
                    r = adc;
                }
                self.offset[b] = mu as f32;
                self.sigma[b] = sigma as f32;
                self.rthr[b] = r;
                self.lthr[b] = (mu - k * sigma) as f32;
            }
        }
    }

    /// Plain f64 sums over the bin's pixels inside the current thresholds.
    fn gather(&self, data: &[f32], b: usize) -> (f64, f64, f64) {
        let (l, r) = (self.lthr[b], self.rthr[b]);
        let mut s = [0.0f64; 3];
        let range = self.bin_start[b] as usize..self.bin_start[b + 1] as usize;
        for &p in &self.bin_pix[range] {
            let v = data[p as usize];
            if v > l && v < r {
                let v = v as f64;
                s[0] += v;
                s[1] += v * v;
                s[2] += 1.0;
            }
        }
        (s[0], s[1], s[2])
    }

    /// Calls `f(pixel index)` for every pixel above its final upper threshold (unordered):
    /// candidates of windowed bins plus a scan of the exactly gathered bins.
    pub(crate) fn for_each_above(&self, data: &[f32], mut f: impl FnMut(u32)) {
        for c in &self.cands {
            let b = c.bin as usize;
            if !self.full[b] && c.v > self.rthr[b] {
                f(c.idx);
            }
        }
        for b in 0..self.nbins {
            if self.full[b] {
                let r = self.rthr[b];
                let range = self.bin_start[b] as usize..self.bin_start[b + 1] as usize;
                for &p in &self.bin_pix[range] {
                    if data[p as usize] > r {
                        f(p);
                    }
                }
            }
        }
    }

    /// Fraction of the unmasked pixels whose bins were gathered exactly (not windowed) in the
    /// last frame (diagnostics).
    pub fn gathered_fraction(&self) -> f64 {
        let total = self.bin_start[self.nbins].max(1) as f64;
        let gathered: u32 = (0..self.nbins)
            .filter(|&b| self.full[b])
            .map(|b| self.bin_start[b + 1] - self.bin_start[b])
            .sum();
        gathered as f64 / total
    }

    /// Number of pixels kept outside the inner windows in the last frame (diagnostics).
    pub fn num_candidates(&self) -> usize {
        self.cands.len()
    }
}
