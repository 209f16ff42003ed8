//! Calibration constants with psana's shapes, as a psana user gets them: `.npy` files
//! (`np.save(name, det.raw._pedestals())`, or `cdb get ... -f NAME`) or the text `.data` files
//! that `cdb get` writes next to them ([`text`]). Shapes are `(7, nsegs, 352, 384)` for ePix10ka
//! (gain ranges FH, FM, FL, AHL_H, AML_M, AHL_L, AML_L) and `(3, nsegs, 512, 1024)` for Jungfrau
//! (gains 0, 1, 2). One HDF5 file holding the same arrays under the same names works too. Any
//! numeric dtype is accepted and converted; a missing file or a wrong shape is an error naming the
//! file, the expected and the actual shape.

pub mod text;

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
    #[error("{file}:{line}: {msg}")]
    Text {
        file: PathBuf,
        line: usize,
        msg: String,
    },
    /// A required constant with neither `NAME.npy` (`file`) nor `NAME.data` next to it.
    #[error("{file}: cannot open calibration constants: no such file, nor {name}.data")]
    Missing { file: PathBuf, name: String },
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

/// True for psana's text arrays (`.data`, `.txt`); anything else is read as `.npy`.
fn is_text(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("data" | "txt")
    )
}

/// Reads `path` by its extension; the flag is true when the shape is only a text file's line
/// layout (no shape in its header), which [`fit_shape`] may reshape.
fn read_layout(path: &Path) -> Result<(ArrayD<f64>, bool), ConstantsError> {
    if is_text(path) {
        let t = text::read_data_txt(path)?;
        Ok((t.array, !t.shape_from_header))
    } else {
        Ok((read_npy_any(path)?, false))
    }
}

/// Reads a `.npy` or psana `.data` array as f64; a `.data` file whose header gives no shape
/// keeps its line layout (1-D or 2-D).
pub fn read_any(path: &Path) -> Result<ArrayD<f64>, ConstantsError> {
    Ok(read_layout(path)?.0)
}

/// `a` in the shape `expected`: unchanged, or, when `layout_only` (a text file without a shape
/// header), reshaped in C order if the value count matches, as psana reshapes text constants to
/// the detector's shape. Otherwise a shape error naming `file` and `what`.
fn fit_shape(
    file: &Path,
    what: &str,
    a: ArrayD<f64>,
    layout_only: bool,
    expected: &[usize],
) -> Result<ArrayD<f64>, ConstantsError> {
    if a.shape() == expected {
        return Ok(a);
    }
    let shape_err = |actual: &[usize]| ConstantsError::Shape {
        file: file.to_path_buf(),
        what: what.to_string(),
        expected: expected.to_vec(),
        actual: actual.to_vec(),
    };
    if layout_only && a.len() == expected.iter().product::<usize>() {
        let actual = a.shape().to_vec();
        return a
            .into_shape_with_order(ndarray::IxDyn(expected))
            .map_err(|_| shape_err(&actual));
    }
    Err(shape_err(a.shape()))
}

/// `a` as the planes of `segments` in shape `expected` (`[.., nsegs, rows, cols]`, one plane per
/// present segment): whole-detector constants are indexed by segment id along the segment axis,
/// as psana does; leading axes of size one may be missing. Errors name the file, the shape found
/// and the shapes accepted.
fn select_segments(
    file: &Path,
    what: &str,
    a: ArrayD<f64>,
    layout_only: bool,
    expected: &[usize],
    segments: &[u32],
) -> Result<ArrayD<f64>, ConstantsError> {
    use ndarray::{Axis, IxDyn};
    let nd = expected.len();
    let (lead, tail) = expected.split_at(nd - 3);
    let (rows, cols) = (tail[1], tail[2]);
    let plane = rows * cols * lead.iter().product::<usize>();
    let mut a = a;
    if layout_only && plane > 0 && a.len().is_multiple_of(plane) && a.shape() != expected {
        let mut full = lead.to_vec();
        full.extend([a.len() / plane, rows, cols]);
        a = a
            .into_shape_with_order(IxDyn(&full))
            .map_err(|e| ConstantsError::Format {
                file: file.to_path_buf(),
                msg: e.to_string(),
            })?;
    }
    let found = a.shape().to_vec();
    while a.ndim() < nd && expected[..nd - a.ndim()].iter().all(|&d| d == 1) {
        a.insert_axis_inplace(Axis(0));
    }
    let max_id = segments.iter().max().map_or(0, |&m| m as usize);
    let s = a.shape();
    if s.len() == nd && s[..nd - 3] == *lead && s[nd - 2..] == [rows, cols] {
        let n = s[nd - 3];
        let identity =
            n == segments.len() && segments.iter().enumerate().all(|(i, &g)| i == g as usize);
        if identity || n == segments.len() && n <= max_id {
            return Ok(a);
        }
        if n > max_id {
            let idx: Vec<usize> = segments.iter().map(|&g| g as usize).collect();
            return Ok(a.select(Axis(nd - 3), &idx));
        }
    }
    let mut whole = lead.to_vec();
    whole.extend([max_id + 1, rows, cols]);
    Err(ConstantsError::Shape {
        file: file.to_path_buf(),
        what: what.to_string(),
        expected: whole,
        actual: found,
    })
}

/// Reads `path` (`.npy`, or psana's `.data` text) and checks its shape; `what` names the
/// constant in errors. A `.data` file without a shape header may hold the values in any 2-D
/// layout with the expected count.
pub fn read_checked(
    path: &Path,
    what: &str,
    expected: &[usize],
) -> Result<ArrayD<f64>, ConstantsError> {
    let (a, layout_only) = read_layout(path)?;
    fit_shape(path, what, a, layout_only, expected)
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
    /// The constants `pedestals`, `pixel_gain` and, when present, `pixel_status`,
    /// `pixel_offset`, `pixel_mask` in `dir`, each as `NAME.npy` or psana's text `NAME.data`.
    /// `.npy` wins when both exist: `cdb get` writes both, and its `.data` holds the values
    /// rounded to 3 decimals. A required constant with neither file is reported by
    /// [`GainConstants::load`].
    pub fn in_dir(dir: &Path) -> ConstantFiles {
        let find = |n: &str| {
            [format!("{n}.npy"), format!("{n}.data")]
                .into_iter()
                .map(|f| dir.join(f))
                .find(|p| p.is_file())
        };
        let required = |n: &str| find(n).unwrap_or_else(|| dir.join(format!("{n}.npy")));
        ConstantFiles {
            pedestals: required("pedestals"),
            pixel_gain: required("pixel_gain"),
            pixel_status: find("pixel_status"),
            pixel_offset: find("pixel_offset"),
            pixel_mask: find("pixel_mask"),
        }
    }
}

/// A constant as read: where from, the values, and whether the shape is only a text layout.
type Loaded = Option<(PathBuf, ArrayD<f64>, bool)>;

impl GainConstants {
    /// Loads `.npy` or psana `.data` files (by extension) and validates them against the psana
    /// shape `(ngr, nsegs, rows, cols)` (`pixel_mask`: `(nsegs, rows, cols)`). A `.data` file
    /// without a shape header is reshaped when its value count matches.
    pub fn load(
        files: &ConstantFiles,
        ngr: usize,
        nsegs: usize,
        rows: usize,
        cols: usize,
    ) -> Result<GainConstants, ConstantsError> {
        let all: Vec<u32> = (0..nsegs as u32).collect();
        Self::load_segments(files, true, ngr, &all, rows, cols)
    }

    /// Like [`GainConstants::load`] for the segment ids `segments` (ascending) of a detector,
    /// as psana selects them: constants of the whole detector (segment axis longer than the
    /// largest id) give the present segments' planes; constants with exactly one plane per
    /// present segment are taken as they are. With one gain range, the leading axes of size one
    /// may be left out (`(nsegs, rows, cols)` or `(rows, cols)`). Without `gain_needed` a
    /// missing `pixel_gain` means gain 1.
    pub fn load_segments(
        files: &ConstantFiles,
        gain_needed: bool,
        ngr: usize,
        segments: &[u32],
        rows: usize,
        cols: usize,
    ) -> Result<GainConstants, ConstantsError> {
        let read = |name: &str| -> Result<Loaded, ConstantsError> {
            let path = match name {
                "pedestals" => Some(&files.pedestals),
                "pixel_gain" => Some(&files.pixel_gain),
                "pixel_status" => files.pixel_status.as_ref(),
                "pixel_offset" => files.pixel_offset.as_ref(),
                _ => files.pixel_mask.as_ref(),
            };
            let Some(p) = path else { return Ok(None) };
            // `in_dir` names a required constant `NAME.npy` when neither file exists.
            if p.file_name().and_then(|f| f.to_str()) == Some(&format!("{name}.npy"))
                && !p.exists()
                && !p.with_extension("data").exists()
            {
                return Err(ConstantsError::Missing {
                    file: p.clone(),
                    name: name.to_string(),
                });
            }
            let (a, layout_only) = read_layout(p)?;
            Ok(Some((p.clone(), a, layout_only)))
        };
        Self::assemble(read, gain_needed, ngr, segments, rows, cols)
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
        let read = |name: &str| -> Result<Loaded, ConstantsError> {
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
            Ok(Some((label, a, false)))
        };
        let all: Vec<u32> = (0..nsegs as u32).collect();
        Self::assemble(read, true, ngr, &all, rows, cols)
    }

    fn assemble(
        read: impl Fn(&str) -> Result<Loaded, ConstantsError>,
        gain_needed: bool,
        ngr: usize,
        segments: &[u32],
        rows: usize,
        cols: usize,
    ) -> Result<GainConstants, ConstantsError> {
        let nsegs = segments.len();
        let shape = [ngr, nsegs, rows, cols];
        // The constant `name` in shape `expected` (finite values only when `finite`), or `None`.
        let get = |name: &str,
                   expected: &[usize],
                   finite: bool|
         -> Result<Option<ArrayD<f64>>, ConstantsError> {
            let Some((file, a, layout_only)) = read(name)? else {
                return Ok(None);
            };
            let a = select_segments(&file, name, a, layout_only, expected, segments)?;
            if finite && let Some(index) = a.iter().position(|v| !v.is_finite()) {
                return Err(ConstantsError::NonFinite {
                    file,
                    what: name.to_string(),
                    index,
                });
            }
            Ok(Some(a))
        };
        let required = |name: &str| -> Result<ArrayD<f64>, ConstantsError> {
            get(name, &shape, true)?.ok_or_else(|| ConstantsError::Open {
                file: PathBuf::from(name),
                err: std::io::Error::new(std::io::ErrorKind::NotFound, "required constant missing"),
            })
        };
        let mut ped = required("pedestals")?;
        if let Some(off) = get("pixel_offset", &shape, true)? {
            ped += &off;
        }
        // Families without a gain factor (psana applies none): gain 1, the frames stay in ADU.
        let gain = match get("pixel_gain", &shape, true) {
            Err(ConstantsError::Missing { .. }) if !gain_needed => ArrayD::ones(shape.as_slice()),
            g => g?.ok_or_else(|| ConstantsError::Open {
                file: PathBuf::from("pixel_gain"),
                err: std::io::Error::new(std::io::ErrorKind::NotFound, "required constant missing"),
            })?,
        };
        let status = match get("pixel_status", &shape, false)? {
            Some(a) => a
                .iter()
                .map(|&v| {
                    if v.is_finite() {
                        // Bits above 31 fold into bit 31, so a non-zero status stays non-zero.
                        let s = v as u64;
                        s as u32 | (u32::from(s >> 32 != 0) << 31)
                    } else {
                        u32::MAX
                    }
                })
                .collect(),
            None => vec![0; shape.iter().product()],
        };
        let pixel_mask = get("pixel_mask", &[nsegs, rows, cols], false)?
            .map(|a| a.iter().map(|&v| u8::from(v != 0.0)).collect());
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
