//! The Python consumer example (`scripts/consumer.py`: pynng + h5py + hdf5plugin, from `.venv`)
//! receives batches from an NNG sink over TCP loopback; every value it decoded is compared.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lclstreamer::output::batch::{ExampleKind, example_batch};
use lclstreamer::output::{Compression, Layout, read_batch, serialize};
use lclstreamer::transport::{MessageMeta, NngSink, NngSinkConfig, Sink};

#[test]
fn python_consumer_receives_and_decodes_every_value() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let py = root.join(".venv/bin/python");
    if !py.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} missing under CI: scripts/test must run scripts/setup-python",
            py.display()
        );
        eprintln!(
            "SKIPPED: {} missing; run scripts/setup-python (scripts/test does)",
            py.display()
        );
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let dump = tempfile::tempdir().unwrap();
    let child = Command::new(&py)
        .arg(root.join("scripts/consumer.py"))
        .args([&url, "--timeout", "20", "--dump"])
        .arg(dump.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let layouts = [
        (
            Layout::Cxi,
            Compression::BitshuffleLz4,
            ExampleKind::Calib { quantum: None },
        ),
        (
            Layout::Cxi,
            Compression::Zstd { level: 3 },
            ExampleKind::Raw,
        ),
        (
            Layout::Lclstreamer,
            Compression::BitshuffleZstd { level: 2 },
            ExampleKind::Raw,
        ),
        (
            Layout::Lclstreamer,
            Compression::Gzip { level: 4 },
            ExampleKind::Calib { quantum: Some(1.0) },
        ),
    ];
    let mut sent = Vec::new();
    let mut cfg = NngSinkConfig::new(vec![url]);
    cfg.linger = Duration::from_secs(20);
    let mut sink = NngSink::new(cfg, 4).unwrap();
    for (seq, (layout, c, kind)) in layouts.into_iter().enumerate() {
        let mut b = example_batch(3, 96, 40, kind, seq as u64);
        b.writer_rank = 4;
        let meta = MessageMeta {
            run: b.meta.run,
            writer_rank: 4,
            seq: b.seq,
            events: 3,
        };
        sink.send(serialize(&b, layout, c).unwrap(), &meta).unwrap();
        sent.push(b);
    }
    let t = Instant::now();
    let stats = sink.finish().unwrap();
    assert_eq!(stats.batches, 4);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "consumer failed after {:?}:\n{stdout}\n{}",
        t.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["complete"], true);
    assert_eq!(summary["batches"], 4);
    assert_eq!(summary["events"], 12);
    assert_eq!(summary["pixels"], 4 * 3 * 96 * 40);
    for b in &sent {
        let plain = std::fs::read(dump.path().join(format!("w004_s{:06}.h5", b.seq))).unwrap();
        let (back, _) = read_batch(&plain).unwrap();
        assert_eq!(
            &back, b,
            "batch {} decoded differently by h5py + hdf5plugin",
            b.seq
        );
    }
}
