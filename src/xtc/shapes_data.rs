//! Decoding `ShapesData` blocks against their schema: scalars, arrays, strings and enums,
//! borrowed from the datagram bytes.

use super::bytes::{cstr_field, u32_at};
use super::container::XtcNode;
use super::error::{FormatError, FormatResult};
use super::header::{NamesId, TypeKind};
use super::names::{DataType, NamesLookup, Schema, VarDesc};
use bytemuck::Pod;
use std::borrow::Cow;

/// Bytes of one Shapes entry (`u32[5]`).
pub const SHAPE_ENTRY_SIZE: usize = 20;

/// The dimensions of one variable. Only the first `rank` are meaningful; the rest are kept as
/// read (the DAQ does not always zero them) so re-encoding reproduces the bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shape {
    pub dims: [u32; 5],
    pub rank: u8,
}

impl PartialEq for Shape {
    fn eq(&self, other: &Self) -> bool {
        self.dims() == other.dims()
    }
}

impl Eq for Shape {}

impl Shape {
    /// A shape from its meaningful dimensions (at most 5).
    pub fn new(dims: &[u32]) -> Self {
        let mut d = [0u32; 5];
        let rank = dims.len().min(5);
        d[..rank].copy_from_slice(&dims[..rank]);
        Self {
            dims: d,
            rank: rank as u8,
        }
    }

    /// A rank-0 shape.
    pub fn scalar() -> Self {
        Self::default()
    }

    /// The meaningful dimensions.
    pub fn dims(&self) -> &[u32] {
        &self.dims[..self.rank as usize]
    }

    /// Number of elements, or `None` on overflow.
    pub fn count(&self) -> Option<usize> {
        self.dims()
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
    }
}

/// A scalar value of any numeric or enum type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar {
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    I8(i8),
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    EnumVal(i32),
    EnumDict(i32),
}

impl Scalar {
    /// Decodes an element of `dtype` from its little-endian bytes.
    pub fn decode(dtype: DataType, b: &[u8]) -> Option<Self> {
        let a = |n: usize| b.get(..n);
        Some(match dtype {
            DataType::UINT8 => Self::U8(a(1)?[0]),
            DataType::UINT16 => Self::U16(u16::from_le_bytes(a(2)?.try_into().ok()?)),
            DataType::UINT32 => Self::U32(u32::from_le_bytes(a(4)?.try_into().ok()?)),
            DataType::UINT64 => Self::U64(u64::from_le_bytes(a(8)?.try_into().ok()?)),
            DataType::INT8 => Self::I8(a(1)?[0] as i8),
            DataType::INT16 => Self::I16(i16::from_le_bytes(a(2)?.try_into().ok()?)),
            DataType::INT32 => Self::I32(i32::from_le_bytes(a(4)?.try_into().ok()?)),
            DataType::INT64 => Self::I64(i64::from_le_bytes(a(8)?.try_into().ok()?)),
            DataType::FLOAT => Self::F32(f32::from_le_bytes(a(4)?.try_into().ok()?)),
            DataType::DOUBLE => Self::F64(f64::from_le_bytes(a(8)?.try_into().ok()?)),
            DataType::ENUMVAL => Self::EnumVal(i32::from_le_bytes(a(4)?.try_into().ok()?)),
            DataType::ENUMDICT => Self::EnumDict(i32::from_le_bytes(a(4)?.try_into().ok()?)),
            DataType::CHARSTR => return None,
        })
    }

    /// The value as f64 (lossy for large 64-bit integers).
    pub fn as_f64(self) -> f64 {
        match self {
            Self::U8(v) => v.into(),
            Self::U16(v) => v.into(),
            Self::U32(v) => v.into(),
            Self::U64(v) => v as f64,
            Self::I8(v) => v.into(),
            Self::I16(v) => v.into(),
            Self::I32(v) | Self::EnumVal(v) | Self::EnumDict(v) => v.into(),
            Self::I64(v) => v as f64,
            Self::F32(v) => v.into(),
            Self::F64(v) => v,
        }
    }

    /// The value as i64 when it is an integer or enum that fits.
    pub fn as_i64(self) -> Option<i64> {
        match self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => i64::try_from(v).ok(),
            Self::I8(v) => Some(v.into()),
            Self::I16(v) => Some(v.into()),
            Self::I32(v) | Self::EnumVal(v) | Self::EnumDict(v) => Some(v.into()),
            Self::I64(v) => Some(v),
            Self::F32(_) | Self::F64(_) => None,
        }
    }

    /// The value as JSON.
    pub fn to_json(self) -> serde_json::Value {
        match self {
            Self::U64(v) => v.into(),
            Self::F32(v) => f64::from(v).into(),
            Self::F64(v) => v.into(),
            other => other.as_i64().unwrap_or_default().into(),
        }
    }
}

/// One decoded variable: its declaration, shape and raw little-endian bytes.
#[derive(Debug, Clone, Copy)]
pub struct VarView<'a, 's> {
    pub desc: &'s VarDesc,
    pub shape: Shape,
    pub bytes: &'a [u8],
    /// Absolute file offset of the first value byte.
    pub offset: u64,
}

impl<'a> VarView<'a, '_> {
    /// The scalar value of a rank-0 numeric or enum variable.
    pub fn scalar(&self) -> Option<Scalar> {
        if self.desc.rank != 0 {
            return None;
        }
        Scalar::decode(self.desc.dtype, self.bytes)
    }

    /// The text of a CHARSTR variable (up to the first NUL).
    pub fn string(&self) -> Option<String> {
        (self.desc.dtype == DataType::CHARSTR).then(|| cstr_field(self.bytes))
    }

    /// The elements as `T` (which must have the element size of the declared type): borrowed
    /// when the bytes are aligned for `T`, copied otherwise.
    pub fn elements<T: Pod>(&self) -> Option<Cow<'a, [T]>> {
        if std::mem::size_of::<T>() != self.desc.dtype.size() {
            return None;
        }
        match bytemuck::try_cast_slice::<u8, T>(self.bytes) {
            Ok(s) => Some(Cow::Borrowed(s)),
            Err(_) => Some(Cow::Owned(
                self.bytes
                    .chunks_exact(std::mem::size_of::<T>())
                    .map(bytemuck::pod_read_unaligned)
                    .collect(),
            )),
        }
    }

    /// Element `i` of an array (or the scalar for `i == 0`).
    pub fn element(&self, i: usize) -> Option<Scalar> {
        let n = self.desc.dtype.size();
        Scalar::decode(self.desc.dtype, self.bytes.get(i * n..(i + 1) * n)?)
    }

    /// The value as JSON: numbers, strings, or nested arrays (at most `max_elems` elements,
    /// `null` when larger).
    pub fn to_json(&self, max_elems: usize) -> serde_json::Value {
        if let Some(s) = self.string() {
            return s.into();
        }
        if self.desc.rank == 0 {
            return self
                .scalar()
                .map_or(serde_json::Value::Null, Scalar::to_json);
        }
        let n = self.shape.count().unwrap_or(usize::MAX);
        if n > max_elems {
            return serde_json::Value::Null;
        }
        let flat: Vec<serde_json::Value> = (0..n)
            .map(|i| {
                self.element(i)
                    .map_or(serde_json::Value::Null, Scalar::to_json)
            })
            .collect();
        nest(&flat, self.shape.dims())
    }
}

fn nest(flat: &[serde_json::Value], dims: &[u32]) -> serde_json::Value {
    match dims {
        [] | [_] => flat.to_vec().into(),
        [first, rest @ ..] => {
            let stride = flat.len() / (*first as usize).max(1);
            flat.chunks(stride.max(1))
                .map(|c| nest(c, rest))
                .collect::<Vec<_>>()
                .into()
        }
    }
}

/// A decoded ShapesData: the schema it follows and its variables in declaration order.
#[derive(Debug, Clone)]
pub struct Block<'a, 's> {
    pub names_id: NamesId,
    pub schema: &'s Schema,
    pub vars: Vec<VarView<'a, 's>>,
    /// Absolute offset of the ShapesData Xtc.
    pub offset: u64,
    /// True when the Data child came before Shapes.
    pub data_first: bool,
}

impl<'a, 's> Block<'a, 's> {
    /// The variable called `name`.
    pub fn var(&self, name: &str) -> Option<&VarView<'a, 's>> {
        self.vars.iter().find(|v| v.desc.name == name)
    }

    /// Enum dictionaries of this block: enum type → (label, code) in declaration order.
    pub fn enum_dicts(&self) -> Vec<(String, Vec<(String, i32)>)> {
        let mut out: Vec<(String, Vec<(String, i32)>)> = Vec::new();
        for v in &self.vars {
            if v.desc.dtype != DataType::ENUMDICT {
                continue;
            }
            let Some((label, ty)) = v.desc.name.rsplit_once(':') else {
                continue;
            };
            let code = match v.scalar() {
                Some(Scalar::EnumDict(c)) => c,
                _ => continue,
            };
            match out.iter_mut().find(|(t, _)| t == ty) {
                Some((_, entries)) => entries.push((label.to_string(), code)),
                None => out.push((ty.to_string(), vec![(label.to_string(), code)])),
            }
        }
        out
    }
}

/// Decodes the ShapesData `node` with the schema its `src` selects in `lookup`.
pub fn decode<'a, 's>(node: &XtcNode<'a>, lookup: &'s NamesLookup) -> FormatResult<Block<'a, 's>> {
    let id = NamesId(node.header.src);
    let schema = lookup.get(id).ok_or_else(|| {
        FormatError::new(
            node.offset,
            format!("ShapesData refers to NamesId {id}, which no Configure declared"),
        )
    })?;
    decode_with(node, id, schema)
}

/// Decodes the ShapesData `node` with a given schema.
pub fn decode_with<'a, 's>(
    node: &XtcNode<'a>,
    names_id: NamesId,
    schema: &'s Schema,
) -> FormatResult<Block<'a, 's>> {
    let mut shapes: Option<XtcNode<'a>> = None;
    let mut data: Option<XtcNode<'a>> = None;
    let mut data_first = false;
    for child in node.children() {
        let child = child?;
        match child.header.contains.kind() {
            TypeKind::Shapes if shapes.is_none() => shapes = Some(child),
            TypeKind::Data if data.is_none() => {
                data_first = shapes.is_none();
                data = Some(child);
            }
            _ => {
                return Err(FormatError::new(
                    child.offset,
                    format!(
                        "unexpected TypeId 0x{:04X} inside ShapesData",
                        child.header.contains.0
                    ),
                ));
            }
        }
    }
    let data = data.ok_or_else(|| FormatError::new(node.offset, "ShapesData has no Data child"))?;
    let num_arrays = schema.num_arrays();
    let shape_bytes = shapes.map_or(&[][..], |s| s.payload);
    if shape_bytes.len() < num_arrays * SHAPE_ENTRY_SIZE {
        let at = shapes.map_or(node.offset, |s| s.offset);
        return Err(FormatError::new(
            at,
            format!(
                "Shapes holds {} bytes but {}/{} declares {num_arrays} arrays ({} bytes)",
                shape_bytes.len(),
                schema.det_name,
                schema.alg.name,
                num_arrays * SHAPE_ENTRY_SIZE
            ),
        ));
    }
    let payload = data.payload;
    let base = data.payload_offset();
    let mut vars = Vec::with_capacity(schema.vars.len());
    let mut pos = 0usize;
    let mut k = 0usize;
    for desc in &schema.vars {
        let shape = if desc.rank == 0 {
            Shape::scalar()
        } else {
            let mut dims = [0u32; 5];
            for (j, d) in dims.iter_mut().enumerate() {
                *d = u32_at(shape_bytes, k * SHAPE_ENTRY_SIZE + 4 * j).unwrap_or(0);
            }
            k += 1;
            Shape {
                dims,
                rank: desc.rank as u8,
            }
        };
        let size = shape
            .count()
            .and_then(|n| n.checked_mul(desc.dtype.size()))
            .ok_or_else(|| {
                FormatError::new(
                    node.offset,
                    format!(
                        "variable {:?}: shape {:?} overflows",
                        desc.name,
                        shape.dims()
                    ),
                )
            })?;
        let end = pos.checked_add(size).filter(|&e| e <= payload.len());
        let Some(end) = end else {
            return Err(FormatError::new(
                base + pos as u64,
                format!(
                    "{}/{} variable {:?} {:?} needs {size} bytes at Data+{pos}, Data holds {}",
                    schema.det_name,
                    schema.alg.name,
                    desc.name,
                    shape.dims(),
                    payload.len()
                ),
            ));
        };
        vars.push(VarView {
            desc,
            shape,
            bytes: &payload[pos..end],
            offset: base + pos as u64,
        });
        pos = end;
    }
    Ok(Block {
        names_id,
        schema,
        vars,
        offset: node.offset,
        data_first,
    })
}
