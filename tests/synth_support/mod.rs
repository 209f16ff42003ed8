//! Reading a synthetic run back through the XTC2 reader: every event's raw slab, Jungfrau
//! scalars, and the ePix10ka panel configurations from the Configure.
#![allow(dead_code)]

use lclstreamer::detector::epix10ka::PanelConfig;
use lclstreamer::synth::{DetectorSpec, SynthParams};
use lclstreamer::xtc::eventbuild::EventBuilder;
use lclstreamer::xtc::index::StreamIndexer;
use lclstreamer::xtc::run::{RunFiles, discover};
use lclstreamer::xtc::{Dgram, NamesLookup, TransitionId, read_dgram_at};
use std::collections::BTreeMap;

/// One L1Accept read back.
pub struct Frame {
    pub timestamp: u64,
    /// Raw slab (segments stacked in segment order).
    pub raw: Vec<u16>,
    /// Bigdata chunk of each stream's part.
    pub chunks: Vec<u32>,
    /// Jungfrau per-segment scalars (frame_cnt, numHotPixels).
    pub scalars: Vec<(u64, u32)>,
}

/// Everything read back from a run.
pub struct ReadBack {
    pub run: RunFiles,
    pub frames: Vec<Frame>,
    /// Transitions in order, with timestamps.
    pub transitions: Vec<(TransitionId, u64)>,
    /// ePix10ka configuration per segment (from the Configure).
    pub configs: BTreeMap<u32, PanelConfig>,
}

fn configure_of(ix: &StreamIndexer) -> Vec<u8> {
    let (_, path) = &ix.chunk_paths()[0];
    let mut r = lclstreamer::xtc::DgramReader::open(path).unwrap();
    let mut buf = Vec::new();
    let d = r.next_into(&mut buf).unwrap().unwrap();
    assert_eq!(d.service(), TransitionId::Configure);
    d.bytes.to_vec()
}

/// Reads every event of the run written for `p` (small data when `use_smd`).
pub fn read_run(p: &SynthParams, spec: &DetectorSpec, use_smd: bool) -> ReadBack {
    let run = discover(&p.out, &p.exp, p.run).unwrap();
    assert_eq!(run.streams.len(), p.streams);
    let mut indexers = Vec::new();
    let mut lookups = Vec::new();
    let mut configs = BTreeMap::new();
    for s in &run.streams {
        let ix = StreamIndexer::open(s, use_smd).unwrap();
        let conf = configure_of(&ix);
        let d = Dgram::parse(&conf, 0).unwrap();
        let lookup = NamesLookup::from_configure(&d.root()).unwrap();
        for b in d.blocks(&lookup).unwrap() {
            if b.schema.alg.name == "config" {
                let apc = b.var("asicPixelConfig").unwrap().elements::<u8>().unwrap();
                let tr = b.var("trbit").unwrap().elements::<u8>().unwrap();
                let seg = b.schema.segment;
                configs.insert(seg, PanelConfig::new(seg as usize, &apc, &tr).unwrap());
            }
        }
        lookups.push(lookup);
        indexers.push(ix);
    }
    let paths: Vec<Vec<(u32, std::path::PathBuf)>> =
        indexers.iter().map(|i| i.chunk_paths().to_vec()).collect();
    let n = indexers.len();
    let mut frames = Vec::new();
    let mut transitions = Vec::new();
    let mut buf = Vec::new();
    for ev in EventBuilder::new(indexers, vec![true; n]) {
        let ev = ev.unwrap();
        assert!(
            ev.complete(),
            "incomplete {:?} at {}",
            ev.service,
            ev.timestamp
        );
        if ev.service != TransitionId::L1Accept {
            transitions.push((ev.service, ev.timestamp));
            continue;
        }
        let mut raw = vec![0u16; spec.frame_len()];
        let mut chunks = Vec::new();
        let mut scalars = vec![(0u64, 0u32); spec.nsegs];
        let mut filled = 0;
        for part in &ev.parts {
            let loc = part.entry.location.unwrap();
            chunks.push(loc.chunk);
            let path = &paths[part.stream]
                .iter()
                .find(|(c, _)| *c == loc.chunk)
                .unwrap()
                .1;
            let f = std::fs::File::open(path).unwrap();
            let d = read_dgram_at(&f, path, loc.offset, loc.size, &mut buf).unwrap();
            d.validate(&lookups[part.stream]).unwrap();
            for b in d.blocks(&lookups[part.stream]).unwrap() {
                assert_eq!(b.schema.det_name, spec.det_name);
                let seg = b.schema.segment as usize;
                let px = b.var("raw").unwrap().elements::<u16>().unwrap();
                let len = spec.seg_len();
                raw[seg * len..(seg + 1) * len].copy_from_slice(&px);
                filled += 1;
                if let Some(fc) = b.var("frame_cnt") {
                    let get = |name: &str| b.var(name).unwrap().scalar().unwrap().as_i64().unwrap();
                    assert_eq!(get("frame_cnt"), fc.scalar().unwrap().as_i64().unwrap());
                    scalars[seg] = (get("frame_cnt") as u64, get("numHotPixels") as u32);
                }
            }
        }
        assert_eq!(filled, spec.nsegs);
        frames.push(Frame {
            timestamp: ev.timestamp,
            raw,
            chunks,
            scalars,
        });
    }
    ReadBack {
        run,
        frames,
        transitions,
        configs,
    }
}

/// The truth lines of the run.
pub fn read_truth(p: &SynthParams) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(p.side_dir().join("truth.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
