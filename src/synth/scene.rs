//! What hits the detector: a radial water-ring background around the beam and, on hits, Bragg
//! spots (pixel-integrated 2-D Gaussians, each entirely inside one ASIC). Everything is expected
//! energy in keV per pixel in slab order (no noise); the encoder adds photon statistics.

use super::detector_spec::SynthDetector;
use super::random::{erf, round_fast, substream};
use crate::detector::geometry::{Geometry, SlabLayout};
use serde::Serialize;

/// Physics and spot-recipe parameters.
#[derive(Debug, Clone, Serialize)]
pub struct SceneParams {
    /// Photon energy (keV).
    pub photon_kev: f64,
    /// Camera length (m).
    pub clen_m: f64,
    /// d-spacing of the water ring (Å).
    pub ring_d_angstrom: f64,
    /// Mean photons per pixel at the ring peak.
    pub ring_photons: f64,
    /// Ring width (Gaussian σ) as a fraction of its radius.
    pub ring_width: f64,
    /// Mean photons per pixel of the diffuse scattering at the beam, decaying with `diffuse_r0_px`.
    pub diffuse_photons: f64,
    pub diffuse_r0_px: f64,
    /// Flat background, photons per pixel.
    pub flat_photons: f64,
    /// Log-normal σ of the per-event background scale (beam/jet fluctuations).
    pub background_jitter: f64,
    /// Spots per hit, inclusive range.
    pub spots_per_hit: (u32, u32),
    /// Integrated spot intensity in photons, log-uniform between these.
    pub spot_photons: (f64, f64),
    /// Spot Gaussian σ (pixels), uniform between these.
    pub spot_sigma: (f64, f64),
    /// No spots closer than this to the beam (pixels).
    pub min_radius_px: f64,
    /// Spot centres at least this far inside their ASIC (pixels).
    pub edge_margin_px: f64,
    /// Minimum distance between spot centres (pixels).
    pub min_separation_px: f64,
}

impl Default for SceneParams {
    fn default() -> Self {
        SceneParams {
            photon_kev: 9.5,
            clen_m: 0.1,
            ring_d_angstrom: 3.1,
            ring_photons: 0.35,
            ring_width: 0.12,
            diffuse_photons: 0.12,
            diffuse_r0_px: 250.0,
            flat_photons: 0.01,
            background_jitter: 0.2,
            spots_per_hit: (20, 150),
            spot_photons: (3.0, 10000.0),
            spot_sigma: (0.6, 1.5),
            min_radius_px: 60.0,
            edge_margin_px: 8.0,
            min_separation_px: 16.0,
        }
    }
}

/// Largest per-event background scale (the log-normal jitter is clipped here).
pub const BACKGROUND_SCALE_MAX: f64 = 2.0;

/// Packs a mean photon count (< 4) as `λ·2^14` in the low 16 bits and the zero-photon
/// probability at the largest scale, `exp(-BACKGROUND_SCALE_MAX·λ)`, as a 16-bit fraction in
/// the high 16 bits.
pub fn pack_background(photons: f32) -> u32 {
    let q = round_fast(photons * 16384.0).clamp(0.0, 65535.0) as u32;
    let lambda = q as f32 / 16384.0;
    let p0 = (-(BACKGROUND_SCALE_MAX as f32) * lambda).exp();
    let p0q = round_fast(p0 * 65536.0).min(65535.0) as u32;
    q | (p0q << 16)
}

/// `(λ, p0)` from [`pack_background`].
#[inline]
pub fn unpack_background(packed: u32) -> (f32, f32) {
    (
        (packed & 0xFFFF) as f32 / 16384.0,
        (packed >> 16) as f32 / 65536.0,
    )
}

/// Half-width (pixels) of the window a spot is rendered in: covers ≥ 4.6 σ for σ ≤ 1.5.
pub const SPOT_HALF_WINDOW: i64 = 7;

/// One Bragg spot of the ground truth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TruthSpot {
    /// CrystFEL panel name (one ASIC) in the written geometry.
    pub panel: String,
    /// Detector segment id (psana segment number).
    pub segment: usize,
    /// Slab coordinates, pixel centres at integers.
    pub ss: f64,
    pub fs: f64,
    /// Integrated expected intensity (keV).
    pub intensity_kev: f64,
    /// Gaussian σ (pixels).
    pub sigma: f64,
}

/// The truth of one event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventScene {
    pub event: u64,
    pub hit: bool,
    /// Multiplier of the mean background this event.
    pub background_scale: f64,
    pub spots: Vec<TruthSpot>,
}

/// The run-wide scene: geometry, background map and recipe.
#[derive(Debug, Clone)]
pub struct Scene {
    pub det: SynthDetector,
    /// The slab's ASIC grid.
    pub layout: SlabLayout,
    pub geometry: Geometry,
    pub params: SceneParams,
    pub seed: u64,
    pub hit_rate: f64,
    /// Distance from the beam, pixels, slab order.
    pub radius: Vec<f32>,
    /// Mean background photons per pixel at scale 1, slab order (multiples of 2^-14).
    pub bg_photons: Vec<f32>,
    /// The same packed for the encoder with the zero-photon probability at the largest scale,
    /// which it samples and then thins to the event's scale (see [`unpack_background`]).
    pub bg_packed: Vec<u32>,
    /// Geometry panel index of each slab ASIC (row-major over the ASIC grid).
    asic_panel: Vec<usize>,
}

impl Scene {
    /// The scene of a run; `hit_rate` in [0, 1].
    pub fn new(det: &SynthDetector, params: SceneParams, seed: u64, hit_rate: f64) -> Scene {
        let geometry = det.geometry(params.photon_kev, params.clen_m);
        let res: f64 = geometry
            .globals
            .iter()
            .find(|(k, _)| k == "res")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(10000.0);
        let radius = geometry.radius_map();
        let lambda = 12.398_419_843 / params.photon_kev;
        let two_theta = 2.0 * (lambda / (2.0 * params.ring_d_angstrom)).asin();
        let ring_r = params.clen_m * two_theta.tan() * res;
        let ring_w = params.ring_width * ring_r;
        let bg_photons: Vec<f32> = radius
            .iter()
            .map(|&r| {
                let r = f64::from(r);
                if !r.is_finite() {
                    return 0.0;
                }
                let d = (r - ring_r) / ring_w;
                (params.ring_photons * (-0.5 * d * d).exp()
                    + params.diffuse_photons * (-r / params.diffuse_r0_px).exp()
                    + params.flat_photons) as f32
            })
            .collect();
        let bg_packed: Vec<u32> = bg_photons.iter().map(|&b| pack_background(b)).collect();
        let bg_photons = bg_packed.iter().map(|&q| unpack_background(q).0).collect();
        let l = det.layout();
        let asic_panel = (0..l.nasics_y * l.nasics_x)
            .map(|a| {
                let (ss, fs) = ((a / l.nasics_x) * l.asic_ny, (a % l.nasics_x) * l.asic_nx);
                geometry
                    .panels
                    .iter()
                    .position(|p| {
                        (p.min_ss..=p.max_ss).contains(&ss) && (p.min_fs..=p.max_fs).contains(&fs)
                    })
                    .expect("the synthetic geometry covers every ASIC")
            })
            .collect();
        Scene {
            det: det.clone(),
            layout: l,
            geometry,
            params,
            seed,
            hit_rate,
            radius,
            bg_photons,
            bg_packed,
            asic_panel,
        }
    }

    /// The truth of event `event` (a pure function of seed and event index).
    pub fn event(&self, event: u64) -> EventScene {
        let p = &self.params;
        let mut rng = substream(self.seed, 3, event);
        let background_scale = (p.background_jitter * rng.normal())
            .exp()
            .min(BACKGROUND_SCALE_MAX);
        let hit = rng.uniform() < self.hit_rate;
        let mut spots: Vec<TruthSpot> = Vec::new();
        if hit {
            let (lo, hi) = p.spots_per_hit;
            let want = lo + (rng.uniform() * f64::from(hi - lo + 1)) as u32;
            let l = self.layout;
            let w = l.width();
            let m = p.edge_margin_px;
            let (ln_lo, ln_hi) = (p.spot_photons.0.ln(), p.spot_photons.1.ln());
            let mut tries = 0;
            while spots.len() < want as usize && tries < 100 * want {
                tries += 1;
                let ay = (rng.uniform() * l.nasics_y as f64) as usize;
                let ax = (rng.uniform() * l.nasics_x as f64) as usize;
                let lss = m + rng.uniform() * (l.asic_ny as f64 - 1.0 - 2.0 * m);
                let lfs = m + rng.uniform() * (l.asic_nx as f64 - 1.0 - 2.0 * m);
                let sigma = p.spot_sigma.0 + (p.spot_sigma.1 - p.spot_sigma.0) * rng.uniform();
                let photons = (ln_lo + (ln_hi - ln_lo) * rng.uniform()).exp();
                let ss = (ay * l.asic_ny) as f64 + lss;
                let fs = (ax * l.asic_nx) as f64 + lfs;
                let r = f64::from(self.radius[ss.round() as usize * w + fs.round() as usize]);
                if r.is_nan() || r < p.min_radius_px {
                    continue;
                }
                let sep2 = p.min_separation_px * p.min_separation_px;
                if spots
                    .iter()
                    .any(|s| (s.ss - ss).powi(2) + (s.fs - fs).powi(2) < sep2)
                {
                    continue;
                }
                let panel = &self.geometry.panels[self.asic_panel[ay * l.nasics_x + ax]];
                spots.push(TruthSpot {
                    panel: panel.name.clone(),
                    segment: self.det.segment_id(ss as usize / self.det.rows()),
                    ss,
                    fs,
                    intensity_kev: photons * p.photon_kev,
                    sigma,
                });
            }
        }
        EventScene {
            event,
            hit,
            background_scale,
            spots,
        }
    }

    /// Adds the spots of `ev` that lie in the segment at slab position `k` to `out` (that
    /// segment, keV).
    pub fn add_segment_spots(&self, ev: &EventScene, k: usize, out: &mut [f32]) {
        let (rows, cols) = (self.det.rows(), self.det.cols());
        let row0 = (k * rows) as f64;
        let seg = self.det.segment_id(k);
        for s in ev.spots.iter().filter(|s| s.segment == seg) {
            add_gaussian(out, rows, cols, s.ss - row0, s.fs, s.sigma, s.intensity_kev);
        }
    }

    /// The packed mean background of the segment at slab position `k` (see
    /// [`unpack_background`]).
    pub fn segment_background(&self, k: usize) -> &[u32] {
        let n = self.det.seg_len();
        &self.bg_packed[k * n..(k + 1) * n]
    }

    /// Renders the noise-free energy image of `ev` (keV per pixel, slab order): background and
    /// spots, exactly what the raw frame encodes before photon and electronic noise.
    pub fn render_energy(&self, ev: &EventScene, out: &mut [f32]) {
        let n = self.det.seg_len();
        let scale = (self.params.photon_kev * ev.background_scale) as f32;
        for (o, &b) in out.iter_mut().zip(&self.bg_photons) {
            *o = b * scale;
        }
        for k in 0..self.det.nsegs() {
            self.add_segment_spots(ev, k, &mut out[k * n..(k + 1) * n]);
        }
    }
}

/// Adds a Gaussian of integrated `intensity` centred at (`ss`, `fs`) (pixel centres at
/// integers), integrated exactly over each pixel, within ±[`SPOT_HALF_WINDOW`] pixels.
pub fn add_gaussian(
    out: &mut [f32],
    rows: usize,
    cols: usize,
    ss: f64,
    fs: f64,
    sigma: f64,
    intensity: f64,
) {
    let h = SPOT_HALF_WINDOW;
    let k = 1.0 / (std::f64::consts::SQRT_2 * sigma);
    let weights = |c: f64| -> [f64; (2 * SPOT_HALF_WINDOW + 1) as usize] {
        let c0 = c.round() as i64;
        std::array::from_fn(|i| {
            let x = (c0 - h + i as i64) as f64 - c;
            0.5 * (erf((x + 0.5) * k) - erf((x - 0.5) * k))
        })
    };
    let (wy, wx) = (weights(ss), weights(fs));
    let (r0, c0) = (ss.round() as i64 - h, fs.round() as i64 - h);
    for (i, wy) in wy.iter().enumerate() {
        let r = r0 + i as i64;
        if r < 0 || r >= rows as i64 {
            continue;
        }
        for (j, wx) in wx.iter().enumerate() {
            let c = c0 + j as i64;
            if c < 0 || c >= cols as i64 {
                continue;
            }
            out[r as usize * cols + c as usize] += (intensity * wy * wx) as f32;
        }
    }
}
