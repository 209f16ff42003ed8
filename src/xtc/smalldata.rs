//! Small data (`smalldata/*.smd.xtc2`): one datagram per bigdata datagram, transitions copied,
//! L1Accepts replaced by an (offset, size) index into the current bigdata chunk; and the
//! `chunkinfo` block that announces a new chunk in an Enable.

use super::container::XtcNode;
use super::dgram::Dgram;
use super::error::{FormatError, FormatResult};
use super::header::{DGRAM_HEADER_SIZE, NamesId, TransitionId, TypeKind, XTC_HEADER_SIZE};
use super::names::{Alg, DataType, NamesLookup, Schema, VarDesc};
use super::shapes_data::decode_with;
use super::writer::{DgramBuilder, VarData, encode_names};

/// NamesId of the smdinfo block as the offline `smdwriter` assigns it (node 512, id 0).
pub const SMDINFO_NAMES_ID: NamesId = NamesId(0x0002_0000);
/// NamesId the DAQ reserves for chunkinfo on `node`.
pub fn chunkinfo_names_id(node: u32) -> NamesId {
    NamesId::new(node, 252)
}
/// NamesId the DAQ reserves for runinfo on `node`.
pub fn runinfo_names_id(node: u32) -> NamesId {
    NamesId::new(node, 255)
}

/// The `smdinfo` schema appended to every small-data Configure.
pub fn smdinfo_schema() -> Schema {
    Schema {
        det_type: "offset".into(),
        det_name: "smdinfo".into(),
        det_id: String::new(),
        alg: Alg::new("offsetAlg", 0, 0, 0),
        segment: 0,
        vars: vec![
            VarDesc::new("intOffset", DataType::UINT64, 0),
            VarDesc::new("intDgramSize", DataType::UINT64, 0),
        ],
    }
}

/// The `chunkinfo` schema (`chunkid` UINT32, `filename` CHARSTR).
pub fn chunkinfo_schema(segment: u32) -> Schema {
    Schema {
        det_type: "chunkinfo".into(),
        det_name: "chunkinfo".into(),
        det_id: String::new(),
        alg: Alg::new("chunkinfo", 0, 0, 1),
        segment,
        vars: vec![
            VarDesc::new("chunkid", DataType::UINT32, 0),
            VarDesc::new("filename", DataType::CHARSTR, 1),
        ],
    }
}

/// The `runinfo` schema (`expt` CHARSTR, `runnum` UINT32).
pub fn runinfo_schema(segment: u32) -> Schema {
    Schema {
        det_type: "runinfo".into(),
        det_name: "runinfo".into(),
        det_id: String::new(),
        alg: Alg::new("runinfo", 0, 0, 1),
        segment,
        vars: vec![
            VarDesc::new("expt", DataType::CHARSTR, 1),
            VarDesc::new("runnum", DataType::UINT32, 0),
        ],
    }
}

/// Builds the small-data datagram for one bigdata datagram found at `offset` in its chunk.
///
/// `smd_id` is where the smdinfo Names lives (see [`SMDINFO_NAMES_ID`]).
pub fn smd_dgram_for(big: &Dgram<'_>, offset: u64, smd_id: NamesId) -> FormatResult<Vec<u8>> {
    let h = big.header;
    match big.service() {
        TransitionId::L1Accept => {
            let mut b = DgramBuilder::new(h.timestamp, TransitionId::L1Accept, 0, h.root.src);
            b.add_data(
                smd_id,
                &smdinfo_schema(),
                &[VarData::scalar(offset), VarData::scalar(h.size())],
            )?;
            let mut out = b.finish();
            out[8..12].copy_from_slice(&h.env.to_le_bytes());
            out[16..18].copy_from_slice(&h.root.damage.0.to_le_bytes());
            Ok(out)
        }
        TransitionId::Configure => {
            let mut out = big.bytes.to_vec();
            encode_names(smd_id, &smdinfo_schema(), &mut out)?;
            let extent = (out.len() - DGRAM_HEADER_SIZE + XTC_HEADER_SIZE) as u32;
            out[20..24].copy_from_slice(&extent.to_le_bytes());
            Ok(out)
        }
        TransitionId::EndRun => {
            let mut out = big.bytes[..DGRAM_HEADER_SIZE].to_vec();
            out[20..24].copy_from_slice(&(XTC_HEADER_SIZE as u32).to_le_bytes());
            Ok(out)
        }
        _ => Ok(big.bytes.to_vec()),
    }
}

/// Where the smdinfo block lives in a lookup built from a small-data Configure (found by name).
pub fn find_smdinfo(lookup: &NamesLookup) -> Option<NamesId> {
    lookup.find("smdinfo", "offsetAlg")
}

/// Reads the (offset, size) of the bigdata datagram that a small-data L1Accept indexes.
pub fn smd_offset_size(dgram: &Dgram<'_>, lookup: &NamesLookup) -> FormatResult<(u64, u64)> {
    let root = dgram.root();
    for child in root.children() {
        let child = child?;
        if child.header.contains.kind() != TypeKind::ShapesData {
            continue;
        }
        let id = NamesId(child.header.src);
        let Some(schema) = lookup.get(id) else {
            continue;
        };
        if schema.det_name != "smdinfo" {
            continue;
        }
        let block = decode_with(&child, id, schema)?;
        let get = |name: &str| {
            block
                .var(name)
                .and_then(|v| v.scalar())
                .and_then(|s| s.as_i64())
                .map(|v| v as u64)
                .ok_or_else(|| FormatError::new(child.offset, format!("smdinfo lacks {name}")))
        };
        return Ok((get("intOffset")?, get("intDgramSize")?));
    }
    Err(FormatError::new(
        dgram.offset,
        "small-data L1Accept carries no smdinfo block",
    ))
}

/// A chunk announcement: the new chunk id and its file name (in the same directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkInfo {
    pub chunk_id: u32,
    pub filename: String,
}

/// The chunkinfo carried by an Enable, if any (found by detector name).
pub fn chunk_info(dgram: &Dgram<'_>, lookup: &NamesLookup) -> FormatResult<Option<ChunkInfo>> {
    if dgram.service() != TransitionId::Enable {
        return Ok(None);
    }
    let mut found = None;
    let root: XtcNode<'_> = dgram.root();
    super::container::for_each_leaf(&root, &mut |leaf| {
        if leaf.header.contains.kind() != TypeKind::ShapesData || found.is_some() {
            return Ok(());
        }
        let id = NamesId(leaf.header.src);
        if let Some(schema) = lookup.get(id).filter(|s| s.det_name == "chunkinfo") {
            let block = decode_with(&leaf, id, schema)?;
            let chunk_id = block
                .var("chunkid")
                .and_then(|v| v.scalar())
                .and_then(|s| s.as_i64())
                .ok_or_else(|| FormatError::new(leaf.offset, "chunkinfo lacks chunkid"))?;
            let filename = block
                .var("filename")
                .and_then(|v| v.string())
                .ok_or_else(|| FormatError::new(leaf.offset, "chunkinfo lacks filename"))?;
            if filename.contains('/') || filename.is_empty() {
                return Err(FormatError::new(
                    leaf.offset,
                    format!("chunkinfo filename {filename:?} is not a plain file name"),
                ));
            }
            found = Some(ChunkInfo {
                chunk_id: chunk_id as u32,
                filename,
            });
        }
        Ok(())
    })?;
    Ok(found)
}
