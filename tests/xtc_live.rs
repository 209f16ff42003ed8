//! Live reading: a datagram cut by the end of a growing file is "not yet", not a truncation;
//! live indexes and the event builder over runs that `replay` writes while they read give
//! exactly the events of the finished run (real LCLS-II samples, mixed rates included).

use lclstreamer::xtc::eventbuild::{BuiltEvent, EventBuilder};
use lclstreamer::xtc::index::Poll;
use lclstreamer::xtc::live::{WaitFor, wait_for_run};
use lclstreamer::xtc::replay::{ReplayParams, replay};
use lclstreamer::xtc::run::discover_in_dir;
use lclstreamer::xtc::{DgramReader, TransitionId};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn sample(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/xtc2")
        .join(dir)
}

fn datagrams(path: &Path) -> Vec<Vec<u8>> {
    let mut r = DgramReader::open(path).unwrap();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while let Some(d) = r.next_into(&mut buf).unwrap() {
        out.push(d.bytes.to_vec());
    }
    out
}

#[test]
fn a_cut_datagram_in_a_growing_file_is_not_yet_until_the_file_is_complete() {
    let src = sample("detector/test_epix_calib.xtc2");
    let dgrams = datagrams(&src);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("x-r0001-s000-c000.xtc2.inprogress");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&dgrams[0]).unwrap();
    let mut r = DgramReader::open_live(&path).unwrap();
    let mut buf = Vec::new();
    assert_eq!(
        r.next_into(&mut buf).unwrap().unwrap().service(),
        TransitionId::Configure
    );
    assert!(r.next_into(&mut buf).unwrap().is_none());
    let next = &dgrams[1];
    // Header cut, then payload cut: neither is a truncation of a growing file.
    for cut in [10, 30, next.len() - 1] {
        let have = f.metadata().unwrap().len() as usize - dgrams[0].len();
        f.write_all(&next[have..cut]).unwrap();
        assert!(r.next_into(&mut buf).unwrap().is_none(), "cut at {cut}");
        assert_eq!(r.truncation(), None);
    }
    f.write_all(&next[next.len() - 1..]).unwrap();
    let d = r.next_into(&mut buf).unwrap().unwrap();
    assert_eq!(d.bytes, &next[..]);
    // A tail left when the file is declared complete is a truncation.
    f.write_all(&dgrams[2][..20]).unwrap();
    assert!(r.next_into(&mut buf).unwrap().is_none());
    assert_eq!(r.truncation(), None);
    r.finish_live().unwrap();
    assert!(r.next_into(&mut buf).unwrap().is_none());
    let t = r.truncation().unwrap();
    assert_eq!((t.expected, t.available), (0, 20), "header cut: {t:?}");
}

fn key(e: &BuiltEvent) -> (u64, TransitionId, Vec<(usize, Option<u64>)>) {
    (
        e.timestamp,
        e.service,
        e.parts
            .iter()
            .map(|p| (p.stream, p.entry.location.map(|l| l.offset)))
            .collect(),
    )
}

/// Replays `dir` at `rate` Hz into a new directory while a live event builder reads it; the
/// events built live equal those of the finished source run.
fn live_equals_finished(dir: &str, exp: &str, run: u32, use_smd: bool) {
    let src = sample(dir);
    let finished = discover_in_dir(&src, exp, run).unwrap();
    let want: Vec<_> = EventBuilder::for_run(&finished, use_smd)
        .unwrap()
        .map(|e| key(&e.unwrap()))
        .collect();
    // Events spread over about 0.6 s.
    let l1 = want
        .iter()
        .filter(|k| k.1 == TransitionId::L1Accept)
        .count();
    let rate = (l1 as f64 / 0.6).max(5.0);
    let tmp = tempfile::tempdir().unwrap();
    let to = tmp.path().join("xtc");
    let p = ReplayParams {
        from: src.clone(),
        to: to.clone(),
        rate,
        late: vec![(1, Duration::from_millis(200))],
        wait_for: None,
    };
    let writer = std::thread::spawn(move || replay(&p).unwrap());
    let wait = WaitFor {
        streams: Some(finished.streams.len()),
        use_smd,
        timeout: Duration::from_secs(30),
    };
    let files = wait_for_run(&to, exp, run, &wait).unwrap();
    let mut b = EventBuilder::for_live_run(&files, use_smd).unwrap();
    let mut got = Vec::new();
    let mut pending = 0;
    let start = Instant::now();
    loop {
        match b.poll_event().unwrap() {
            Poll::Ready(e) => got.push(key(&e)),
            Poll::Pending => {
                pending += 1;
                assert!(start.elapsed() < Duration::from_secs(60), "{dir}: stuck");
                std::thread::sleep(Duration::from_millis(2));
            }
            Poll::End => break,
        }
    }
    let stats = writer.join().unwrap();
    assert_eq!(got, want, "{dir} (small data {use_smd})");
    assert!(pending > 0, "{dir}: the reader never waited for the writer");
    for i in 0..b.num_streams() {
        assert!(b.stream(i).unwrap().truncations().is_empty());
    }
    println!(
        "{dir} (small data {use_smd}): {} events and transitions built live, {} waits; replay {:.2} s",
        got.len(),
        pending,
        stats.seconds
    );
}

#[test]
fn live_event_building_over_a_run_being_written_equals_the_finished_run() {
    for use_smd in [true, false] {
        live_equals_finished("mixed_rate", "xpptut15", 14, use_smd);
        live_equals_finished("multi-seg-epics", "xpptut15", 14, use_smd);
    }
}
