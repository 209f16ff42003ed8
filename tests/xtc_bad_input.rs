//! Damaged input gives precise errors (file, byte offset, what) and never panics or hangs.

mod common;
use common::*;
use lclstreamer::inspect::{Collect, summarize_file};
use lclstreamer::xtc::XtcError;
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn mixed() -> Vec<u8> {
    std::fs::read(sample("mixed_rate/xpptut15-r0014-s000-c000.xtc2")).unwrap()
}

fn err_of(path: &Path) -> String {
    match summarize_file(path, &mut Collect::default()) {
        Ok(s) => panic!("{} accepted: {s:?}", path.display()),
        Err(e) => e.to_string(),
    }
}

/// Offset of the first L1Accept in the mixed_rate s000 sample.
const FIRST_L1: usize = 40_608 + 272 + 72 + 24;

#[test]
fn truncated_last_datagram_is_reported_not_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let b = mixed();
    let all = read_all(&sample("mixed_rate/xpptut15-r0014-s000-c000.xtc2"));
    let idx = all.iter().rposition(|d| d.bytes.len() > 24).unwrap();
    let (l, size) = (all[idx].offset as usize, all[idx].bytes.len());
    for keep in [1usize, 10, 23, 24, size - 1] {
        let p = write(tmp.path(), "t.xtc2", &b[..l + keep]);
        let s = summarize_file(&p, &mut Collect::default()).unwrap();
        assert!(s.truncated, "keep {keep}");
        assert_eq!(s.dgrams, idx as u64, "keep {keep}");
        assert_eq!(s.truncation.unwrap().offset, l as u64);
        assert_eq!(
            s.truncation.unwrap().expected,
            if keep < 24 { 0 } else { size as u64 }
        );
        let t = s.truncation.unwrap();
        assert_eq!(t.available + t.offset, (l + keep) as u64);
    }
}

#[test]
fn root_extent_smaller_than_twelve() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = mixed();
    b[FIRST_L1 + 20..FIRST_L1 + 24].copy_from_slice(&5u32.to_le_bytes());
    let e = err_of(&write(tmp.path(), "x.xtc2", &b));
    assert!(
        e.contains("x.xtc2") && e.contains(&format!("byte {}", FIRST_L1 + 12)),
        "{e}"
    );
    assert!(e.contains("smaller than its 12-byte header"), "{e}");
}

#[test]
fn child_extent_past_its_parent() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = mixed();
    let sd = FIRST_L1 + 24; // first ShapesData of the L1Accept
    b[sd + 8..sd + 12].copy_from_slice(&100_000u32.to_le_bytes());
    let e = err_of(&write(tmp.path(), "x.xtc2", &b));
    assert!(
        e.contains(&format!("byte {sd}")) && e.contains("past the end of its parent"),
        "{e}"
    );
    let mut b = mixed();
    b[sd + 8..sd + 12].copy_from_slice(&3u32.to_le_bytes());
    let e = err_of(&write(tmp.path(), "x.xtc2", &b));
    assert!(
        e.contains(&format!("byte {sd}")) && e.contains("smaller than"),
        "{e}"
    );
}

#[test]
fn unknown_names_id() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = mixed();
    let sd = FIRST_L1 + 24;
    b[sd..sd + 4].copy_from_slice(&0x0001_0077u32.to_le_bytes());
    let e = err_of(&write(tmp.path(), "x.xtc2", &b));
    assert!(
        e.contains(&format!("byte {sd}")) && e.contains("no Configure declared"),
        "{e}"
    );
}

#[test]
fn names_size_that_does_not_divide() {
    let tmp = tempfile::tempdir().unwrap();
    let b = mixed();
    // Grow the first Names by 4 bytes (and its root), inserting zeros at its end.
    let names_ext = u32::from_le_bytes(b[32..36].try_into().unwrap()) as usize;
    let mut g = b[..24 + names_ext].to_vec();
    g.extend_from_slice(&[0; 4]);
    g.extend_from_slice(&b[24 + names_ext..]);
    let root = u32::from_le_bytes(g[20..24].try_into().unwrap()) + 4;
    g[20..24].copy_from_slice(&root.to_le_bytes());
    g[32..36].copy_from_slice(&(names_ext as u32 + 4).to_le_bytes());
    let e = err_of(&write(tmp.path(), "x.xtc2", &g));
    assert!(
        e.contains("byte 24") && e.contains("not a multiple of 524"),
        "{e}"
    );
}

#[test]
fn bad_transition_id_and_non_parent_root() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = mixed();
    b[FIRST_L1 + 11] = 0x0E;
    let e = err_of(&write(tmp.path(), "x.xtc2", &b));
    assert!(
        e.contains(&format!("byte {}", FIRST_L1 + 8)) && e.contains("not a transition id"),
        "{e}"
    );
    let mut b = mixed();
    b[FIRST_L1 + 18] = 3;
    let e = err_of(&write(tmp.path(), "x.xtc2", &b));
    assert!(e.contains("must be a Parent"), "{e}");
}

#[test]
fn cli_exit_status_and_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_lclstreamer");
    let b = mixed();
    let t = write(tmp.path(), "trunc.xtc2", &b[..b.len() - 7]);
    let out = Command::new(exe)
        .args(["inspect", "--json"])
        .arg(&t)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["files"][0]["truncated"], true);
    let mut c = b.clone();
    c[FIRST_L1 + 20..FIRST_L1 + 24].copy_from_slice(&1u32.to_le_bytes());
    let bad = write(tmp.path(), "bad.xtc2", &c);
    let out = Command::new(exe).arg("inspect").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.xtc2") && err.contains(&format!("byte {}", FIRST_L1 + 12)),
        "{err}"
    );
}

fn check_never_panics(bytes: &[u8]) {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(tmp.path(), "f.xtc2", bytes);
    match summarize_file(&p, &mut Collect::default()) {
        Ok(_) => {}
        Err(XtcError::Format { err, .. }) => assert!(err.offset <= bytes.len() as u64),
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn garbage_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        check_never_panics(&bytes);
    }

    #[test]
    fn mutated_samples_never_panic(flips in prop::collection::vec((0usize..7164, any::<u8>()), 1..8)) {
        let mut b = std::fs::read(sample("fakesteps/xpptut15-r0014-s000-c000.xtc2")).unwrap();
        for (pos, v) in flips {
            b[pos] = v;
        }
        check_never_panics(&b);
    }
}

/// A copy of the fakesteps run (two streams with small data) in a temporary directory.
fn fakesteps_copy(dir: &Path) -> PathBuf {
    let src = sample("fakesteps");
    std::fs::create_dir_all(dir.join("smalldata")).unwrap();
    for s in ["s000", "s001"] {
        let big = format!("xpptut15-r0014-{s}-c000.xtc2");
        std::fs::copy(src.join(&big), dir.join(&big)).unwrap();
        let smd = format!("smalldata/xpptut15-r0014-{s}-c000.smd.xtc2");
        std::fs::copy(src.join(&smd), dir.join(&smd)).unwrap();
    }
    dir.to_path_buf()
}

/// Indexes stream s000 of the run in `dir` to its end, then asks three more times.
fn index_s000(dir: &Path) -> lclstreamer::xtc::index::StreamIndexer {
    let run = lclstreamer::xtc::run::discover_in_dir(dir, "xpptut15", 14).unwrap();
    let files = run.streams.iter().find(|s| s.stream == 0).unwrap();
    let mut ix = lclstreamer::xtc::index::StreamIndexer::open(files, true).unwrap();
    while ix.next_entry().unwrap().is_some() {}
    for _ in 0..3 {
        assert!(ix.next_entry().unwrap().is_none());
    }
    ix
}

#[test]
fn small_data_with_a_bad_extent_is_one_truncation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fakesteps_copy(tmp.path());
    let smd = dir.join("smalldata/xpptut15-r0014-s000-c000.smd.xtc2");
    let mut b = std::fs::read(&smd).unwrap();
    let l1 = read_all(&smd)
        .into_iter()
        .find(|d| d.service() == lclstreamer::xtc::TransitionId::L1Accept)
        .unwrap()
        .offset as usize;
    b[l1 + 20..l1 + 24].copy_from_slice(&0x00ff_0000u32.to_le_bytes());
    std::fs::write(&smd, &b).unwrap();
    let ix = index_s000(&dir);
    let t = ix.truncations();
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0].0, smd);
    assert_eq!(t[0].1.offset, l1 as u64);
}

#[test]
fn bigdata_cut_inside_a_datagram_is_a_truncation_with_its_events() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fakesteps_copy(tmp.path());
    let big = dir.join("xpptut15-r0014-s000-c000.xtc2");
    let l1s: Vec<Owned> = read_all(&big)
        .into_iter()
        .filter(|d| d.service() == lclstreamer::xtc::TransitionId::L1Accept)
        .collect();
    assert!(l1s.len() >= 4);
    let cut = l1s[2].offset + 10;
    let b = std::fs::read(&big).unwrap();
    std::fs::write(&big, &b[..cut as usize]).unwrap();
    let ix = index_s000(&dir);
    let t = ix.truncations();
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0].0, big);
    assert_eq!(t[0].1.offset, l1s[2].offset);
    assert_eq!(t[0].1.available, 10);
    assert_eq!(ix.events_past_end(), l1s.len() as u64 - 2);
}

#[test]
fn an_unreadable_chunk_is_named_by_the_readability_check() {
    let tmp = tempfile::tempdir().unwrap();
    let xtc = tmp.path().join("mfx/mfxtest01/xtc");
    std::fs::create_dir_all(&xtc).unwrap();
    std::fs::copy(
        sample("detector/test_epix_calib.xtc2"),
        xtc.join("mfxtest01-r0001-s000-c000.xtc2"),
    )
    .unwrap();
    let run = lclstreamer::xtc::run::discover_in_dir(&xtc, "mfxtest01", 1).unwrap();
    run.check_readable().unwrap();
    let bad = xtc.join("mfxtest01-r0001-s000-c001.xtc2");
    std::fs::create_dir(&bad).unwrap();
    let run = lclstreamer::xtc::run::discover_in_dir(&xtc, "mfxtest01", 1).unwrap();
    let err = run.check_readable().unwrap_err().to_string();
    assert!(err.contains(&bad.display().to_string()), "{err}");
}

#[test]
fn an_unreadable_chunk_is_one_startup_error_naming_it() {
    let exe = env!("CARGO_BIN_EXE_lclstreamer");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let st = Command::new(exe)
        .args([
            "synth",
            "--exp",
            "mfxsyn01",
            "--run",
            "1",
            "--detector",
            "epix100",
        ])
        .args([
            "--events",
            "30",
            "--chunk-bytes",
            "200000",
            "--events-per-enable",
            "10",
        ])
        .arg("--out")
        .arg(root)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    // A later chunk, read only by workers through the small data, replaced by a directory.
    let bad = root.join("mfx/mfxsyn01/xtc/mfxsyn01-r0001-s000-c001.xtc2");
    std::fs::remove_file(&bad).unwrap();
    std::fs::create_dir(&bad).unwrap();
    let cfg = root.join("job.yaml");
    std::fs::write(
        &cfg,
        format!(
            "source:\n  exp: mfxsyn01\n  run: 1\n  root: {r}\n  detector: epix100\n\
             detector:\n  constants: {r}/mfx/mfxsyn01/synth/r0001\nprocessing:\n  keep: all\n\
             output:\n  sinks:\n    - {{kind: files, dir: {r}/out}}\n",
            r = root.display()
        ),
    )
    .unwrap();
    let out = Command::new(exe)
        .args(["run", "--quiet", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&bad.display().to_string()), "{err}");
    assert_eq!(err.matches("lclstreamer:").count(), 1, "{err}");
}
