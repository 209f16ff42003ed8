//! AI batches end to end: `lclstreamer run` under mpirun on a synthetic ePix10ka quad with
//! `processing.image`, read with h5py: `(B, C, H, W)` (or `(B, H, W)`), float32 or float16, one
//! C-contiguous image per chunk, and every value equal to an independent numpy assembly (pixel
//! centres from the .geom text, nearest pixel, pad or crop) of the calibrated slab the same job
//! writes with `send: calibrated`.

use lclstreamer::detector::Geometry;
use lclstreamer::detector::assemble::Assembly;
use std::path::{Path, PathBuf};
use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_lclstreamer");
const EXP: &str = "mfximg01";

fn python() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} missing under CI: scripts/test must run scripts/setup-python",
        p.display()
    );
    eprintln!("SKIPPED: {} missing; run scripts/setup-python", p.display());
    None
}

fn ok(out: std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn side(root: &Path) -> PathBuf {
    root.join("mfx").join(EXP).join("synth/r0002")
}

/// Runs the job on 3 ranks with `image` (YAML of `processing.image`, or empty) into `out`.
fn job(root: &Path, name: &str, layout: &str, image: &str) -> PathBuf {
    let s = side(root);
    let out = root.join(name);
    let text = format!(
        "source: {{exp: {EXP}, run: 2, root: {root}, detector: epixquad}}\n\
         detector: {{kind: epixquad, constants: {s}, geometry: {s}/geometry.geom}}\n\
         processing:\n  keep: all\n  send: calibrated\n{image}\
         output:\n  batch_size: 4\n  layout: {layout}\n  sinks:\n    - {{kind: files, dir: {out}}}\n",
        root = root.display(),
        s = s.display(),
        out = out.display(),
    );
    let cfg = root.join(format!("{name}.yaml"));
    std::fs::write(&cfg, text).unwrap();
    let out_cmd = Command::new("mpirun")
        .args([
            "--oversubscribe",
            "-n",
            "3",
            EXE,
            "run",
            "--quiet",
            "--config",
        ])
        .arg(&cfg)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .unwrap();
    ok(out_cmd, name);
    out
}

const CHECK: &str = r#"
import glob, os, sys, json
import numpy as np, h5py, hdf5plugin

geom_path, calib_dir, img_dir, spec = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])

panels = {}
for line in open(geom_path):
    line = line.split(";")[0].strip()
    if "=" not in line:
        continue
    key, val = [t.strip() for t in line.split("=", 1)]
    if "/" not in key:
        continue
    name, field = key.split("/", 1)
    panels.setdefault(name, {})[field] = val

def vec(s):
    out = {"x": 0.0, "y": 0.0}
    for t in s.split():
        out[t[-1]] = float(t[:-1])
    return out["x"], out["y"]

# Independent assembly: the centre of every slab pixel from the .geom text, nearest pixel.
idx, xs, ys = [], [], []
slab_w = max(int(p["max_fs"]) for p in panels.values()) + 1
for p in panels.values():
    fs0, fs1, ss0, ss1 = (int(p[k]) for k in ("min_fs", "max_fs", "min_ss", "max_ss"))
    fx, fy = vec(p["fs"]); sx, sy = vec(p["ss"])
    ss, fs = np.mgrid[ss0:ss1 + 1, fs0:fs1 + 1]
    a, b = fs - fs0 + 0.5, ss - ss0 + 0.5
    xs.append(float(p["corner_x"]) + a * fx + b * sx)
    ys.append(float(p["corner_y"]) + a * fy + b * sy)
    idx.append(ss * slab_w + fs)
idx = np.concatenate([i.ravel() for i in idx])
x = np.concatenate([v.ravel() for v in xs]); y = np.concatenate([v.ravel() for v in ys])
col = np.rint(x - x.min()).astype(int); row = np.rint(y - y.min()).astype(int)
nh, nw = row.max() + 1, col.max() + 1
assert (nh, nw) == tuple(spec["natural"]), ((nh, nw), spec["natural"])

def offset(n, t, style):
    return int((t - n) / 2) if style == "center" else 0

def expected(slab):
    th, tw = spec.get("target") or (nh, nw)
    r = row + offset(nh, th, spec["pad_style"]); c = col + offset(nw, tw, spec["pad_style"])
    keep = (r >= 0) & (r < th) & (c >= 0) & (c < tw)
    img = np.zeros((th, tw), np.float32)
    img[r[keep], c[keep]] = slab.ravel()[idx[keep]]
    return img

def frames(d, key):
    out = {}
    for f in sorted(glob.glob(os.path.join(d, "*.h5"))):
        with h5py.File(f, "r") as h:
            ts = h["LCLS/timestamp"][()] if "LCLS" in h else h["timestamp"][()]
            ds = h[key(h)]
            out_arr = ds[()]
            yield ds, out_arr, ts

calib = {}
for ds, arr, ts in frames(calib_dir, lambda h: "entry_1/data_1/data"):
    for t, a in zip(ts, arr):
        calib[int(t)] = a

seen = 0
for ds, arr, ts in frames(img_dir, lambda h: spec["key"]):
    B = len(ts)
    C = spec["channels"]
    th, tw = spec.get("target") or (nh, nw)
    want_shape = (B, C, th, tw) if C else (B, th, tw)
    assert ds.shape == want_shape, (ds.shape, want_shape)
    assert ds.dtype == np.dtype(spec["dtype"]), ds.dtype
    assert ds.chunks == (1,) + want_shape[1:], ds.chunks
    assert arr.flags["C_CONTIGUOUS"]
    for t, a in zip(ts, arr):
        e = expected(calib[int(t)]).astype(spec["dtype"])
        chans = a if C else a[None]
        for ch in chans:
            assert np.array_equal(ch, e), (int(t), np.abs(ch.astype(np.float64) - e).max())
        seen += 1
assert seen == len(calib) == spec["events"], (seen, len(calib))
print("ok", seen)
"#;

#[test]
fn ai_batches_match_an_independent_assembly_of_the_calibrated_slab() {
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let events = 10;
    ok(
        Command::new(EXE)
            .args(["synth", "--out"])
            .arg(root)
            .args(["--exp", EXP, "--run", "2", "--detector", "epixquad"])
            .args(["--events", &events.to_string(), "--streams", "2"])
            .arg("--npy-only")
            .output()
            .unwrap(),
        "synth",
    );
    let geom = side(root).join("geometry.geom");
    let natural = Assembly::new(&Geometry::from_file(&geom).unwrap(), None)
        .unwrap()
        .natural;
    let calib = job(root, "calib", "cxi", "");
    let cases = [
        // Pad rows, crop columns, three channels, float32, LCLStreamer layout.
        (
            "center",
            format!(
                "  image: {{height: {}, width: {}, pad_style: center, num_channels: 3}}\n",
                natural.0 + 5,
                natural.1 - 7
            ),
            "lclstreamer",
            "epixquad.image",
            Some((natural.0 + 5, natural.1 - 7)),
            3,
            "float32",
        ),
        // Crop rows, pad columns, float16, CXI layout.
        (
            "bottom-right",
            format!(
                "  image: {{height: {}, width: {}, pad_style: bottom-right, dtype: float16}}\n",
                natural.0 - 3,
                natural.1 + 4
            ),
            "cxi",
            "entry_1/image_1/data",
            Some((natural.0 - 3, natural.1 + 4)),
            1,
            "float16",
        ),
        // Natural size, no channel axis.
        (
            "center",
            "  image: {add_channel_dim: false}\n".to_string(),
            "cxi",
            "entry_1/image_1/data",
            None,
            0,
            "float32",
        ),
    ];
    for (k, (style, image, layout, key, target, channels, dtype)) in cases.iter().enumerate() {
        let dir = job(root, &format!("image{k}"), layout, image);
        let spec = serde_json::json!({
            "natural": [natural.0, natural.1],
            "target": target.map(|(h, w)| [h, w]),
            "pad_style": style,
            "key": key,
            "channels": channels,
            "dtype": dtype,
            "events": events,
        });
        let out = Command::new(&py)
            .arg("-c")
            .arg(CHECK)
            .arg(&geom)
            .arg(&calib)
            .arg(&dir)
            .arg(spec.to_string())
            .output()
            .unwrap();
        ok(out, &format!("case {k}: {image}"));
    }
}

#[test]
fn image_step_needs_geometry_and_calibrated_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let s = side(root);
    for (image, send, msg) in [
        ("{height: 10}", "calibrated", "both height and width"),
        (
            "{num_channels: 2, add_channel_dim: false}",
            "calibrated",
            "num_channels",
        ),
        ("{}", "raw", "send: calibrated"),
    ] {
        let text = format!(
            "source: {{exp: {EXP}, run: 2, root: {root}, detector: epixquad}}\n\
             detector: {{kind: epixquad, constants: {s}, geometry: {s}/geometry.geom}}\n\
             processing: {{keep: all, send: {send}, image: {image}}}\n\
             output: {{sinks: [{{kind: files, dir: {root}/o}}]}}\n",
            root = root.display(),
            s = s.display(),
        );
        if !s.exists() {
            ok(
                Command::new(EXE)
                    .args(["synth", "--out"])
                    .arg(root)
                    .args(["--exp", EXP, "--run", "2", "--detector", "epixquad"])
                    .args(["--events", "2", "--npy-only"])
                    .output()
                    .unwrap(),
                "synth",
            );
        }
        let cfg = root.join("bad.yaml");
        std::fs::write(&cfg, text).unwrap();
        let out = Command::new(EXE)
            .args(["run", "--quiet", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(msg), "{image}: {err}");
    }
}
