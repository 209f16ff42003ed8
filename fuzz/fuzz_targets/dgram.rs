#![no_main]
//! Feeds arbitrary bytes to the datagram parser: header, container walk, Names and ShapesData
//! decoding, small-data and chunkinfo lookups. Any panic is a bug.

use lclstreamer::xtc::smalldata::{chunk_info, smd_offset_size};
use lclstreamer::xtc::{Dgram, DgramHeader, NamesLookup, TransitionId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut lookup = NamesLookup::new();
    let mut pos = 0usize;
    while pos + 24 <= data.len() {
        let Ok(h) = DgramHeader::parse(&data[pos..], pos as u64) else {
            return;
        };
        let end = pos as u64 + h.size();
        if end > data.len() as u64 {
            return;
        }
        let Ok(d) = Dgram::parse(&data[pos..end as usize], pos as u64) else {
            return;
        };
        if d.service() == TransitionId::Configure {
            match NamesLookup::from_configure(&d.root()) {
                Ok(l) => lookup = l,
                Err(_) => return,
            }
        }
        let _ = d.leaves();
        let _ = d.validate(&lookup);
        if let Ok(blocks) = d.blocks(&lookup) {
            for b in &blocks {
                for v in &b.vars {
                    let _ = v.to_json(64);
                    let _ = v.elements::<u16>();
                }
                let _ = b.enum_dicts();
            }
        }
        let _ = smd_offset_size(&d, &lookup);
        let _ = chunk_info(&d, &lookup);
        pos = end as usize;
    }
});
