//! Reading a synthetic run back through the XTC2 reader and `detector::frame`: the detector
//! model its Configure declares, every event's raw slab, Jungfrau scalars, and the ePix10ka
//! panel configurations.
#![allow(dead_code)]

use lclstreamer::detector::epix10ka::PanelConfig;
use lclstreamer::detector::frame::{Configured, SlabAssembler};
use lclstreamer::detector::model::DetectorModel;
use lclstreamer::synth::SynthParams;
use lclstreamer::xtc::eventbuild::EventBuilder;
use lclstreamer::xtc::index::StreamIndexer;
use lclstreamer::xtc::run::{RunFiles, discover};
use lclstreamer::xtc::{TransitionId, read_dgram_at};

/// One L1Accept read back.
pub struct Frame {
    pub timestamp: u64,
    /// Raw slab (present segments stacked in segment-id order).
    pub raw: Vec<u16>,
    /// Bigdata chunk of each stream's part.
    pub chunks: Vec<u32>,
    /// Jungfrau scalars (frame_cnt, numHotPixels) per slab position.
    pub scalars: Vec<(u64, u32)>,
}

/// Everything read back from a run.
pub struct ReadBack {
    pub run: RunFiles,
    pub frames: Vec<Frame>,
    /// Transitions in order, with timestamps.
    pub transitions: Vec<(TransitionId, u64)>,
    /// The model the run's Configure declares.
    pub model: DetectorModel,
    /// ePix10ka configuration per present segment, slab order.
    pub configs: Vec<PanelConfig>,
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
pub fn read_run(p: &SynthParams, use_smd: bool) -> ReadBack {
    let det = &p.detector.model.det_name;
    let run = discover(&p.out, &p.exp, p.run).unwrap();
    assert_eq!(run.streams.len(), p.total_streams());
    let mut indexers = Vec::new();
    let mut configures = Vec::new();
    for s in &run.streams {
        let ix = StreamIndexer::open(s, use_smd).unwrap();
        configures.push(configure_of(&ix));
        indexers.push(ix);
    }
    let per_stream: Vec<(u32, &[u8])> = configures
        .iter()
        .enumerate()
        .map(|(s, b)| (s as u32, &b[..]))
        .collect();
    let conf = Configured::from_configure(det, &per_stream, None).unwrap();
    let m = conf.model.clone();
    let paths: Vec<Vec<(u32, std::path::PathBuf)>> =
        indexers.iter().map(|i| i.chunk_paths().to_vec()).collect();
    let n = indexers.len();
    let mut frames = Vec::new();
    let mut transitions = Vec::new();
    let mut buf = Vec::new();
    let mut slabs = SlabAssembler::default();
    let expected = (0..n).map(|s| s < p.streams).collect();
    for ev in EventBuilder::new(indexers, expected) {
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
        let mut raw = vec![0u16; m.frame_len()];
        let mut chunks = Vec::new();
        let mut scalars = vec![(0u64, 0u32); m.nsegs()];
        slabs.begin(&conf);
        for part in ev.parts.iter().filter(|part| part.stream < p.streams) {
            let loc = part.entry.location.unwrap();
            chunks.push(loc.chunk);
            let path = &paths[part.stream]
                .iter()
                .find(|(c, _)| *c == loc.chunk)
                .unwrap()
                .1;
            let f = std::fs::File::open(path).unwrap();
            let d = read_dgram_at(&f, path, loc.offset, loc.size, &mut buf).unwrap();
            let lookup = &conf.lookups[&(part.stream as u32)];
            d.validate(lookup).unwrap();
            slabs.add(&conf, part.stream as u32, &d, &mut raw).unwrap();
            for b in d.blocks(lookup).unwrap() {
                assert_eq!(&b.schema.det_name, det);
                if let Some(fc) = b.var("frame_cnt") {
                    let get = |name: &str| b.var(name).unwrap().scalar().unwrap().as_i64().unwrap();
                    assert_eq!(get("frame_cnt"), fc.scalar().unwrap().as_i64().unwrap());
                    let k = m.slab_index(b.schema.segment).unwrap();
                    scalars[k] = (get("frame_cnt") as u64, get("numHotPixels") as u32);
                }
            }
        }
        slabs.finish(&conf).unwrap();
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
        model: m,
        configs: conf.panel_configs,
    }
}

/// The truth lines of the run.
pub fn read_truth(p: &SynthParams) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(p.side_dir().join("truth.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
