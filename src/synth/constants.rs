//! Per-pixel calibration constants of a synthetic detector (pedestals, gains, noise, bad pixels)
//! in psana's layout for the whole detector, `(ngr, segments of the preset, rows, cols)`, as the
//! calibration database holds them whatever segments a run has; written as the `.npy` files
//! psana users save and the text `.data` files `cdb get` exports ([`write_data_txt`]).

use super::detector_spec::SynthDetector;
use super::encode::RMS_QUANTUM;
use super::random::{FastNormal, round_fast, substream};
use super::{SynthError, atomic_write_with};
use crate::detector::constants::text::{TextMeta, Values, write_data_txt};
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

/// Constants of one synthetic detector, `(ngr, full segments, rows, cols)` flattened. Segment
/// `s`'s values depend only on the seed and `s`, not on which segments the run has.
#[derive(Debug, Clone)]
pub struct SynthConstants {
    pub det: SynthDetector,
    /// `pedestals.npy` (ADU).
    pub pedestals: Vec<f32>,
    /// `pixel_offset.npy` (Jungfrau, ADU, added to the pedestals by psana).
    pub pixel_offset: Option<Vec<f32>>,
    /// `pixel_gain.npy` (ADU/keV).
    pub pixel_gain: Vec<f32>,
    /// `pixel_rms.npy`: electronic noise (ADU), a multiple of [`RMS_QUANTUM`].
    pub pixel_rms: Vec<f32>,
    /// Per pixel of the whole detector (not per range).
    pub bad: Vec<BadPixel>,
}

impl SynthConstants {
    /// Generates the constants of `det`'s whole detector for `seed`; the same seed gives the
    /// same constants.
    pub fn generate(det: &SynthDetector, seed: u64) -> SynthConstants {
        let phys = det.physics;
        let full = det.full_segments();
        let (rows, cols, ngr) = (det.rows(), det.cols(), det.ngr());
        let seg = rows * cols;
        let n = full * seg;
        let normal = FastNormal::new();
        let mut ped = vec![0f32; ngr * n];
        let mut gain = vec![0f32; ngr * n];
        let mut rms = vec![0f32; ngr * n];
        let mut offset = phys.pixel_offset.then(|| vec![0f32; ngr * n]);
        let asics = det.model.spec().asics;
        let (arows, acols) = det.model.asic_shape();
        let fill = |b: usize,
                    p: &mut [f32],
                    g: &mut [f32],
                    r: &mut [f32],
                    o: Option<&mut [f32]>| {
            let gr = b / full;
            let mut rng = substream(seed, 1, b as u64);
            let asic_ped: Vec<f32> = (0..asics.0 * asics.1)
                .map(|_| 80.0 * normal.sample(&mut rng))
                .collect();
            for (i, ((p, g), r)) in p.iter_mut().zip(g.iter_mut()).zip(r.iter_mut()).enumerate() {
                let a = (i / cols / arows) * asics.1 + (i % cols) / acols;
                let bits = rng.next_u64();
                *p = round_fast(phys.pedestals[gr] + asic_ped[a] + 40.0 * normal.from_bits(bits));
                *g = phys.gains[gr] * (1.0 + 0.03 * normal.from_bits(bits >> 16));
                let rms = phys.noise[gr] * (1.0 + 0.15 * normal.from_bits(bits >> 32)).max(0.3);
                *r = round_fast(rms / RMS_QUANTUM) * RMS_QUANTUM;
            }
            if let Some(o) = o
                && gr > 0
            {
                for o in o.iter_mut() {
                    *o = round_fast(20.0 * normal.sample(&mut rng));
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
            det: det.clone(),
            pedestals: ped,
            pixel_offset: offset,
            pixel_gain: gain,
            pixel_rms: rms,
            bad,
        }
    }

    /// Pixels per gain range (the whole detector).
    pub fn range_len(&self) -> usize {
        self.bad.len()
    }

    /// Flat index of pixel `i` of segment id `seg` in gain range `gr`.
    #[inline]
    pub fn index(&self, gr: usize, seg: usize, i: usize) -> usize {
        gr * self.range_len() + seg * self.det.seg_len() + i
    }

    /// Pedestal plus offset (ADU) at flat index `j` of `(ngr, full segments, rows, cols)`.
    #[inline]
    pub fn baseline(&self, j: usize) -> f32 {
        self.pedestals[j] + self.pixel_offset.as_ref().map_or(0.0, |o| o[j])
    }

    /// `pixel_status`, `(ngr, full segments, rows, cols)`: the bad-pixel code in every range.
    pub fn pixel_status(&self) -> Vec<u16> {
        let one: Vec<u16> = self.bad.iter().map(|b| b.status()).collect();
        one.repeat(self.det.ngr())
    }

    /// Number of bad pixels among the segments present.
    pub fn num_bad(&self) -> usize {
        let len = self.det.seg_len();
        self.det
            .model
            .segments
            .iter()
            .map(|&s| s as usize)
            .map(|s| self.bad[s * len..(s + 1) * len].iter())
            .map(|b| b.filter(|&&b| b != BadPixel::Good).count())
            .sum()
    }

    /// The psana shape `(ngr, full segments, rows, cols)`.
    pub fn shape(&self) -> [usize; 4] {
        let d = &self.det;
        [d.ngr(), d.full_segments(), d.rows(), d.cols()]
    }

    /// Writes `pedestals`, `pixel_gain`, `pixel_rms`, `pixel_status` (u16) and, for Jungfrau,
    /// `pixel_offset` into `dir` as `NAME.npy` and, with `text`, psana's `NAME.data` (see
    /// [`write_data_txt`]; `meta` fills its header), each atomically; returns the paths.
    pub fn write(&self, dir: &Path, text: Option<&TextMeta>) -> Result<Vec<PathBuf>, SynthError> {
        let shape = self.shape();
        let mut out = Vec::new();
        let status = self.pixel_status();
        let mut arrays: Vec<(&str, Values<'_>)> = vec![
            ("pedestals", Values::F32(&self.pedestals)),
            ("pixel_gain", Values::F32(&self.pixel_gain)),
            ("pixel_rms", Values::F32(&self.pixel_rms)),
        ];
        if let Some(o) = &self.pixel_offset {
            arrays.push(("pixel_offset", Values::F32(o)));
        }
        arrays.push(("pixel_status", Values::U16(&status)));
        for (name, v) in arrays {
            let path = dir.join(format!("{name}.npy"));
            match v {
                Values::F32(v) => write_npy_file(&path, &shape, v)?,
                Values::U16(v) => write_npy_file(&path, &shape, v)?,
            }
            out.push(path);
            if let Some(meta) = text {
                let path = dir.join(format!("{name}.data"));
                write_data_txt(&path, &shape, v, meta).map_err(|err| SynthError::Io {
                    path: path.clone(),
                    err,
                })?;
                out.push(path);
            }
        }
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
