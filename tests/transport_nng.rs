//! NNG transport on loopback: round trips into the Rust consumer comparing every value, late
//! consumers, a consumer that leaves mid-stream and comes back (block and spill lose nothing),
//! drop accounting, oversized messages against the receive limit, IPC and several URLs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use lclstreamer::output::batch::{ExampleKind, example_batch};
use lclstreamer::output::{Batch, Compression, Layout, read_batch, serialize};
use lclstreamer::transport::nng_socket::NngSocket;
use lclstreamer::transport::{
    Distribute, MessageMeta, NngSink, NngSinkConfig, Policy, PullConfig, PullSummary, Role, Sink,
    TransportError, pull, push_dir,
};

fn free_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("tcp://127.0.0.1:{}", l.local_addr().unwrap().port())
}

fn batches(writer: u32, n: u64, ss: usize, fs: usize) -> Vec<Batch> {
    (0..n)
        .map(|seq| {
            let mut b = example_batch(
                4,
                ss,
                fs,
                ExampleKind::Calib { quantum: None },
                1000 * writer as u64 + seq,
            );
            b.writer_rank = writer;
            b.seq = seq;
            b
        })
        .collect()
}

fn meta(b: &Batch) -> MessageMeta {
    MessageMeta {
        run: b.meta.run,
        writer_rank: b.writer_rank,
        seq: b.seq,
        events: b.events.len() as u64,
    }
}

type Received = Arc<Mutex<Vec<Vec<u8>>>>;

fn spawn_pull(
    cfg: PullConfig,
) -> (
    thread::JoinHandle<Result<PullSummary, TransportError>>,
    Received,
) {
    let got: Received = Arc::default();
    let g = got.clone();
    let h = thread::spawn(move || {
        pull(&cfg, |bytes, _| {
            g.lock().unwrap().push(bytes.to_vec());
            Ok(())
        })
    });
    (h, got)
}

fn pull_cfg(url: &str, producers: usize) -> PullConfig {
    PullConfig {
        producers,
        idle_timeout: Duration::from_secs(10),
        ..PullConfig::new(url)
    }
}

fn sink_cfg(urls: Vec<String>) -> NngSinkConfig {
    let mut c = NngSinkConfig::new(urls);
    c.send_timeout = Duration::from_millis(200);
    c.linger = Duration::from_secs(5);
    c
}

/// Decodes every received message, checks it equals the batch sent with the same (writer, seq),
/// and returns how many distinct batches arrived.
fn assert_all_equal(received: &[Vec<u8>], sent: &[Batch]) -> usize {
    let by_id: BTreeMap<(u32, u64), &Batch> =
        sent.iter().map(|b| ((b.writer_rank, b.seq), b)).collect();
    let mut seen = std::collections::BTreeSet::new();
    for msg in received {
        let (b, _) = read_batch(msg).unwrap();
        let want = by_id[&(b.writer_rank, b.seq)];
        assert_eq!(
            &b, want,
            "batch ({}, {}) changed in transit",
            b.writer_rank, b.seq
        );
        seen.insert((b.writer_rank, b.seq));
    }
    seen.len()
}

fn send_all(sink: &mut dyn Sink, sent: &[Batch], layout: Layout, c: Compression) {
    for b in sent {
        sink.send(serialize(b, layout, c).unwrap(), &meta(b))
            .unwrap();
    }
}

#[test]
fn two_writers_round_trip_into_the_rust_consumer() {
    let url = free_url();
    let (h, got) = spawn_pull(pull_cfg(&url, 2));
    let writers: Vec<_> = (0..2u32)
        .map(|w| {
            let url = url.clone();
            thread::spawn(move || {
                let sent = batches(w, 5, 64, 48);
                let mut sink = NngSink::new(sink_cfg(vec![url]), w).unwrap();
                send_all(
                    &mut sink,
                    &sent,
                    if w == 0 {
                        Layout::Cxi
                    } else {
                        Layout::Lclstreamer
                    },
                    Compression::BitshuffleLz4,
                );
                let stats = sink.finish().unwrap();
                assert_eq!(
                    (stats.batches, stats.events, stats.spilled, stats.dropped),
                    (5, 20, 0, 0)
                );
                sent
            })
        })
        .collect();
    let sent: Vec<Batch> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let summary = h.join().unwrap().unwrap();
    assert!(summary.complete, "{}", summary.report());
    assert_eq!(
        (summary.batches, summary.events, summary.eos.len()),
        (10, 40, 2)
    );
    assert_eq!(assert_all_equal(&got.lock().unwrap(), &sent), 10);
}

#[test]
fn late_consumer_gets_everything_dial_and_listen() {
    for role in [Role::Dial, Role::Listen] {
        let url = free_url();
        let sent = batches(3, 4, 32, 32);
        let s2 = sent.clone();
        let u2 = url.clone();
        let writer = thread::spawn(move || {
            let mut cfg = sink_cfg(vec![u2]);
            cfg.role = role;
            let mut sink = NngSink::new(cfg, 3).unwrap();
            send_all(&mut sink, &s2, Layout::Cxi, Compression::Zstd { level: 3 });
            sink.finish().unwrap()
        });
        thread::sleep(Duration::from_millis(1500));
        let mut cfg = pull_cfg(&url, 1);
        cfg.role = if role == Role::Dial {
            Role::Listen
        } else {
            Role::Dial
        };
        let (h, got) = spawn_pull(cfg);
        let summary = h.join().unwrap().unwrap();
        assert_eq!(writer.join().unwrap().batches, 4);
        assert!(summary.complete, "{role:?}: {}", summary.report());
        assert_eq!(assert_all_equal(&got.lock().unwrap(), &sent), 4);
        assert_eq!(got.lock().unwrap().len(), 4);
    }
}

/// Receives `n` messages on a plain Pull0 socket listening on `url`, then closes it.
fn receive_then_leave(url: &str, n: usize) -> Vec<Vec<u8>> {
    let s = NngSocket::pull().unwrap();
    s.listen(url).unwrap();
    (0..n).map(|_| s.recv().unwrap().to_vec()).collect()
}

#[test]
fn consumer_leaving_and_returning_loses_nothing_with_block() {
    let url = free_url();
    let sent = batches(1, 12, 64, 64);
    let s2 = sent.clone();
    let u2 = url.clone();
    let first = thread::spawn({
        let u = url.clone();
        move || receive_then_leave(&u, 4)
    });
    thread::sleep(Duration::from_millis(200));
    let writer = thread::spawn(move || {
        let mut sink = NngSink::new(sink_cfg(vec![u2]), 1).unwrap();
        send_all(&mut sink, &s2, Layout::Cxi, Compression::BitshuffleLz4);
        sink.finish().unwrap()
    });
    let mut got = first.join().unwrap();
    thread::sleep(Duration::from_millis(1000));
    let (h, rest) = spawn_pull(pull_cfg(&url, 1));
    let summary = h.join().unwrap().unwrap();
    let stats = writer.join().unwrap();
    got.extend(rest.lock().unwrap().iter().cloned());
    assert_eq!(stats.batches, 12);
    assert_eq!(summary.eos[0].batches, 12);
    assert_eq!(
        assert_all_equal(&got, &sent),
        12,
        "first consumer 4 + returning consumer {}",
        summary.batches
    );
}

#[test]
fn spill_keeps_what_no_consumer_took_and_push_resends_it() {
    let url = free_url();
    let spill = tempfile::tempdir().unwrap();
    let sent = batches(2, 10, 32, 32);
    let mut cfg = sink_cfg(vec![url.clone()]);
    cfg.policy = Policy::Spill(spill.path().to_path_buf());
    cfg.send_timeout = Duration::from_millis(100);
    let first = thread::spawn({
        let u = url.clone();
        move || receive_then_leave(&u, 3)
    });
    thread::sleep(Duration::from_millis(200));
    let mut sink = NngSink::new(cfg, 2).unwrap();
    for (i, b) in sent.iter().enumerate() {
        if i == 7 {
            // The consumer comes back for the tail of the stream.
            let (h, got) = spawn_pull(pull_cfg(&url, 1));
            thread::sleep(Duration::from_millis(500));
            send_all(
                &mut sink,
                &sent[7..],
                Layout::Cxi,
                Compression::BitshuffleLz4,
            );
            let stats = sink.finish().unwrap();
            let summary = h.join().unwrap().unwrap();
            let mut all = first.join().unwrap();
            all.extend(got.lock().unwrap().iter().cloned());
            assert_eq!(
                stats.batches + stats.spilled + stats.in_doubt,
                10,
                "every batch in one count: {stats:?}"
            );
            assert!(stats.spilled >= 1, "{stats:?}");
            assert_eq!(summary.eos[0].spilled, stats.spilled);
            // Resent copies of batches the first consumer may have read can be spilled too.
            let files = std::fs::read_dir(spill.path()).unwrap().count() as u64;
            assert!(files >= stats.spilled, "{files} files, {stats:?}");
            // Resend the spilled files to a third consumer.
            let url3 = free_url();
            let (h3, got3) = spawn_pull(pull_cfg(&url3, 1));
            let pushed = push_dir(spill.path(), sink_cfg(vec![url3]), true).unwrap();
            let s3 = h3.join().unwrap().unwrap();
            assert!(s3.complete, "{}", s3.report());
            assert_eq!(pushed.batches, files);
            all.extend(got3.lock().unwrap().iter().cloned());
            assert_eq!(
                assert_all_equal(&all, &sent),
                10,
                "every batch reached a consumer"
            );
            assert_eq!(
                std::fs::read_dir(spill.path()).unwrap().count(),
                0,
                "push --delete removed the files"
            );
            return;
        }
        sink.send(
            serialize(b, Layout::Cxi, Compression::BitshuffleLz4).unwrap(),
            &meta(b),
        )
        .unwrap();
    }
}

#[test]
fn drop_policy_counts_and_reports_undelivered_end_of_stream() {
    let mut cfg = sink_cfg(vec![free_url()]);
    cfg.policy = Policy::Drop;
    cfg.send_timeout = Duration::from_millis(50);
    cfg.linger = Duration::from_millis(200);
    let sent = batches(0, 3, 8, 8);
    let mut sink = NngSink::new(cfg, 0).unwrap();
    send_all(&mut sink, &sent, Layout::Cxi, Compression::None);
    let stats = sink.finish().unwrap();
    assert_eq!(
        (stats.dropped, stats.eos_undelivered),
        (3, 1),
        "no consumer at all: every batch and the end-of-stream counted, no error"
    );
    let mut cfg = sink_cfg(vec![free_url()]);
    cfg.policy = Policy::Drop;
    cfg.send_timeout = Duration::from_millis(50);
    let mut sink = NngSink::new(cfg, 0).unwrap();
    send_all(&mut sink, &sent, Layout::Cxi, Compression::None);
    let (h, _) = spawn_pull(pull_cfg(sink.connections()[0].0.as_str(), 1));
    let stats = sink.finish().unwrap();
    assert_eq!(
        (stats.batches, stats.dropped, stats.dropped_events),
        (0, 3, 12)
    );
    let summary = h.join().unwrap().unwrap();
    assert_eq!(summary.eos[0].dropped, 3);
    assert!(
        summary.complete,
        "nothing was announced as sent, nothing received"
    );
}

#[test]
fn oversized_messages_are_reported_against_the_receive_limit() {
    let sent = batches(0, 3, 128, 128); // ~65 kB frames per event, uncompressed
    for (limit, complete) in [(20_000usize, false), (4 << 20, true)] {
        let url = free_url();
        let mut cfg = pull_cfg(&url, 1);
        cfg.recv_max_size = limit;
        // The sink may take several seconds to settle the refusals before its end-of-stream.
        cfg.idle_timeout = Duration::from_secs(15);
        let (h, got) = spawn_pull(cfg);
        let mut scfg = sink_cfg(vec![url]);
        scfg.policy = Policy::Drop;
        scfg.reconnect_max = Duration::from_millis(200);
        let mut sink = NngSink::new(scfg, 0).unwrap();
        send_all(&mut sink, &sent, Layout::Cxi, Compression::None);
        let stats = sink.finish().unwrap();
        let summary = h.join().unwrap().unwrap();
        if complete {
            assert!(summary.complete, "{}", summary.report());
            assert_eq!(assert_all_equal(&got.lock().unwrap(), &sent), 3);
        } else {
            assert_eq!(summary.batches, 0);
            // Either the sender saw every refusal (and announced none as sent), or the
            // consumer reports the gap against its receive limit.
            let all_refused = summary
                .eos
                .first()
                .is_some_and(|e| e.batches == 0 && e.refused + e.in_doubt == 3);
            assert!(
                (summary.complete && all_refused)
                    || (!summary.complete && summary.report().contains("receive limit")),
                "{}",
                summary.report()
            );
            // The sink ends (it used to resend for ever) with every batch in exactly one count.
            // Without acknowledgements it cannot always tell a copy the consumer refused from
            // one it kept, so some may still count as delivered; the consumer reports the gap.
            assert_eq!(
                stats.batches + stats.refused + stats.in_doubt + stats.dropped,
                3,
                "{stats:?}"
            );
        }
    }
}

#[test]
fn a_message_above_max_message_bytes_is_refused_by_the_policy() {
    let sent = batches(0, 2, 64, 64);
    let big = serialize(&sent[0], Layout::Cxi, Compression::None)
        .unwrap()
        .len();
    let mut cfg = sink_cfg(vec![free_url()]);
    cfg.max_message_bytes = Some(big - 1);
    cfg.policy = Policy::Drop;
    cfg.linger = Duration::from_millis(100);
    let mut sink = NngSink::new(cfg.clone(), 0).unwrap();
    send_all(&mut sink, &sent, Layout::Cxi, Compression::None);
    let stats = sink.finish().unwrap();
    assert_eq!(
        (stats.refused, stats.refused_events, stats.dropped),
        (2, 8, 0)
    );

    cfg.policy = Policy::Block;
    let mut sink = NngSink::new(cfg, 0).unwrap();
    let err = sink
        .send(
            serialize(&sent[0], Layout::Cxi, Compression::None).unwrap(),
            &meta(&sent[0]),
        )
        .unwrap_err();
    assert!(err.to_string().contains("max_message_bytes"), "{err}");
}

#[test]
fn block_without_a_consumer_ends_at_the_block_timeout() {
    let url = free_url();
    let mut cfg = sink_cfg(vec![url.clone()]);
    cfg.block_timeout = Some(Duration::from_millis(600));
    let sent = batches(0, 1, 8, 8);
    let mut sink = NngSink::new(cfg, 0).unwrap();
    let t = std::time::Instant::now();
    let err = sink
        .send(
            serialize(&sent[0], Layout::Cxi, Compression::None).unwrap(),
            &meta(&sent[0]),
        )
        .unwrap_err();
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(600) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert!(
        err.to_string().contains(&url) && err.to_string().contains("block_timeout"),
        "{err}"
    );
}

#[test]
fn round_robin_sends_a_dead_consumers_share_to_the_live_one() {
    let (live, dead) = (free_url(), free_url());
    let (h, got) = spawn_pull(pull_cfg(&live, 1));
    let mut cfg = sink_cfg(vec![dead, live]);
    cfg.distribute = Distribute::RoundRobin;
    cfg.linger = Duration::from_millis(300);
    let sent = batches(3, 6, 16, 16);
    let mut sink = NngSink::new(cfg, 3).unwrap();
    send_all(&mut sink, &sent, Layout::Cxi, Compression::None);
    let stats = sink.finish().unwrap();
    let s = h.join().unwrap().unwrap();
    assert!(s.complete, "{}", s.report());
    assert_eq!(
        (stats.batches, stats.dropped, stats.eos_undelivered),
        (6, 0, 1)
    );
    assert_eq!(assert_all_equal(&got.lock().unwrap(), &sent), 6);
}

#[test]
fn ipc_and_round_robin_over_two_urls() {
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![
        format!("ipc://{}", dir.path().join("a.ipc").display()),
        format!("ipc://{}", dir.path().join("b.ipc").display()),
    ];
    let pulls: Vec<_> = urls.iter().map(|u| spawn_pull(pull_cfg(u, 1))).collect();
    let mut cfg = sink_cfg(urls.clone());
    cfg.distribute = Distribute::RoundRobin;
    let sent = batches(5, 6, 16, 16);
    let mut sink = NngSink::new(cfg, 5).unwrap();
    send_all(
        &mut sink,
        &sent,
        Layout::Lclstreamer,
        Compression::Gzip { level: 1 },
    );
    assert_eq!(sink.finish().unwrap().batches, 6);
    let mut all = Vec::new();
    for (h, got) in pulls {
        let s = h.join().unwrap().unwrap();
        assert!(s.complete, "{}", s.report());
        all.extend(got.lock().unwrap().iter().cloned());
    }
    assert_eq!(assert_all_equal(&all, &sent), 6);
    assert_eq!(all.len(), 6, "each batch reached one consumer once");
}

#[test]
fn foreign_messages_are_reported_not_fatal() {
    let url = free_url();
    let (h, got) = spawn_pull(pull_cfg(&url, 1));
    let push = NngSocket::push().unwrap();
    push.dial(&url).unwrap();
    push.send(b"not an hdf5 image").unwrap();
    let eos = lclstreamer::transport::EndOfStream {
        sender: "test".into(),
        ..Default::default()
    };
    push.send(&eos.encode()).unwrap();
    let summary = h.join().unwrap().unwrap();
    assert!(!summary.complete);
    assert!(
        summary.report().contains("not a batch image"),
        "{}",
        summary.report()
    );
    assert!(got.lock().unwrap().is_empty());
}

#[test]
fn a_restarted_pull_into_the_same_directory_drops_what_it_already_wrote() {
    let out = tempfile::tempdir().unwrap();
    let sent = batches(4, 6, 16, 16);
    let run = |keep: usize| {
        let url = free_url();
        let mut cfg = pull_cfg(&url, 1);
        cfg.out_dir = Some(out.path().to_path_buf());
        let (h, _) = spawn_pull(cfg);
        let mut sink = NngSink::new(sink_cfg(vec![url]), 4).unwrap();
        send_all(&mut sink, &sent, Layout::Cxi, Compression::None);
        sink.finish().unwrap();
        let s = h.join().unwrap().unwrap();
        let mut files: Vec<_> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in &files[keep..] {
            std::fs::remove_file(f).unwrap();
        }
        s
    };
    let first = run(4);
    assert!(first.complete, "{}", first.report());
    assert_eq!((first.batches, first.resumed), (6, 0));
    // The producer sends the whole stream again (as its resend window would after the first
    // consumer died having written 4 batches): the restarted pull counts those 4 as its own
    // and drops their copies.
    let second = run(6);
    assert!(second.complete, "{}", second.report());
    assert_eq!((second.batches, second.resumed), (6, 4));
    assert_eq!(second.duplicates.len(), 4);
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 6);
}
