//! Building datagrams byte-compatible with the LCLS DAQ writer (`CreateData`): Names with
//! zero-filled strings, ShapesData as `[Shapes, Data]`, extents chained up to the root.

use super::error::{FormatError, FormatResult};
use super::header::{
    DGRAM_HEADER_SIZE, Damage, DgramHeader, NamesId, TransitionId, TypeId, XTC_HEADER_SIZE,
    XtcHeader, make_env,
};
use super::names::{DataType, NAME_INFO_SIZE, NAME_SIZE, STR_FIELD, Schema};
use super::shapes_data::{SHAPE_ENTRY_SIZE, Shape};
use bytemuck::Pod;
use std::borrow::Cow;

/// The value of one variable to write: its shape and little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct VarData<'a> {
    pub shape: Shape,
    pub bytes: Cow<'a, [u8]>,
}

impl<'a> VarData<'a> {
    /// A scalar (numeric or enum) value.
    pub fn scalar<T: Pod>(v: T) -> Self {
        Self {
            shape: Shape::scalar(),
            bytes: Cow::Owned(bytemuck::bytes_of(&v).to_vec()),
        }
    }

    /// A CHARSTR: NUL-terminated and padded to a multiple of 4 bytes, as `set_string` does.
    pub fn string(s: &str) -> Self {
        let padded = (s.len() + 1).div_ceil(4) * 4;
        let mut bytes = s.as_bytes().to_vec();
        bytes.resize(padded, 0);
        Self {
            shape: Shape::new(&[padded as u32]),
            bytes: Cow::Owned(bytes),
        }
    }

    /// An array of `shape` borrowed from `data` (row-major).
    pub fn array<T: Pod>(shape: &[u32], data: &'a [T]) -> Self {
        Self {
            shape: Shape::new(shape),
            bytes: Cow::Borrowed(bytemuck::cast_slice(data)),
        }
    }
}

/// Child order inside a ShapesData.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildOrder {
    /// `[Shapes, Data]`, as `CreateData` writes.
    ShapesFirst,
    /// `[Data, Shapes]`, as `DescribedData` writes.
    DataFirst,
}

fn check_name(s: &str, what: &str, extra: &[u8]) -> FormatResult<()> {
    if s.len() >= STR_FIELD {
        return Err(FormatError::new(
            0,
            format!(
                "{what} {s:?} is {} bytes, the field holds {}",
                s.len(),
                STR_FIELD - 1
            ),
        ));
    }
    if let Some(c) = s
        .bytes()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == b'_' || extra.contains(c)))
    {
        return Err(FormatError::new(
            0,
            format!(
                "{what} {s:?} contains {:?}, not allowed by the DAQ",
                c as char
            ),
        ));
    }
    Ok(())
}

fn push_field(out: &mut Vec<u8>, s: &str) {
    let start = out.len();
    out.extend_from_slice(s.as_bytes());
    out.resize(start + STR_FIELD, 0);
}

/// Encodes a Names Xtc for `schema` under `id`.
pub fn encode_names(id: NamesId, schema: &Schema, out: &mut Vec<u8>) -> FormatResult<()> {
    check_name(&schema.det_name, "detName", b"")?;
    for v in &schema.vars {
        if v.name.is_empty()
            || v.name.len() >= STR_FIELD
            || v.name.bytes().any(|c| !c.is_ascii_graphic())
        {
            return Err(FormatError::new(
                0,
                format!(
                    "variable name {:?} must be 1..255 printable ASCII characters",
                    v.name
                ),
            ));
        }
        if v.rank > 4 || (v.dtype == DataType::CHARSTR && v.rank != 1) {
            return Err(FormatError::new(
                0,
                format!("variable {:?}: rank {} not allowed", v.name, v.rank),
            ));
        }
    }
    for (what, s) in [
        ("detType", &schema.det_type),
        ("detId", &schema.det_id),
        ("alg", &schema.alg.name),
    ] {
        if s.len() >= STR_FIELD {
            return Err(FormatError::new(0, format!("{what} {s:?} is too long")));
        }
    }
    let extent = XTC_HEADER_SIZE + NAME_INFO_SIZE + NAME_SIZE * schema.vars.len();
    XtcHeader {
        src: id.0,
        damage: Damage(0),
        contains: TypeId::NAMES,
        extent: extent as u32,
    }
    .write(out);
    out.extend_from_slice(&(schema.num_arrays() as u32).to_le_bytes());
    push_field(out, &schema.det_type);
    push_field(out, &schema.det_name);
    push_field(out, &schema.det_id);
    push_field(out, &schema.alg.name);
    out.extend_from_slice(&schema.alg.version.to_le_bytes());
    out.extend_from_slice(&schema.segment.to_le_bytes());
    for v in &schema.vars {
        push_field(out, &v.alg.name);
        out.extend_from_slice(&v.alg.version.to_le_bytes());
        push_field(out, &v.name);
        out.extend_from_slice(&(v.dtype as u32).to_le_bytes());
        out.extend_from_slice(&v.rank.to_le_bytes());
    }
    Ok(())
}

/// Checks `values` against `schema` and returns the Data payload size.
fn check_values(schema: &Schema, values: &[VarData<'_>]) -> FormatResult<usize> {
    if values.len() != schema.vars.len() {
        return Err(FormatError::new(
            0,
            format!(
                "{}/{}: {} values for {} variables",
                schema.det_name,
                schema.alg.name,
                values.len(),
                schema.vars.len()
            ),
        ));
    }
    let mut total = 0usize;
    for (desc, val) in schema.vars.iter().zip(values) {
        if u32::from(val.shape.rank) != desc.rank {
            return Err(FormatError::new(
                0,
                format!(
                    "variable {:?}: value of rank {} for a rank-{} declaration",
                    desc.name, val.shape.rank, desc.rank
                ),
            ));
        }
        let need = val
            .shape
            .count()
            .and_then(|n| n.checked_mul(desc.dtype.size()));
        if need != Some(val.bytes.len()) {
            return Err(FormatError::new(
                0,
                format!(
                    "variable {:?} ({} {:?}): {} bytes given, {:?} expected",
                    desc.name,
                    desc.dtype,
                    val.shape.dims(),
                    val.bytes.len(),
                    need
                ),
            ));
        }
        total += val.bytes.len();
    }
    Ok(total)
}

/// Encodes a ShapesData Xtc for `schema` under `id`.
pub fn encode_shapes_data(
    id: NamesId,
    schema: &Schema,
    values: &[VarData<'_>],
    order: ChildOrder,
    out: &mut Vec<u8>,
) -> FormatResult<()> {
    let data_len = check_values(schema, values)?;
    let shapes_len = XTC_HEADER_SIZE + SHAPE_ENTRY_SIZE * schema.num_arrays();
    let data_ext = XTC_HEADER_SIZE + data_len;
    let total = XTC_HEADER_SIZE + shapes_len + data_ext;
    if total > u32::MAX as usize {
        return Err(FormatError::new(0, "ShapesData larger than 4 GiB"));
    }
    XtcHeader {
        src: id.0,
        damage: Damage(0),
        contains: TypeId::SHAPES_DATA,
        extent: total as u32,
    }
    .write(out);
    let write_shapes = |out: &mut Vec<u8>| {
        XtcHeader {
            src: 0,
            damage: Damage(0),
            contains: TypeId::SHAPES,
            extent: shapes_len as u32,
        }
        .write(out);
        for v in values.iter().filter(|v| v.shape.rank > 0) {
            for d in v.shape.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
        }
    };
    let write_data = |out: &mut Vec<u8>| {
        XtcHeader {
            src: 0,
            damage: Damage(0),
            contains: TypeId::DATA,
            extent: data_ext as u32,
        }
        .write(out);
        for v in values {
            out.extend_from_slice(&v.bytes);
        }
    };
    match order {
        ChildOrder::ShapesFirst => {
            write_shapes(out);
            write_data(out);
        }
        ChildOrder::DataFirst => {
            write_data(out);
            write_shapes(out);
        }
    }
    Ok(())
}

/// Builds one datagram in memory; children are appended to the root Parent.
#[derive(Debug, Clone)]
pub struct DgramBuilder {
    buf: Vec<u8>,
}

impl DgramBuilder {
    /// Starts a datagram with an empty root Parent whose `src` is `root_src`.
    pub fn new(timestamp: u64, service: TransitionId, readout_groups: u16, root_src: u32) -> Self {
        let mut buf = Vec::with_capacity(256);
        DgramHeader {
            timestamp,
            env: make_env(service, readout_groups),
            root: XtcHeader {
                src: root_src,
                damage: Damage(0),
                contains: TypeId::PARENT,
                extent: XTC_HEADER_SIZE as u32,
            },
        }
        .write(&mut buf);
        Self { buf }
    }

    /// Appends a Names declaration.
    pub fn add_names(&mut self, id: NamesId, schema: &Schema) -> FormatResult<&mut Self> {
        encode_names(id, schema, &mut self.buf)?;
        self.fix_root()?;
        Ok(self)
    }

    /// Appends a ShapesData in the DAQ's usual `[Shapes, Data]` order.
    pub fn add_data(
        &mut self,
        id: NamesId,
        schema: &Schema,
        values: &[VarData<'_>],
    ) -> FormatResult<&mut Self> {
        self.add_data_ordered(id, schema, values, ChildOrder::ShapesFirst)
    }

    /// Appends a ShapesData with an explicit child order.
    pub fn add_data_ordered(
        &mut self,
        id: NamesId,
        schema: &Schema,
        values: &[VarData<'_>],
        order: ChildOrder,
    ) -> FormatResult<&mut Self> {
        let mark = self.buf.len();
        if let Err(e) = encode_shapes_data(id, schema, values, order, &mut self.buf) {
            self.buf.truncate(mark);
            return Err(e);
        }
        self.fix_root()?;
        Ok(self)
    }

    /// Appends already-encoded Xtc bytes (a Names or ShapesData copied from another datagram).
    pub fn add_raw(&mut self, xtc: &[u8]) -> FormatResult<&mut Self> {
        self.buf.extend_from_slice(xtc);
        self.fix_root()?;
        Ok(self)
    }

    /// Sets damage bits on the root.
    pub fn set_damage(&mut self, damage: Damage) -> &mut Self {
        self.buf[16..18].copy_from_slice(&damage.0.to_le_bytes());
        self
    }

    fn fix_root(&mut self) -> FormatResult<()> {
        let extent = self.buf.len() - DGRAM_HEADER_SIZE + XTC_HEADER_SIZE;
        let extent =
            u32::try_from(extent).map_err(|_| FormatError::new(0, "datagram larger than 4 GiB"))?;
        self.buf[20..24].copy_from_slice(&extent.to_le_bytes());
        Ok(())
    }

    /// The datagram bytes so far (always a complete datagram).
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The finished datagram.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}
