//! psana geometry text: parse errors, a hand-computed placement, the CrystFEL panels against
//! psana's per-pixel rule on real default geometries, sparse segment sets and the CLI.
//! (Agreement with psana itself: scripts/psana_geometry_check.py.)

use lclstreamer::detector::geometry::{Geometry, SlabLayout};
use lclstreamer::detector::psana_geometry::{CrystfelOptions, PsanaGeometry};
use std::path::PathBuf;
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/psana_geometry")
        .join(name)
}

fn load(name: &str) -> PsanaGeometry {
    PsanaGeometry::from_file(&fixture(name)).unwrap()
}

fn err(text: &str) -> String {
    PsanaGeometry::parse(text, "g.data")
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_lines_name_file_and_line() {
    let ok = "IP 0 CAMERA 0 0 0 100000 90 0 0 0 0 0\n";
    let e = err(&format!(
        "# c\n\n{ok}CAMERA 0 EPIX10KA:V1 0 0 0 0 0 0 0 0 0\n"
    ));
    assert!(e.starts_with("g.data:4: expected 13 fields"), "{e}");
    let e = err(&format!("{ok}CAMERA 0 EPIX10KA:V1 0 1e3 x 0 0 0 0 0 0 0\n"));
    assert_eq!(e, "g.data:2: Y0 must be a finite number, got `x`");
    let e = err(&format!("{ok}CAMERA 0 EPIX10KA:V1 0 0 0 nan 0 0 0 0 0 0\n"));
    assert!(e.starts_with("g.data:2: Z0 must be a finite number"), "{e}");
    let e = err(&format!("{ok}CAMERA a EPIX10KA:V1 0 0 0 0 0 0 0 0 0 0\n"));
    assert_eq!(e, "g.data:2: PARENT_IND must be an integer, got `a`");
    let e = err(&format!("{ok}CAMERA 0 EPIX10KA:V9 0 0 0 0 0 0 0 0 0 0\n"));
    assert!(
        e.starts_with("g.data:2: `EPIX10KA:V9` is not a known sensor and has no children"),
        "{e}"
    );
    let e = err(&format!(
        "{ok}CAMERA 0 MTRX:V2:4:x:75:75 0 0 0 0 0 0 0 0 0 0\n"
    ));
    assert!(e.starts_with("g.data:2: matrix sensor"), "{e}");
    let e =
        err("CAMERA 0 EPIX10KA:V1 0 0 0 0 0 0 0 0 0 0\nDET 0 EPIX10KA:V1 1 0 0 0 0 0 0 0 0 0\n");
    assert!(e.starts_with("g.data:2: second top object DET:0"), "{e}");
    let e = err(&format!(
        "{ok}CAMERA 0 EPIX10KA:V1 0 0 0 0 0 0 0 0 0 0\nEPIX10KA:V1 0 QUAD:V1 0 0 0 0 0 0 0 0 0 0\n"
    ));
    assert!(
        e.starts_with("g.data:3: sensor EPIX10KA:V1:0 cannot have children"),
        "{e}"
    );
    // A and B are each other's parents: not reachable from the top object IP.
    let e = err(&format!(
        "{ok}CAMERA 0 EPIX10KA:V1 0 0 0 0 0 0 0 0 0 0\nB 0 A 0 0 0 0 0 0 0 0 0 0\nA 0 B 0 0 0 0 0 0 0 0 0 0\n"
    ));
    assert!(e.starts_with("g.data:3: A:0 is not connected"), "{e}");
    assert_eq!(err("# only comments\n\n"), "g.data: no geometry lines");
    let e = PsanaGeometry::from_file(&fixture("missing.data"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.data: cannot read geometry"), "{e}");
}

/// One 4x6 matrix sensor (100 µm, psana's MTRX:V2: x = (col-2.5)·100, y = -(row-1.5)·100),
/// turned 90° about z and moved by (1000, 2000) µm; its positive z under IP becomes -50000.
/// psana frame: X = -y + 1000 = (row-1.5)·100 + 1000, Y = x + 2000, Z = -50000; lab frame
/// (x, y, z) = (-Y, -X, -Z), in pixels: x = -(col-2.5) - 20, y = -(row-1.5) - 10, z = 0.05 m.
#[test]
fn one_turned_segment_by_hand() {
    let g = PsanaGeometry::parse(
        "# HDR ...\r\nIP 0 MTRX:V2:4:6:100:100 0  1000 2000 50000  90 0 0  0 0 0\r\n",
        "one",
    )
    .unwrap();
    assert_eq!(g.segments.len(), 1);
    let s = &g.segments[0];
    let p = s.pixel_lab_um(0, 0);
    for (a, b) in p.iter().zip([-1750.0, -850.0, 50000.0]) {
        assert!((a - b).abs() < 1e-9, "{p:?}");
    }
    let c = g.to_crystfel(&CrystfelOptions::default()).unwrap();
    assert_eq!(c.panels.len(), 1);
    let q = &c.panels[0];
    assert_eq!(q.name, "p0a0");
    assert_eq!((q.min_fs, q.max_fs, q.min_ss, q.max_ss), (0, 5, 0, 3));
    assert_eq!(q.fs, [-1.0, 0.0, 0.0]);
    assert_eq!(q.ss, [0.0, -1.0, 0.0]);
    // Corner of the first pixel: its centre (-17.5, -8.5) minus half a step along fs and ss.
    assert!((q.corner_x + 17.0).abs() < 1e-9 && (q.corner_y + 8.0).abs() < 1e-9);
    assert_eq!(q.extra, [("coffset".to_string(), "0".to_string())]);
    let globals: Vec<(&str, &str)> = c
        .globals
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        globals,
        [
            ("clen", "0.05"),
            ("res", "10000"),
            ("data", "/entry_1/data_1/data"),
            ("dim0", "%"),
            ("dim1", "ss"),
            ("dim2", "fs"),
            ("peak_list", "/entry_1/result_1"),
            ("peak_list_type", "cxi"),
        ]
    );
}

/// Every panel pixel centre (corner + (i+0.5)·fs + (j+0.5)·ss, z from coffset) against psana's
/// rule for that segment pixel; returns the largest deviation off and on wide pixels, µm.
fn panel_deviation(g: &PsanaGeometry, opts: &CrystfelOptions, wide: &[usize]) -> (f64, f64) {
    let c = g.to_crystfel(opts).unwrap();
    let clen: f64 = c
        .globals
        .iter()
        .find(|(k, _)| k == "clen")
        .unwrap()
        .1
        .parse()
        .unwrap();
    let ids = opts
        .segments
        .clone()
        .unwrap_or_else(|| (0..g.segments.len()).collect());
    let (mut off, mut on) = (0.0f64, 0.0f64);
    for p in &c.panels {
        let seg_pos = p.min_ss / g.segments[ids[0]].sensor.rows;
        let seg = &g.segments[ids[seg_pos]];
        assert_eq!(p.name.split('a').next().unwrap(), format!("p{}", seg.id));
        let pix = seg.sensor.pixel_um;
        let coffset: f64 = p
            .extra
            .iter()
            .find(|(k, _)| k == "coffset")
            .unwrap()
            .1
            .parse()
            .unwrap();
        let corner = [p.corner_x, p.corner_y, (clen + coffset) * 1e6 / pix];
        for ss in (p.min_ss..=p.max_ss).step_by(5).chain([p.max_ss]) {
            for fs in (p.min_fs..=p.max_fs).step_by(3).chain([p.max_fs]) {
                let (i, j) = ((fs - p.min_fs) as f64 + 0.5, (ss - p.min_ss) as f64 + 0.5);
                let ours: Vec<f64> = (0..3)
                    .map(|a| pix * (corner[a] + i * p.fs[a] + j * p.ss[a]))
                    .collect();
                let row = ss % seg.sensor.rows;
                let want = seg.pixel_lab_um(row, fs);
                let d = (0..3)
                    .map(|a| (ours[a] - want[a]).powi(2))
                    .sum::<f64>()
                    .sqrt();
                if wide.contains(&fs) || wide.contains(&(row + 10_000)) {
                    on = on.max(d);
                } else {
                    off = off.max(d);
                }
            }
        }
    }
    (off, on)
}

/// Jungfrau V2 wide pixels: columns at inner ASIC edges, and rows 255/256 (offset by 10000).
const JF_WIDE: &[usize] = &[255, 256, 511, 512, 767, 768, 10_255, 10_256];

#[test]
fn panels_follow_psana_pixels_on_real_geometries() {
    let all = CrystfelOptions::default();
    for (file, nseg, slab, wide, edge_um) in [
        (
            "geometry-def-epix10kaquad.data",
            4,
            (1408, 384),
            &[][..],
            0.0,
        ),
        ("epix10k2m-invented.data", 16, (5632, 384), &[][..], 0.0),
        ("geometry-def-epix100a.data", 1, (704, 768), &[][..], 0.0),
        (
            "geometry-def-jungfrau4M.data",
            8,
            (4096, 1024),
            JF_WIDE,
            37.5 * 2f64.sqrt(),
        ),
        (
            "geometry-def-jungfrau16M.data",
            32,
            (16384, 1024),
            JF_WIDE,
            37.5 * 2f64.sqrt(),
        ),
    ] {
        let g = load(file);
        assert_eq!(g.segments.len(), nseg, "{file}");
        assert_eq!(g.to_crystfel(&all).unwrap().slab_shape(), slab, "{file}");
        let (off, on) = panel_deviation(&g, &all, wide);
        assert!(off < 1e-6, "{file}: {off} µm off the wide pixels");
        assert!(
            (on - edge_um).abs() < 1e-6,
            "{file}: {on} µm on wide pixels"
        );
    }
}

#[test]
fn slab_layouts_match_the_pipeline() {
    let c = load("epix10k2m-invented.data")
        .to_crystfel(&CrystfelOptions::default())
        .unwrap();
    assert_eq!(c.layout("2M").unwrap(), SlabLayout::EPIX10K2M);
    let c = load("geometry-def-jungfrau4M.data")
        .to_crystfel(&CrystfelOptions::default())
        .unwrap();
    assert_eq!(c.layout("4M").unwrap(), SlabLayout::JUNGFRAU4M);
}

#[test]
fn segments_are_numbered_depth_first_in_file_order() {
    let g = load("epix10k2m-invented.data");
    let idx: Vec<i64> = g.segments.iter().map(|s| s.object_index).collect();
    assert_eq!(idx, [0, 1, 2, 3].repeat(4));
    let g = load("geometry-def-jungfrau16M.data");
    assert!(
        g.segments
            .iter()
            .enumerate()
            .all(|(i, s)| s.object_index == i as i64)
    );
    assert_eq!(g.segments[31].line, 69);
}

#[test]
fn sparse_jungfrau_16m() {
    let g = load("geometry-def-jungfrau16M.data");
    let ids = vec![
        0, 1, 2, 4, 5, 7, 9, 10, 12, 13, 15, 16, 19, 21, 22, 24, 27, 28, 31,
    ];
    let opts = CrystfelOptions {
        segments: Some(ids.clone()),
        ..Default::default()
    };
    let c = g.to_crystfel(&opts).unwrap();
    assert_eq!(c.slab_shape(), (19 * 512, 1024));
    assert_eq!(c.panels.len(), 19 * 8);
    // The fourth present module (id 4) is slab rows 1536..2048.
    let p = c.panels.iter().find(|p| p.name == "p4a5").unwrap();
    assert_eq!(
        (p.min_ss, p.max_ss, p.min_fs),
        (3 * 512 + 256, 3 * 512 + 511, 256)
    );
    let (off, on) = panel_deviation(&g, &opts, JF_WIDE);
    assert!(off < 1e-6 && (on - 37.5 * 2f64.sqrt()).abs() < 1e-6);
    let bad = CrystfelOptions {
        segments: Some(vec![3, 32]),
        ..Default::default()
    };
    assert_eq!(
        g.to_crystfel(&bad).unwrap_err().to_string(),
        format!(
            "{}: segment 32 not in the geometry (it has 32 segments, ids 0-31)",
            fixture("geometry-def-jungfrau16M.data").display()
        )
    );
}

#[test]
fn written_geom_reads_back() {
    let opts = CrystfelOptions {
        clen: Some("/LCLS/detector_1/EncoderValue".into()),
        photon_energy: Some("9500".into()),
        adu_per_ev: Some("0.001".into()),
        ..Default::default()
    };
    let c = load("geometry-def-epix10kaquad.data")
        .to_crystfel(&opts)
        .unwrap();
    let back = Geometry::parse(&c.to_geom_string(), "back").unwrap();
    // The reader keeps panel keys given globally (clen, res, data, ...) as panel defaults.
    let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(
        back.globals,
        [
            kv("peak_list", "/entry_1/result_1"),
            kv("peak_list_type", "cxi")
        ]
    );
    assert_eq!(back.panels.len(), 16);
    for (a, b) in back.panels.iter().zip(&c.panels) {
        assert_eq!((&a.name, a.min_fs, a.max_ss), (&b.name, b.min_fs, b.max_ss));
        assert_eq!((a.corner_x, a.corner_y), (b.corner_x, b.corner_y));
        for e in [
            &b.extra[0],
            &kv("clen", "/LCLS/detector_1/EncoderValue"),
            &kv("res", "10000"),
            &kv("adu_per_eV", "0.001"),
            &kv("photon_energy", "9500"),
            &kv("dim1", "ss"),
        ] {
            assert!(a.extra.contains(e), "{e:?} not in {:?}", a.extra);
        }
        for k in 0..3 {
            assert!((a.fs[k] - b.fs[k]).abs() <= 5e-7 && (a.ss[k] - b.ss[k]).abs() <= 5e-7);
        }
    }
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lclstreamer"))
        .arg("geometry")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_writes_stdout_or_file_and_reports_bad_input() {
    let src = fixture("geometry-def-jungfrau4M.data");
    let out = cli(&["--psana", src.to_str().unwrap(), "--segments", "1,3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let g = Geometry::parse(&text, "stdout").unwrap();
    assert_eq!(g.slab_shape(), (1024, 1024));
    assert_eq!(g.panels[0].name, "p1a0");

    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("jf.geom");
    let out = cli(&[
        "--psana",
        src.to_str().unwrap(),
        "--out",
        dest.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert_eq!(Geometry::from_file(&dest).unwrap().panels.len(), 64);

    let bad = dir.path().join("bad.data");
    std::fs::write(
        &bad,
        "IP 0 CAMERA 0 0 0 1 0 0 0 0 0 0\nCAMERA 0 JUNGFRAU:V2 0 0 0\n",
    )
    .unwrap();
    let out = cli(&["--psana", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:2: expected 13 fields", bad.display())),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let out = cli(&["--psana", src.to_str().unwrap(), "--segments", "2,x"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("\"x\" is not a segment id"),
        "{stderr}"
    );
}
