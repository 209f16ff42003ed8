//! Per-event fields of a batch as HDF5 datasets, and run-level values as attributes.
//!
//! A numeric field is one dataset `<name>` of its own type, `(B, *shape)` when every event of
//! the batch has the same shape (`layout` attribute `"fixed"`), else flat values `<name>` `(N,)`
//! with `<name>_offsets` u64 `(B + 1,)` (event `i` holds elements `offsets[i]..offsets[i+1]`)
//! and `<name>_shape` u32 `(B, rank)` (`layout` = `"ragged"`). A string field is `(B,)`
//! variable-length UTF-8. A selected field also has `<name>_present` u8 `(B,)`: 0 where the
//! event did not carry the value and the dataset holds the fill value (missing events hold
//! the fill value in every element of the batch's shape, none in the ragged layout).

use hdf5::types::VarLenUnicode;
use ndarray::{ArrayD, IxDyn};

use super::OutputError;
use super::batch::{Dtype, EventRecord, Field, Presence, Value};

/// Checks that every event carries the same fields, in the same order, of the same kind.
pub(crate) fn check(events: &[EventRecord]) -> Result<(), OutputError> {
    let first = &events[0].fields;
    for (i, ev) in events.iter().enumerate() {
        let same = ev.fields.len() == first.len()
            && ev.fields.iter().zip(first).all(|(a, b)| {
                a.name == b.name
                    && a.value.kind() == b.value.kind()
                    && a.value.shape().len() == b.value.shape().len()
            });
        if !same {
            let desc = |f: &[Field]| -> Vec<String> {
                f.iter()
                    .map(|f| format!("{}:{}{:?}", f.name, f.value.kind(), f.value.shape()))
                    .collect()
            };
            return Err(OutputError::InvalidBatch(format!(
                "event {i} (index {}): fields {:?} differ from event 0's {:?}",
                ev.event_index,
                desc(&ev.fields),
                desc(first)
            )));
        }
        for f in &ev.fields {
            if let Value::Num { dtype, shape, data } = &f.value {
                let n: usize = shape.iter().map(|&d| d as usize).product();
                let want = if f.presence == Presence::Missing {
                    1
                } else {
                    n
                };
                if data.len() != want * dtype.size() {
                    return Err(OutputError::InvalidBatch(format!(
                        "event {i} field {}: {} bytes for shape {shape:?} of {}",
                        f.name,
                        data.len(),
                        dtype.numpy()
                    )));
                }
            }
        }
    }
    Ok(())
}

macro_rules! with_type {
    ($dtype:expr, $T:ident, $body:expr) => {
        match $dtype {
            Dtype::U8 => {
                type $T = u8;
                $body
            }
            Dtype::U16 => {
                type $T = u16;
                $body
            }
            Dtype::U32 => {
                type $T = u32;
                $body
            }
            Dtype::U64 => {
                type $T = u64;
                $body
            }
            Dtype::I8 => {
                type $T = i8;
                $body
            }
            Dtype::I16 => {
                type $T = i16;
                $body
            }
            Dtype::I32 => {
                type $T = i32;
                $body
            }
            Dtype::I64 => {
                type $T = i64;
                $body
            }
            Dtype::F32 => {
                type $T = f32;
                $body
            }
            Dtype::F64 => {
                type $T = f64;
                $body
            }
        }
    };
}

fn numeric_dataset(
    group: &hdf5::Group,
    name: &str,
    dtype: Dtype,
    shape: &[usize],
    bytes: &[u8],
) -> Result<hdf5::Dataset, OutputError> {
    with_type!(dtype, T, {
        let v: Vec<T> = bytemuck::pod_collect_to_vec(bytes);
        let a = ArrayD::from_shape_vec(IxDyn(shape), v)
            .map_err(|e| OutputError::InvalidBatch(format!("field {name}: {e}")))?;
        Ok(group.new_dataset_builder().with_data(&a).create(name)?)
    })
}

fn str_attr(loc: &hdf5::Location, name: &str, v: &str) -> Result<(), OutputError> {
    let v: VarLenUnicode = v
        .parse()
        .map_err(|e| OutputError::InvalidBatch(format!("{name}: {e}")))?;
    super::scalar_attr(loc, name, v)
}

/// Names a field's datasets take besides `<name>`.
pub const SUFFIXES: [&str; 3] = ["_present", "_offsets", "_shape"];

/// Writes every field of the batch into `group`; `extra_links` gives, per field name, further
/// paths (relative to `group`) that must name the same dataset.
pub(crate) fn write(
    group: &hdf5::Group,
    events: &[EventRecord],
    extra_links: &dyn Fn(&str) -> Vec<String>,
) -> Result<(), OutputError> {
    let b = events.len();
    for (k, f0) in events[0].fields.iter().enumerate() {
        let name = f0.name.as_str();
        if name.is_empty() || name.contains('/') || group.link_exists(name) {
            return Err(OutputError::InvalidBatch(format!(
                "field name {name:?} is empty, contains '/' or clashes with another dataset"
            )));
        }
        let col: Vec<&Field> = events.iter().map(|e| &e.fields[k]).collect();
        let ds = match &f0.value {
            Value::Str(_) => {
                let v: Vec<VarLenUnicode> =
                    col.iter()
                        .map(|f| match &f.value {
                            Value::Str(s) => s.replace('\0', "").parse().map_err(|e| {
                                OutputError::InvalidBatch(format!("field {name}: {e}"))
                            }),
                            Value::Num { .. } => unreachable!("kinds checked"),
                        })
                        .collect::<Result<_, _>>()?;
                let ds = group
                    .new_dataset_builder()
                    .with_data(&ndarray::Array1::from_vec(v))
                    .create(name)?;
                str_attr(&ds, "layout", "fixed")?;
                ds
            }
            Value::Num { dtype, .. } => write_numeric(group, name, *dtype, &col, b)?,
        };
        str_attr(&ds, "kind", f0.value.kind())?;
        if col.iter().any(|f| f.presence != Presence::Always) {
            let p = ndarray::Array1::from_iter(
                col.iter()
                    .map(|f| u8::from(f.presence != Presence::Missing)),
            );
            group
                .new_dataset_builder()
                .with_data(&p)
                .create(format!("{name}_present").as_str())?;
        }
        for link in extra_links(name) {
            if !group.link_exists(&link) {
                group.link_hard(name, &link)?;
            }
        }
    }
    Ok(())
}

fn write_numeric(
    group: &hdf5::Group,
    name: &str,
    dtype: Dtype,
    col: &[&Field],
    b: usize,
) -> Result<hdf5::Dataset, OutputError> {
    let present = |f: &&&Field| f.presence != Presence::Missing;
    let rank = col[0].value.shape().len();
    let first_shape: Vec<u32> = col
        .iter()
        .find(present)
        .map_or_else(|| vec![0; rank], |f| f.value.shape().to_vec());
    let fixed = !col[0].ragged
        && col
            .iter()
            .filter(present)
            .all(|f| f.value.shape() == first_shape);
    let data = |f: &Field| match &f.value {
        Value::Num { data, .. } => data.clone(),
        Value::Str(_) => Vec::new(),
    };
    if fixed {
        let n: usize = first_shape.iter().map(|&d| d as usize).product();
        let mut bytes = Vec::with_capacity(b * n * dtype.size());
        for f in col {
            if f.presence == Presence::Missing {
                let fill = data(f);
                for _ in 0..n {
                    bytes.extend_from_slice(&fill);
                }
            } else {
                bytes.extend(data(f));
            }
        }
        let mut shape = vec![b];
        shape.extend(first_shape.iter().map(|&d| d as usize));
        let ds = numeric_dataset(group, name, dtype, &shape, &bytes)?;
        str_attr(&ds, "layout", "fixed")?;
        return Ok(ds);
    }
    let mut bytes = Vec::new();
    let mut offsets = vec![0u64];
    let mut shapes = Vec::with_capacity(b * rank);
    for f in col {
        if f.presence == Presence::Missing {
            shapes.extend(std::iter::repeat_n(0u32, rank));
        } else {
            bytes.extend(data(f));
            shapes.extend_from_slice(f.value.shape());
        }
        offsets.push((bytes.len() / dtype.size()) as u64);
    }
    let ds = numeric_dataset(group, name, dtype, &[bytes.len() / dtype.size()], &bytes)?;
    str_attr(&ds, "layout", "ragged")?;
    group
        .new_dataset_builder()
        .with_data(&ndarray::Array1::from_vec(offsets))
        .create(format!("{name}_offsets").as_str())?;
    group
        .new_dataset_builder()
        .with_data(
            &ndarray::Array2::from_shape_vec((b, rank), shapes)
                .map_err(|e| OutputError::InvalidBatch(format!("field {name}: {e}")))?,
        )
        .create(format!("{name}_shape").as_str())?;
    Ok(ds)
}

/// Writes run-level values as attributes `data.<name>` of `loc`.
pub(crate) fn write_run_values(
    loc: &hdf5::Location,
    values: &[(String, Value)],
) -> Result<(), OutputError> {
    for (name, v) in values {
        let attr = format!("data.{name}");
        match v {
            Value::Str(s) => str_attr(loc, &attr, &s.replace('\0', ""))?,
            Value::Num { dtype, shape, data } => with_type!(*dtype, T, {
                let v: Vec<T> = bytemuck::pod_collect_to_vec(data);
                let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
                let a = ArrayD::from_shape_vec(IxDyn(&shape), v)
                    .map_err(|e| OutputError::InvalidBatch(format!("{attr}: {e}")))?;
                loc.new_attr_builder().with_data(&a).create(attr.as_str())?;
            }),
        }
    }
    Ok(())
}

fn read_numeric(ds: &hdf5::Container, name: &str) -> Result<(Dtype, Vec<u8>), OutputError> {
    let t = ds.dtype()?;
    for dtype in [
        Dtype::U8,
        Dtype::U16,
        Dtype::U32,
        Dtype::U64,
        Dtype::I8,
        Dtype::I16,
        Dtype::I32,
        Dtype::I64,
        Dtype::F32,
        Dtype::F64,
    ] {
        let hit = with_type!(dtype, T, t.is::<T>());
        if hit {
            let bytes = with_type!(dtype, T, {
                let v = ds.read_raw::<T>()?;
                bytemuck::cast_slice::<T, u8>(&v).to_vec()
            });
            return Ok((dtype, bytes));
        }
    }
    Err(OutputError::Malformed(format!(
        "field {name}: unsupported dataset type"
    )))
}

/// Reads the fields `names` of `b` events back from `group` (inverse of [`write`]).
pub(crate) fn read(
    group: &hdf5::Group,
    names: &[String],
    b: usize,
) -> Result<Vec<Vec<Field>>, OutputError> {
    let mut out: Vec<Vec<Field>> = vec![Vec::with_capacity(names.len()); b];
    let malformed = |m: String| OutputError::Malformed(m);
    for name in names {
        let ds = group
            .dataset(name)
            .map_err(|e| malformed(format!("dataset {name}: {e}")))?;
        let present: Option<Vec<u8>> = group
            .link_exists(&format!("{name}_present"))
            .then(|| group.dataset(&format!("{name}_present"))?.read_raw::<u8>())
            .transpose()?;
        // The `_offsets` dataset, not the `layout` attribute, tells the layouts apart, so
        // copies that drop dataset attributes still read.
        let is_ragged = group.link_exists(&format!("{name}_offsets"));
        let presence = |i: usize| match &present {
            None => Presence::Always,
            Some(p) if p.get(i) == Some(&0) => Presence::Missing,
            Some(_) => Presence::Present,
        };
        let mut values: Vec<Value> = Vec::with_capacity(b);
        let mut ragged = false;
        if ds.dtype()?.is::<VarLenUnicode>() {
            for s in ds.read_raw::<VarLenUnicode>()? {
                values.push(Value::Str(s.as_str().to_owned()));
            }
        } else if !is_ragged {
            let (dtype, bytes) = read_numeric(&ds, name)?;
            let shape: Vec<u32> = ds.shape()[1..].iter().map(|&d| d as u32).collect();
            let per = bytes.len() / b.max(1);
            for i in 0..b {
                let data = bytes[i * per..(i + 1) * per].to_vec();
                values.push(Value::Num {
                    dtype,
                    shape: shape.clone(),
                    data,
                });
            }
        } else {
            ragged = true;
            let (dtype, bytes) = read_numeric(&ds, name)?;
            let offsets = group
                .dataset(&format!("{name}_offsets"))?
                .read_raw::<u64>()?;
            let shapes = group.dataset(&format!("{name}_shape"))?.read_2d::<u32>()?;
            if offsets.len() != b + 1 || shapes.nrows() != b {
                return Err(malformed(format!(
                    "{name}: offsets/shape do not hold {b} events"
                )));
            }
            for i in 0..b {
                let (s, e) = (offsets[i] as usize, offsets[i + 1] as usize);
                let data = bytes
                    .get(s * dtype.size()..e * dtype.size())
                    .ok_or_else(|| malformed(format!("{name}: offsets beyond the data")))?
                    .to_vec();
                values.push(Value::Num {
                    dtype,
                    shape: shapes.row(i).to_vec(),
                    data,
                });
            }
        }
        if values.len() != b {
            return Err(malformed(format!(
                "{name} has {} values, expected {b}",
                values.len()
            )));
        }
        for (i, value) in values.into_iter().enumerate() {
            out[i].push(Field {
                name: name.clone(),
                value,
                presence: presence(i),
                ragged,
            });
        }
    }
    Ok(out)
}

/// Reads the run-level values (`data.<name>` attributes) of `loc`, in name order.
pub(crate) fn read_run_values(loc: &hdf5::Location) -> Result<Vec<(String, Value)>, OutputError> {
    let mut out = Vec::new();
    let mut names = loc.attr_names()?;
    names.sort();
    for attr in names {
        let Some(name) = attr.strip_prefix("data.") else {
            continue;
        };
        let a = loc.attr(&attr)?;
        let t = a.dtype()?;
        let value = if t.is::<VarLenUnicode>() {
            Value::Str(a.read_scalar::<VarLenUnicode>()?.as_str().to_owned())
        } else {
            let shape: Vec<u32> = a.shape().iter().map(|&d| d as u32).collect();
            let (dtype, data) = read_numeric(&a, &attr)?;
            Value::Num { dtype, shape, data }
        };
        out.push((name.to_owned(), value));
    }
    Ok(out)
}
