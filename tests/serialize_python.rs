//! Independent decoders (`.venv`: pyzmq, h5py + hdf5plugin, cbor2, dectris-compression,
//! bitshuffle, msgpack) read every format off ZeroMQ sinks (`scripts/decode_formats.py`): HDF5,
//! Stream V2 and Simplon from PUSH, CrystFEL's msgpack from REP through a REQ client asking
//! `next` as indexamajig does; the event formats both from frames and from worker chunks.
//! Every pixel sum, the first pixels, the peaks and the photon energy are compared.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use lclstreamer::output::batch::{ExampleKind, example_batch};
use lclstreamer::output::{Batch, Compression, Frame, Layout, PixelType, StoredFrames};
use lclstreamer::serialize::{EventEncoder, Format, FormatOptions};
use lclstreamer::transport::{Pattern, Role, Sink, ZmqSink, ZmqSinkConfig};

fn python() -> Option<std::path::PathBuf> {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if py.exists() {
        return Some(py);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} missing under CI: scripts/test must run scripts/setup-python",
        py.display()
    );
    eprintln!(
        "SKIPPED: {} missing; run scripts/setup-python",
        py.display()
    );
    None
}

/// How the events reach the encoder.
#[derive(Clone, Copy, Debug)]
enum Frames {
    /// In the events (tools, tests).
    Own,
    /// As worker-compressed chunks, as in the job.
    Stored(Compression),
    /// As float16 `(1, H, W)` images (AI batches), stored with bitshuffle-LZ4.
    ImageF16,
}

fn pixels_f64(f: &Frame) -> Vec<f64> {
    match f {
        Frame::F32(a) => a.iter().map(|&v| v as f64).collect(),
        Frame::U16(a) => a.iter().map(|&v| v as f64).collect(),
        Frame::ImageF32(a) => a.iter().map(|&v| v as f64).collect(),
        Frame::ImageF16(a) => a.iter().map(|&v| v.to_f64()).collect(),
    }
}

fn check(format: Format, kind: ExampleKind, frames: Frames) {
    let Some(py) = python() else { return };
    let fmt = match format {
        Format::Hdf5 => "hdf5",
        Format::Stream2 => "stream2",
        Format::Simplon => "simplon",
        _ => "msgpack",
    };
    // Bind first (another process may take a port picked in advance), then start the consumer.
    let (mut sink, url) = (0..20)
        .find_map(|_| {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let url = format!("tcp://127.0.0.1:{port}");
            let mut cfg = ZmqSinkConfig::new(vec![url.clone()]);
            cfg.pattern = if format == Format::Msgpack {
                Pattern::Rep
            } else {
                Pattern::Push
            };
            cfg.role = Role::Listen;
            cfg.format = format;
            cfg.linger = Duration::from_secs(20);
            cfg.policy = lclstreamer::transport::Policy::Drop;
            cfg.send_timeout = Duration::from_secs(10);
            ZmqSink::new(cfg, 2).ok().map(|s| (s, url))
        })
        .expect("a free port to bind");
    let child = Command::new(&py)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/decode_formats.py"))
        .args([fmt, &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut enc = (format != Format::Hdf5).then(|| {
        EventEncoder::new(FormatOptions {
            format,
            ..Default::default()
        })
    });
    let mut events = Vec::new();
    for seq in 0..2u64 {
        let mut b: Batch = example_batch(3, 40, 36, kind, seq + 7);
        b.writer_rank = 2;
        b.seq = seq;
        if let Frames::ImageF16 = frames {
            for ev in &mut b.events {
                let Some(Frame::F32(a)) = ev.frame.take() else {
                    panic!("calibrated frames")
                };
                let img = a.mapv(half::f16::from_f32).into_dyn();
                ev.frame = Some(Frame::ImageF16(img.insert_axis(ndarray::Axis(0))));
            }
        }
        if format == Format::Hdf5 {
            let meta = lclstreamer::transport::MessageMeta {
                run: b.meta.run,
                writer_rank: 2,
                seq,
                events: 3,
            };
            let image = lclstreamer::output::serialize(&b, Layout::Cxi, Compression::BitshuffleLz4);
            sink.send(image.unwrap(), &meta).unwrap();
            events.extend(b.events);
            continue;
        }
        let enc = enc.as_mut().unwrap();
        let msgs = match frames {
            Frames::Own => enc.encode(&b, None, Compression::None).unwrap(),
            Frames::Stored(_) | Frames::ImageF16 => {
                let c = if let Frames::Stored(c) = frames {
                    c
                } else {
                    Compression::BitshuffleLz4
                };
                let mut stripped = b.clone();
                let chunks: Vec<Vec<u8>> = stripped
                    .events
                    .iter_mut()
                    .map(|ev| {
                        let f = ev.frame.take().unwrap();
                        let mut out = Vec::new();
                        c.encode_chunk(f.as_bytes().unwrap(), f.elem_size(), &mut out)
                            .unwrap();
                        out
                    })
                    .collect();
                let f = b.events[0].frame.as_ref().unwrap();
                let stored = StoredFrames {
                    pixel: match f {
                        Frame::U16(_) => PixelType::U16,
                        Frame::ImageF16(_) => PixelType::F16,
                        _ => PixelType::F32,
                    },
                    dims: f.dims().to_vec(),
                    image: f.is_image(),
                    chunks: chunks.iter().map(|c| &c[..]).collect(),
                };
                enc.encode(&stripped, Some(&stored), c).unwrap()
            }
        };
        for m in msgs {
            match m.meta {
                None => sink.send_control(&m.bytes).unwrap(),
                Some(meta) => sink.send(m.bytes, &meta).unwrap(),
            }
        }
        events.extend(b.events);
    }
    let st = sink.finish();
    let out = child.wait_with_output().unwrap();
    let st = st.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{fmt}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (last, images) = lines.split_last().unwrap();
    assert_eq!(last["images"], 6, "{fmt}");
    assert_eq!(
        (last["eos_events"].as_u64(), st.events),
        (Some(6), 6),
        "{fmt}"
    );
    for (img, ev) in images.iter().zip(&events) {
        assert_eq!(img["writer"], 2);
        let pixels = pixels_f64(ev.frame.as_ref().unwrap());
        assert_eq!(img["shape"], serde_json::json!([40, 36]), "{fmt}");
        let want_sum: f64 = pixels.iter().sum();
        let sum = img["sum"].as_f64().unwrap();
        assert!(
            (sum - want_sum).abs() <= 1e-9 * want_sum.abs().max(1.0),
            "{fmt}: {sum} vs {want_sum}"
        );
        // Pixels are f32 or u16: compare at f32 (serde_json parses f64 text within 1 ulp).
        let first: Vec<f32> = serde_json::from_value(img["first"].clone()).unwrap();
        let want: Vec<f32> = pixels[..5].iter().map(|&v| v as f32).collect();
        assert_eq!(first, want, "{fmt}");
        let fs: Vec<f32> = serde_json::from_value(img["fs"].clone()).unwrap();
        let ss: Vec<f32> = serde_json::from_value(img["ss"].clone()).unwrap();
        let it: Vec<f32> = serde_json::from_value(img["intensity"].clone()).unwrap();
        assert_eq!(
            (&fs, &ss, &it),
            (&ev.peaks.fs, &ev.peaks.ss, &ev.peaks.total_intensity)
        );
        let e = ev.scalar("photon_energy_eV").unwrap();
        let got = img["photon_energy"].as_f64().unwrap();
        assert!(
            (got - e).abs() <= 1e-9 * e,
            "{fmt}: photon energy {got} vs {e}"
        );
    }
}

#[test]
fn hdf5_over_zmq_decodes_with_h5py_and_hdf5plugin() {
    check(
        Format::Hdf5,
        ExampleKind::Calib { quantum: None },
        Frames::Own,
    );
}

#[test]
fn stream2_decodes_with_cbor2_and_dectris_compression() {
    let calib = ExampleKind::Calib { quantum: None };
    check(Format::Stream2, calib, Frames::Own);
    // The worker's bitshuffle-LZ4 chunks go out as they are.
    check(
        Format::Stream2,
        calib,
        Frames::Stored(Compression::BitshuffleLz4),
    );
    check(
        Format::Stream2,
        ExampleKind::Raw,
        Frames::Stored(Compression::Zstd { level: 3 }),
    );
    check(Format::Stream2, calib, Frames::ImageF16);
}

#[test]
fn simplon_decodes_with_cbor2_and_bitshuffle() {
    check(Format::Simplon, ExampleKind::Raw, Frames::Own);
    check(
        Format::Simplon,
        ExampleKind::Raw,
        Frames::Stored(Compression::BitshuffleLz4),
    );
    let calib = ExampleKind::Calib { quantum: None };
    check(
        Format::Simplon,
        calib,
        Frames::Stored(Compression::BitshuffleLz4),
    );
    check(
        Format::Simplon,
        calib,
        Frames::Stored(Compression::Gzip { level: 1 }),
    );
}

#[test]
fn msgpack_over_rep_decodes_as_crystfel_reads_it() {
    check(Format::Msgpack, ExampleKind::Raw, Frames::Own);
    let calib = ExampleKind::Calib { quantum: None };
    check(
        Format::Msgpack,
        calib,
        Frames::Stored(Compression::BitshuffleLz4),
    );
    check(Format::Msgpack, calib, Frames::ImageF16);
}
