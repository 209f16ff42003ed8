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
