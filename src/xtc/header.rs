//! Fixed-size headers: the 24-byte datagram header and the 12-byte Xtc header, with the
//! transition, type, damage and source encodings they carry.

use super::bytes::{u16_at, u32_at, u64_at};
use super::error::{FormatError, FormatResult};
use serde::Serialize;
use std::fmt;

/// Size of a datagram header: time (8), env (4), root Xtc header (12).
pub const DGRAM_HEADER_SIZE: usize = 24;
/// Size of an Xtc header: src (4), damage (2), contains (2), extent (4).
pub const XTC_HEADER_SIZE: usize = 12;
/// Seconds between the Unix epoch and the EPICS epoch (1990-01-01 UTC).
pub const EPICS_EPOCH_UNIX_SECONDS: u64 = 631_152_000;

/// The DAQ transition kind, stored in `env` bits 27..24.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[repr(u8)]
pub enum TransitionId {
    ClearReadout = 0,
    Reset = 1,
    Configure = 2,
    Unconfigure = 3,
    BeginRun = 4,
    EndRun = 5,
    BeginStep = 6,
    EndStep = 7,
    Enable = 8,
    Disable = 9,
    SlowUpdate = 10,
    Unused11 = 11,
    L1Accept = 12,
}

impl TransitionId {
    /// Every id, in numeric order.
    pub const ALL: [TransitionId; 13] = [
        Self::ClearReadout,
        Self::Reset,
        Self::Configure,
        Self::Unconfigure,
        Self::BeginRun,
        Self::EndRun,
        Self::BeginStep,
        Self::EndStep,
        Self::Enable,
        Self::Disable,
        Self::SlowUpdate,
        Self::Unused11,
        Self::L1Accept,
    ];

    /// Decodes the 4-bit service field; 13..15 are not transitions.
    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.get(v as usize).copied()
    }

    /// psana's name of the transition.
    pub fn name(self) -> &'static str {
        match self {
            Self::ClearReadout => "ClearReadout",
            Self::Reset => "Reset",
            Self::Configure => "Configure",
            Self::Unconfigure => "Unconfigure",
            Self::BeginRun => "BeginRun",
            Self::EndRun => "EndRun",
            Self::BeginStep => "BeginStep",
            Self::EndStep => "EndStep",
            Self::Enable => "Enable",
            Self::Disable => "Disable",
            Self::SlowUpdate => "SlowUpdate",
            Self::Unused11 => "Unused_11",
            Self::L1Accept => "L1Accept",
        }
    }

    /// True for everything but L1Accept: transitions must be present in every stream.
    pub fn is_transition(self) -> bool {
        self != Self::L1Accept
    }
}

impl fmt::Display for TransitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Damage flags of an Xtc (bits 11..0) plus user bits (15..12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, Serialize)]
pub struct Damage(pub u16);

impl Damage {
    pub const TRUNCATED: u16 = 1 << 0;
    pub const OUT_OF_ORDER: u16 = 1 << 1;
    pub const OUT_OF_SYNCH: u16 = 1 << 2;
    pub const CORRUPTED: u16 = 1 << 3;
    pub const DROPPED_CONTRIBUTION: u16 = 1 << 4;
    pub const MISSING_DATA: u16 = 1 << 5;
    pub const TIMED_OUT: u16 = 1 << 6;

    /// True when any bit is set.
    pub fn any(self) -> bool {
        self.0 != 0
    }

    /// True when the Corrupted flag is set: the contents must not be walked.
    pub fn corrupted(self) -> bool {
        self.0 & Self::CORRUPTED != 0
    }

    /// Flag bits without the user bits.
    pub fn flags(self) -> u16 {
        self.0 & 0x0FFF
    }

    /// User-defined bits (15..12).
    pub fn user_bits(self) -> u16 {
        self.0 >> 12
    }
}

/// The kinds of Xtc container (TypeId id field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TypeKind {
    Parent,
    ShapesData,
    Shapes,
    Data,
    Names,
    /// An id this reader does not know; kept so callers can skip it.
    Other(u16),
}

/// The `contains` field: a type id (bits 11..0) and version (bits 15..12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TypeId(pub u16);

impl TypeId {
    pub const PARENT: TypeId = TypeId(0);
    pub const SHAPES_DATA: TypeId = TypeId(1);
    pub const SHAPES: TypeId = TypeId(2);
    pub const DATA: TypeId = TypeId(3);
    pub const NAMES: TypeId = TypeId(4);

    /// The type id without the version.
    pub fn id(self) -> u16 {
        self.0 & 0x0FFF
    }

    /// The version nibble.
    pub fn version(self) -> u16 {
        self.0 >> 12
    }

    /// The known kind of this type id.
    pub fn kind(self) -> TypeKind {
        match self.id() {
            0 => TypeKind::Parent,
            1 => TypeKind::ShapesData,
            2 => TypeKind::Shapes,
            3 => TypeKind::Data,
            4 => TypeKind::Names,
            other => TypeKind::Other(other),
        }
    }
}

/// A NamesId: node id (12 bits) and names id (8 bits), packed as in the `src` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamesId(pub u32);

impl NamesId {
    /// Packs `(node, id)` the way the DAQ does.
    pub fn new(node: u32, id: u8) -> Self {
        Self(((node & 0xFFF) << 8) | u32::from(id))
    }

    /// The DRP node id.
    pub fn node(self) -> u32 {
        (self.0 >> 8) & 0xFFF
    }

    /// The names id within the node.
    pub fn id(self) -> u32 {
        self.0 & 0xFF
    }
}

impl fmt::Display for NamesId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {})", self.node(), self.id())
    }
}

/// The 12-byte header of every Xtc container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XtcHeader {
    pub src: u32,
    pub damage: Damage,
    pub contains: TypeId,
    /// Size including this header.
    pub extent: u32,
}

impl XtcHeader {
    /// Parses the header at `pos` in `b`; `base` is the absolute offset of `b[0]` for errors.
    pub fn parse(b: &[u8], pos: usize, base: u64) -> FormatResult<Self> {
        let at = base + pos as u64;
        let (Some(src), Some(damage), Some(contains), Some(extent)) = (
            u32_at(b, pos),
            u16_at(b, pos + 4),
            u16_at(b, pos + 6),
            u32_at(b, pos + 8),
        ) else {
            return Err(FormatError::new(
                at,
                format!(
                    "Xtc header needs 12 bytes, only {} left",
                    b.len().saturating_sub(pos)
                ),
            ));
        };
        if (extent as usize) < XTC_HEADER_SIZE {
            return Err(FormatError::new(
                at,
                format!("Xtc extent {extent} is smaller than its 12-byte header"),
            ));
        }
        Ok(Self {
            src,
            damage: Damage(damage),
            contains: TypeId(contains),
            extent,
        })
    }

    /// Appends the 12 header bytes to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.src.to_le_bytes());
        out.extend_from_slice(&self.damage.0.to_le_bytes());
        out.extend_from_slice(&self.contains.0.to_le_bytes());
        out.extend_from_slice(&self.extent.to_le_bytes());
    }
}

/// The 24-byte datagram header: timestamp, env and the root Xtc header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DgramHeader {
    /// The event key, `sec << 32 | nsec` (EPICS epoch seconds).
    pub timestamp: u64,
    pub env: u32,
    pub root: XtcHeader,
}

impl DgramHeader {
    /// Parses a header from the first 24 bytes of `b`; `base` is the file offset of `b[0]`.
    ///
    /// Checks what a header can prove on its own: a known transition id, a Parent root and an
    /// extent of at least 12 bytes.
    pub fn parse(b: &[u8], base: u64) -> FormatResult<Self> {
        let timestamp = u64_at(b, 0).ok_or_else(|| {
            FormatError::new(
                base,
                format!("datagram header needs 24 bytes, only {}", b.len()),
            )
        })?;
        let env = u32_at(b, 8).ok_or_else(|| {
            FormatError::new(
                base,
                format!("datagram header needs 24 bytes, only {}", b.len()),
            )
        })?;
        let root = XtcHeader::parse(b, 12, base)?;
        let hdr = Self {
            timestamp,
            env,
            root,
        };
        let service = ((env >> 24) & 0xF) as u8;
        match TransitionId::from_u8(service) {
            Some(TransitionId::Unused11) | None => {
                return Err(FormatError::new(
                    base + 8,
                    format!("env 0x{env:08X}: {service} is not a transition id"),
                ));
            }
            Some(_) => {}
        }
        if root.contains.kind() != TypeKind::Parent {
            return Err(FormatError::new(
                base + 18,
                format!(
                    "root Xtc must be a Parent, found TypeId 0x{:04X}",
                    root.contains.0
                ),
            ));
        }
        if timestamp as u32 >= 1_000_000_000 {
            return Err(FormatError::new(
                base,
                format!(
                    "timestamp nanoseconds {} are not below 10^9",
                    timestamp & 0xFFFF_FFFF
                ),
            ));
        }
        Ok(hdr)
    }

    /// Total datagram size in bytes (header plus payload).
    pub fn size(&self) -> u64 {
        12 + u64::from(self.root.extent)
    }

    /// Seconds since the EPICS epoch.
    pub fn seconds(&self) -> u32 {
        (self.timestamp >> 32) as u32
    }

    /// Nanoseconds within the second.
    pub fn nanoseconds(&self) -> u32 {
        self.timestamp as u32
    }

    /// The transition id (validated by `parse`).
    pub fn service(&self) -> TransitionId {
        TransitionId::from_u8(((self.env >> 24) & 0xF) as u8).unwrap_or(TransitionId::Unused11)
    }

    /// The readout-group mask (env bits 15..0).
    pub fn readout_groups(&self) -> u16 {
        self.env as u16
    }

    /// Encodes the 24 header bytes into `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_le_bytes());
        out.extend_from_slice(&self.env.to_le_bytes());
        self.root.write(out);
    }
}

/// Builds the `env` word from a transition and a readout-group mask.
pub fn make_env(service: TransitionId, readout_groups: u16) -> u32 {
    (u32::from(service as u8) << 24) | u32::from(readout_groups)
}
