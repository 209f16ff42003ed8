//! psana's text array format (`NDArrIO.save_txt` / `load_txt`), the `.data` file that
//! `cdb get -c pedestals -f PREFIX` writes next to `PREFIX.npy`.
//!
//! The format, as psana writes and reads it:
//! * Lines starting with `#` are comments wherever they are; blank lines are skipped.
//! * Comments of the form `# KEY VALUE` carry metadata: `SHAPE (3,2,4,5)` and `DATATYPE float32`
//!   (written first), `DTYPE float32`, `NDIM 4`, `DIM:0 3` … `DIM:3 5`. `SHAPE` wins over the
//!   `DIM:k` lines, `DATATYPE` over `DTYPE`; `NDIM` is redundant. Other keys (`HOST`, `DATE_TIME`, …)
//!   are ignored.
//! * Every other line holds numbers separated by whitespace: the array reshaped to 2-D, one row of
//!   its last dimension per line (`%.3f` from `cdb get`); a 1-D array is one line.
//! * Values are parsed as doubles and converted to the header's dtype, `float32` when none is given.
//! * Without a shape in the header the array keeps the file's layout: one line gives 1-D, several
//!   lines 2-D `(lines, values per line)`; the caller reshapes it to the detector's shape.
//!
//! Files are read line by line (a Jungfrau 16M constant holds 50 M values).

use crate::atomic_file::AtomicFile;
use rayon::prelude::*;
use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;

use ndarray::{ArrayD, IxDyn};

use super::{ConstantsError, open};

/// An array read from a psana `.data` file.
#[derive(Debug, Clone)]
pub struct TextArray {
    /// Values in file order, shaped as the header says or as the file's lines.
    pub array: ArrayD<f64>,
    /// True when the header gave the shape (`SHAPE` or `DIM:k`).
    pub shape_from_header: bool,
}

/// Element types psana writes in `DTYPE` / `DATATYPE` (numpy names).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Dtype {
    F32,
    F64,
    Bool,
    /// Integer with its inclusive range.
    Int(f64, f64),
}

impl Dtype {
    fn parse(s: &str) -> Option<Dtype> {
        Some(match s {
            "float32" => Dtype::F32,
            "float64" | "float" => Dtype::F64,
            "bool" => Dtype::Bool,
            "int8" => Dtype::Int(i8::MIN as f64, i8::MAX as f64),
            "uint8" => Dtype::Int(0.0, u8::MAX as f64),
            "int16" => Dtype::Int(i16::MIN as f64, i16::MAX as f64),
            "uint16" => Dtype::Int(0.0, u16::MAX as f64),
            "int32" => Dtype::Int(i32::MIN as f64, i32::MAX as f64),
            "uint32" => Dtype::Int(0.0, u32::MAX as f64),
            "int64" | "int" => Dtype::Int(i64::MIN as f64, i64::MAX as f64),
            "uint64" => Dtype::Int(0.0, u64::MAX as f64),
            _ => return None,
        })
    }

    /// The value numpy stores for the double `v`, or `None` when it does not fit.
    fn convert(self, v: f64) -> Option<f64> {
        match self {
            Dtype::F32 => Some(v as f32 as f64),
            Dtype::F64 => Some(v),
            Dtype::Bool => Some(f64::from(u8::from(v != 0.0))),
            Dtype::Int(lo, hi) => {
                let t = v.trunc();
                (t >= lo && t <= hi).then_some(t)
            }
        }
    }
}

/// Metadata gathered from the header comments.
#[derive(Default)]
struct Header {
    shape: Option<(Vec<usize>, usize)>,
    dims: Vec<usize>,
    dims_line: usize,
    dtype: Option<(Dtype, bool)>,
}

impl Header {
    /// Reads `# KEY VALUE`; `Ok(false)` when the comment carries no array metadata.
    fn take(&mut self, comment: &str, line: usize) -> Result<bool, String> {
        let Some(rest) = comment.strip_prefix("# ") else {
            return Ok(false);
        };
        let Some((key, value)) = rest.split_once(' ') else {
            return Ok(false);
        };
        let value = value.trim();
        let bad = |what: &str| format!("bad {key} {value:?}: {what}");
        match key {
            "SHAPE" => {
                let inner = value
                    .strip_prefix('(')
                    .and_then(|v| v.strip_suffix(')'))
                    .ok_or_else(|| bad("expected a tuple like (3,512,1024)"))?;
                let dims = inner
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(|d| d.parse::<usize>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(&e.to_string()))?;
                self.shape = Some((dims, line));
            }
            k if k.starts_with("DIM:") => {
                self.dims.push(
                    value
                        .parse()
                        .map_err(|e: std::num::ParseIntError| bad(&e.to_string()))?,
                );
                self.dims_line = line;
            }
            "NDIM" => {
                value.parse::<usize>().map_err(|e| bad(&e.to_string()))?;
            }
            "DATATYPE" | "DTYPE" => {
                let d = Dtype::parse(value).ok_or_else(|| bad("unsupported dtype"))?;
                let primary = key == "DATATYPE";
                if primary || !matches!(self.dtype, Some((_, true))) {
                    self.dtype = Some((d, primary));
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The shape the header gives, with the line that gave it.
    fn shape(&self) -> Option<(&[usize], usize)> {
        match &self.shape {
            Some((s, line)) if !s.is_empty() => Some((s, *line)),
            _ if !self.dims.is_empty() => Some((&self.dims, self.dims_line)),
            _ => None,
        }
    }
}

/// Reads a psana text array (see the module documentation). Errors name the file and line.
pub fn read_data_txt(path: &Path) -> Result<TextArray, ConstantsError> {
    let err = |line: usize, msg: String| ConstantsError::Text {
        file: path.to_path_buf(),
        line,
        msg,
    };
    let mut reader = BufReader::with_capacity(1 << 20, open(path)?);
    let mut header = Header::default();
    let mut buf = Vec::new();
    let mut values: Vec<f64> = Vec::new();
    let (mut line, mut data_lines, mut last_data_line) = (0usize, 0usize, 0usize);
    // Values per line and the first data line, which sets it.
    let mut width: Option<(usize, usize)> = None;
    let mut dtype = Dtype::F32;
    let mut expected: Option<usize> = None;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| err(line + 1, format!("cannot read: {e}")))?;
        if n == 0 {
            break;
        }
        line += 1;
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let text = std::str::from_utf8(&buf).map_err(|_| err(line, "not UTF-8 text".into()))?;
        if text.starts_with('#') {
            let meta = header
                .take(text.trim_end(), line)
                .map_err(|m| err(line, m))?;
            if meta && data_lines > 0 {
                return Err(err(
                    line,
                    "array metadata after the data (psana's header comes first)".into(),
                ));
            }
            if meta && let Some((d, _)) = header.dtype {
                dtype = d;
            }
            if meta && let Some((s, _)) = header.shape() {
                let n = s
                    .iter()
                    .try_fold(1usize, |n, &d| n.checked_mul(d))
                    .ok_or_else(|| err(line, format!("shape {s:?} is too large")))?;
                if expected.is_none() {
                    values.reserve(n.min(1 << 26));
                }
                expected = Some(n);
            }
            continue;
        }
        let before = values.len();
        for tok in text.split_ascii_whitespace() {
            let v: f64 = tok
                .parse()
                .map_err(|_| err(line, format!("{tok:?} is not a number")))?;
            let v = dtype
                .convert(v)
                .ok_or_else(|| err(line, format!("{tok} does not fit the file's dtype")))?;
            values.push(v);
        }
        let count = values.len() - before;
        match width {
            None => width = Some((count, line)),
            Some((w, first)) if w != count => {
                return Err(err(
                    line,
                    format!("{count} values, but line {first} has {w} (rows must be equal)"),
                ));
            }
            Some(_) => {}
        }
        if let Some(n) = expected
            && values.len() > n
        {
            let (s, hline) = header
                .shape()
                .expect("expected comes from the header shape");
            return Err(err(
                line,
                format!("more values than the shape {s:?} of line {hline} holds ({n} values)"),
            ));
        }
        data_lines += 1;
        last_data_line = line;
    }
    let Some((width, _)) = width else {
        return Err(err(line, "no data lines (only comments)".into()));
    };
    if let (Some((s, hline)), Some(n)) = (header.shape(), expected) {
        if values.len() != n {
            return Err(err(
                last_data_line,
                format!(
                    "the file ends after {} values, but the shape {s:?} of line {hline} holds {n}",
                    values.len()
                ),
            ));
        }
        let array = ArrayD::from_shape_vec(IxDyn(s), values).expect("count checked");
        return Ok(TextArray {
            array,
            shape_from_header: true,
        });
    }
    let shape = if data_lines == 1 {
        vec![width]
    } else {
        vec![data_lines, width]
    };
    let array = ArrayD::from_shape_vec(IxDyn(&shape), values).expect("rows checked");
    Ok(TextArray {
        array,
        shape_from_header: false,
    })
}

/// Values of one constant array.
#[derive(Debug, Clone, Copy)]
pub enum Values<'a> {
    F32(&'a [f32]),
    U16(&'a [u16]),
}

impl Values<'_> {
    fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::U16(v) => v.len(),
        }
    }

    /// numpy's name of the dtype.
    fn dtype(&self) -> &'static str {
        match self {
            Values::F32(_) => "float32",
            Values::U16(_) => "uint16",
        }
    }

    fn get(&self, i: usize) -> f64 {
        match self {
            Values::F32(v) => f64::from(v[i]),
            Values::U16(v) => f64::from(v[i]),
        }
    }
}

/// The header fields of a psana text array that describe where it was made.
#[derive(Debug, Clone)]
pub struct TextMeta {
    pub host: String,
    pub work_dir: String,
    /// `%Y-%m-%dT%H:%M:%S`.
    pub date_time: String,
    pub uid: String,
}

/// Writes `v` (C order, `shape`) as psana's text array, the `.data` file `cdb get` exports
/// (`NDArrIO.save_txt(fname, arr, cmts=(), fmt='%.3f')`): a blank line, `# KEY value` lines
/// (HOST, WORK_DIR, FILE_NAME, DATE_TIME, UID, SHAPE, DATATYPE, then DTYPE, NDIM, DIM:k), a
/// blank line, then the array as 2-D rows of its last dimension, values `%.3f` separated by
/// spaces (a 1-D array: one line). Written atomically.
pub fn write_data_txt(
    path: &Path,
    shape: &[usize],
    v: Values<'_>,
    meta: &TextMeta,
) -> std::io::Result<()> {
    let n: usize = shape.iter().product();
    if v.len() != n || shape.is_empty() {
        return Err(std::io::Error::other(format!(
            "{}: {} values for shape {shape:?}",
            path.display(),
            v.len()
        )));
    }
    let file_name = path
        .file_name()
        .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let mut head = String::new();
    head.push('\n');
    for (k, val) in [
        ("HOST", meta.host.as_str()),
        ("WORK_DIR", &meta.work_dir),
        ("FILE_NAME", &file_name),
        ("DATE_TIME", &meta.date_time),
        ("UID", &meta.uid),
        ("SHAPE", &format!("({})", dims.join(","))),
        ("DATATYPE", v.dtype()),
    ] {
        head.push_str(&format!("# {k:<11} {val}\n"));
    }
    head.push('\n');
    head.push_str(&format!("# {:<11} {}\n", "DTYPE", v.dtype()));
    head.push_str(&format!("# {:<11} {}\n", "NDIM", shape.len()));
    for (i, d) in shape.iter().enumerate() {
        head.push_str(&format!("# {:<11} {d}\n", format!("DIM:{i}")));
    }
    let multi = shape.len() > 1;
    // numpy's savetxt ends the header with a newline; save_txt adds an empty record before it
    // for arrays of 2 or more dimensions.
    if multi {
        head.push('\n');
    }
    let row = if multi { shape[shape.len() - 1] } else { n };
    let sep = if multi { b'\n' } else { b' ' };
    // Rows rendered in parallel, in blocks, written in order.
    let rows_per_block = (1 << 20) / row.max(1) + 1;
    let nrows = n / row.max(1);
    let mut file = AtomicFile::create(path, ".tmp")?;
    let w = file.writer();
    {
        w.write_all(head.as_bytes())?;
        let mut start = 0;
        while start < nrows {
            let end = (start + rows_per_block * rayon::current_num_threads()).min(nrows);
            let blocks: Vec<Vec<u8>> = (start..end)
                .step_by(rows_per_block)
                .collect::<Vec<_>>()
                .into_par_iter()
                .map(|r0| {
                    let mut b = Vec::with_capacity(rows_per_block * row * 10);
                    for r in r0..(r0 + rows_per_block).min(end) {
                        for c in 0..row {
                            if c > 0 {
                                b.push(b' ');
                            }
                            let _ = write!(b, "{:.3}", v.get(r * row + c));
                        }
                        b.push(sep);
                    }
                    b
                })
                .collect();
            for b in blocks {
                w.write_all(&b)?;
            }
            start = end;
        }
    }
    file.commit().map(|_| ())
}
