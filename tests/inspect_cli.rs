//! `lclstreamer inspect --json` on the real samples, by file, directory and EXP:RUN.

mod common;
use common::*;
use serde_json::Value;
use std::process::Command;

fn inspect(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_lclstreamer"))
        .arg("inspect")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn epixquad_file_summary() {
    let p = sample("detector/test_epix_calib.xtc2");
    let j = inspect(&["--json", p.to_str().unwrap()]);
    let f = &j["files"][0];
    assert_eq!(f["path"], p.to_str().unwrap());
    assert_eq!(f["dgrams"], 6);
    assert_eq!(f["truncated"], false);
    assert_eq!(f["damaged"], 0);
    let t = f["transitions"].as_object().unwrap();
    let mut counts: Vec<(String, u64)> = t
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        [
            ("BeginRun".into(), 1),
            ("BeginStep".into(), 1),
            ("Configure".into(), 1),
            ("Enable".into(), 1),
            ("L1Accept".into(), 2)
        ]
    );
    assert_eq!(j["run"]["expt"], "ueddaq02");
    assert_eq!(j["run"]["runnum"], 109);
    // One entry per Names: the four raw segments are NamesIds (0, 10) … (0, 13).
    let dets = j["detectors"].as_array().unwrap();
    let raws: Vec<&Value> = dets
        .iter()
        .filter(|d| d["name"] == "epixquad" && d["alg"] == "raw")
        .collect();
    assert_eq!(raws.len(), 4);
    for (i, raw) in raws.iter().enumerate() {
        assert_eq!(raw["node"], 0);
        assert_eq!(raw["index"], 10 + i);
        assert_eq!(raw["segment"], i);
        assert_eq!(raw["type"], "epix10ka");
        assert_eq!(raw["version"], "2.0.1");
        assert_eq!(
            raw["vars"],
            serde_json::json!([
                {"name": "raw", "type": "UINT16", "rank": 2},
                {"name": "aux", "type": "UINT16", "rank": 2}
            ])
        );
        assert_eq!(raw["files"], serde_json::json!([p.to_str().unwrap()]));
    }
    assert!(
        raws[1]["det_id"]
            .as_str()
            .unwrap()
            .starts_with("3926196238-0174824449-0268435478-")
    );
    let hw = dets.iter().find(|d| d["name"] == "epixquadhw").unwrap();
    assert_eq!(hw["vars"].as_array().unwrap().len(), 1190);
    assert!(
        hw["vars"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["type"] == "ENUMDICT")
    );
}

#[test]
fn run_directory_with_events() {
    let dir = samples().join("mixed_rate");
    let j = inspect(&["--json", "--events", "5", dir.to_str().unwrap()]);
    assert_eq!(j["files"].as_array().unwrap().len(), 4);
    assert_eq!(j["run"]["runnum"], 14);
    let evs = j["events"].as_array().unwrap();
    assert_eq!(evs.len(), 5);
    assert_eq!(evs[0]["nsec"], 4);
    assert_eq!(evs[0]["streams"].as_array().unwrap().len(), 2);
    assert_eq!(evs[1]["streams"].as_array().unwrap().len(), 1);
    let det = &evs[0]["streams"][0]["detectors"][0];
    assert_eq!(det["name"], "xpphsd");
    let vars = det["vars"].as_array().unwrap();
    let a0 = vars.iter().find(|v| v["name"] == "array0Pgp").unwrap();
    assert_eq!(a0["shape"], serde_json::json!([3, 3]));
    assert_eq!(
        a0["value"],
        serde_json::json!([[0.0, 0.0, 0.0], [0.0, 1.0, 2.0], [0.0, 2.0, 4.0]])
    );
}

#[test]
fn exp_run_under_an_s3df_root() {
    let tmp = tempfile::tempdir().unwrap();
    let xtc = tmp.path().join("xpp/xpptut15/xtc");
    std::fs::create_dir_all(xtc.join("smalldata")).unwrap();
    for f in [
        "xpptut15-r0014-s000-c000.xtc2",
        "xpptut15-r0014-s001-c000.xtc2",
    ] {
        std::fs::copy(samples().join("fakesteps").join(f), xtc.join(f)).unwrap();
        let smd = f.replace(".xtc2", ".smd.xtc2");
        std::fs::copy(
            samples().join("fakesteps/smalldata").join(&smd),
            xtc.join("smalldata").join(&smd),
        )
        .unwrap();
    }
    // A second run and a file still being written are told apart.
    std::fs::copy(
        samples().join("intg_det/xpptut15-r0014-s000-c000.xtc2"),
        xtc.join("xpptut15-r0015-s000-c000.xtc2.inprogress"),
    )
    .unwrap();
    let j = inspect(&[
        "--json",
        "--root",
        tmp.path().to_str().unwrap(),
        "--events",
        "100",
        "xpptut15:14",
    ]);
    assert_eq!(j["files"].as_array().unwrap().len(), 4);
    assert_eq!(j["events"].as_array().unwrap().len(), 10);
    let j = inspect(&[
        "--json",
        "--root",
        tmp.path().to_str().unwrap(),
        "xpptut15:15",
    ]);
    assert_eq!(j["files"].as_array().unwrap().len(), 1);
    assert!(
        j["files"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with(".inprogress")
    );
    let text = Command::new(env!("CARGO_BIN_EXE_lclstreamer"))
        .args([
            "inspect",
            "--root",
            tmp.path().to_str().unwrap(),
            "xpptut15:14",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("L1Accept 10") && text.contains("run: expt xpptut15 run 1"),
        "{text}"
    );
}

fn inspect_text(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lclstreamer"))
        .arg("inspect")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// The entries of `name`/`alg` as (node, index, segment, var names).
fn entries(j: &Value, name: &str, alg: &str) -> Vec<(u64, u64, u64, Vec<String>)> {
    j["detectors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["name"] == name && d["alg"] == alg)
        .map(|d| {
            let vars = d["vars"].as_array().unwrap();
            (
                d["node"].as_u64().unwrap(),
                d["index"].as_u64().unwrap(),
                d["segment"].as_u64().unwrap(),
                vars.iter()
                    .map(|v| v["name"].as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn same_detector_and_alg_under_two_names_ids_are_both_listed() {
    // mixed_rate declares xpphsd config 2.0.0 twice per segment, with different variables.
    let dir = samples().join("mixed_rate");
    let j = inspect(&["--json", dir.to_str().unwrap()]);
    let cfg = entries(&j, "xpphsd", "config");
    let v = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let both = v(&["enable", "raw_prescale"]);
    let one = v(&["raw_prescale"]);
    assert_eq!(
        cfg,
        [
            (1, 7, 0, both.clone()),
            (1, 7, 2, both.clone()),
            (1, 8, 0, one.clone()),
            (1, 8, 2, one.clone()),
            (1, 16, 1, both.clone()),
            (1, 16, 3, both),
            (1, 17, 1, one.clone()),
            (1, 17, 3, one),
        ]
    );
    // Each entry names the files (bigdata and small data of one stream) that declare it.
    let d = j["detectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "xpphsd" && d["index"] == 8 && d["segment"] == 0)
        .unwrap();
    let files: Vec<&str> = d["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().all(|f| f.contains("-s000-")), "{files:?}");
    let text = inspect_text(&[dir.to_str().unwrap()]);
    for line in [
        "  (1, 7) xpphsd (hsd) config 2.0.0 segment 0: enable UINT64[1], raw_prescale UINT64[1] [s000]",
        "  (1, 8) xpphsd (hsd) config 2.0.0 segment 0: raw_prescale UINT64[1] [s000]",
        "  (1, 8) xpphsd (hsd) config 2.0.0 segment 2: raw_prescale UINT64[1] [s001]",
        "  (1, 6) runinfo (runinfo) runinfo 0.0.1 segment 0: expt CHARSTR[1], runnum UINT32 [s000, s001]",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in\n{text}"
        );
    }
}

#[test]
fn one_names_id_with_different_schemas_per_stream() {
    // multi-seg-epics: NamesId (1, 5) is `epics` in both streams, with different variables.
    let dir = samples().join("multi-seg-epics");
    let j = inspect(&["--json", dir.to_str().unwrap()]);
    let v = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        entries(&j, "epics", "raw"),
        [
            (1, 5, 0, v(&["epicsvar1", "epicsvar2"])),
            (1, 5, 1, v(&["background"]))
        ]
    );
    // The same entry in a second Configure of one file is listed once.
    let f = samples().join("multirun_w_new_config/xpptut15-r0014-s000-c000.xtc2");
    let j = inspect(&["--json", f.to_str().unwrap()]);
    assert_eq!(entries(&j, "runinfo", "runinfo").len(), 1);
    assert_eq!(entries(&j, "hsd", "raw").len(), 1);
    assert_eq!(entries(&j, "andor", "raw").len(), 1);
    let text = inspect_text(&[f.to_str().unwrap()]);
    assert!(
        text.lines()
            .any(|l| l == "  (1, 3) andor (andor) raw 0.0.2 segment 0: calib FLOAT[2]"),
        "{text}"
    );
}
