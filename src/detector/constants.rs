//! Calibration constants from `.npy` files with psana's shapes, as a psana user gets them with
//! `np.save(name, det.raw._pedestals())` etc.: `(7, nsegs, 352, 384)` for ePix10ka (gain ranges
//! FH, FM, FL, AHL_H, AML_M, AHL_L, AML_L) and `(3, nsegs, 512, 1024)` for Jungfrau (gains 0, 1, 2).
//! One HDF5 file holding the same arrays under the same names works too. Any numeric dtype is
//! accepted and converted; a missing file or a wrong shape is an error naming the file, the
//! expected and the actual shape.

use std::path::{Path, PathBuf};

use ndarray::ArrayD;
use ndarray_npy::{ReadNpyError, ReadNpyExt};

/// Errors loading constants.
#[derive(Debug, thiserror::Error)]
pub enum ConstantsError {
    #[error("{file}: cannot open calibration constants: {err}")]
    Open { file: PathBuf, err: std::io::Error },
    #[error("{file}: not a readable .npy array: {msg}")]
    Format { file: PathBuf, msg: String },
    #[error("{file}: {what} has shape {actual:?}, expected {expected:?}")]
    Shape {
        file: PathBuf,
        what: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("{file}: {what} contains a non-finite value at flat index {index}")]
    NonFinite {
        file: PathBuf,
        what: String,
        index: usize,
    },
}

fn open(path: &Path) -> Result<std::fs::File, ConstantsError> {
    std::fs::File::open(path).map_err(|err| ConstantsError::Open {
        file: path.to_path_buf(),
        err,
    })
}

macro_rules! try_types {
    ($path:expr, $($t:ty),*) => {{
        let mut last: Option<String> = None;
        $(
            match ArrayD::<$t>::read_npy(open($path)?) {
                Ok(a) => return Ok(a.mapv(|v| v as f64)),
                Err(ReadNpyError::WrongDescriptor(d)) => last = Some(format!("unsupported dtype {d}")),
                Err(e) => return Err(ConstantsError::Format { file: $path.to_path_buf(), msg: e.to_string() }),
            }
        )*
        Err(ConstantsError::Format { file: $path.to_path_buf(), msg: last.unwrap_or_default() })
    }};
}

/// Reads any numeric `.npy` array (C or Fortran order) as f64.
#[allow(unused_assignments)]
pub fn read_npy_any(path: &Path) -> Result<ArrayD<f64>, ConstantsError> {
    if let Ok(a) = ArrayD::<bool>::read_npy(open(path)?) {
        return Ok(a.mapv(|v| if v { 1.0 } else { 0.0 }));
    }
    try_types!(path, f32, f64, u8, u16, u32, u64, i8, i16, i32, i64)
}

/// Reads `path` and checks its shape; `what` names the constant in errors.
pub fn read_checked(
    path: &Path,
    what: &str,
    expected: &[usize],
) -> Result<ArrayD<f64>, ConstantsError> {
    let a = read_npy_any(path)?;
    if a.shape() != expected {
        return Err(ConstantsError::Shape {
            file: path.to_path_buf(),
            what: what.to_string(),
            expected: expected.to_vec(),
            actual: a.shape().to_vec(),
        });
    }
    Ok(a)
}

/// Like [`read_checked`], and every value must be finite.
pub fn read_finite(
    path: &Path,
    what: &str,
    expected: &[usize],
) -> Result<ArrayD<f64>, ConstantsError> {
    let a = read_checked(path, what, expected)?;
    if let Some(index) = a.iter().position(|v| !v.is_finite()) {
        return Err(ConstantsError::NonFinite {
            file: path.to_path_buf(),
            what: what.to_string(),
            index,
        });
    }
    Ok(a)
}

/// Per-gain-range constants in psana layout `(ngr, nsegs, rows, cols)`, flattened, f32/u32.
#[derive(Debug, Clone)]
pub struct GainConstants {
    pub ngr: usize,
    pub nsegs: usize,
    pub rows: usize,
    pub cols: usize,
    /// Pedestals in ADU (Jungfrau: pedestals + pixel_offset).
    pub pedestals: Vec<f32>,
    /// Pixel gain in ADU/keV (psana `pixel_gain`).
    pub pixel_gain: Vec<f32>,
    /// Status bits per gain range (0 = good); all zero when absent.
    pub pixel_status: Vec<u32>,
    /// Optional psana `pixel_mask` constant `(nsegs, rows, cols)`, 1 = good.
    pub pixel_mask: Option<Vec<u8>>,
}

/// Where the constants of one detector are (psana names).
#[derive(Debug, Clone, Default)]
pub struct ConstantFiles {
    pub pedestals: PathBuf,
    pub pixel_gain: PathBuf,
    pub pixel_status: Option<PathBuf>,
    /// Jungfrau only: added to the pedestals.
    pub pixel_offset: Option<PathBuf>,
    pub pixel_mask: Option<PathBuf>,
}

impl ConstantFiles {
    /// `pedestals.npy`, `pixel_gain.npy` and, when present, `pixel_status.npy`,
    /// `pixel_offset.npy`, `pixel_mask.npy` in `dir`.
    pub fn in_dir(dir: &Path) -> ConstantFiles {
        let opt = |n: &str| {
            let p = dir.join(n);
            p.exists().then_some(p)
        };
        ConstantFiles {
            pedestals: dir.join("pedestals.npy"),
            pixel_gain: dir.join("pixel_gain.npy"),
            pixel_status: opt("pixel_status.npy"),
            pixel_offset: opt("pixel_offset.npy"),
            pixel_mask: opt("pixel_mask.npy"),
        }
    }
}

impl GainConstants {
    /// Loads `.npy` files and validates against the psana shape `(ngr, nsegs, rows, cols)`.
    pub fn load(
        files: &ConstantFiles,
        ngr: usize,
        nsegs: usize,
        rows: usize,
        cols: usize,
    ) -> Result<GainConstants, ConstantsError> {
        let read = |name: &str| -> Result<Option<(PathBuf, ArrayD<f64>)>, ConstantsError> {
            let path = match name {
                "pedestals" => Some(&files.pedestals),
                "pixel_gain" => Some(&files.pixel_gain),
                "pixel_status" => files.pixel_status.as_ref(),
                "pixel_offset" => files.pixel_offset.as_ref(),
                _ => files.pixel_mask.as_ref(),
            };
            match path {
                Some(p) => Ok(Some((p.clone(), read_npy_any(p)?))),
                None => Ok(None),
            }
        };
        Self::assemble(read, ngr, nsegs, rows, cols)
    }

    /// Loads one HDF5 file holding datasets `pedestals`, `pixel_gain` and optionally
    /// `pixel_status`, `pixel_offset`, `pixel_mask` (psana names and shapes, any numeric type)
    /// at the root or under `group`.
    pub fn load_hdf5(
        path: &Path,
        group: Option<&str>,
        ngr: usize,
        nsegs: usize,
        rows: usize,
        cols: usize,
    ) -> Result<GainConstants, ConstantsError> {
        let fmt = |msg: String| ConstantsError::Format {
            file: path.to_path_buf(),
            msg,
        };
        if !path.exists() {
            return Err(ConstantsError::Open {
                file: path.to_path_buf(),
                err: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let file = hdf5::File::open(path).map_err(|e| fmt(e.to_string()))?;
        let root = match group {
            Some(g) => file.group(g).map_err(|e| fmt(format!("group {g}: {e}")))?,
            None => file.group("/").map_err(|e| fmt(e.to_string()))?,
        };
        let read = |name: &str| -> Result<Option<(PathBuf, ArrayD<f64>)>, ConstantsError> {
            let gname = root.name();
            let label = PathBuf::from(format!(
                "{}:{}/{name}",
                path.display(),
                gname.trim_end_matches('/')
            ));
            if !root.link_exists(name) {
                if name == "pedestals" || name == "pixel_gain" {
                    return Err(ConstantsError::Open {
                        file: label,
                        err: std::io::Error::new(std::io::ErrorKind::NotFound, "no such dataset"),
                    });
                }
                return Ok(None);
            }
            let ds = root
                .dataset(name)
                .map_err(|e| fmt(format!("dataset {name}: {e}")))?;
            let a = ds
                .read_dyn::<f64>()
                .map_err(|e| fmt(format!("dataset {name}: {e}")))?;
            Ok(Some((label, a)))
        };
        Self::assemble(read, ngr, nsegs, rows, cols)
    }

    fn assemble(
        read: impl Fn(&str) -> Result<Option<(PathBuf, ArrayD<f64>)>, ConstantsError>,
        ngr: usize,
        nsegs: usize,
        rows: usize,
        cols: usize,
    ) -> Result<GainConstants, ConstantsError> {
        let shape = [ngr, nsegs, rows, cols];
        let required = |name: &str| -> Result<(PathBuf, ArrayD<f64>), ConstantsError> {
            read(name)?.ok_or_else(|| ConstantsError::Open {
                file: PathBuf::from(name),
                err: std::io::Error::new(std::io::ErrorKind::NotFound, "required constant missing"),
            })
        };
        let check = |file: &Path, what: &str, a: &ArrayD<f64>, expected: &[usize], finite: bool| {
            if a.shape() != expected {
                return Err(ConstantsError::Shape {
                    file: file.to_path_buf(),
                    what: what.to_string(),
                    expected: expected.to_vec(),
                    actual: a.shape().to_vec(),
                });
            }
            if finite && let Some(index) = a.iter().position(|v| !v.is_finite()) {
                return Err(ConstantsError::NonFinite {
                    file: file.to_path_buf(),
                    what: what.to_string(),
                    index,
                });
            }
            Ok(())
        };
        let (pf, mut ped) = required("pedestals")?;
        check(&pf, "pedestals", &ped, &shape, true)?;
        if let Some((f, off)) = read("pixel_offset")? {
            check(&f, "pixel_offset", &off, &shape, true)?;
            ped += &off;
        }
        let (gf, gain) = required("pixel_gain")?;
        check(&gf, "pixel_gain", &gain, &shape, true)?;
        let status = match read("pixel_status")? {
            Some((f, a)) => {
                check(&f, "pixel_status", &a, &shape, false)?;
                a.iter()
                    .map(|&v| {
                        if v.is_finite() {
                            // Bits above 31 fold into bit 31, so a non-zero status stays non-zero.
                            let s = v as u64;
                            s as u32 | (u32::from(s >> 32 != 0) << 31)
                        } else {
                            u32::MAX
                        }
                    })
                    .collect()
            }
            None => vec![0; shape.iter().product()],
        };
        let pixel_mask = match read("pixel_mask")? {
            Some((f, a)) => {
                check(&f, "pixel_mask", &a, &[nsegs, rows, cols], false)?;
                Some(a.iter().map(|&v| u8::from(v != 0.0)).collect())
            }
            None => None,
        };
        Ok(GainConstants {
            ngr,
            nsegs,
            rows,
            cols,
            pedestals: ped.iter().map(|&v| v as f32).collect(),
            pixel_gain: gain.iter().map(|&v| v as f32).collect(),
            pixel_status: status,
            pixel_mask,
        })
    }

    /// Pixels per gain range (`nsegs·rows·cols`).
    pub fn frame_len(&self) -> usize {
        self.nsegs * self.rows * self.cols
    }

    /// Constant values of gain range `gr` (slab order).
    pub fn range(v: &[f32], gr: usize, n: usize) -> &[f32] {
        &v[gr * n..(gr + 1) * n]
    }
}
