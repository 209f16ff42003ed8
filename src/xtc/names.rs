//! The schema layer: `Names` declarations (detector, algorithm, segment, variables) and the
//! per-stream lookup from NamesId to schema that every Configure replaces.

use super::bytes::{cstr_field, u32_at};
use super::container::{XtcNode, for_each_leaf};
use super::error::{FormatError, FormatResult};
use super::header::{NamesId, TypeKind};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Bytes of a NameInfo block (numArrays, detType, detName, detId, alg, segment).
pub const NAME_INFO_SIZE: usize = 1036;
/// Bytes of one variable's Name entry.
pub const NAME_SIZE: usize = 524;
/// Length of the fixed string fields.
pub const STR_FIELD: usize = 256;
/// Largest rank a variable may have.
pub const MAX_RANK: u32 = 4;

/// The element types of the self-describing layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[allow(clippy::upper_case_acronyms)]
pub enum DataType {
    UINT8 = 0,
    UINT16 = 1,
    UINT32 = 2,
    UINT64 = 3,
    INT8 = 4,
    INT16 = 5,
    INT32 = 6,
    INT64 = 7,
    FLOAT = 8,
    DOUBLE = 9,
    CHARSTR = 10,
    ENUMVAL = 11,
    ENUMDICT = 12,
}

impl DataType {
    /// Every type, in numeric order.
    pub const ALL: [DataType; 13] = [
        Self::UINT8,
        Self::UINT16,
        Self::UINT32,
        Self::UINT64,
        Self::INT8,
        Self::INT16,
        Self::INT32,
        Self::INT64,
        Self::FLOAT,
        Self::DOUBLE,
        Self::CHARSTR,
        Self::ENUMVAL,
        Self::ENUMDICT,
    ];

    /// Decodes the on-disk type code.
    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.get(v as usize).copied()
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::UINT8 | Self::INT8 | Self::CHARSTR => 1,
            Self::UINT16 | Self::INT16 => 2,
            Self::UINT32 | Self::INT32 | Self::FLOAT | Self::ENUMVAL | Self::ENUMDICT => 4,
            Self::UINT64 | Self::INT64 | Self::DOUBLE => 8,
        }
    }

    /// The name used by psana and in `inspect --json`.
    pub fn name(self) -> &'static str {
        match self {
            Self::UINT8 => "UINT8",
            Self::UINT16 => "UINT16",
            Self::UINT32 => "UINT32",
            Self::UINT64 => "UINT64",
            Self::INT8 => "INT8",
            Self::INT16 => "INT16",
            Self::INT32 => "INT32",
            Self::INT64 => "INT64",
            Self::FLOAT => "FLOAT",
            Self::DOUBLE => "DOUBLE",
            Self::CHARSTR => "CHARSTR",
            Self::ENUMVAL => "ENUMVAL",
            Self::ENUMDICT => "ENUMDICT",
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An algorithm name and packed version (`major << 16 | minor << 8 | micro`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Alg {
    pub name: String,
    pub version: u32,
}

impl Alg {
    /// An algorithm with version `major.minor.micro`.
    pub fn new(name: &str, major: u8, minor: u8, micro: u8) -> Self {
        Self {
            name: name.to_string(),
            version: (u32::from(major) << 16) | (u32::from(minor) << 8) | u32::from(micro),
        }
    }

    /// The version as `"major.minor.micro"`.
    pub fn version_string(&self) -> String {
        format!(
            "{}.{}.{}",
            (self.version >> 16) & 0xFF,
            (self.version >> 8) & 0xFF,
            self.version & 0xFF
        )
    }
}

/// One declared variable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VarDesc {
    pub name: String,
    pub dtype: DataType,
    pub rank: u32,
    /// Per-variable algorithm (normally empty, version 0).
    pub alg: Alg,
}

impl VarDesc {
    /// A variable with an empty per-variable algorithm.
    pub fn new(name: &str, dtype: DataType, rank: u32) -> Self {
        Self {
            name: name.to_string(),
            dtype,
            rank,
            alg: Alg::default(),
        }
    }

    /// For enum variables named `"<name>:<EnumType>"`, the enum type.
    pub fn enum_type(&self) -> Option<&str> {
        match self.dtype {
            DataType::ENUMVAL | DataType::ENUMDICT => self.name.rsplit_once(':').map(|(_, t)| t),
            _ => None,
        }
    }
}

/// A `Names` block: what one (detector, algorithm, segment) writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    pub det_type: String,
    pub det_name: String,
    pub det_id: String,
    pub alg: Alg,
    pub segment: u32,
    pub vars: Vec<VarDesc>,
}

impl Schema {
    /// Number of variables with rank > 0 (each has one Shapes entry).
    pub fn num_arrays(&self) -> usize {
        self.vars.iter().filter(|v| v.rank > 0).count()
    }

    /// Index of the variable called `name`.
    pub fn var_index(&self, name: &str) -> Option<usize> {
        self.vars.iter().position(|v| v.name == name)
    }

    /// Parses a Names Xtc.
    pub fn parse(node: &XtcNode<'_>) -> FormatResult<Self> {
        let p = node.payload;
        let at = node.payload_offset();
        if p.len() < NAME_INFO_SIZE {
            return Err(FormatError::new(
                node.offset,
                format!(
                    "Names extent {} is smaller than the {}-byte NameInfo",
                    node.header.extent,
                    12 + NAME_INFO_SIZE
                ),
            ));
        }
        let rest = p.len() - NAME_INFO_SIZE;
        if !rest.is_multiple_of(NAME_SIZE) {
            return Err(FormatError::new(
                node.offset,
                format!(
                    "Names extent {}: {} bytes of variables is not a multiple of {NAME_SIZE}",
                    node.header.extent, rest
                ),
            ));
        }
        let num_arrays = u32_at(p, 0).unwrap_or(0) as usize;
        let field = |i: usize| cstr_field(&p[4 + i * STR_FIELD..4 + (i + 1) * STR_FIELD]);
        let mut vars = Vec::with_capacity(rest / NAME_SIZE);
        for k in 0..rest / NAME_SIZE {
            let e = &p[NAME_INFO_SIZE + k * NAME_SIZE..NAME_INFO_SIZE + (k + 1) * NAME_SIZE];
            let e_at = at + (NAME_INFO_SIZE + k * NAME_SIZE) as u64;
            let name = cstr_field(&e[260..516]);
            let code = u32_at(e, 516).unwrap_or(u32::MAX);
            let dtype = DataType::from_u32(code).ok_or_else(|| {
                FormatError::new(
                    e_at + 516,
                    format!("variable {name:?}: unknown data type {code}"),
                )
            })?;
            let rank = u32_at(e, 520).unwrap_or(u32::MAX);
            if rank > MAX_RANK {
                return Err(FormatError::new(
                    e_at + 520,
                    format!("variable {name:?}: rank {rank} exceeds {MAX_RANK}"),
                ));
            }
            if dtype == DataType::CHARSTR && rank != 1 {
                return Err(FormatError::new(
                    e_at + 520,
                    format!("CHARSTR variable {name:?} has rank {rank}, expected 1"),
                ));
            }
            vars.push(VarDesc {
                name,
                dtype,
                rank,
                alg: Alg {
                    name: cstr_field(&e[0..256]),
                    version: u32_at(e, 256).unwrap_or(0),
                },
            });
        }
        let schema = Schema {
            det_type: field(0),
            det_name: field(1),
            det_id: field(2),
            alg: Alg {
                name: field(3),
                version: u32_at(p, 1028).unwrap_or(0),
            },
            segment: u32_at(p, 1032).unwrap_or(0),
            vars,
        };
        if schema.num_arrays() != num_arrays {
            return Err(FormatError::new(
                at,
                format!(
                    "Names {:?}/{:?}: numArrays says {num_arrays} but {} variables have rank > 0",
                    schema.det_name,
                    schema.alg.name,
                    schema.num_arrays()
                ),
            ));
        }
        Ok(schema)
    }
}

/// Schemas of one stream, keyed by NamesId; rebuilt from each Configure.
#[derive(Debug, Clone, Default)]
pub struct NamesLookup {
    map: HashMap<NamesId, Arc<Schema>>,
}

impl NamesLookup {
    /// An empty lookup (nothing configured yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds the lookup from every Names under the root of a Configure datagram.
    pub fn from_configure(root: &XtcNode<'_>) -> FormatResult<Self> {
        let mut map = HashMap::new();
        for_each_leaf(root, &mut |leaf| {
            if leaf.header.contains.kind() == TypeKind::Names {
                let id = NamesId(leaf.header.src);
                let schema = Schema::parse(&leaf)?;
                if map.insert(id, Arc::new(schema)).is_some() {
                    return Err(FormatError::new(
                        leaf.offset,
                        format!("NamesId {id} declared twice in one Configure"),
                    ));
                }
            }
            Ok(())
        })?;
        Ok(Self { map })
    }

    /// The schema declared for `id`.
    pub fn get(&self, id: NamesId) -> Option<&Arc<Schema>> {
        self.map.get(&id)
    }

    /// Adds or replaces one schema.
    pub fn insert(&mut self, id: NamesId, schema: Schema) {
        self.map.insert(id, Arc::new(schema));
    }

    /// All (NamesId, schema) pairs, sorted by NamesId.
    pub fn entries(&self) -> Vec<(NamesId, &Arc<Schema>)> {
        let mut v: Vec<_> = self.map.iter().map(|(k, s)| (*k, s)).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    /// The NamesId of the first schema with this detector name and algorithm name.
    pub fn find(&self, det_name: &str, alg: &str) -> Option<NamesId> {
        self.entries()
            .into_iter()
            .find(|(_, s)| s.det_name == det_name && s.alg.name == alg)
            .map(|(k, _)| k)
    }

    /// Number of schemas.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True before any Configure.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
