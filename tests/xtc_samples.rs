//! The reader against the real LCLS-II sample files: every fact of `tests/data/xtc2/README.md`.

mod common;
use common::*;
use lclstreamer::xtc::eventbuild::EventBuilder;
use lclstreamer::xtc::index::StreamIndexer;
use lclstreamer::xtc::run::{discover_in_dir, from_files};
use lclstreamer::xtc::smalldata::{chunk_info, smd_offset_size};
use lclstreamer::xtc::*;
use std::collections::BTreeMap;

fn counts(path: &str) -> (usize, usize) {
    let d = read_all(&sample(path));
    let l1 = d
        .iter()
        .filter(|d| d.service() == TransitionId::L1Accept)
        .count();
    (d.len(), l1)
}

#[test]
fn dgram_and_l1accept_counts_match_the_readme() {
    let table = [
        ("detector/test_epix_calib.xtc2", 6, 2),
        ("intg_det/xpptut15-r0014-s000-c000.xtc2", 24, 17),
        ("intg_det/xpptut15-r0014-s001-c000.xtc2", 12, 5),
        ("intg_det/xpptut15-r0014-s002-c000.xtc2", 9, 2),
        (
            "intg_det/smalldata/xpptut15-r0014-s000-c000.smd.xtc2",
            24,
            17,
        ),
        (
            "intg_det/smalldata/xpptut15-r0014-s001-c000.smd.xtc2",
            12,
            5,
        ),
        ("intg_det/smalldata/xpptut15-r0014-s002-c000.smd.xtc2", 9, 2),
        ("fakesteps/xpptut15-r0014-s000-c000.xtc2", 21, 10),
        ("fakesteps/xpptut15-r0014-s001-c000.xtc2", 15, 4),
        (
            "fakesteps/smalldata/xpptut15-r0014-s000-c000.smd.xtc2",
            21,
            10,
        ),
        (
            "fakesteps/smalldata/xpptut15-r0014-s001-c000.smd.xtc2",
            15,
            4,
        ),
        ("mixed_rate/xpptut15-r0014-s000-c000.xtc2", 110, 100),
        ("mixed_rate/xpptut15-r0014-s001-c000.xtc2", 20, 10),
        (
            "mixed_rate/smalldata/xpptut15-r0014-s000-c000.smd.xtc2",
            110,
            100,
        ),
        (
            "mixed_rate/smalldata/xpptut15-r0014-s001-c000.smd.xtc2",
            20,
            10,
        ),
        ("multi-seg-epics/xpptut15-r0014-s000-c000.xtc2", 24, 15),
        ("multi-seg-epics/xpptut15-r0014-s001-c000.xtc2", 24, 15),
        (
            "multi-seg-epics/smalldata/xpptut15-r0014-s000-c000.smd.xtc2",
            24,
            15,
        ),
        (
            "multi-seg-epics/smalldata/xpptut15-r0014-s001-c000.smd.xtc2",
            24,
            15,
        ),
        (
            "multirun_w_new_config/xpptut15-r0014-s000-c000.xtc2",
            36,
            15,
        ),
        (
            "multirun_w_new_config/smalldata/xpptut15-r0014-s000-c000.smd.xtc2",
            36,
            15,
        ),
        ("chunking/xpptut15-r0014-s000-c000.xtc2", 15, 10),
        ("chunking/data-r0001-s000-c001.xtc2", 9, 5),
        (
            "chunking/smalldata/xpptut15-r0014-s000-c000.smd.xtc2",
            24,
            15,
        ),
    ];
    for (f, dgrams, l1) in table {
        assert_eq!(counts(f), (dgrams, l1), "{f}");
    }
}

#[test]
fn every_block_of_every_file_decodes_and_fills_its_data_exactly() {
    let mut blocks = 0;
    for dir in [
        "detector",
        "intg_det",
        "fakesteps",
        "mixed_rate",
        "multi-seg-epics",
        "multirun_w_new_config",
        "chunking",
    ] {
        let mut files: Vec<_> = std::fs::read_dir(samples().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        if let Ok(rd) = std::fs::read_dir(samples().join(dir).join("smalldata")) {
            files.extend(rd.map(|e| e.unwrap().path()));
        }
        for f in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "xtc2"))
        {
            let dgrams = read_all(f);
            let end = dgrams.last().map(|d| d.offset + d.bytes.len() as u64);
            assert_eq!(
                end,
                Some(std::fs::metadata(f).unwrap().len()),
                "walk ends at EOF"
            );
            // c001 has no Configure: decode it with the small data's.
            let mut lookup = if f.ends_with("data-r0001-s000-c001.xtc2") {
                first_lookup(&read_all(&sample(
                    "chunking/smalldata/xpptut15-r0014-s000-c000.smd.xtc2",
                )))
            } else {
                NamesLookup::new()
            };
            for d in &dgrams {
                let v = d.view();
                if v.service() == TransitionId::Configure {
                    lookup = NamesLookup::from_configure(&v.root()).unwrap();
                }
                for b in v.blocks(&lookup).unwrap() {
                    let used: usize = b.vars.iter().map(|x| x.bytes.len()).sum();
                    let data = v
                        .leaves()
                        .unwrap()
                        .into_iter()
                        .find(|l| l.offset == b.offset)
                        .unwrap();
                    let data_len = data
                        .children()
                        .map(|c| c.unwrap())
                        .find(|c| c.header.contains.id() == 3)
                        .unwrap()
                        .payload
                        .len();
                    assert_eq!(used, data_len, "{} block at {}", f.display(), b.offset);
                    blocks += 1;
                }
            }
        }
    }
    assert!(blocks > 500, "only {blocks} blocks decoded");
}

#[test]
fn epixquad_header_layout_and_first_raw_words() {
    let path = sample("detector/test_epix_calib.xtc2");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        &bytes[..24],
        &[
            0x74, 0x7c, 0x6d, 0x24, 0x4c, 0xc9, 0x96, 0x3a, 0x01, 0x00, 0x02, 0x02, 0, 0, 0, 0, 0,
            0, 0, 0, 0x96, 0x75, 0x1a, 0x00
        ]
    );
    let d = read_all(&path);
    let offsets: Vec<u64> = d.iter().map(|d| d.offset).collect();
    assert_eq!(
        offsets,
        [0, 1_734_050, 1_734_146, 1_734_170, 1_734_194, 2_828_154]
    );
    let envs: Vec<u32> = d.iter().map(|d| d.view().header.env).collect();
    assert_eq!(
        envs,
        [
            0x02020001, 0x04020001, 0x06040001, 0x08060001, 0x0C090001, 0x0C0B0001
        ]
    );
    let keys: Vec<u64> = d.iter().map(|d| d.view().header.timestamp).collect();
    assert_eq!(keys[0], 0x3A96C94C246D7C74);
    assert_eq!(keys[5], 0x3A96C94D385374EF);
    assert_eq!(d[0].view().header.seconds(), 982_960_460);
    assert_eq!(d[0].view().header.readout_groups(), 1);

    let lookup = first_lookup(&d);
    let raw = lookup.get(NamesId::new(0, 10)).unwrap();
    assert_eq!(
        (raw.det_name.as_str(), raw.det_type.as_str()),
        ("epixquad", "epix10ka")
    );
    assert_eq!(raw.alg.version_string(), "2.0.1");
    assert!(raw.det_id.starts_with("3926196238-0175152897-1157627926-"));
    assert_eq!(lookup.get(NamesId::new(0, 0)).unwrap().vars.len(), 1190);
    assert_eq!(lookup.get(NamesId::new(0, 0)).unwrap().det_id, "serial1234");

    let first_words: [[u16; 8]; 8] = [
        [19620, 19722, 19733, 19730, 19645, 19744, 19684, 19615],
        [19568, 19619, 19432, 19558, 19538, 19652, 19353, 19632],
        [19805, 19681, 19649, 19633, 19600, 19541, 19742, 19783],
        [19413, 19459, 19408, 19347, 19315, 19510, 19343, 19512],
        [19643, 19738, 19748, 19744, 19658, 19762, 19702, 19633],
        [19582, 19638, 19450, 19573, 19557, 19671, 19374, 19651],
        [19819, 19699, 19667, 19651, 19621, 19561, 19758, 19798],
        [19431, 19478, 19425, 19360, 19325, 19526, 19364, 19526],
    ];
    let sums: [u64; 8] = [
        2_632_691_925,
        2_629_209_105,
        2_639_413_904,
        2_616_481_596,
        2_634_814_418,
        2_631_371_693,
        2_641_567_718,
        2_618_662_001,
    ];
    let sd_offsets = [
        1_734_218, 2_007_702, 2_281_186, 2_554_670, 2_828_178, 3_101_662, 3_375_146, 3_648_630,
    ];
    let mut k = 0;
    for ev in &d[4..] {
        let v = ev.view();
        let blocks = v.blocks(&lookup).unwrap();
        assert_eq!(blocks.len(), 4);
        for (seg, b) in blocks.iter().enumerate() {
            assert_eq!(b.schema.segment as usize, seg);
            assert_eq!(b.offset, sd_offsets[k]);
            assert!(!b.data_first);
            let raw = b.var("raw").unwrap();
            assert_eq!(raw.shape.dims(), [352, 384]);
            assert_eq!(b.var("aux").unwrap().shape.dims(), [4, 384]);
            let px = raw.elements::<u16>().unwrap();
            assert_eq!(px.len(), 135_168);
            assert_eq!(px[..8], first_words[k]);
            assert_eq!(px.iter().map(|&p| u64::from(p)).sum::<u64>(), sums[k]);
            assert!(px.iter().all(|&p| p & 0x4000 != 0 && p & 0x8000 == 0));
            k += 1;
        }
        if k == 4 {
            let aux0 = blocks[0].var("aux").unwrap().elements::<u16>().unwrap();
            assert_eq!(aux0[..4], [19618, 19398, 19553, 19315]);
        }
    }
    // Configuration: fixed-low gain everywhere.
    let cfg = d[0].view();
    for b in cfg.blocks(&lookup).unwrap() {
        if b.schema.det_name == "epixquad" && b.schema.alg.name == "config" {
            let apc = b.var("asicPixelConfig").unwrap();
            assert_eq!(apc.shape.dims(), [4, 176, 192]);
            assert!(apc.elements::<u8>().unwrap().iter().all(|&x| x == 8));
            assert!(
                b.var("trbit")
                    .unwrap()
                    .elements::<u8>()
                    .unwrap()
                    .iter()
                    .all(|&x| x == 0)
            );
        }
    }
}

fn runinfo(dgrams: &[Owned]) -> Vec<(String, u32)> {
    let mut lookup = NamesLookup::new();
    let mut out = Vec::new();
    for d in dgrams {
        let v = d.view();
        if v.service() == TransitionId::Configure {
            lookup = NamesLookup::from_configure(&v.root()).unwrap();
        }
        if v.service() == TransitionId::BeginRun {
            for b in v.blocks(&lookup).unwrap() {
                if b.schema.det_name == "runinfo" {
                    let r = b.var("runnum").unwrap().scalar().unwrap().as_i64().unwrap();
                    out.push((b.var("expt").unwrap().string().unwrap(), r as u32));
                }
            }
        }
    }
    out
}

#[test]
fn runinfo_values() {
    assert_eq!(
        runinfo(&read_all(&sample("detector/test_epix_calib.xtc2"))),
        [("ueddaq02".into(), 109)]
    );
    assert_eq!(
        runinfo(&read_all(&sample(
            "mixed_rate/xpptut15-r0014-s000-c000.xtc2"
        ))),
        [("xpptut15".into(), 14)]
    );
    assert_eq!(
        runinfo(&read_all(&sample("intg_det/xpptut15-r0014-s002-c000.xtc2"))),
        [("xpptut15".into(), 1)]
    );
}

#[test]
fn multirun_file_resets_lookup_at_each_configure() {
    let d = read_all(&sample(
        "multirun_w_new_config/xpptut15-r0014-s000-c000.xtc2",
    ));
    assert_eq!(
        runinfo(&d),
        [
            ("xpptut15".into(), 1),
            ("xpptut15".into(), 2),
            ("xpptut15".into(), 3)
        ]
    );
    let mut lookup = NamesLookup::new();
    let mut seen = Vec::new();
    for x in &d {
        let v = x.view();
        if v.service() == TransitionId::Configure {
            lookup = NamesLookup::from_configure(&v.root()).unwrap();
            assert_eq!(x.bytes.len(), 5788);
        }
        if v.service() == TransitionId::L1Accept {
            let b = &v.blocks(&lookup).unwrap()[0];
            let calib = b.var("calib").unwrap().elements::<f32>().unwrap();
            seen.push((
                b.schema.det_name.clone(),
                calib[0],
                (v.header.timestamp & 0xFFFF_FFFF) as u32,
            ));
        }
    }
    assert_eq!(seen.len(), 15);
    let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(names[..5], ["hsd"; 5]);
    assert_eq!(names[5..], ["andor"; 10]);
    let values: Vec<f32> = seen.iter().map(|s| s.1).collect();
    assert_eq!(
        values,
        [0., 1., 2., 3., 4., 0., 1., 2., 3., 4., 0., 1., 2., 3., 4.]
    );
    let keys: Vec<u32> = seen.iter().map(|s| s.2).collect();
    assert_eq!(
        keys,
        [4, 5, 6, 7, 8, 17, 18, 19, 20, 21, 28, 29, 30, 31, 32]
    );
    // After the second Configure, hsd's NamesId (1, 0) no longer exists.
    assert!(lookup.get(NamesId::new(1, 0)).is_none());
    assert_eq!(lookup.get(NamesId::new(1, 3)).unwrap().det_name, "andor");
}

#[test]
fn per_stream_lookups_decode_colliding_names_ids() {
    let s0 = read_all(&sample("multi-seg-epics/xpptut15-r0014-s000-c000.xtc2"));
    let s1 = read_all(&sample("multi-seg-epics/xpptut15-r0014-s001-c000.xtc2"));
    let (l0, l1) = (first_lookup(&s0), first_lookup(&s1));
    let id = NamesId::new(1, 5);
    let su0: Vec<_> = s0
        .iter()
        .filter(|d| d.service() == TransitionId::SlowUpdate)
        .collect();
    let su1: Vec<_> = s1
        .iter()
        .filter(|d| d.service() == TransitionId::SlowUpdate)
        .collect();
    assert_eq!((su0.len(), su1.len()), (2, 2));
    for d in su0 {
        assert_eq!(d.bytes.len(), 116);
        let v = d.view();
        let b = v.blocks(&l0).unwrap();
        let e = b.iter().find(|b| b.names_id == id).unwrap();
        assert_eq!(e.var("epicsvar1").unwrap().string().unwrap(), "hello");
        assert_eq!(e.var("epicsvar2").unwrap().string().unwrap(), "world");
        assert_eq!(e.var("epicsvar1").unwrap().shape.dims(), [8]);
    }
    for d in su1 {
        assert_eq!(d.bytes.len(), 480);
        let v = d.view();
        let b = v.blocks(&l1).unwrap();
        let e = b.iter().find(|b| b.names_id == id).unwrap();
        let bg = e.var("background").unwrap();
        assert_eq!(bg.shape.dims(), [10, 10]);
        assert!(bg.elements::<f32>().unwrap().iter().all(|&x| x == 1.0));
    }
}

#[test]
fn mixed_rate_enums_strings_unaligned_scalars_and_child_order() {
    let d = read_all(&sample("mixed_rate/xpptut15-r0014-s000-c000.xtc2"));
    let lookup = first_lookup(&d);
    let l1 = d
        .iter()
        .find(|d| d.service() == TransitionId::L1Accept)
        .unwrap();
    assert_eq!(l1.bytes.len(), 848);
    let v = l1.view();
    let blocks = v.blocks(&lookup).unwrap();
    assert_eq!(blocks.len(), 6);
    let raw = blocks
        .iter()
        .find(|b| b.schema.det_name == "xpphsd" && b.schema.alg.name == "raw")
        .unwrap();
    assert!(raw.data_first, "xpphsd/raw is [Data, Shapes]");
    let int_pgp = raw.var("intPgp").unwrap();
    assert_eq!(int_pgp.scalar(), Some(Scalar::I64(2)));
    let data_start = raw.var("floatPgp").unwrap().offset;
    assert_eq!(int_pgp.offset - data_start, 44);
    assert_eq!(raw.var("array1Pgp").unwrap().offset - data_start, 52);
    assert_eq!(
        raw.var("floatPgp").unwrap().scalar(),
        Some(Scalar::F64(1.0))
    );
    let a0 = raw.var("array0Pgp").unwrap().elements::<f32>().unwrap();
    let a1 = raw.var("array1Pgp").unwrap().elements::<f32>().unwrap();
    for i in 0..3 {
        for j in 0..3 {
            assert_eq!(a0[i * 3 + j], (i * j) as f32);
            assert_eq!(a1[i * 3 + j], (i * j + 2) as f32);
        }
    }
    let fex = blocks.iter().find(|b| b.schema.alg.name == "fex").unwrap();
    assert!(!fex.data_first);
    assert_eq!(fex.schema.alg.version_string(), "4.5.6");
    assert_eq!(
        fex.var("floatFex").unwrap().scalar(),
        Some(Scalar::F64(41.0))
    );
    assert_eq!(fex.var("intFex").unwrap().scalar(), Some(Scalar::I64(42)));
    assert_eq!(
        fex.var("charStrFex").unwrap().string().unwrap(),
        "Test String"
    );
    assert_eq!(fex.var("charStrFex").unwrap().shape.dims(), [12]);
    let arr: Vec<f32> = fex
        .var("arrayFex")
        .unwrap()
        .elements::<f32>()
        .unwrap()
        .to_vec();
    assert_eq!(arr, [142., 143., 144., 145., 146., 147.]);
    let ev = |n: &str| fex.var(n).unwrap().scalar().unwrap();
    assert_eq!(ev("enumFex1:MyEnumName"), Scalar::EnumVal(-2));
    assert_eq!(ev("enumFex2:MyEnumName"), Scalar::EnumVal(5));
    assert_eq!(ev("enumFex3:MyEnumName2"), Scalar::EnumVal(12));
    assert_eq!(ev("On:MyEnumName2"), Scalar::EnumDict(-7));
    assert_eq!(
        fex.var("enumFex1:MyEnumName").unwrap().desc.enum_type(),
        Some("MyEnumName")
    );
    assert_eq!(
        fex.enum_dicts(),
        [
            (
                "MyEnumName".to_string(),
                vec![("HighGain".to_string(), -2), ("LowGain".to_string(), 5)]
            ),
            (
                "MyEnumName2".to_string(),
                vec![("On".to_string(), -7), ("Off".to_string(), 12)]
            )
        ]
    );
    let cspad = blocks
        .iter()
        .find(|b| b.schema.det_name == "xppcspad")
        .unwrap();
    assert!(cspad.data_first);
    let r: Vec<u16> = cspad
        .var("arrayRaw")
        .unwrap()
        .elements::<u16>()
        .unwrap()
        .to_vec();
    assert_eq!(r, (0..18).collect::<Vec<u16>>());
    // SlowUpdates carry epics values.
    for su in d.iter().filter(|d| d.service() == TransitionId::SlowUpdate) {
        let v = su.view();
        let b = v.blocks(&lookup).unwrap();
        let e = b.iter().find(|b| b.schema.det_name == "epics").unwrap();
        assert_eq!(
            e.var("HX2:DVD:GCC:01:PMON").unwrap().scalar(),
            Some(Scalar::F64(41.0))
        );
        assert_eq!(
            e.var("HX2:DVD:GPI:01:PMON").unwrap().string().unwrap(),
            "Test String"
        );
    }
}

#[test]
fn smd_index_points_at_bigdata_l1accepts_with_the_same_key() {
    let mut checked = 0;
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
            assert_eq!(big.len(), smd.len());
            let mut lookup = NamesLookup::new();
            for (b, m) in big.iter().zip(&smd) {
                let (bv, mv) = (b.view(), m.view());
                assert_eq!(bv.header.timestamp, mv.header.timestamp);
                assert_eq!(bv.header.env, mv.header.env);
                match mv.service() {
                    TransitionId::Configure => {
                        assert_eq!(m.bytes.len(), b.bytes.len() + 2096);
                        assert_eq!(&m.bytes[24..b.bytes.len()], &b.bytes[24..]);
                        lookup = NamesLookup::from_configure(&mv.root()).unwrap();
                        let id = lookup.find("smdinfo", "offsetAlg").unwrap();
                        assert_eq!(id, NamesId(0x0002_0000));
                    }
                    TransitionId::L1Accept => {
                        assert_eq!(m.bytes.len(), 76);
                        let (off, size) = smd_offset_size(&mv, &lookup).unwrap();
                        assert_eq!((off, size), (b.offset, b.bytes.len() as u64));
                        checked += 1;
                    }
                    TransitionId::EndRun => assert_eq!(m.bytes.len(), 24),
                    _ => assert_eq!(m.bytes, b.bytes),
                }
            }
        }
    }
    assert_eq!(checked, 17 + 5 + 2 + 10 + 4 + 100 + 10 + 15 + 15 + 15);
}

#[test]
fn chunking_follows_chunkinfo_from_small_data_and_from_bigdata() {
    let c0 = read_all(&sample("chunking/xpptut15-r0014-s000-c000.xtc2"));
    let lookup = first_lookup(&c0);
    let enable = c0.last().unwrap();
    assert_eq!((enable.offset, enable.bytes.len()), (51_552, 112));
    let info = chunk_info(&enable.view(), &lookup).unwrap().unwrap();
    assert_eq!(info.chunk_id, 1);
    assert_eq!(info.filename, "data-r0001-s000-c001.xtc2");
    let c1 = read_all(&sample("chunking/data-r0001-s000-c001.xtc2"));
    assert_eq!(c1[0].service(), TransitionId::SlowUpdate);
    assert_eq!(c1[1].offset, 100);

    let run = discover_in_dir(&samples().join("chunking"), "xpptut15", 14).unwrap();
    for use_smd in [true, false] {
        let ix = StreamIndexer::open(&run.streams[0], use_smd).unwrap();
        assert_eq!(ix.from_smd(), use_smd);
        let l1: Vec<_> = ix
            .map(|e| e.unwrap())
            .filter(|e| e.service() == TransitionId::L1Accept)
            .map(|e| {
                let l = e.location.unwrap();
                (l.chunk, l.offset, (e.header.timestamp & 0xFFFF_FFFF) as u32)
            })
            .collect();
        let mut want: Vec<(u32, u64, u32)> = (0..10)
            .map(|i| (0, 43_072 + 848 * i as u64, 4 + i))
            .collect();
        want.extend((0..5).map(|i| (1, 100 + 848 * i as u64, 16 + i)));
        assert_eq!(l1, want, "use_smd={use_smd}");
    }
}

fn build(dir: &str, use_smd: bool) -> (Vec<lclstreamer::xtc::eventbuild::BuiltEvent>, usize) {
    let run = discover_in_dir(&samples().join(dir), "xpptut15", 14).unwrap();
    let n = run.streams.len();
    let ix: Vec<_> = run
        .streams
        .iter()
        .map(|s| StreamIndexer::open(s, use_smd).unwrap())
        .collect();
    let b = EventBuilder::new(ix, Vec::new());
    (b.map(|e| e.unwrap()).collect(), n)
}

fn l1(
    evs: &[lclstreamer::xtc::eventbuild::BuiltEvent],
) -> Vec<&lclstreamer::xtc::eventbuild::BuiltEvent> {
    evs.iter()
        .filter(|e| e.service == TransitionId::L1Accept)
        .collect()
}

#[test]
fn event_building_across_streams() {
    for use_smd in [true, false] {
        let (evs, n) = build("intg_det", use_smd);
        assert_eq!(n, 3);
        let l = l1(&evs);
        assert_eq!(l.len(), 17);
        assert_eq!(l.iter().filter(|e| e.part(1).is_some()).count(), 5);
        assert_eq!(l.iter().filter(|e| e.part(2).is_some()).count(), 2);
        let all3: Vec<u64> = l
            .iter()
            .filter(|e| e.parts.len() == 3)
            .map(|e| e.timestamp)
            .collect();
        assert_eq!(all3, [10]);
        assert!(evs.iter().all(|e| e.complete()));

        let (evs, _) = build("fakesteps", use_smd);
        let l = l1(&evs);
        assert_eq!(l.len(), 10);
        assert_eq!(l.iter().filter(|e| e.parts.len() == 2).count(), 4);
        let steps = evs
            .iter()
            .filter(|e| e.service == TransitionId::BeginStep)
            .count();
        assert_eq!(steps, 2);
        // 5 events in each step.
        let mut per_step = Vec::new();
        for e in &evs {
            match e.service {
                TransitionId::BeginStep => per_step.push(0),
                TransitionId::L1Accept => *per_step.last_mut().unwrap() += 1,
                _ => {}
            }
        }
        assert_eq!(per_step, [5, 5]);

        let (evs, _) = build("mixed_rate", use_smd);
        let l = l1(&evs);
        assert_eq!(l.len(), 100);
        let both: Vec<u32> = l
            .iter()
            .filter(|e| e.parts.len() == 2)
            .map(|e| e.timestamp as u32)
            .collect();
        assert_eq!(both, [4, 14, 24, 35, 45, 56, 66, 76, 87, 97]);
        assert_eq!(
            evs.iter()
                .filter(|e| e.service == TransitionId::SlowUpdate)
                .count(),
            3
        );
        assert!(
            evs.iter()
                .filter(|e| e.service.is_transition())
                .all(|e| e.parts.len() == 2)
        );

        let (evs, _) = build("multi-seg-epics", use_smd);
        let l = l1(&evs);
        assert_eq!(l.len(), 15);
        assert!(l.iter().all(|e| e.parts.len() == 2));
    }
}

#[test]
fn missing_expected_stream_is_flagged_not_dropped() {
    let run = discover_in_dir(&samples().join("intg_det"), "xpptut15", 14).unwrap();
    let ix: Vec<_> = run
        .streams
        .iter()
        .map(|s| StreamIndexer::open(s, true).unwrap())
        .collect();
    let mut b = EventBuilder::new(ix, vec![true, true, false]);
    let evs: Vec<_> = b.by_ref().map(|e| e.unwrap()).collect();
    let l = l1(&evs);
    assert_eq!(l.len(), 17);
    assert_eq!(l.iter().filter(|e| !e.complete()).count(), 12);
    assert!(l.iter().filter(|e| !e.complete()).all(|e| e.missing == [1]));
    let st = b.stats();
    assert_eq!(
        (st.events, st.incomplete_events, st.incomplete_transitions),
        (17, 12, 0)
    );
}

#[test]
fn explicit_file_lists_and_run_discovery_agree() {
    let dir = samples().join("mixed_rate");
    let run = discover_in_dir(&dir, "xpptut15", 14).unwrap();
    assert_eq!(run.streams.len(), 2);
    assert!(run.streams.iter().all(|s| s.smd.is_some()));
    let files = from_files(&[
        dir.join("xpptut15-r0014-s000-c000.xtc2"),
        dir.join("xpptut15-r0014-s001-c000.xtc2"),
    ])
    .unwrap();
    assert_eq!(files.streams, run.streams);
    let mut names = BTreeMap::new();
    for s in &run.streams {
        names.insert(s.stream, s.chunks.len());
    }
    assert_eq!(names, BTreeMap::from([(0, 1), (1, 1)]));
}
