//! `lclstreamer run` on the real ePix10ka quad of the LCLS-II samples (`epixquad`, 4 segments):
//! the model comes from the run, the calibrated frames equal the `Calibrator` applied to the
//! file's raw segments, the batches record the segment ids, and a `detector.kind` that
//! contradicts the data or constants of the wrong shape give one start-up error.

mod common;

use lclstreamer::algo::spots::SplitMix64;
use lclstreamer::detector::frame::Configured;
use lclstreamer::detector::model::Family;
use lclstreamer::detector::{Calibrator, synthetic};
use lclstreamer::output::{Frame, read_batch};
use lclstreamer::xtc::TransitionId;
use ndarray_npy::WriteNpyExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EXE: &str = env!("CARGO_BIN_EXE_lclstreamer");

fn epixquad() -> PathBuf {
    common::sample("detector/test_epix_calib.xtc2")
}

/// Constants `(7, nsegs, 352, 384)` as `.npy` in `dir`.
fn write_constants(dir: &Path, nsegs: usize) -> lclstreamer::detector::GainConstants {
    let c = synthetic::epix10ka_constants(nsegs, &mut SplitMix64::new(7));
    let shape = (c.ngr, c.nsegs, c.rows, c.cols);
    std::fs::create_dir_all(dir).unwrap();
    let write = |name: &str, v: Vec<f32>| {
        ndarray::Array4::from_shape_vec(shape, v)
            .unwrap()
            .write_npy(std::fs::File::create(dir.join(name)).unwrap())
            .unwrap();
    };
    write("pedestals.npy", c.pedestals.clone());
    write("pixel_gain.npy", c.pixel_gain.clone());
    write(
        "pixel_status.npy",
        c.pixel_status.iter().map(|&s| s as f32).collect(),
    );
    c
}

fn run_job(dir: &Path, kind: &str, constants: &Path) -> Output {
    run_job_with(dir, kind, constants, "processing:\n  keep: all\n")
}

fn run_job_with(dir: &Path, kind: &str, constants: &Path, extra: &str) -> Output {
    let out = dir.join("out");
    let cfg = dir.join(format!("job-{kind}.yaml"));
    std::fs::write(
        &cfg,
        format!(
            "source:\n  files: [{f}]\n  detector: epixquad\ndetector:\n{kind}  constants: {c}\n  common_mode: [7, 2, 100, 10]\n{extra}output:\n  batch_size: 4\n  sinks:\n    - {{kind: files, dir: {o}}}\n",
            f = epixquad().display(),
            kind = if kind.is_empty() {
                String::new()
            } else {
                format!("  kind: {kind}\n")
            },
            c = constants.display(),
            o = out.display(),
        ),
    )
    .unwrap();
    Command::new(EXE)
        .args(["run", "--quiet", "--config"])
        .arg(&cfg)
        .output()
        .unwrap()
}

#[test]
fn the_real_epixquad_runs_and_its_frames_equal_the_calibrator_on_its_raw_data() {
    let tmp = tempfile::tempdir().unwrap();
    let consts = write_constants(&tmp.path().join("consts"), 4);
    let out = run_job(tmp.path(), "", &tmp.path().join("consts"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The reference: the file's Configure and raw segments, through the Calibrator.
    let dgrams = common::read_all(&epixquad());
    let cfg = dgrams
        .iter()
        .find(|d| d.service() == TransitionId::Configure)
        .unwrap();
    let conf = Configured::from_configure("epixquad", &[(0, &cfg.bytes[..])], None).unwrap();
    assert_eq!(conf.model.family, Family::Epix10ka);
    assert_eq!(conf.model.segments, [0, 1, 2, 3]);
    assert_eq!(conf.model.slab_shape(), (4 * 352, 384));
    let cm = lclstreamer::detector::CommonModeParams::from_psana(&[7.0, 2.0, 100.0, 10.0]);
    let mut cal = Calibrator::epix10ka(&consts, &conf.panel_configs, None, cm).unwrap();
    let mut want = std::collections::BTreeMap::new();
    let mut slab = lclstreamer::detector::frame::SlabAssembler::default();
    for d in dgrams
        .iter()
        .filter(|d| d.service() == TransitionId::L1Accept)
    {
        let v = d.view();
        let mut raw = vec![0u16; conf.model.frame_len()];
        slab.begin(&conf);
        slab.add(&conf, 0, &v, &mut raw).unwrap();
        slab.finish(&conf).unwrap();
        let mut f = vec![0f32; raw.len()];
        cal.calibrate_slab(&raw, &mut f).unwrap();
        want.insert(v.header.timestamp, f);
    }
    assert_eq!(want.len(), 2);

    let mut got = 0;
    for e in std::fs::read_dir(tmp.path().join("out")).unwrap() {
        let (b, _) = read_batch(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
        assert_eq!(b.meta.segments, [0, 1, 2, 3]);
        for ev in b.events {
            let Some(Frame::F32(data)) = ev.frame else {
                panic!("event {} has no float32 frame", ev.timestamp);
            };
            assert_eq!(data.dim(), (1408, 384));
            let w = &want[&ev.timestamp];
            assert!(
                data.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits()),
                "event {}: frame differs from the Calibrator's",
                ev.timestamp
            );
            got += 1;
        }
    }
    assert_eq!(got, 2, "both L1Accepts delivered");
}

#[test]
fn a_contradicting_kind_or_wrong_constants_is_one_startup_error() {
    let tmp = tempfile::tempdir().unwrap();
    write_constants(&tmp.path().join("quad"), 4);
    // A named detector of the family that holds the segments is accepted.
    let out = run_job(tmp.path(), "epix10k2M", &tmp.path().join("quad"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_job(tmp.path(), "jungfrau4M", &tmp.path().join("quad"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("jungfrau4M") && err.contains("epix10ka"),
        "{err}"
    );
    assert_eq!(err.matches("lclstreamer:").count(), 1, "{err}");
    // Constants of two segments for a run of four: the file, the shape found and needed.
    write_constants(&tmp.path().join("two"), 2);
    let out = run_job(tmp.path(), "", &tmp.path().join("two"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("pedestals.npy")
            && err.contains("[7, 2, 352, 384]")
            && err.contains("[7, 4, 352, 384]"),
        "{err}"
    );
}

#[test]
fn psana_geometry_text_drives_peak_finding_on_the_real_epixquad() {
    let tmp = tempfile::tempdir().unwrap();
    write_constants(&tmp.path().join("quad"), 4);
    let geom = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/psana_geometry/geometry-def-epix10kaquad.data");
    let extra = format!(
        "  geometry: {}\nprocessing:\n  keep: all\n  min_num_peaks_for_hit: 1\n",
        geom.display()
    );
    let out = run_job_with(tmp.path(), "epixquad", &tmp.path().join("quad"), &extra);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut events = 0;
    for e in std::fs::read_dir(tmp.path().join("out")).unwrap() {
        let (b, _) = read_batch(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
        events += b.events.len();
        let names: Vec<&str> = b.events[0].fields.iter().map(|f| f.name.as_str()).collect();
        assert!(names.contains(&"n_peaks"), "{names:?}");
    }
    assert_eq!(events, 2);
}
