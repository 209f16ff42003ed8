//! CrystFEL geometry: parsing (defaults, vectors, errors), writing, layouts and radius maps.

use lclstreamer::detector::geometry::parse_vector;
use lclstreamer::detector::{Geometry, SlabLayout};

const TWO_PANELS: &str = "\
; comment line
res = 10000
clen = 0.1
dim0 = %
dim1 = ss
dim2 = fs
min_fs = 0
max_fs = 191
fs = +1.0x
ss = -1.0y

p0a0/min_ss = 0
p0a0/max_ss = 175
p0a0/corner_x = -10.5
p0a0/corner_y = 20.25
p0a1/min_ss = 176
p0a1/max_ss = 351
p0a1/fs = -0.003266x -0.999993y
p0a1/ss = 0.999993x -0.003266y
p0a1/corner_x = 30.0
p0a1/corner_y = -40.0   ; trailing comment
rigid_group_q0 = p0a0,p0a1
";

#[test]
fn parses_defaults_vectors_and_computes_om_radius() {
    let g = Geometry::parse(TWO_PANELS, "two.geom").unwrap();
    assert_eq!(g.panels.len(), 2);
    assert_eq!(g.slab_shape(), (352, 192));
    let l = g.layout("two.geom").unwrap();
    assert_eq!(
        (l.asic_nx, l.asic_ny, l.nasics_x, l.nasics_y),
        (192, 176, 1, 2)
    );
    let p1 = &g.panels[1];
    assert_eq!(p1.fs, [-0.003266, -0.999993, 0.0]);
    assert_eq!(p1.min_fs, 0);
    let r = g.radius_map();
    // Panel 0 pixel (ss 3, fs 7): x = -10.5 + 7, y = 20.25 - 3 (index convention, no +0.5).
    let want = ((7.0f64 - 10.5).powi(2) + (20.25f64 - 3.0).powi(2)).sqrt() as f32;
    assert_eq!(r[3 * 192 + 7], want);
    let (x, y): (f64, f64) = (
        30.0 + 5.0 * 0.999993 - 2.0 * 0.003266,
        -40.0 - 5.0 * 0.003266 - 2.0 * 0.999993,
    );
    let want = (x * x + y * y).sqrt() as f32;
    assert!((r[(176 + 5) * 192 + 2] - want).abs() < 1e-4);

    // Written and read back: same panels, same radius map.
    let again = Geometry::parse(&g.to_geom_string(), "written").unwrap();
    assert_eq!(again.radius_map(), r);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.geom");
    g.write(&path).unwrap();
    assert_eq!(Geometry::from_file(&path).unwrap().radius_map(), r);
}

#[test]
fn vectors() {
    assert_eq!(parse_vector("x"), Some([1.0, 0.0, 0.0]));
    assert_eq!(parse_vector("-y"), Some([0.0, -1.0, 0.0]));
    assert_eq!(parse_vector("+0.5x -1e-3y +0.1z"), Some([0.5, -1e-3, 0.1]));
    assert_eq!(parse_vector("0.5q"), None);
    assert_eq!(parse_vector(""), None);
}

#[test]
fn errors_name_file_line_and_panel() {
    let e = Geometry::parse("p0/min_fs = 0\np0/max_fs = ten\n", "bad.geom")
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.geom:2") && e.contains("max_fs"), "{e}");
    let e = Geometry::parse("p0/min_fs = 0\n", "bad.geom")
        .unwrap_err()
        .to_string();
    assert!(e.contains("panel p0") && e.contains("max_fs"), "{e}");
    let e = Geometry::parse("p0/fs = 2w\n", "bad.geom")
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad vector"), "{e}");
    let e = Geometry::parse("just words\n", "bad.geom")
        .unwrap_err()
        .to_string();
    assert!(e.contains("key = value"), "{e}");
    let e = Geometry::parse("res = 1\n", "bad.geom")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no panels"), "{e}");
    let uneven = TWO_PANELS.replace("p0a1/max_ss = 351", "p0a1/max_ss = 300");
    let g = Geometry::parse(&uneven, "uneven.geom").unwrap();
    assert!(
        g.layout("uneven.geom")
            .unwrap_err()
            .to_string()
            .contains("uneven.geom")
    );
    let e = Geometry::from_file(std::path::Path::new("/nonexistent/x.geom")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/x.geom"));
}

#[test]
fn synthetic_detectors_have_the_psana_slab_layouts() {
    let e = Geometry::synthetic_epix10k2m(0.0, 0.0);
    assert_eq!(e.panels.len(), 64);
    assert_eq!(e.slab_shape(), (5632, 384));
    assert_eq!(e.layout("epix").unwrap(), SlabLayout::EPIX10K2M);
    let j = Geometry::synthetic_jungfrau4m(0.0, 0.0);
    assert_eq!(j.panels.len(), 64);
    assert_eq!(j.slab_shape(), (4096, 1024));
    assert_eq!(j.layout("jf").unwrap(), SlabLayout::JUNGFRAU4M);
    let r = e.radius_map();
    assert!(r.iter().all(|v| v.is_finite()));
    let min = r.iter().copied().fold(f32::INFINITY, f32::min);
    assert!(
        min < 10.0,
        "beam should sit near the inner panel corners, min r {min}"
    );
}
