//! Deterministic synthetic frames with known Bragg spots, for benchmarks and precision/recall
//! (the recipe of the peakfinder8 reference note §7.1): a radial solvent-ring background,
//! Gaussian noise `σ = sqrt(bg + 9)`, Gaussian spots of σ 0.7–1.1 px and 300–1800 ADU placed at
//! least 4 px from ASIC edges inside a radius window.

use crate::detector::geometry::SlabLayout;

/// A small, fast, seedable generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// A true spot: centre in slab index coordinates and integrated intensity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrueSpot {
    pub fs: f64,
    pub ss: f64,
    pub intensity: f64,
    pub sigma: f64,
}

/// Recipe parameters.
#[derive(Debug, Clone, Copy)]
pub struct SpotRecipe {
    pub num_spots: usize,
    pub min_r: f32,
    pub max_r: f32,
    pub min_intensity: f64,
    pub max_intensity: f64,
}

impl Default for SpotRecipe {
    fn default() -> Self {
        SpotRecipe {
            num_spots: 150,
            min_r: 80.0,
            max_r: 800.0,
            min_intensity: 300.0,
            max_intensity: 1800.0,
        }
    }
}

/// Background level at radius `r` (pixels).
pub fn background(r: f32) -> f32 {
    let d = (r - 350.0) / 80.0;
    10.0 + 150.0 * (-0.5 * d * d).exp()
}

/// Fills `frame` (slab order) with background, noise and spots; returns the true spots.
pub fn synth_frame(
    layout: SlabLayout,
    pix_r: &[f32],
    recipe: &SpotRecipe,
    rng: &mut SplitMix64,
    frame: &mut [f32],
) -> Vec<TrueSpot> {
    let w = layout.width();
    for (v, &r) in frame.iter_mut().zip(pix_r) {
        let bg = background(r);
        *v = bg + (bg + 9.0).sqrt() * rng.normal() as f32;
    }
    let mut spots = Vec::with_capacity(recipe.num_spots);
    let mut tries = 0;
    while spots.len() < recipe.num_spots && tries < recipe.num_spots * 1000 {
        tries += 1;
        let ax = (rng.uniform() * layout.nasics_x as f64) as usize;
        let ay = (rng.uniform() * layout.nasics_y as f64) as usize;
        let lfs = 4.0 + rng.uniform() * (layout.asic_nx as f64 - 9.0);
        let lss = 4.0 + rng.uniform() * (layout.asic_ny as f64 - 9.0);
        let fs = (ax * layout.asic_nx) as f64 + lfs;
        let ss = (ay * layout.asic_ny) as f64 + lss;
        let r = pix_r[ss.round() as usize * w + fs.round() as usize];
        if !(r > recipe.min_r && r < recipe.max_r) {
            continue;
        }
        if spots
            .iter()
            .any(|s: &TrueSpot| (s.fs - fs).powi(2) + (s.ss - ss).powi(2) < 36.0)
        {
            continue;
        }
        let sigma = 0.7 + 0.4 * rng.uniform();
        let intensity =
            recipe.min_intensity + (recipe.max_intensity - recipe.min_intensity) * rng.uniform();
        add_spot(frame, w, fs, ss, sigma, intensity);
        spots.push(TrueSpot {
            fs,
            ss,
            intensity,
            sigma,
        });
    }
    spots
}

/// Adds a Gaussian spot integrated over each pixel by 5×5 supersampling.
fn add_spot(frame: &mut [f32], w: usize, fs: f64, ss: f64, sigma: f64, intensity: f64) {
    const N: usize = 5;
    let norm = intensity / (std::f64::consts::TAU * sigma * sigma) / (N * N) as f64;
    let (cfs, css) = (fs.round() as i64, ss.round() as i64);
    for dy in -4..=4i64 {
        for dx in -4..=4i64 {
            let (px, py) = (cfs + dx, css + dy);
            let mut acc = 0.0;
            for sy in 0..N {
                for sx in 0..N {
                    let x = px as f64 - 0.5 + (sx as f64 + 0.5) / N as f64 - fs;
                    let y = py as f64 - 0.5 + (sy as f64 + 0.5) / N as f64 - ss;
                    acc += (-(x * x + y * y) / (2.0 * sigma * sigma)).exp();
                }
            }
            frame[py as usize * w + px as usize] += (acc * norm) as f32;
        }
    }
}

/// Precision and recall of `found` (fs, ss) against `truth` with one-to-one greedy
/// nearest-neighbour matching within `max_dist` pixels.
pub fn score(found: &[(f32, f32)], truth: &[TrueSpot], max_dist: f64) -> (f64, f64, usize) {
    let mut pairs = Vec::new();
    for (i, f) in found.iter().enumerate() {
        for (j, t) in truth.iter().enumerate() {
            let d = ((f.0 as f64 - t.fs).powi(2) + (f.1 as f64 - t.ss).powi(2)).sqrt();
            if d <= max_dist {
                pairs.push((d, i, j));
            }
        }
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut used_f = vec![false; found.len()];
    let mut used_t = vec![false; truth.len()];
    let mut matched = 0;
    for (_, i, j) in pairs {
        if !used_f[i] && !used_t[j] {
            used_f[i] = true;
            used_t[j] = true;
            matched += 1;
        }
    }
    let precision = if found.is_empty() {
        1.0
    } else {
        matched as f64 / found.len() as f64
    };
    let recall = if truth.is_empty() {
        1.0
    } else {
        matched as f64 / truth.len() as f64
    };
    (precision, recall, matched)
}
