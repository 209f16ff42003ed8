//! Per-pixel calibration constants of a synthetic detector (pedestals, gains, noise, bad pixels)
//! in psana's layout, and writing them as the `.npy` files psana users save.

use super::detector_spec::{DetectorModel, DetectorSpec};
use super::random::{FastNormal, substream};
use super::{SynthError, atomic_write_with};
use ndarray::{ArrayView, IxDyn};
use ndarray_npy::WriteNpyExt;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// What is wrong with a bad pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BadPixel {
    Good = 0,
    /// Reads far above its pedestal with large noise (`pixel_status` bit 0).
    Hot = 1,
    /// Reads ADC 0 (`pixel_status` bit 1).
    Dead = 2,
    /// Stuck at ADC 0x3FFF (`pixel_status` bit 2).
    Stuck = 3,
}

impl BadPixel {
    /// The `pixel_status` value written for this kind in every gain range.
    pub fn status(self) -> u16 {
        match self {
            Self::Good => 0,
            Self::Hot => 1,
            Self::Dead => 2,
            Self::Stuck => 4,
        }
    }
}

/// Fraction of bad pixels.
pub const BAD_FRACTION: f64 = 0.003;

/// Constants of one synthetic detector, `(ngr, nsegs, rows, cols)` flattened.
#[derive(Debug, Clone)]
pub struct SynthConstants {
    pub spec: &'static DetectorSpec,
    /// `pedestals.npy` (ADU).
    pub pedestals: Vec<f32>,
    /// `pixel_offset.npy` (Jungfrau, ADU, added to the pedestals by psana).
    pub pixel_offset: Option<Vec<f32>>,
    /// `pixel_gain.npy` (ADU/keV).
    pub pixel_gain: Vec<f32>,
    /// `pixel_rms.npy`: electronic noise (ADU).
    pub pixel_rms: Vec<f32>,
    /// Per pixel of the frame (not per range).
    pub bad: Vec<BadPixel>,
}

impl SynthConstants {
    /// Generates the constants of `model` for `seed`; the same seed gives the same constants.
    pub fn generate(model: DetectorModel, seed: u64) -> SynthConstants {
        let spec = model.spec();
        let n = spec.frame_len();
        let seg = spec.seg_len();
        let normal = FastNormal::new();
        let blocks = spec.ngr * spec.nsegs;
        let mut ped = vec![0f32; spec.ngr * n];
        let mut gain = vec![0f32; spec.ngr * n];
        let mut rms = vec![0f32; spec.ngr * n];
        let mut offset = (model == DetectorModel::Jungfrau4M).then(|| vec![0f32; spec.ngr * n]);
        let (arows, acols) = (spec.rows / spec.asics.0, spec.cols / spec.asics.1);
        let fill =
            |b: usize, p: &mut [f32], g: &mut [f32], r: &mut [f32], o: Option<&mut [f32]>| {
                let gr = b / spec.nsegs;
                let mut rng = substream(seed, 1, b as u64);
                let asic_ped: Vec<f32> = (0..spec.asics.0 * spec.asics.1)
                    .map(|_| 80.0 * normal.sample(&mut rng))
                    .collect();
                for (i, ((p, g), r)) in p.iter_mut().zip(g.iter_mut()).zip(r.iter_mut()).enumerate()
                {
                    let a = (i / spec.cols / arows) * spec.asics.1 + (i % spec.cols) / acols;
                    let bits = rng.next_u64();
                    *p = (spec.pedestals[gr] + asic_ped[a] + 40.0 * normal.from_bits(bits)).round();
                    *g = spec.gains[gr] * (1.0 + 0.03 * normal.from_bits(bits >> 16));
                    *r = spec.noise[gr] * (1.0 + 0.15 * normal.from_bits(bits >> 32)).max(0.3);
                }
                if let Some(o) = o
                    && gr > 0
                {
                    for o in o.iter_mut() {
                        *o = (20.0 * normal.sample(&mut rng)).round();
                    }
                }
            };
        let work = ped
            .par_chunks_mut(seg)
            .zip(gain.par_chunks_mut(seg))
            .zip(rms.par_chunks_mut(seg))
            .enumerate();
        match &mut offset {
            Some(off) => work
                .zip(off.par_chunks_mut(seg))
                .for_each(|((b, ((p, g), r)), o)| fill(b, p, g, r, Some(o))),
            None => work.for_each(|(b, ((p, g), r))| fill(b, p, g, r, None)),
        }
        debug_assert_eq!(blocks * seg, ped.len());
        let mut bad = vec![BadPixel::Good; n];
        bad.par_chunks_mut(seg).enumerate().for_each(|(s, b)| {
            let mut rng = substream(seed, 2, s as u64);
            for px in b.iter_mut() {
                let u = rng.uniform();
                if u < BAD_FRACTION {
                    *px = match (u / BAD_FRACTION * 3.0) as u32 {
                        0 => BadPixel::Hot,
                        1 => BadPixel::Dead,
                        _ => BadPixel::Stuck,
                    };
                }
            }
        });
        SynthConstants {
            spec,
            pedestals: ped,
            pixel_offset: offset,
            pixel_gain: gain,
            pixel_rms: rms,
            bad,
        }
    }

    /// `pixel_status`, `(ngr, nsegs, rows, cols)`: the bad-pixel code in every range.
    pub fn pixel_status(&self) -> Vec<u16> {
        let one: Vec<u16> = self.bad.iter().map(|b| b.status()).collect();
        one.repeat(self.spec.ngr)
    }

    /// Number of bad pixels.
    pub fn num_bad(&self) -> usize {
        self.bad.iter().filter(|&&b| b != BadPixel::Good).count()
    }

    /// The psana shape `(ngr, nsegs, rows, cols)`.
    pub fn shape(&self) -> [usize; 4] {
        let s = self.spec;
        [s.ngr, s.nsegs, s.rows, s.cols]
    }

    /// Writes `pedestals.npy`, `pixel_gain.npy`, `pixel_rms.npy`, `pixel_status.npy` (u16) and,
    /// for Jungfrau, `pixel_offset.npy` into `dir`, each atomically; returns the paths.
    pub fn write_npy(&self, dir: &Path) -> Result<Vec<PathBuf>, SynthError> {
        let shape = self.shape();
        let mut out = Vec::new();
        let mut f32_file = |name: &str, v: &[f32]| -> Result<(), SynthError> {
            let path = dir.join(name);
            write_npy_file(&path, &shape, v)?;
            out.push(path);
            Ok(())
        };
        f32_file("pedestals.npy", &self.pedestals)?;
        f32_file("pixel_gain.npy", &self.pixel_gain)?;
        f32_file("pixel_rms.npy", &self.pixel_rms)?;
        if let Some(o) = &self.pixel_offset {
            f32_file("pixel_offset.npy", o)?;
        }
        let path = dir.join("pixel_status.npy");
        write_npy_file(&path, &shape, &self.pixel_status())?;
        out.push(path);
        Ok(out)
    }
}

fn write_npy_file<T: ndarray_npy::WritableElement>(
    path: &Path,
    shape: &[usize],
    v: &[T],
) -> Result<(), SynthError> {
    let a =
        ArrayView::from_shape(IxDyn(shape), v).map_err(|e| SynthError::Invalid(e.to_string()))?;
    atomic_write_with(path, |w| {
        a.write_npy(w)
            .map_err(|e| std::io::Error::other(e.to_string()))
    })
}
