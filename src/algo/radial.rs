//! Radial background statistics with OM's iterative two-sided sigma clipping, computed exactly but
//! without OM's five full passes.
//!
//! One streaming pass splits the frame per radial bin into an *inner window* `[a, c]` (accumulated
//! as sums) and the few pixels outside it (kept as candidates). Every clipping iteration whose
//! thresholds enclose the window strictly then only revisits the candidates. The window comes from
//! the previous frame's statistics; a bin whose window is not enclosed falls back to an exact
//! gather over its own pixels, so the included pixel sets are exactly OM's whatever the history.

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
    cand_acc: Vec<[f64; 3]>,
    pub(crate) cands: Vec<Candidate>,
    bin_start: Vec<u32>,
    bin_pix: Vec<u32>,
}

impl RadialStats {
    /// `bins[i]` is the radial bin of pixel i, or `nbins` (the sentinel) when masked.
    pub fn new(bins: &[u16], nbins: usize, min_snr: f32, adc_threshold: f32) -> RadialStats {
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
            cand_acc: vec![[0.0; 3]; nbins + 1],
            cands: Vec::with_capacity(bins.len() / 16 + 1024),
            bin_start,
            bin_pix,
        }
    }

    /// Number of real radial bins (`ceil(max r) + 1`).
    pub fn nbins(&self) -> usize {
        self.nbins
    }

    /// Computes the statistics of `data` (slab order) with OM's five clipping iterations.
    /// On return `rthr`/`offset` hold the final values and the candidate list holds every
    /// pixel of a windowed bin that lies outside the window.
    pub fn compute(&mut self, data: &[f32], bins: &[u16]) {
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
        self.inner.iter_mut().for_each(|a| *a = [0.0; 3]);
        self.cands.clear();
        self.split_pass(data, bins);

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

    /// Forgets the window learned from earlier frames (the next frame is gathered exactly).
    pub fn reset_window(&mut self) {
        self.have_window = false;
    }

    fn window_enclosed(&self, b: usize) -> bool {
        let [a, c] = self.window[b];
        self.lthr[b] < a && c < self.rthr[b]
    }

    fn split_pass(&mut self, data: &[f32], bins: &[u16]) {
        let window = &self.window;
        let inner = &mut self.inner;
        let cands = &mut self.cands;
        for (i, (&v, &b)) in data.iter().zip(bins).enumerate() {
            let b = b as usize;
            let [a, c] = window[b];
            if v >= a && v <= c {
                let acc = &mut inner[b];
                let v = v as f64;
                acc[0] += v;
                acc[1] += v * v;
                acc[2] += 1.0;
            } else {
                cands.push(Candidate {
                    idx: i as u32,
                    bin: b as u32,
                    v,
                });
            }
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
            let (sum, sum2, n) = if self.full[b] {
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
            } else {
                let i = self.inner[b];
                let c = self.cand_acc[b];
                (i[0] + c[0], i[1] + c[1], i[2] + c[2])
            };
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

    /// Fraction of bins computed by exact gathering in the last frame (diagnostics).
    pub fn gathered_fraction(&self) -> f64 {
        self.full[..self.nbins].iter().filter(|&&f| f).count() as f64 / self.nbins.max(1) as f64
    }

    /// Number of pixels kept outside the inner windows in the last frame (diagnostics).
    pub fn num_candidates(&self) -> usize {
        self.cands.len()
    }
}
