//! Benchmarks behind `scripts/bench-output` (prints one JSON object per line).
//!
//! `bench_output serialize DIR`: serialises ePix10k2M-sized batches (`BENCH_BATCH` x 5632 x 384,
//! default 8) with every
//! compression on 1 and on all rayon threads, and writes the frames as raw little-endian files
//! under DIR so the h5py reference compresses exactly the same arrays.
//! `bench_output nng`: NNG Push0 -> Pull0 loopback throughput (TCP and IPC) and the memcpy
//! bandwidth of this machine, measured in the same run.
//! `bench_output zmq`: the same for ZeroMQ PUSH -> PULL over TCP loopback (socket and sink).
//! `bench_output formats`: every sink format (hdf5, stream2, simplon, msgpack) encoding one
//! batch from worker-compressed (bitshuffle-LZ4) frame chunks, as the writer does, on 1 and all
//! rayon threads, beside memcpy of the same frame bytes.

use std::time::Instant;

use lclstreamer::output::batch::{ExampleKind, example_batch};
use lclstreamer::output::{Compression, Frame, Layout, Serializer};
use lclstreamer::output::{PixelType, StoredFrames};
use lclstreamer::serialize::{EventEncoder, Format, FormatOptions};
use lclstreamer::transport::nng_socket::NngSocket;
use lclstreamer::transport::{MessageMeta, NngSink, NngSinkConfig, Sink, ZmqSink, ZmqSinkConfig};

const SS: usize = 5632;
const FS: usize = 384;

/// Best (shortest) time of at least `min_reps` runs and `min_secs` seconds after one warm-up run:
/// on a shared machine the fastest run is the least disturbed one.
fn time_it(min_reps: usize, min_secs: f64, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut n = 0;
    let mut best = f64::INFINITY;
    while n < min_reps || start.elapsed().as_secs_f64() < min_secs {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        n += 1;
    }
    best
}

/// Events per batch: `BENCH_BATCH` (default 8).
fn batch_size() -> usize {
    std::env::var("BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

fn serialize_bench(dir: &str) {
    let b = batch_size();
    let threads_all = rayon::current_num_threads();
    let datasets = [
        ("raw_u16", ExampleKind::Raw),
        ("calib_f32", ExampleKind::Calib { quantum: None }),
        ("calib_f32_q1", ExampleKind::Calib { quantum: Some(1.0) }),
    ];
    let compressions = [
        Compression::None,
        Compression::BitshuffleLz4,
        Compression::BitshuffleZstd { level: 3 },
        Compression::Zstd { level: 3 },
        Compression::Gzip { level: 4 },
    ];
    for (name, kind) in datasets {
        let batch = example_batch(b, SS, FS, kind, 42);
        let mut raw = Vec::new();
        for ev in &batch.events {
            raw.extend_from_slice(ev.frame.as_ref().and_then(Frame::as_bytes).unwrap());
        }
        let dtype = if matches!(kind, ExampleKind::Raw) {
            "<u2"
        } else {
            "<f4"
        };
        std::fs::write(format!("{dir}/{name}.bin"), &raw).unwrap();
        println!(r#"{{"kind":"data","name":"{name}","dtype":"{dtype}","shape":[{b},{SS},{FS}]}}"#);
        for c in compressions {
            let es = if matches!(kind, ExampleKind::Raw) {
                2
            } else {
                4
            };
            let mut out = Vec::new();
            let slow = matches!(c, Compression::Gzip { .. });
            let secs = time_it(
                if slow { 2 } else { 5 },
                if slow { 0.0 } else { 1.0 },
                || {
                    for ev in &batch.events {
                        out.clear();
                        c.encode_chunk(
                            ev.frame.as_ref().and_then(Frame::as_bytes).unwrap(),
                            es,
                            &mut out,
                        )
                        .unwrap();
                    }
                },
            );
            println!(
                r#"{{"kind":"encode","impl":"rust","data":"{name}","compression":"{c}","threads":1,"gbps":{:.3}}}"#,
                raw.len() as f64 / secs / 1e9
            );
            for threads in [1, threads_all] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut ser = Serializer::default();
                let mut size = 0;
                let slow = matches!(c, Compression::Gzip { .. });
                let secs = pool.install(|| {
                    time_it(
                        if slow { 2 } else { 5 },
                        if slow { 0.0 } else { 1.0 },
                        || {
                            size = ser.serialize(&batch, Layout::Cxi, c).unwrap().len();
                        },
                    )
                });
                println!(
                    r#"{{"kind":"serialize","impl":"rust","data":"{name}","compression":"{c}","threads":{threads},"gbps":{:.3},"ratio":{:.3}}}"#,
                    raw.len() as f64 / secs / 1e9,
                    raw.len() as f64 / size as f64
                );
            }
        }
    }
}

/// Copy bandwidth between two 256 MiB buffers, both page-aligned (as fresh mappings are):
/// heap buffers that sit a few bytes more than a page multiple apart hit 4K aliasing and
/// measured ~3x slower.
fn memcpy_gbps() -> f64 {
    const LEN: usize = 256 << 20;
    let page_aligned = |v: &mut Vec<u8>| {
        let off = v.as_ptr().align_offset(4096);
        off..off + LEN
    };
    let mut src = vec![1u8; LEN + 4096];
    let mut dst = vec![0u8; LEN + 4096];
    let (s, d) = (page_aligned(&mut src), page_aligned(&mut dst));
    let secs = time_it(5, 1.0, || {
        dst[d.clone()].copy_from_slice(std::hint::black_box(&src[s.clone()]));
        std::hint::black_box(&mut dst);
    });
    LEN as f64 / secs / 1e9
}

/// Receives `n` messages on a Pull0 socket listening on `url`; returns (bytes, seconds from the
/// first message to the last).
fn receiver(url: &str, n: u64) -> std::thread::JoinHandle<(u64, f64)> {
    let sock = NngSocket::pull().unwrap();
    sock.set_recv_max_size(0).unwrap();
    sock.listen(url).unwrap();
    std::thread::spawn(move || {
        let mut bytes = 0;
        let mut start = None;
        for _ in 0..n {
            let m = sock.recv().unwrap();
            start.get_or_insert_with(Instant::now);
            bytes += m.len() as u64;
        }
        (bytes, start.unwrap().elapsed().as_secs_f64())
    })
}

fn nng_bench() {
    println!(r#"{{"kind":"memcpy","gbps":{:.3}}}"#, memcpy_gbps());
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let urls = [
        format!("tcp://127.0.0.1:{port}"),
        format!("ipc://{}", dir.path().join("bench.ipc").display()),
    ];
    for url in &urls {
        for msg_mb in [8usize, 64] {
            let msg = vec![7u8; msg_mb << 20];
            let n = (4096 / msg_mb) as u64; // 4 GiB per run
            // The transport alone: one Push0 socket sending the same buffer.
            let rx = receiver(url, n + 1);
            let push = NngSocket::push().unwrap();
            push.dial(url).unwrap();
            push.send(&msg).unwrap(); // connection set up, not timed
            let start = Instant::now();
            for _ in 0..n {
                push.send(&msg).unwrap();
            }
            let (bytes, rx_secs) = rx.join().unwrap();
            let secs = start.elapsed().as_secs_f64();
            drop(push);
            // The sink path: a fresh Vec per batch (as the serializer hands over) through NngSink.
            let rx = receiver(url, n + 1);
            let mut sink = NngSink::new(NngSinkConfig::new(vec![url.clone()]), 0).unwrap();
            let sink_start = Instant::now();
            for seq in 0..n {
                sink.send(
                    msg.clone(),
                    &MessageMeta {
                        run: 12,
                        writer_rank: 0,
                        seq,
                        events: 1,
                    },
                )
                .unwrap();
            }
            let sink_secs = sink_start.elapsed().as_secs_f64();
            sink.finish().unwrap(); // the end-of-stream is the receiver's last message
            let _ = rx.join().unwrap();
            println!(
                r#"{{"kind":"nng","transport":"{}","message_mb":{msg_mb},"messages":{n},"gbps":{:.3},"receiver_gbps":{:.3},"sink_gbps":{:.3}}}"#,
                url.split(':').next().unwrap(),
                (n as f64 * msg.len() as f64) / secs / 1e9,
                (bytes - msg.len() as u64) as f64 / rx_secs / 1e9,
                (n as f64 * msg.len() as f64) / sink_secs / 1e9,
            );
        }
    }
}

fn zmq_bench() {
    println!(r#"{{"kind":"memcpy","gbps":{:.3}}}"#, memcpy_gbps());
    // A fresh port per receiver: libzmq unbinds a closed socket asynchronously.
    let free_url = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("tcp://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let ctx = zmq::Context::new();
    let receiver = |url: &str, n: u64| {
        let pull = ctx.socket(zmq::PULL).unwrap();
        pull.set_rcvhwm(2).unwrap();
        pull.bind(url).unwrap();
        std::thread::spawn(move || {
            let mut bytes = 0;
            let mut start = None;
            for _ in 0..n {
                let m = pull.recv_msg(0).unwrap();
                start.get_or_insert_with(Instant::now);
                bytes += m.len() as u64;
            }
            (bytes, start.unwrap().elapsed().as_secs_f64())
        })
    };
    for msg_mb in [8usize, 64] {
        let msg = vec![7u8; msg_mb << 20];
        let n = (4096 / msg_mb) as u64; // 4 GiB per run
        let url = free_url();
        let rx = receiver(&url, n + 1);
        let push = ctx.socket(zmq::PUSH).unwrap();
        push.set_sndhwm(2).unwrap();
        push.connect(&url).unwrap();
        push.send(&msg[..], 0).unwrap(); // connection set up, not timed
        let start = Instant::now();
        for _ in 0..n {
            push.send(&msg[..], 0).unwrap();
        }
        let (bytes, rx_secs) = rx.join().unwrap();
        let secs = start.elapsed().as_secs_f64();
        drop(push);
        // The sink path: a fresh Vec per message through ZmqSink (PUSH, dial).
        let url = free_url();
        let rx = receiver(&url, n + 1);
        let mut sink = ZmqSink::new(ZmqSinkConfig::new(vec![url.clone()]), 0).unwrap();
        let sink_start = Instant::now();
        for seq in 0..n {
            let meta = MessageMeta {
                run: 12,
                writer_rank: 0,
                seq,
                events: 1,
            };
            sink.send(msg.clone(), &meta).unwrap();
        }
        let sink_secs = sink_start.elapsed().as_secs_f64();
        sink.finish().unwrap();
        let _ = rx.join().unwrap();
        println!(
            r#"{{"kind":"zmq","transport":"tcp","message_mb":{msg_mb},"messages":{n},"gbps":{:.3},"receiver_gbps":{:.3},"sink_gbps":{:.3}}}"#,
            (n as f64 * msg.len() as f64) / secs / 1e9,
            (bytes - msg.len() as u64) as f64 / rx_secs / 1e9,
            (n as f64 * msg.len() as f64) / sink_secs / 1e9,
        );
    }
}

/// Memcpy of `len` bytes (frame bytes of a batch) between two fresh buffers, best of runs.
fn memcpy_of(len: usize) -> f64 {
    let src = vec![1u8; len];
    let mut dst = vec![0u8; len];
    let secs = time_it(5, 0.5, || {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
    });
    len as f64 / secs
}

fn formats_bench() {
    let b = batch_size();
    let threads_all = rayon::current_num_threads();
    let c = Compression::BitshuffleLz4;
    for (name, kind) in [
        ("raw_u16", ExampleKind::Raw),
        ("calib_f32", ExampleKind::Calib { quantum: None }),
    ] {
        let mut batch = example_batch(b, SS, FS, kind, 42);
        let pixel = if matches!(kind, ExampleKind::Raw) {
            PixelType::U16
        } else {
            PixelType::F32
        };
        // The worker's side: one compressed chunk per frame; the writer gets only these.
        let chunks: Vec<Vec<u8>> = batch
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
        let stored = StoredFrames {
            pixel,
            dims: vec![SS, FS],
            image: false,
            chunks: chunks.iter().map(|c| &c[..]).collect(),
        };
        let frame_bytes = b * SS * FS * pixel.size();
        let mem = memcpy_of(frame_bytes);
        println!(
            r#"{{"kind":"memcpy_batch","data":"{name}","bytes":{frame_bytes},"bps":{mem:.0}}}"#
        );
        for format in [
            Format::Hdf5,
            Format::Stream2,
            Format::Simplon,
            Format::Msgpack,
        ] {
            for threads in [1, threads_all] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut ser = Serializer::default();
                let mut size = 0;
                let secs = pool.install(|| {
                    time_it(5, 1.0, || {
                        size = if format == Format::Hdf5 {
                            ser.serialize_stored(&batch, &stored, Layout::Cxi, c)
                                .unwrap()
                                .len()
                        } else {
                            let mut enc = EventEncoder::new(FormatOptions {
                                format,
                                ..Default::default()
                            });
                            enc.encode(&batch, Some(&stored), c)
                                .unwrap()
                                .iter()
                                .map(|m| m.bytes.len())
                                .sum()
                        };
                    })
                });
                println!(
                    r#"{{"kind":"format","data":"{name}","format":"{format:?}","threads":{threads},"bps":{:.0},"frames_per_s":{:.1},"bytes_out":{size},"x_memcpy":{:.4}}}"#,
                    frame_bytes as f64 / secs,
                    b as f64 / secs,
                    frame_bytes as f64 / secs / mem,
                );
            }
        }
    }
}

fn kernels_bench() {
    use lclstreamer::output::bitshuffle::shuffle_block;
    for (name, kind, es) in [
        ("raw_u16", ExampleKind::Raw, 2),
        ("calib_f32", ExampleKind::Calib { quantum: None }, 4),
    ] {
        let b = example_batch(1, SS, FS, kind, 1);
        let frame = b.events[0]
            .frame
            .as_ref()
            .and_then(Frame::as_bytes)
            .unwrap()
            .to_vec();
        let mut shuffled = vec![0u8; frame.len()];
        let mut planes = Vec::new();
        let blk = 8192;
        let t = time_it(5, 1.0, || {
            for (i, o) in frame.chunks_exact(blk).zip(shuffled.chunks_exact_mut(blk)) {
                shuffle_block(i, o, es, &mut planes);
            }
        });
        let mut table = lz4_flex::block::CompressTable::default();
        let mut out = vec![0u8; lz4_flex::block::get_maximum_output_size(blk)];
        let t2 = time_it(5, 1.0, || {
            for i in shuffled.chunks_exact(blk) {
                lz4_flex::block::compress_into_with_table(i, &mut out, &mut table).unwrap();
            }
        });
        println!(
            r#"{{"kind":"kernel","data":"{name}","bitshuffle_gbps":{:.3},"lz4_gbps":{:.3}}}"#,
            frame.len() as f64 / t / 1e9,
            frame.len() as f64 / t2 / 1e9
        );
    }
}

fn main() {
    // As in `lclstreamer` itself (LCLSTREAMER_DEFAULT_MALLOC=1 measures glibc's defaults).
    lclstreamer::transport::heap::keep_large_buffers_in_heap();
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serialize") => serialize_bench(args.get(2).expect("serialize DIR")),
        Some("nng") => nng_bench(),
        Some("zmq") => zmq_bench(),
        Some("formats") => formats_bench(),
        Some("kernels") => kernels_bench(),
        _ => eprintln!("usage: bench_output serialize DIR | nng | zmq | formats | kernels"),
    }
}
