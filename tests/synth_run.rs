//! `synth` writes a run the XTC2 reader, `inspect` and the event builder accept: the right
//! datagrams, detectors and run info, chunk rotation with every event found, identical
//! timestamps across streams, truth lines matching the events, and bytes fixed by the seed.

mod synth_support;
use lclstreamer::detector::Geometry;
use lclstreamer::detector::constants::read_npy_any;
use lclstreamer::inspect;
use lclstreamer::synth::{SynthDetector, SynthError, SynthParams, generate};
use lclstreamer::xtc::TransitionId as T;
use std::path::Path;
use synth_support::{read_run, read_truth};

fn params(root: &Path, preset: &str, events: u64, streams: usize) -> SynthParams {
    let mut p = SynthParams::new(root, "mfxp12345", 42, SynthDetector::full(preset).unwrap());
    p.events = events;
    p.streams = streams;
    p.seed = 7;
    p.hit_rate = 0.5;
    // Text constants are checked per preset below; they triple the side products' bytes.
    p.text_constants = false;
    p
}

#[test]
fn epix_run_passes_inspect_rotates_chunks_and_every_event_is_found() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = params(tmp.path(), "epix10k2M", 13, 4);
    p.events_per_enable = 4;
    p.chunk_bytes = 8 << 20;
    let s = generate(&p).unwrap();

    // Files where S3DF puts them.
    let xtc = tmp.path().join("mfx/mfxp12345/xtc");
    for st in 0..4 {
        assert!(
            xtc.join(format!("mfxp12345-r0042-s{st:03}-c000.xtc2"))
                .is_file()
        );
        assert!(
            xtc.join(format!("smalldata/mfxp12345-r0042-s{st:03}-c000.smd.xtc2"))
                .is_file()
        );
    }
    // Each stream carries 4 panels, ~1.08 MB per event: > 8 MB after 8 events, so the
    // Enable after event 8 starts chunk 1 (and nothing earlier does).
    assert_eq!(s.chunks, vec![2; 4]);
    assert_eq!(s.xtc_files.len(), 4 * 3);

    let inputs: Vec<_> = s
        .xtc_files
        .iter()
        .filter(|f| !f.to_string_lossy().ends_with(".smd.xtc2"))
        .cloned()
        .collect();
    let summary = inspect::summarize(&inputs, None, 0).unwrap();
    let mut total = std::collections::BTreeMap::<String, u64>::new();
    for f in &summary.files {
        assert!(!f.truncated, "{}", f.path.display());
        assert_eq!(f.damaged, 0);
        for (k, v) in &f.transitions {
            *total.entry(k.clone()).or_default() += v;
        }
    }
    // Per stream: 13 events, Disable/Enable after events 4, 8, 12, one SlowUpdate (event 60
    // would be the first: none here).
    let per_stream = [
        ("Configure", 1),
        ("BeginRun", 1),
        ("BeginStep", 1),
        ("Enable", 4),
        ("L1Accept", 13),
        ("Disable", 4),
        ("EndStep", 1),
        ("EndRun", 1),
    ];
    for (k, v) in per_stream {
        assert_eq!(total.get(k).copied().unwrap_or(0), 4 * v, "{k}: {total:?}");
    }
    assert_eq!(total.get("SlowUpdate"), None);
    assert_eq!(summary.run.expt.as_deref(), Some("mfxp12345"));
    assert_eq!(summary.run.runnum, Some(42));
    let raw = summary
        .detectors
        .iter()
        .find(|d| d.name == "epix10k2M" && d.alg == "raw")
        .expect("raw detector");
    assert_eq!(raw.det_type, "epix10ka");
    assert_eq!(raw.version, "2.0.1");
    assert_eq!(
        summary.segments("epix10k2M", "raw"),
        (0..16).collect::<Vec<u32>>()
    );
    assert_eq!(raw.vars.len(), 1);
    assert_eq!(
        (
            raw.vars[0].name.as_str(),
            raw.vars[0].dtype,
            raw.vars[0].rank
        ),
        ("raw", "UINT16", 2)
    );
    assert_eq!(summary.segments("epix10k2M", "config").len(), 16);
    assert!(summary.detectors.iter().any(|d| d.name == "chunkinfo"));

    // Event building over small data and over bigdata agree, cross chunks, and match truth.
    let truth = read_truth(&p);
    assert_eq!(truth.len(), 13);
    let a = read_run(&p, true);
    let b = read_run(&p, false);
    assert_eq!(a.frames.len(), 13);
    for (fa, fb) in a.frames.iter().zip(&b.frames) {
        assert_eq!(fa.timestamp, fb.timestamp);
        assert!(fa.raw == fb.raw);
        assert_eq!(fa.chunks, fb.chunks);
    }
    let chunks: Vec<u32> = a.frames.iter().map(|f| f.chunks[0]).collect();
    assert_eq!(chunks, [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
    for (f, t) in a.frames.iter().zip(&truth) {
        assert_eq!(t["timestamp"].as_u64(), Some(f.timestamp));
    }
    for (i, t) in truth.iter().enumerate() {
        assert_eq!(t["event"].as_u64(), Some(i as u64));
    }
    let seq: Vec<T> = a.transitions.iter().map(|t| t.0).collect();
    assert_eq!(
        &seq[..4],
        [T::Configure, T::BeginRun, T::BeginStep, T::Enable]
    );
    assert_eq!(&seq[seq.len() - 3..], [T::Disable, T::EndStep, T::EndRun]);
    assert_eq!(a.configs.len(), 16);

    // 120 Hz EPICS-epoch timestamps, strictly increasing, all L1Accepts one tick apart within
    // an enable period.
    let ts: Vec<u64> = a.frames.iter().map(|f| f.timestamp).collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]));
    let ns = |t: u64| (t >> 32) * 1_000_000_000 + (t & 0xFFFF_FFFF);
    assert!((8_333_333..=8_333_334).contains(&(ns(ts[1]) - ns(ts[0]))));
    assert!(ts.iter().all(|t| t & 0xFFFF_FFFF < 1_000_000_000));
    let unix = (ts[0] >> 32) + 631_152_000;
    assert!((1_767_225_600..1_900_000_000).contains(&unix), "{unix}");

    // synth.json counts what was written.
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.side_dir().join("synth.json")).unwrap())
            .unwrap();
    assert_eq!(info["counts"]["events"], 13);
    assert_eq!(info["counts"]["hits"].as_u64(), Some(s.hits));
    let hits = truth.iter().filter(|t| t["hit"] == true).count() as u64;
    assert_eq!(hits, s.hits);
    assert!(hits > 0 && hits < 13, "{hits}");
    for t in &truth {
        let n = t["spots"].as_array().unwrap().len();
        assert_eq!(
            t["hit"] == true,
            n > 0,
            "non-hits have no spots, hits have some"
        );
    }

    // A second run into the same place is refused, naming the file.
    let err = generate(&p).unwrap_err();
    assert!(matches!(err, SynthError::Exists(_)), "{err}");
}

#[test]
fn jungfrau_run_has_the_module_scalars_and_one_module_per_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let p = params(tmp.path(), "jungfrau4M", 3, 8);
    let s = generate(&p).unwrap();
    let files: Vec<_> = s
        .xtc_files
        .iter()
        .filter(|f| !f.to_string_lossy().ends_with(".smd.xtc2"))
        .cloned()
        .collect();
    assert_eq!(files.len(), 8);
    let summary = inspect::summarize(&files, None, 0).unwrap();
    let raw = summary
        .detectors
        .iter()
        .find(|d| d.name == "jungfrau4M")
        .unwrap();
    assert_eq!(
        (
            raw.det_type.as_str(),
            raw.alg.as_str(),
            raw.version.as_str()
        ),
        ("jungfrau", "raw", "0.2.0")
    );
    let vars: Vec<_> = raw
        .vars
        .iter()
        .map(|v| (v.name.as_str(), v.dtype, v.rank))
        .collect();
    assert_eq!(
        vars,
        [
            ("raw", "UINT16", 3),
            ("frame_cnt", "UINT64", 0),
            ("timestamp", "UINT64", 0),
            ("hotPixelThresh", "UINT16", 0),
            ("numHotPixels", "UINT32", 0),
            ("maxHotPixels", "UINT32", 0),
        ]
    );
    assert_eq!(
        summary.segments("jungfrau4M", "raw"),
        (0..8).collect::<Vec<u32>>()
    );
    let r = read_run(&p, true);
    assert_eq!(r.frames.len(), 3);
    let len = p.detector.seg_len();
    for (e, f) in r.frames.iter().enumerate() {
        for seg in 0..8 {
            let (cnt, hot) = f.scalars[seg];
            assert_eq!(cnt, e as u64 + 1);
            let want = f.raw[seg * len..(seg + 1) * len]
                .iter()
                .filter(|&&v| v & 0x3FFF >= 16000)
                .count() as u32;
            assert_eq!(hot, want);
            assert!(hot > 0, "stuck pixels read 0x3FFF");
        }
    }
}

fn all_bytes(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn same_seed_same_bytes_different_seed_different_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |dir: &str, seed: u64, threads: usize| {
        let mut p = params(&tmp.path().join(dir), "epix10k2M", 3, 2);
        p.seed = seed;
        p.hit_rate = 1.0;
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| generate(&p).unwrap());
        all_bytes(&tmp.path().join(dir))
    };
    let a = run("a", 11, 1);
    let b = run("b", 11, 3);
    let c = run("c", 12, 2);
    assert_eq!(
        a.len(),
        2 * 2 + 8,
        "{:?}",
        a.iter().map(|x| &x.0).collect::<Vec<_>>()
    );
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.0, y.0);
        assert!(
            x.1 == y.1,
            "{} differs between runs with the same seed",
            x.0
        );
    }
    for (x, y) in a.iter().zip(&c) {
        assert_eq!(x.0, y.0);
        if x.0.ends_with(".xtc2") && !x.0.ends_with(".smd.xtc2")
            || x.0.ends_with(".npy")
            || x.0.ends_with("truth.jsonl")
        {
            assert!(x.1 != y.1, "{} is the same for different seeds", x.0);
        }
    }
}

#[test]
fn bad_parameters_are_refused_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    for (mutate, needle) in [
        (
            Box::new(|p: &mut SynthParams| p.streams = 17) as Box<dyn Fn(&mut SynthParams)>,
            "--streams 17",
        ),
        (Box::new(|p: &mut SynthParams| p.streams = 0), "--streams 0"),
        (
            Box::new(|p: &mut SynthParams| p.hit_rate = 1.5),
            "--hit-rate",
        ),
        (
            Box::new(|p: &mut SynthParams| p.exp = "x/y".into()),
            "experiment",
        ),
        (
            Box::new(|p: &mut SynthParams| p.chunk_bytes = 0),
            "--chunk-bytes",
        ),
    ] {
        let mut p = params(tmp.path(), "epix10k2M", 1, 4);
        mutate(&mut p);
        let e = generate(&p).unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }
    assert!(
        std::fs::read_dir(tmp.path()).unwrap().next().is_none(),
        "nothing written"
    );
    let jf = SynthDetector::full("jungfrau4m").unwrap();
    assert_eq!((jf.preset.name, jf.nsegs()), ("jungfrau4M", 8));
    let e = SynthDetector::full("cspad").unwrap_err().to_string();
    assert!(e.contains("epix10k2M") && e.contains("jungfrau16M"), "{e}");
    let e = SynthDetector::new("jungfrau16M", Some(vec![31, 32]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("segments 0..31, not 32"), "{e}");
}

#[test]
fn cli_synth_then_inspect_by_exp_run() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_str().unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_lclstreamer"))
            .args(args)
            .output()
            .unwrap()
    };
    let ok = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let synth = ["synth", "--out", root, "--exp", "cxip99999", "--run"];
    let out = cli(&[
        &synth[..],
        &[
            "5",
            "--detector",
            "jungfrau4M",
            "--events",
            "2",
            "--npy-only",
        ],
    ]
    .concat());
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 events"));
    let out = cli(&[
        "inspect",
        "--json",
        "--root",
        root,
        "--events",
        "1",
        "cxip99999:5",
    ]);
    ok(&out);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["run"]["expt"], "cxip99999");
    assert_eq!(j["run"]["runnum"], 5);
    let big = j["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| !f["path"].as_str().unwrap().ends_with(".smd.xtc2"))
        .count();
    assert_eq!(big, 4, "the default --streams 4: 4 streams of 2 modules");
    assert_eq!(j["events"].as_array().unwrap().len(), 1);
    let side = tmp.path().join("cxi/cxip99999/synth/r0005");
    for f in [
        "pedestals.npy",
        "pixel_gain.npy",
        "pixel_offset.npy",
        "pixel_status.npy",
        "pixel_rms.npy",
        "common_mode.json",
        "geometry.geom",
        "truth.jsonl",
        "synth.json",
    ] {
        assert!(side.join(f).is_file(), "{f}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&side)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let bad = cli(&[&synth[..], &["6", "--detector", "cspad"]].concat());
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("jungfrau16M"));
    let bad = cli(&[
        &synth[..],
        &["6", "--detector", "jungfrau4M", "--segments", "2-x"],
    ]
    .concat());
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("\"x\" is not a segment id"));
}

/// The shape in a `.npy` header (without reading the data: a Jungfrau 16M constant is 200 MB).
fn npy_shape(path: &Path) -> Vec<usize> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path).unwrap().read(&mut head).unwrap();
    let text = String::from_utf8_lossy(&head[..n]);
    let inner = text
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    inner
        .split(',')
        .filter(|t| !t.trim().is_empty())
        .map(|t| t.trim().parse().unwrap())
        .collect()
}

/// A psana text array as `(SHAPE header, values)`: `#` lines are the header, the rest numbers.
fn read_data_txt(path: &Path) -> (Vec<usize>, Vec<f64>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut shape = Vec::new();
    let mut values = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix('#') {
            if let Some(s) = h.trim().strip_prefix("SHAPE") {
                let s = s.trim().trim_start_matches('(').trim_end_matches(')');
                shape = s.split(',').map(|t| t.parse().unwrap()).collect();
            }
            continue;
        }
        values.extend(line.split_whitespace().map(|t| t.parse::<f64>().unwrap()));
    }
    (shape, values)
}

/// One preset run: Names, slab, constants (full detector, `.data` equal to `.npy` to the 3
/// decimals psana writes) and geometry of the segments present.
fn check_preset(preset: &str, segments: Option<Vec<u32>>, text: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let det = SynthDetector::new(preset, segments).unwrap();
    let mut p = SynthParams::new(tmp.path(), "mfxp12345", 42, det.clone());
    p.events = 2;
    p.seed = 3;
    p.hit_rate = 1.0;
    p.text_constants = text;
    let s = generate(&p).unwrap();
    let present = det.model.segments.clone();
    let (family, rows, cols) = (det.family(), det.rows(), det.cols());

    let files: Vec<_> = s
        .xtc_files
        .iter()
        .filter(|f| !f.to_string_lossy().ends_with(".smd.xtc2"))
        .cloned()
        .collect();
    let summary = inspect::summarize(&files, None, 0).unwrap();
    let raw = summary
        .detectors
        .iter()
        .find(|d| d.name == preset && d.alg == "raw")
        .unwrap_or_else(|| panic!("{preset}: no raw detector"));
    assert_eq!(summary.segments(preset, "raw"), present, "{preset}");
    assert_eq!(raw.det_type, det.model.det_type);
    let rank = if preset.starts_with("jungfrau") { 3 } else { 2 };
    assert_eq!((raw.vars[0].name.as_str(), raw.vars[0].rank), ("raw", rank));

    let back = read_run(&p, true);
    assert_eq!(back.model.family, family);
    assert_eq!(back.model.segments, present);
    assert_eq!(back.model.segment_shape, (rows, cols));
    assert_eq!(back.model.raw_version, det.model.raw_version);
    assert_eq!(back.frames.len(), 2);
    assert!(
        back.frames
            .iter()
            .all(|f| f.raw.len() == present.len() * rows * cols)
    );

    let side = p.side_dir();
    let full = det.full_segments();
    let shape = [det.ngr(), full, rows, cols];
    let mut names = vec!["pedestals", "pixel_gain", "pixel_rms", "pixel_status"];
    if preset.starts_with("jungfrau") {
        names.push("pixel_offset");
    }
    for name in names {
        let npy = side.join(format!("{name}.npy"));
        assert_eq!(npy_shape(&npy), shape, "{preset} {name}");
        let data = side.join(format!("{name}.data"));
        assert_eq!(data.is_file(), text, "{}", data.display());
        if text {
            let (tshape, values) = read_data_txt(&data);
            assert_eq!(tshape, shape, "{}", data.display());
            let want = read_npy_any(&npy).unwrap();
            assert_eq!(values.len(), want.len());
            for (i, (&t, &w)) in values.iter().zip(want.iter()).enumerate() {
                assert!(
                    (t - w).abs() <= 5e-4 + 1e-6 * w.abs(),
                    "{}: value {i} is {t}, .npy has {w}",
                    data.display()
                );
            }
        }
    }

    let geom = Geometry::from_file(&side.join("geometry.geom")).unwrap();
    assert_eq!(geom.slab_shape(), back.model.slab_shape(), "{preset}");
    let (ar, ac) = back.model.spec().asics;
    assert_eq!(geom.panels.len(), present.len() * ar * ac);
    for (k, &seg) in present.iter().enumerate() {
        let p0 = geom
            .panels
            .iter()
            .find(|q| q.name == format!("p{seg}a0"))
            .unwrap_or_else(|| panic!("{preset}: no panel p{seg}a0"));
        assert_eq!(
            p0.min_ss,
            k * rows,
            "{preset}: segment {seg} at slab position {k}"
        );
    }
    let truth = read_truth(&p);
    let spots: Vec<u64> = truth
        .iter()
        .flat_map(|t| t["spots"].as_array().unwrap().clone())
        .map(|s| s["segment"].as_u64().unwrap())
        .collect();
    assert!(!spots.is_empty());
    assert!(
        spots.iter().all(|s| present.contains(&(*s as u32))),
        "{preset}: {spots:?}"
    );
}

#[test]
fn every_small_preset_writes_its_names_slab_constants_and_geometry() {
    check_preset("epixquad", None, true);
    check_preset("jungfrau05M", None, true);
    check_preset("jungfrau1M", Some(vec![1]), true);
    check_preset("epix100", None, true);
}

#[test]
fn sparse_jungfrau16m_has_whole_detector_constants_and_a_slab_of_its_modules() {
    check_preset("jungfrau16M", Some(vec![3, 17, 30]), false);
}

#[test]
fn a_segment_reads_the_same_whatever_other_segments_are_present() {
    // Without spots, a segment's frame depends only on the seed and its id (its background
    // from its physical place, its noise from its id).
    let tmp = tempfile::tempdir().unwrap();
    let run = |dir: &str, segments: Option<Vec<u32>>| {
        let det = SynthDetector::new("jungfrau1M", segments).unwrap();
        let mut p = SynthParams::new(&tmp.path().join(dir), "mfxp12345", 42, det);
        p.events = 2;
        p.hit_rate = 0.0;
        p.text_constants = false;
        generate(&p).unwrap();
        let c = read_npy_any(&p.side_dir().join("pedestals.npy")).unwrap();
        (read_run(&p, true), c)
    };
    let (full, cf) = run("full", None);
    let (one, c1) = run("one", Some(vec![1]));
    assert!(
        cf == c1,
        "the constants cover the whole detector either way"
    );
    let len = 512 * 1024;
    for (a, b) in full.frames.iter().zip(&one.frames) {
        assert!(a.raw[len..] == b.raw[..], "segment 1 differs");
    }
}
