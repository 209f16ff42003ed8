//! Cross-checks with Python's h5py + hdf5plugin (from `.venv`, made by `scripts/setup-python`,
//! which `scripts/test` runs): hdf5plugin decodes our images value for value, and our
//! in-process filters decode what hdf5plugin writes.

use std::path::{Path, PathBuf};
use std::process::Command;

use lclstreamer::output::batch::{ExampleKind, example_batch};
use lclstreamer::output::{Compression, Layout, h5image, read_batch, serialize};

fn python() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if p.exists() {
        Some(p)
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} missing under CI: scripts/test must run scripts/setup-python",
            p.display()
        );
        eprintln!(
            "SKIPPED: {} missing; run scripts/setup-python (scripts/test does)",
            p.display()
        );
        None
    }
}

fn run_python(py: &Path, script: &str, args: &[&Path]) {
    let out = Command::new(py)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const DECODE: &str = r#"
import io, os, sys
sys.path.insert(0, os.path.join(os.getcwd(), "scripts"))
import hdf5plugin, h5py
from consumer import plain_copy
src, dst = sys.argv[1], sys.argv[2]
for name in sorted(os.listdir(src)):
    msg = open(os.path.join(src, name), "rb").read()
    with h5py.File(io.BytesIO(msg), "r") as f:
        plain_copy(f, os.path.join(dst, name))
"#;

#[test]
fn hdf5plugin_decodes_our_images_value_for_value() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    let compressions = [
        Compression::None,
        Compression::Gzip { level: 4 },
        Compression::Zstd { level: 3 },
        Compression::BitshuffleLz4,
        Compression::BitshuffleZstd { level: 3 },
    ];
    let mut batches = Vec::new();
    for layout in [Layout::Cxi, Layout::Lclstreamer] {
        for c in compressions {
            for kind in [ExampleKind::Raw, ExampleKind::Calib { quantum: None }] {
                let k = batches.len();
                // 300 x 41: several bitshuffle blocks, a partial block and leftover elements.
                let batch = example_batch(3, 300, 41, kind, k as u64);
                let name = format!("{k:03}.h5");
                std::fs::write(src.join(&name), serialize(&batch, layout, c).unwrap()).unwrap();
                batches.push((name, batch, layout, c));
            }
        }
    }
    run_python(&py, DECODE, &[&src, &dst]);
    for (name, batch, layout, c) in batches {
        let plain = std::fs::read(dst.join(&name)).unwrap();
        let (back, got_layout) = read_batch(&plain).unwrap();
        assert_eq!(got_layout, layout);
        assert_eq!(
            back, batch,
            "{layout:?} {c}: h5py+hdf5plugin decoded different values"
        );
    }
}

const WRITE: &str = r#"
import sys, numpy as np, h5py, hdf5plugin
rng = np.random.default_rng(5)
arrays = {
    "u16": (1500 + rng.normal(0, 8, (4, 300, 41))).astype(np.uint16),
    "f32": rng.normal(0, 3, (4, 97, 33)).astype(np.float32),
    "i32": rng.integers(-1000, 1000, (3, 1001)).astype(np.int32),
    "f64": rng.normal(0, 1, (2, 5000)),
    "u8": rng.integers(0, 4, (2, 20000)).astype(np.uint8),
}
filters = {
    "bslz4": hdf5plugin.Bitshuffle(cname="lz4"),
    "bszstd": hdf5plugin.Bitshuffle(cname="zstd", clevel=3),
    "bslz4_block1024": hdf5plugin.Bitshuffle(nelems=1024, cname="lz4"),
    "zstd": hdf5plugin.Zstd(clevel=5),
}
with h5py.File(sys.argv[1], "w") as f:
    for an, a in arrays.items():
        f.create_dataset(f"plain/{an}", data=a)
        for fn, flt in filters.items():
            f.create_dataset(f"{fn}/{an}", data=a, chunks=(1,) + a.shape[1:], **flt)
"#;

#[test]
fn our_filters_decode_what_hdf5plugin_writes() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hdf5plugin.h5");
    run_python(&py, WRITE, &[&path]);
    let file = h5image::open(&std::fs::read(&path).unwrap()).unwrap();
    let mut checked = 0;
    for filt in ["bslz4", "bszstd", "bslz4_block1024", "zstd"] {
        for arr in ["u16", "f32", "i32", "f64", "u8"] {
            let plain = file.dataset(&format!("plain/{arr}")).unwrap();
            let ds = file.dataset(&format!("{filt}/{arr}")).unwrap();
            assert!(!ds.filters().is_empty(), "{filt}/{arr} has no filter");
            assert!(
                ds.storage_size() < plain.storage_size(),
                "{filt}/{arr} not compressed"
            );
            let (mask, _) = h5image::read_chunk_raw(&ds, &vec![0; ds.ndim()]).unwrap();
            assert_eq!(mask, 0, "{filt}/{arr}: hdf5plugin skipped the filter");
            let same = match arr {
                "u16" => ds.read_raw::<u16>().unwrap() == plain.read_raw::<u16>().unwrap(),
                "f32" => ds.read_raw::<f32>().unwrap() == plain.read_raw::<f32>().unwrap(),
                "i32" => ds.read_raw::<i32>().unwrap() == plain.read_raw::<i32>().unwrap(),
                "f64" => ds.read_raw::<f64>().unwrap() == plain.read_raw::<f64>().unwrap(),
                _ => ds.read_raw::<u8>().unwrap() == plain.read_raw::<u8>().unwrap(),
            };
            assert!(
                same,
                "{filt}/{arr}: our decoder disagrees with hdf5plugin's encoder"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 20);
}

/// The job's path: each frame compressed on its own (as a worker does), sent through the
/// inter-rank encoding, and stored by the writer as it is; h5py + hdf5plugin must decode the
/// batch to exactly the original frames, for every filter, both layouts and both pixel types.
#[test]
fn batches_of_worker_compressed_chunks_decode_to_the_frames_in_hdf5plugin() {
    use lclstreamer::job::messages::{FrameMsg, Msg, PixelType, RecordMsg, decode, encode};
    use lclstreamer::output::{Frame, Serializer, StoredFrames};
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    let compressions = [
        Compression::None,
        Compression::Gzip { level: 4 },
        Compression::Zstd { level: 3 },
        Compression::BitshuffleLz4,
        Compression::BitshuffleZstd { level: 3 },
    ];
    let mut ser = Serializer::default();
    let mut batches = Vec::new();
    for layout in [Layout::Cxi, Layout::Lclstreamer] {
        for c in compressions {
            for kind in [ExampleKind::Raw, ExampleKind::Calib { quantum: None }] {
                let k = batches.len();
                let batch = example_batch(3, 300, 41, kind, 100 + k as u64);
                let records = batch
                    .events
                    .iter()
                    .map(|e| {
                        let (pixel, bytes) = match e.frame.as_ref().unwrap() {
                            Frame::F32(a) => (
                                PixelType::F32,
                                bytemuck::cast_slice::<f32, u8>(a.as_slice().unwrap()),
                            ),
                            Frame::U16(a) => (
                                PixelType::U16,
                                bytemuck::cast_slice::<u16, u8>(a.as_slice().unwrap()),
                            ),
                            other => panic!("example batches carry slabs, not {other:?}"),
                        };
                        RecordMsg {
                            timestamp: e.timestamp,
                            index: e.event_index,
                            frame: Some(
                                FrameMsg::compress(pixel, &[300, 41], false, bytes, c).unwrap(),
                            ),
                            peaks: Default::default(),
                            fields: Vec::new(),
                            seen_ns: 0,
                        }
                    })
                    .collect();
                let wire = encode(9, &Msg::Records { worker: 1, records }).unwrap();
                let Ok((9, Msg::Records { records, .. })) = decode(&wire) else {
                    panic!("the Records message did not survive its encoding");
                };
                let frames: Vec<&FrameMsg> =
                    records.iter().map(|r| r.frame.as_ref().unwrap()).collect();
                let stored = StoredFrames {
                    pixel: frames[0].pixel,
                    dims: vec![300, 41],
                    image: false,
                    chunks: frames.iter().map(|f| &f.chunk[..]).collect(),
                };
                let mut frameless = batch.clone();
                for e in &mut frameless.events {
                    e.frame = None;
                }
                let image = ser
                    .serialize_stored(&frameless, &stored, layout, c)
                    .unwrap();
                let name = format!("{k:03}.h5");
                std::fs::write(src.join(&name), image).unwrap();
                batches.push((name, batch, layout, c));
            }
        }
    }
    run_python(&py, DECODE, &[&src, &dst]);
    for (name, batch, layout, c) in batches {
        let plain = std::fs::read(dst.join(&name)).unwrap();
        let (back, _) = read_batch(&plain).unwrap();
        assert_eq!(
            back, batch,
            "{layout:?} {c}: h5py+hdf5plugin decoded other frames from worker-compressed chunks"
        );
    }
}
