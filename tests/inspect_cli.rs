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
    let dets = j["detectors"].as_array().unwrap();
    let raw = dets
        .iter()
        .find(|d| d["name"] == "epixquad" && d["alg"] == "raw")
        .unwrap();
    assert_eq!(raw["type"], "epix10ka");
    assert_eq!(raw["version"], "2.0.1");
    assert_eq!(raw["segments"], serde_json::json!([0, 1, 2, 3]));
    assert_eq!(
        raw["vars"],
        serde_json::json!([
            {"name": "raw", "type": "UINT16", "rank": 2},
            {"name": "aux", "type": "UINT16", "rank": 2}
        ])
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
