//! A datagram: header plus root payload, borrowed from a buffer.

use super::container::{XtcNode, for_each_leaf};
use super::error::{FormatError, FormatResult};
use super::header::{DGRAM_HEADER_SIZE, DgramHeader, TransitionId, TypeKind};
use super::names::NamesLookup;
use super::shapes_data::{self, Block};

/// One datagram's bytes and where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Dgram<'a> {
    pub header: DgramHeader,
    /// Absolute offset of the datagram in its file.
    pub offset: u64,
    /// The whole datagram, header included.
    pub bytes: &'a [u8],
}

impl<'a> Dgram<'a> {
    /// Parses a complete datagram occupying exactly `bytes`, found at file offset `offset`.
    pub fn parse(bytes: &'a [u8], offset: u64) -> FormatResult<Self> {
        let header = DgramHeader::parse(bytes, offset)?;
        if header.size() != bytes.len() as u64 {
            return Err(FormatError::new(
                offset + 20,
                format!(
                    "root extent {} gives a {}-byte datagram, buffer holds {}",
                    header.root.extent,
                    header.size(),
                    bytes.len()
                ),
            ));
        }
        Ok(Self {
            header,
            offset,
            bytes,
        })
    }

    /// The transition id.
    pub fn service(&self) -> TransitionId {
        self.header.service()
    }

    /// The root Parent Xtc.
    pub fn root(&self) -> XtcNode<'a> {
        XtcNode {
            header: self.header.root,
            offset: self.offset + 12,
            payload: &self.bytes[DGRAM_HEADER_SIZE..],
        }
    }

    /// True when the root or any Xtc below it carries damage bits.
    pub fn damaged(&self) -> bool {
        self.header.root.damage.any()
    }

    /// Every Names/ShapesData (or unknown) leaf under the root, in file order.
    pub fn leaves(&self) -> FormatResult<Vec<XtcNode<'a>>> {
        let mut out = Vec::new();
        for_each_leaf(&self.root(), &mut |leaf| {
            out.push(leaf);
            Ok(())
        })?;
        Ok(out)
    }

    /// Decodes every ShapesData with `lookup`; unknown NamesIds are errors.
    pub fn blocks<'s>(&self, lookup: &'s NamesLookup) -> FormatResult<Vec<Block<'a, 's>>> {
        let mut out = Vec::new();
        for_each_leaf(&self.root(), &mut |leaf| {
            if leaf.header.contains.kind() == TypeKind::ShapesData {
                out.push(shapes_data::decode(&leaf, lookup)?);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Validates the whole tree: every extent, every Names, and every ShapesData against
    /// `lookup` (a Configure validates against its own Names).
    pub fn validate(&self, lookup: &NamesLookup) -> FormatResult<()> {
        let own;
        let lookup = if self.service() == TransitionId::Configure {
            own = NamesLookup::from_configure(&self.root())?;
            &own
        } else {
            lookup
        };
        self.blocks(lookup).map(|_| ())
    }
}
