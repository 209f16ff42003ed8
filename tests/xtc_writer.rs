//! The writer reproduces the DAQ's bytes, and what it writes reads back identically.

mod common;
use common::*;
use lclstreamer::xtc::eventbuild::EventBuilder;
use lclstreamer::xtc::index::StreamIndexer;
use lclstreamer::xtc::run::discover_in_dir;
use lclstreamer::xtc::smalldata::{
    SMDINFO_NAMES_ID, chunkinfo_schema, runinfo_schema, smd_dgram_for,
};
use lclstreamer::xtc::stream_writer::StreamWriter;
use lclstreamer::xtc::writer::{ChildOrder, DgramBuilder, VarData};
use lclstreamer::xtc::*;
use proptest::prelude::*;

/// Re-encodes a datagram from its decoded content.
fn reencode(d: &Dgram<'_>, lookup: &NamesLookup) -> Vec<u8> {
    let h = d.header;
    let mut b = DgramBuilder::new(h.timestamp, d.service(), h.readout_groups(), h.root.src);
    for leaf in d.leaves().unwrap() {
        let id = NamesId(leaf.header.src);
        match leaf.header.contains.id() {
            4 => {
                b.add_names(id, &Schema::parse(&leaf).unwrap()).unwrap();
            }
            1 => {
                let block = lclstreamer::xtc::shapes_data::decode(&leaf, lookup).unwrap();
                let values: Vec<VarData> = block
                    .vars
                    .iter()
                    .map(|v| VarData {
                        shape: v.shape,
                        bytes: v.bytes.into(),
                    })
                    .collect();
                let order = if block.data_first {
                    ChildOrder::DataFirst
                } else {
                    ChildOrder::ShapesFirst
                };
                b.add_data_ordered(id, block.schema, &values, order)
                    .unwrap();
            }
            other => panic!("unexpected leaf type {other}"),
        }
    }
    let mut out = b.finish();
    out[8..12].copy_from_slice(&h.env.to_le_bytes());
    out
}

#[test]
fn reencoding_the_samples_gives_the_same_bytes() {
    let mut n = 0;
    for f in [
        "detector/test_epix_calib.xtc2",
        "mixed_rate/xpptut15-r0014-s000-c000.xtc2",
        "mixed_rate/xpptut15-r0014-s001-c000.xtc2",
        "multi-seg-epics/xpptut15-r0014-s001-c000.xtc2",
        "chunking/xpptut15-r0014-s000-c000.xtc2",
        "multirun_w_new_config/xpptut15-r0014-s000-c000.xtc2",
    ] {
        let mut lookup = NamesLookup::new();
        for d in read_all(&sample(f)) {
            let v = d.view();
            if v.service() == TransitionId::Configure {
                lookup = NamesLookup::from_configure(&v.root()).unwrap();
            }
            assert_same_bytes(
                &reencode(&v, &lookup),
                &canonical(&d.bytes),
                &format!("{f} at {}", d.offset),
            );
            n += 1;
        }
    }
    assert!(n > 200);
}

/// Zeroes the bytes after the first NUL of every Names string field: the DAQ's `strncpy` into
/// unzeroed buffers leaves garbage there that carries no information.
fn canonical(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let d = Dgram::parse(bytes, 0).unwrap();
    let mut fields = Vec::new();
    for leaf in d.leaves().unwrap() {
        if leaf.header.contains.id() != 4 {
            continue;
        }
        let p = leaf.payload_offset() as usize;
        fields.extend((0..4).map(|i| p + 4 + 256 * i));
        let n = (leaf.payload.len() - 1036) / 524;
        for k in 0..n {
            let e = p + 1036 + 524 * k;
            fields.push(e);
            fields.push(e + 260);
        }
    }
    for f in fields {
        if let Some(nul) = out[f..f + 256].iter().position(|&c| c == 0) {
            out[f + nul..f + 256].fill(0);
        }
    }
    out
}

#[test]
fn small_data_writer_reproduces_smdwriter_output() {
    for dir in [
        "intg_det",
        "fakesteps",
        "mixed_rate",
        "multi-seg-epics",
        "multirun_w_new_config",
    ] {
        let run = discover_in_dir(&samples().join(dir), "xpptut15", 14).unwrap();
        for s in &run.streams {
            let big = read_all(&s.chunks[0].path);
            let smd = read_all(s.smd.as_ref().unwrap());
            for (b, m) in big.iter().zip(&smd) {
                let out = canonical(&smd_dgram_for(&b.view(), b.offset, SMDINFO_NAMES_ID).unwrap());
                assert_same_bytes(
                    &out,
                    &canonical(&m.bytes),
                    &format!("{dir} s{} at {}", s.stream, b.offset),
                );
            }
        }
    }
}

fn ts(i: u64) -> u64 {
    (1_000_000_000u64 << 32) | i
}

#[test]
fn stream_writer_chunks_and_small_data_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("xtc");
    let raw_schema = Schema {
        det_type: "epix10ka".into(),
        det_name: "epix10k2M".into(),
        det_id: "serial-0".into(),
        alg: Alg::new("raw", 2, 0, 1),
        segment: 3,
        vars: vec![VarDesc::new("raw", DataType::UINT16, 2)],
    };
    let (raw_id, run_id, chunk_id) = (
        NamesId::new(0, 10),
        NamesId::new(0, 255),
        NamesId::new(0, 252),
    );
    let mut w = StreamWriter::create(&dir, "mfxl1234", 7, 2, true).unwrap();
    let mut c = DgramBuilder::new(ts(0), TransitionId::Configure, 1, 2);
    c.add_names(raw_id, &raw_schema).unwrap();
    c.add_names(run_id, &runinfo_schema(0)).unwrap();
    c.add_names(chunk_id, &chunkinfo_schema(0)).unwrap();
    w.write(c.bytes()).unwrap();
    let mut br = DgramBuilder::new(ts(1), TransitionId::BeginRun, 1, 2);
    br.add_data(
        run_id,
        &runinfo_schema(0),
        &[VarData::string("mfxl1234"), VarData::scalar(7u32)],
    )
    .unwrap();
    w.write(br.bytes()).unwrap();
    w.write(DgramBuilder::new(ts(2), TransitionId::BeginStep, 1, 2).bytes())
        .unwrap();
    w.write(DgramBuilder::new(ts(3), TransitionId::Enable, 1, 2).bytes())
        .unwrap();
    let mut t = 4;
    let mut written = Vec::new();
    for step in 0..3 {
        for _ in 0..5 {
            let px: Vec<u16> = (0..12).map(|i| (t * 100 + i) as u16).collect();
            let mut l1 = DgramBuilder::new(ts(t), TransitionId::L1Accept, 1, 2);
            l1.add_data(raw_id, &raw_schema, &[VarData::array(&[3, 4], &px)])
                .unwrap();
            written.push((ts(t), px));
            w.write(l1.bytes()).unwrap();
            t += 1;
        }
        w.write(DgramBuilder::new(ts(t), TransitionId::Disable, 1, 2).bytes())
            .unwrap();
        t += 1;
        if step < 2 {
            let en = DgramBuilder::new(ts(t), TransitionId::Enable, 1, 2);
            w.write_enable_and_switch_chunk(en).unwrap();
            t += 1;
        }
    }
    w.write(DgramBuilder::new(ts(t), TransitionId::EndStep, 1, 2).bytes())
        .unwrap();
    w.write(DgramBuilder::new(ts(t + 1), TransitionId::EndRun, 1, 2).bytes())
        .unwrap();
    let files = w.finish().unwrap();
    assert_eq!(files.len(), 4);
    assert!(files.iter().all(|f| f.is_file()));
    assert!(!std::fs::read_dir(&dir).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".inprogress")
    }));

    let run = discover_in_dir(&dir, "mfxl1234", 7).unwrap();
    assert_eq!(run.streams.len(), 1);
    assert_eq!(run.streams[0].stream, 2);
    assert_eq!(run.streams[0].chunks.len(), 3);
    for use_smd in [true, false] {
        let ix = StreamIndexer::open(&run.streams[0], use_smd).unwrap();
        let evs: Vec<_> = EventBuilder::new(vec![ix], vec![true])
            .map(|e| e.unwrap())
            .collect();
        let mut got = Vec::new();
        let mut chunks = Vec::new();
        for e in evs.iter().filter(|e| e.service == TransitionId::L1Accept) {
            let loc = e.parts[0].entry.location.unwrap();
            chunks.push(loc.chunk);
            let path = &run.streams[0].chunks[loc.chunk as usize].path;
            let f = std::fs::File::open(path).unwrap();
            let mut buf = Vec::new();
            let d = read_dgram_at(&f, path, loc.offset, loc.size, &mut buf).unwrap();
            let lookup = first_lookup(&read_all(&run.streams[0].chunks[0].path));
            let b = d.blocks(&lookup).unwrap();
            got.push((
                d.header.timestamp,
                b[0].var("raw").unwrap().elements::<u16>().unwrap().to_vec(),
            ));
        }
        assert_eq!(got, written);
        assert_eq!(chunks, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2]);
    }
}

#[test]
fn writer_rejects_values_that_do_not_fit_the_schema() {
    let s = Schema {
        det_type: "t".into(),
        det_name: "d".into(),
        det_id: String::new(),
        alg: Alg::new("raw", 0, 0, 1),
        segment: 0,
        vars: vec![
            VarDesc::new("a", DataType::UINT16, 2),
            VarDesc::new("b", DataType::DOUBLE, 0),
        ],
    };
    let mut b = DgramBuilder::new(1, TransitionId::L1Accept, 0, 0);
    let px = [1u16; 6];
    let before = b.bytes().to_vec();
    assert!(
        b.add_data(
            NamesId(1),
            &s,
            &[VarData::array(&[2, 4], &px), VarData::scalar(1.0f64)]
        )
        .is_err()
    );
    assert!(
        b.add_data(
            NamesId(1),
            &s,
            &[VarData::array(&[6], &px), VarData::scalar(1.0f64)]
        )
        .is_err()
    );
    assert!(
        b.add_data(
            NamesId(1),
            &s,
            &[VarData::array(&[2, 3], &px), VarData::scalar(1.0f32)]
        )
        .is_err()
    );
    assert!(
        b.add_data(NamesId(1), &s, &[VarData::array(&[2, 3], &px)])
            .is_err()
    );
    assert_eq!(
        b.bytes(),
        before,
        "a failed add leaves the datagram unchanged"
    );
    let mut bad = s.clone();
    bad.det_name = "has space".into();
    assert!(b.add_names(NamesId(1), &bad).is_err());
}

fn dtype_strategy() -> impl Strategy<Value = DataType> {
    (0usize..13).prop_map(|i| DataType::ALL[i])
}

fn var_strategy() -> impl Strategy<Value = (DataType, Vec<u32>, Vec<u8>, String)> {
    (
        dtype_strategy(),
        prop::collection::vec(1u32..5, 0..=4),
        any::<u64>(),
        "[a-z][a-z0-9_.]{0,12}",
    )
        .prop_map(|(dt, mut shape, seed, name)| {
            if dt == DataType::CHARSTR {
                shape = vec![((seed % 20) as u32 + 1).div_ceil(4) * 4];
            }
            let n: usize = shape.iter().map(|&d| d as usize).product::<usize>() * dt.size();
            let mut x = seed | 1;
            let bytes = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            (dt, shape, bytes, name)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn random_schemas_and_values_round_trip(
        vars in prop::collection::vec(var_strategy(), 0..8),
        seg in 0u32..64,
        node in 0u32..4096,
        id in 0u8..=255,
        tsv in 0u32..1_000_000_000,
        data_first in any::<bool>(),
    ) {
        let schema = Schema {
            det_type: "rnd".into(),
            det_name: "rnd_det".into(),
            det_id: "x".into(),
            alg: Alg::new("raw", 1, 2, 3),
            segment: seg,
            vars: vars.iter().enumerate().map(|(i, (dt, shape, _, name))| {
                VarDesc::new(&format!("{name}{i}"), *dt, shape.len() as u32)
            }).collect(),
        };
        let values: Vec<VarData> = vars.iter().map(|(_, shape, bytes, _)| VarData {
            shape: Shape::new(shape),
            bytes: bytes.clone().into(),
        }).collect();
        let nid = NamesId::new(node, id);
        let mut c = DgramBuilder::new(u64::from(tsv), TransitionId::Configure, 0, 0);
        c.add_names(nid, &schema).unwrap();
        let conf = c.finish();
        let cd = Dgram::parse(&conf, 0).unwrap();
        let lookup = NamesLookup::from_configure(&cd.root()).unwrap();
        prop_assert_eq!(lookup.get(nid).unwrap().as_ref(), &schema);
        let order = if data_first { ChildOrder::DataFirst } else { ChildOrder::ShapesFirst };
        let mut e = DgramBuilder::new(u64::from(tsv), TransitionId::L1Accept, 3, node);
        e.add_data_ordered(nid, &schema, &values, order).unwrap();
        let ev = e.finish();
        let d = Dgram::parse(&ev, 1234).unwrap();
        let blocks = d.blocks(&lookup).unwrap();
        prop_assert_eq!(blocks.len(), 1);
        prop_assert_eq!(blocks[0].data_first, data_first);
        for (v, (_, shape, bytes, _)) in blocks[0].vars.iter().zip(&vars) {
            prop_assert_eq!(v.shape.dims(), shape.as_slice());
            prop_assert_eq!(v.bytes, bytes.as_slice());
        }
        prop_assert_eq!(reencode(&d, &lookup), ev);
    }
}
