//! `lclstreamer run` on a detector the model table does not know (`archon`, sparse segments 0
//! and 2): its raw frames pass through exactly; with whole-detector pedestals they are
//! `raw − pedestal` of the segments present; `keep: hits` without geometry and a `detector.kind`
//! that contradicts the run are one start-up error each.

use lclstreamer::output::{Frame, read_batch};
use lclstreamer::synth::run::Clock;
use lclstreamer::xtc::smalldata::{
    chunkinfo_names_id, chunkinfo_schema, runinfo_names_id, runinfo_schema,
};
use lclstreamer::xtc::stream_writer::StreamWriter;
use lclstreamer::xtc::writer::{DgramBuilder, VarData};
use lclstreamer::xtc::{Alg, DataType, NamesId, Schema, TransitionId, VarDesc};
use ndarray_npy::WriteNpyExt;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EXE: &str = env!("CARGO_BIN_EXE_lclstreamer");
const SEGS: [u32; 2] = [0, 2];
const ROWS: usize = 6;
const COLS: usize = 8;
const EVENTS: u64 = 5;

/// The raw schema of segment `seg` of `cam`: an `archon`, alg `raw` 1.0.0, UINT16 `raw` rank 2.
fn raw_schema(seg: u32) -> Schema {
    Schema {
        det_type: "archon".into(),
        det_name: "cam".into(),
        det_id: "archon_serial_1".into(),
        alg: Alg::new("raw", 1, 0, 0),
        segment: seg,
        vars: vec![VarDesc::new("raw", DataType::UINT16, 2)],
    }
}

/// The pixels of segment `seg` in event `ev`: distinct per event, segment and pixel.
fn pixels(ev: u64, seg: u32) -> Vec<u16> {
    (0..ROWS * COLS)
        .map(|p| (1000 + ev * 997 + u64::from(seg) * 131 + p as u64 * 7) as u16)
        .collect()
}

/// Writes the one-stream run and returns its bigdata file and the event timestamps in order.
fn write_run(dir: &Path) -> (PathBuf, Vec<u64>) {
    let node = 0;
    let ids: Vec<NamesId> = (0..SEGS.len())
        .map(|k| NamesId::new(node, k as u8))
        .collect();
    let mut w = StreamWriter::create(dir, "tstx00117", 1, 0, false).unwrap();
    let mut clock = Clock::for_run(1);
    let transition = |w: &mut StreamWriter, ts: u64, id: TransitionId| {
        let mut b = DgramBuilder::new(ts, id, 1, node);
        match id {
            TransitionId::Configure => {
                b.add_names(runinfo_names_id(node), &runinfo_schema(0))
                    .unwrap();
                b.add_names(chunkinfo_names_id(node), &chunkinfo_schema(0))
                    .unwrap();
                for (&id, &seg) in ids.iter().zip(&SEGS) {
                    b.add_names(id, &raw_schema(seg)).unwrap();
                }
            }
            TransitionId::BeginRun => {
                b.add_data(
                    runinfo_names_id(node),
                    &runinfo_schema(0),
                    &[VarData::string("tstx00117"), VarData::scalar(1u32)],
                )
                .unwrap();
            }
            _ => {}
        }
        w.write(b.bytes()).unwrap();
    };
    for id in [
        TransitionId::Configure,
        TransitionId::BeginRun,
        TransitionId::BeginStep,
        TransitionId::Enable,
    ] {
        transition(&mut w, clock.take(), id);
    }
    let mut stamps = Vec::new();
    for ev in 0..EVENTS {
        let ts = clock.take();
        let mut b = DgramBuilder::new(ts, TransitionId::L1Accept, 1, node);
        for (k, &seg) in SEGS.iter().enumerate() {
            let px = pixels(ev, seg);
            b.add_data(
                ids[k],
                &raw_schema(seg),
                &[VarData::array(&[ROWS as u32, COLS as u32], &px)],
            )
            .unwrap();
        }
        w.write(b.bytes()).unwrap();
        stamps.push(ts);
    }
    for id in [
        TransitionId::Disable,
        TransitionId::EndStep,
        TransitionId::EndRun,
    ] {
        transition(&mut w, clock.take(), id);
    }
    let files = w.finish().unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    (files[0].clone(), stamps)
}

/// Whole-detector pedestals `(1, 3, ROWS, COLS)`: plane `g` holds `g·100 + pixel/4`.
fn pedestal(plane: u32, p: usize) -> f32 {
    plane as f32 * 100.0 + p as f32 / 4.0
}

fn write_pedestals(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let v: Vec<f32> = (0..3)
        .flat_map(|g| (0..ROWS * COLS).map(move |p| pedestal(g, p)))
        .collect();
    ndarray::Array4::from_shape_vec((1, 3, ROWS, COLS), v)
        .unwrap()
        .write_npy(std::fs::File::create(dir.join("pedestals.npy")).unwrap())
        .unwrap();
}

/// Runs the job with `detector` and `processing` sections (YAML flow mappings) on `xtc`.
fn run_job(dir: &Path, xtc: &Path, detector: &str, processing: &str) -> Output {
    let cfg = dir.join("job.yaml");
    std::fs::write(
        &cfg,
        format!(
            "source:\n  files: [{f}]\n  detector: cam\ndetector: {detector}\nprocessing: {processing}\noutput:\n  batch_size: 2\n  compression: none\n  sinks:\n    - {{kind: files, dir: {o}}}\n",
            f = xtc.display(),
            o = dir.join("out").display(),
        ),
    )
    .unwrap();
    Command::new(EXE)
        .args(["run", "--quiet", "--config"])
        .arg(&cfg)
        .arg("--summary")
        .arg(dir.join("s.json"))
        .output()
        .unwrap()
}

/// Every frame delivered in `dir/out`, by timestamp; each event must arrive once and every
/// batch must record segments `[0, 2]`.
fn frames(dir: &Path) -> BTreeMap<u64, Frame> {
    let mut got = BTreeMap::new();
    for e in std::fs::read_dir(dir.join("out")).unwrap() {
        let (b, _) = read_batch(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
        assert_eq!(b.meta.segments, SEGS, "batch segments");
        for ev in b.events {
            let f = ev.frame.expect("a frame with every event");
            assert!(
                got.insert(ev.timestamp, f).is_none(),
                "event {:#x} delivered twice",
                ev.timestamp
            );
        }
    }
    got
}

fn success(out: &Output) {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The one start-up error of a failed run.
fn startup_error(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the run should fail: {err}");
    assert_eq!(err.matches("lclstreamer:").count(), 1, "{err}");
    err
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("s.json")).unwrap()).unwrap()
}

#[test]
fn without_constants_the_raw_frames_pass_through_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (xtc, stamps) = write_run(&tmp.path().join("xtc"));
    let out = run_job(tmp.path(), &xtc, "{}", "{keep: all, send: raw}");
    success(&out);
    let s = summary(tmp.path());
    assert_eq!(s["events_read"], EVENTS, "{s}");
    assert_eq!(s["events_sent"], EVENTS, "{s}");
    assert_eq!(s["damaged"], 0, "{s}");
    let got = frames(tmp.path());
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), stamps);
    for (ev, ts) in stamps.iter().enumerate() {
        let Frame::U16(a) = &got[ts] else {
            panic!("event {ev}: not a uint16 frame");
        };
        assert_eq!(a.dim(), (SEGS.len() * ROWS, COLS));
        let want: Vec<u16> = SEGS.iter().flat_map(|&s| pixels(ev as u64, s)).collect();
        assert_eq!(a.as_slice().unwrap(), want, "event {ev}");
    }
}

#[test]
fn whole_detector_pedestals_are_subtracted_by_segment_id() {
    let tmp = tempfile::tempdir().unwrap();
    let (xtc, stamps) = write_run(&tmp.path().join("xtc"));
    write_pedestals(&tmp.path().join("consts"));
    let det = format!("{{constants: {}}}", tmp.path().join("consts").display());
    let out = run_job(tmp.path(), &xtc, &det, "{keep: all, send: calibrated}");
    success(&out);
    let got = frames(tmp.path());
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), stamps);
    for (ev, ts) in stamps.iter().enumerate() {
        let Frame::F32(a) = &got[ts] else {
            panic!("event {ev}: not a float32 frame");
        };
        assert_eq!(a.dim(), (SEGS.len() * ROWS, COLS));
        let want: Vec<f32> = SEGS
            .iter()
            .flat_map(|&s| {
                pixels(ev as u64, s)
                    .into_iter()
                    .enumerate()
                    .map(move |(p, r)| f32::from(r) - pedestal(s, p))
            })
            .collect();
        let same = a
            .as_slice()
            .unwrap()
            .iter()
            .zip(&want)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "event {ev}: {a:?}\nwant {want:?}");
    }
}

#[test]
fn keep_hits_without_geometry_is_a_startup_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (xtc, _) = write_run(&tmp.path().join("xtc"));
    let err = startup_error(&run_job(tmp.path(), &xtc, "{}", "{keep: hits}"));
    assert!(err.contains("keep") && err.contains("geometry"), "{err}");
}

#[test]
fn a_kind_contradicting_the_run_names_its_det_type() {
    let tmp = tempfile::tempdir().unwrap();
    let (xtc, _) = write_run(&tmp.path().join("xtc"));
    let err = startup_error(&run_job(
        tmp.path(),
        &xtc,
        "{kind: jungfrau}",
        "{keep: all, send: raw}",
    ));
    assert!(err.contains("archon") && err.contains("jungfrau"), "{err}");
}
