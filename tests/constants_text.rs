//! Constants in psana's text `.data` format: files written by psana's own `save_txt` (fixtures
//! from `scripts/make-psana-text-fixtures`) read as psana's `load_txt` reads them, header-less
//! layouts reshaped, bad lines reported with file and line, and (when `.venv-psana` exists)
//! random arrays cross-checked against psana's `load_txt` live.

use std::path::{Path, PathBuf};
use std::process::Command;

use lclstreamer::detector::constants::text::read_data_txt;
use lclstreamer::detector::constants::{read_any, read_checked, read_npy_any};
use lclstreamer::detector::{ConstantFiles, ConstantsError, GainConstants};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/psana_text")
}

const NAMES: [&str; 5] = [
    "pedestals",
    "pixel_gain",
    "pixel_offset",
    "pixel_status",
    "pixel_mask",
];

#[test]
fn psana_data_files_read_as_psana_load_txt_reads_them() {
    for name in NAMES {
        let data = fixtures().join(format!("data/{name}.data"));
        let ours = read_any(&data).unwrap();
        let psana = read_npy_any(&fixtures().join(format!("load_txt/{name}.npy"))).unwrap();
        assert_eq!(ours.shape(), psana.shape(), "{name}");
        assert!(ours == psana, "{name}: values differ from psana's load_txt");
    }
    // The mask has no header: its shape is the file's layout, (lines, values per line).
    let t = read_data_txt(&fixtures().join("data/pixel_mask.data")).unwrap();
    assert!(!t.shape_from_header);
    assert_eq!(t.array.shape(), [8, 5]);
    let t = read_data_txt(&fixtures().join("data/pedestals.data")).unwrap();
    assert!(t.shape_from_header);
    assert_eq!(t.array.shape(), [3, 2, 4, 5]);
}

#[test]
fn data_and_npy_of_the_same_constants_load_the_same() {
    let data = ConstantFiles::in_dir(&fixtures().join("data"));
    assert!(data.pedestals.ends_with("pedestals.data"));
    assert!(
        data.pixel_mask
            .as_ref()
            .unwrap()
            .ends_with("pixel_mask.data")
    );
    let npy = ConstantFiles::in_dir(&fixtures().join("npy"));
    let a = GainConstants::load(&data, 3, 2, 4, 5).unwrap();
    let b = GainConstants::load(&npy, 3, 2, 4, 5).unwrap();
    // Pedestals are multiples of 1/8, exact in `%.3f`; the offsets and gains were rounded to
    // 3 decimals by `save_txt`.
    let ped = read_npy_any(&fixtures().join("npy/pedestals.npy")).unwrap();
    let off = read_any(&fixtures().join("data/pixel_offset.data")).unwrap();
    let want: Vec<f32> = (&ped + &off).iter().map(|&v| v as f32).collect();
    assert_eq!(a.pedestals, want);
    for (x, y) in a.pixel_gain.iter().zip(&b.pixel_gain) {
        assert!((x - y).abs() <= 6e-4, "{x} {y}");
    }
    assert_eq!(a.pixel_status, b.pixel_status);
    assert_eq!(a.pixel_status[119], 1 << 31, "bit 40 folds into bit 31");
    // The header-less 2-D mask is reshaped to (nsegs, rows, cols).
    assert_eq!(a.pixel_mask, b.pixel_mask);
    assert!(a.pixel_mask.as_ref().unwrap().contains(&0));
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn npy_wins_over_data_and_a_missing_constant_names_both() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["pedestals", "pixel_gain", "pixel_status"] {
        std::fs::copy(
            fixtures().join(format!("npy/{name}.npy")),
            dir.path().join(format!("{name}.npy")),
        )
        .unwrap();
        write(dir.path(), &format!("{name}.data"), "not read\n");
    }
    write(dir.path(), "pixel_offset.data", "not a number\n");
    let files = ConstantFiles::in_dir(dir.path());
    assert!(files.pedestals.ends_with("pedestals.npy"));
    assert!(
        files
            .pixel_status
            .as_ref()
            .unwrap()
            .ends_with("pixel_status.npy")
    );
    assert!(files.pixel_mask.is_none());
    // pixel_offset exists only as .data, so it is used (and here it is bad).
    let err = GainConstants::load(&files, 3, 2, 4, 5).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("pixel_offset.data:1: \"not\" is not a number"),
        "{err}"
    );
    std::fs::remove_file(dir.path().join("pixel_offset.data")).unwrap();
    GainConstants::load(&ConstantFiles::in_dir(dir.path()), 3, 2, 4, 5).unwrap();

    std::fs::remove_file(dir.path().join("pixel_gain.npy")).unwrap();
    std::fs::remove_file(dir.path().join("pixel_gain.data")).unwrap();
    let err = GainConstants::load(&ConstantFiles::in_dir(dir.path()), 3, 2, 4, 5).unwrap_err();
    assert!(matches!(err, ConstantsError::Missing { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: cannot open calibration constants: no such file, nor pixel_gain.data",
            dir.path().join("pixel_gain.npy").display()
        )
    );
}

#[test]
fn headerless_files_are_reshaped_when_the_count_matches() {
    let dir = tempfile::tempdir().unwrap();
    // (ngr 2, nsegs 1, rows 2, cols 3) as 4 lines of 3 values, no header at all.
    let rows = "1 2 3\n4 5 6\n\n7 8 9\n10 11 12\n";
    write(dir.path(), "pedestals.data", rows);
    write(dir.path(), "pixel_gain.data", &rows.replace(' ', "\t"));
    let c = GainConstants::load(&ConstantFiles::in_dir(dir.path()), 2, 1, 2, 3).unwrap();
    assert_eq!(c.pedestals, (1..=12).map(|v| v as f32).collect::<Vec<_>>());
    assert_eq!(
        read_any(&dir.path().join("pedestals.data"))
            .unwrap()
            .shape(),
        [4, 3]
    );
    // Also through read_checked (the job's mask file).
    let m = read_checked(&dir.path().join("pedestals.data"), "mask", &[2, 2, 3]).unwrap();
    assert_eq!(m.shape(), [2, 2, 3]);
    // A count that does not fit is a shape error showing the file's layout.
    let err = GainConstants::load(&ConstantFiles::in_dir(dir.path()), 2, 1, 2, 4).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: pedestals has shape [4, 3], expected [2, 1, 2, 4]",
            dir.path().join("pedestals.data").display()
        )
    );
    // A header shape is kept as given: a 2-D header never reshapes silently.
    write(
        dir.path(),
        "pedestals.data",
        &format!("# SHAPE (4,3)\n{rows}"),
    );
    let err = GainConstants::load(&ConstantFiles::in_dir(dir.path()), 2, 1, 2, 3).unwrap_err();
    assert!(matches!(err, ConstantsError::Shape { .. }), "{err}");
    // One line is 1-D, as in psana.
    write(dir.path(), "v.data", "# DTYPE float64\n1.5 2.5 3.5 \n");
    assert_eq!(read_any(&dir.path().join("v.data")).unwrap().shape(), [3]);
}

#[test]
fn non_finite_values_in_data_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "pedestals.data", "1 2 3\n4 nan 6\n");
    write(dir.path(), "pixel_gain.data", "1 2 3\n4 5 6\n");
    let err = GainConstants::load(&ConstantFiles::in_dir(dir.path()), 1, 1, 2, 3).unwrap_err();
    assert!(
        matches!(err, ConstantsError::NonFinite { index: 4, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("pedestals.data"), "{err}");
}

#[test]
fn bad_lines_are_reported_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let header = "# SHAPE       (2,3)\n# DATATYPE    uint16\n\n";
    let cases = [
        ("1 2 3\n4 x 6\n", 2, "\"x\" is not a number"),
        (
            "1 2 3\n4 5\n",
            2,
            "2 values, but line 1 has 3 (rows must be equal)",
        ),
        ("# only\n#comments\n", 2, "no data lines (only comments)"),
        (
            &format!("{header}1 2 3\n4 5 6\n7 8 9\n"),
            6,
            "more values than the shape [2, 3] of line 1 holds (6 values)",
        ),
        (
            &format!("{header}1 2 3\n\n"),
            4,
            "the file ends after 3 values, but the shape [2, 3] of line 1 holds 6",
        ),
        (
            &format!("{header}1 2 3\n4 5 70000\n"),
            5,
            "70000 does not fit the file's dtype",
        ),
        (
            &format!("{header}1 2 -1\n4 5 6\n"),
            4,
            "-1 does not fit the file's dtype",
        ),
        (
            "1 2 3\n# DIM:0 1\n4 5 6\n",
            2,
            "array metadata after the data (psana's header comes first)",
        ),
        (
            "# SHAPE 3,4\n1 2 3\n",
            1,
            "bad SHAPE \"3,4\": expected a tuple like (3,512,1024)",
        ),
        (
            "# DIM:0 x\n1 2 3\n",
            1,
            "bad DIM:0 \"x\": invalid digit found in string",
        ),
        (
            "# DTYPE complex64\n1\n",
            1,
            "bad DTYPE \"complex64\": unsupported dtype",
        ),
        (
            "# SHAPE (99999999999,99999999999,99999999999)\n1\n",
            1,
            "shape [99999999999, 99999999999, 99999999999] is too large",
        ),
    ];
    for (i, (text, line, msg)) in cases.iter().enumerate() {
        let p = write(dir.path(), &format!("c{i}.data"), text);
        let err = read_any(&p).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}:{line}: {msg}", p.display()),
            "case {i}"
        );
    }
    let p = dir.path().join("bin.data");
    std::fs::write(&p, b"1 2\n\xff\xfe\n").unwrap();
    assert_eq!(
        read_any(&p).unwrap_err().to_string(),
        format!("{}:2: not UTF-8 text", p.display())
    );
    let err = read_any(&dir.path().join("absent.data")).unwrap_err();
    assert!(matches!(err, ConstantsError::Open { .. }), "{err}");
}

#[test]
fn header_dtype_is_applied_as_psana_does() {
    let dir = tempfile::tempdir().unwrap();
    // No dtype: psana stores float32.
    let p = write(dir.path(), "a.data", "0.1 16777217\n");
    let a = read_any(&p).unwrap();
    assert_eq!(a.as_slice().unwrap(), [0.1f32 as f64, 16777216.0]);
    // DATATYPE wins over DTYPE; integers truncate toward zero.
    let p = write(
        dir.path(),
        "b.data",
        "# DATATYPE int32\n# DTYPE float64\n-2.7 3.9\n",
    );
    assert_eq!(read_any(&p).unwrap().as_slice().unwrap(), [-2.0, 3.0]);
    let p = write(dir.path(), "c.data", "# DTYPE float64\n0.1 16777217\n");
    assert_eq!(read_any(&p).unwrap().as_slice().unwrap(), [0.1, 16777217.0]);
}

/// psana's python, when `scripts/setup-psana` has made `.venv-psana` (too heavy for CI).
fn psana_python() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-psana/bin/python");
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: {} missing; run scripts/setup-psana for the live psana check",
            p.display()
        );
        None
    }
}

const LIVE: &str = r#"
import sys, numpy as np
from psana.pscalib.calib.NDArrIO import save_txt, load_txt
out = sys.argv[1]
rng = np.random.default_rng(7)
cases = [
    ("f32_4d", rng.normal(100, 30, (3, 4, 6, 7)).astype(np.float32), "%.3f"),
    ("f64_3d", rng.normal(0, 1e6, (2, 5, 9)), "%.6e"),
    ("u16_2d", rng.integers(0, 65535, (11, 13)).astype(np.uint16), "%d"),
    ("i32_1d", rng.integers(-10**9, 10**9, 17).astype(np.int32), "%.1f"),
    ("u64_5d", rng.integers(0, 2**40, (2, 2, 3, 2, 3)).astype(np.uint64), "%.3f"),
    ("bool_3d", rng.random((2, 3, 4)) > 0.5, "%d"),
]
for name, a, fmt in cases:
    save_txt(f"{out}/{name}.data", a, cmts=("live check",), fmt=fmt)
    np.save(f"{out}/{name}.npy", load_txt(f"{out}/{name}.data"))
print(" ".join(n for n, _, _ in cases))
"#;

#[test]
fn psana_load_txt_and_ours_agree_live() {
    let Some(py) = psana_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(py)
        .arg("-c")
        .arg(LIVE)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = String::from_utf8(out.stdout).unwrap();
    assert_eq!(names.split_whitespace().count(), 6, "{names}");
    for name in names.split_whitespace() {
        let ours = read_any(&dir.path().join(format!("{name}.data"))).unwrap();
        let psana = read_npy_any(&dir.path().join(format!("{name}.npy"))).unwrap();
        assert_eq!(ours.shape(), psana.shape(), "{name}");
        assert!(ours == psana, "{name}: values differ from psana's load_txt");
    }
}

#[test]
fn whole_detector_constants_give_the_planes_of_the_segments_present() {
    use ndarray_npy::WriteNpyExt;
    let npy = ConstantFiles::in_dir(&fixtures().join("npy"));
    let all = GainConstants::load(&npy, 3, 2, 4, 5).unwrap();
    // Segment 1 alone: psana's np.take(arr, [1], axis=-3).
    let one = GainConstants::load_segments(&npy, true, 3, &[1], 4, 5).unwrap();
    assert_eq!(one.nsegs, 1);
    let plane = 4 * 5;
    for gr in 0..3 {
        assert_eq!(
            one.pedestals[gr * plane..(gr + 1) * plane],
            all.pedestals[(gr * 2 + 1) * plane..(gr * 2 + 2) * plane]
        );
        assert_eq!(
            one.pixel_status[gr * plane..(gr + 1) * plane],
            all.pixel_status[(gr * 2 + 1) * plane..(gr * 2 + 2) * plane]
        );
    }
    assert_eq!(
        one.pixel_mask.as_deref().unwrap(),
        &all.pixel_mask.as_deref().unwrap()[plane..]
    );
    // As many planes as segments present: taken as they are (constants already selected).
    let sel = GainConstants::load_segments(&npy, true, 3, &[4, 9], 4, 5).unwrap();
    assert_eq!(sel.pedestals, all.pedestals);
    // A segment beyond the constants: one error with the file, the shape found and needed.
    let e = GainConstants::load_segments(&npy, true, 3, &[0, 2, 5], 4, 5)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("pedestals.npy") && e.contains("[3, 2, 4, 5]") && e.contains("[3, 6, 4, 5]"),
        "{e}"
    );
    // One gain range: `(nsegs, rows, cols)` and `(rows, cols)` are accepted as psana stores them.
    let tmp = tempfile::tempdir().unwrap();
    let ped = ndarray::Array2::<f32>::from_shape_fn((4, 5), |(r, c)| (r * 5 + c) as f32);
    ped.write_npy(std::fs::File::create(tmp.path().join("pedestals.npy")).unwrap())
        .unwrap();
    let gain = ndarray::Array3::<f32>::from_elem((1, 4, 5), 2.0);
    gain.write_npy(std::fs::File::create(tmp.path().join("pixel_gain.npy")).unwrap())
        .unwrap();
    let c = GainConstants::load_segments(&ConstantFiles::in_dir(tmp.path()), true, 1, &[0], 4, 5)
        .unwrap();
    assert_eq!(c.pedestals, ped.iter().copied().collect::<Vec<_>>());
    assert!(c.pixel_gain.iter().all(|&g| g == 2.0));
    // Without a gain file: gain 1 where the family has no gain factor, an error where it needs one.
    std::fs::remove_file(tmp.path().join("pixel_gain.npy")).unwrap();
    let files = ConstantFiles::in_dir(tmp.path());
    let c = GainConstants::load_segments(&files, false, 1, &[0], 4, 5).unwrap();
    assert!(c.pixel_gain.iter().all(|&g| g == 1.0));
    let e = GainConstants::load_segments(&files, true, 1, &[0], 4, 5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("pixel_gain"), "{e}");
}
