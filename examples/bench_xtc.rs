//! XTC2 throughput benchmark: writes a multi-GB run with the crate's writer, then measures
//! sequential read speed of the same files (`cat` and a plain 4 MiB read loop), bigdata header
//! scanning, small-data indexing and small-data event building. Run through `scripts/bench-xtc`.

use lclstreamer::xtc::eventbuild::EventBuilder;
use lclstreamer::xtc::index::StreamIndexer;
use lclstreamer::xtc::run::{RunFiles, discover_in_dir};
use lclstreamer::xtc::smalldata::runinfo_schema;
use lclstreamer::xtc::stream_writer::StreamWriter;
use lclstreamer::xtc::writer::{DgramBuilder, VarData};
use lclstreamer::xtc::{Alg, DataType, NamesId, Schema, TransitionId, VarDesc};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn ts(i: u64) -> u64 {
    (1_100_000_000u64 << 32) | (i % 1_000_000_000)
}

fn write_run(dir: &Path, exp: &str, streams: u32, events: u64, shape: &[u32]) -> Vec<PathBuf> {
    let schema = Schema {
        det_type: "epix10ka".into(),
        det_name: "epix10k2M".into(),
        det_id: "bench".into(),
        alg: Alg::new("raw", 2, 0, 1),
        segment: 0,
        vars: vec![VarDesc::new("raw", DataType::UINT16, shape.len() as u32)],
    };
    let n: usize = shape.iter().map(|&d| d as usize).product();
    let px: Vec<u16> = (0..n).map(|i| (i * 7 % 16384) as u16).collect();
    let mut files = Vec::new();
    for s in 0..streams {
        let mut w = StreamWriter::create(dir, exp, 1, s, true).unwrap();
        let (raw_id, run_id) = (NamesId::new(s, 0), NamesId::new(s, 255));
        let mut c = DgramBuilder::new(ts(0), TransitionId::Configure, 1, s);
        let mut seg = schema.clone();
        seg.segment = s;
        c.add_names(raw_id, &seg).unwrap();
        c.add_names(run_id, &runinfo_schema(0)).unwrap();
        w.write(c.bytes()).unwrap();
        let mut br = DgramBuilder::new(ts(1), TransitionId::BeginRun, 1, s);
        br.add_data(
            run_id,
            &runinfo_schema(0),
            &[VarData::string(exp), VarData::scalar(1u32)],
        )
        .unwrap();
        w.write(br.bytes()).unwrap();
        for (k, t) in [TransitionId::BeginStep, TransitionId::Enable]
            .into_iter()
            .enumerate()
        {
            w.write(DgramBuilder::new(ts(2 + k as u64), t, 1, s).bytes())
                .unwrap();
        }
        let mut l1 = DgramBuilder::new(0, TransitionId::L1Accept, 1, s);
        l1.add_data(raw_id, &seg, &[VarData::array(shape, &px)])
            .unwrap();
        let mut bytes = l1.finish();
        for e in 0..events {
            bytes[..8].copy_from_slice(&ts(10 + e).to_le_bytes());
            w.write(&bytes).unwrap();
        }
        let end = 10 + events;
        for (k, t) in [
            TransitionId::Disable,
            TransitionId::EndStep,
            TransitionId::EndRun,
        ]
        .into_iter()
        .enumerate()
        {
            w.write(DgramBuilder::new(ts(end + k as u64), t, 1, s).bytes())
                .unwrap();
        }
        files.extend(w.finish().unwrap());
    }
    files
}

fn bigdata(run: &RunFiles) -> Vec<PathBuf> {
    run.streams
        .iter()
        .flat_map(|s| s.chunks.iter().map(|c| c.path.clone()))
        .collect()
}

fn size(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum()
}

fn time<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t = Instant::now();
    let v = f();
    (t.elapsed().as_secs_f64(), v)
}

fn read_loop(files: &[PathBuf]) -> u64 {
    let mut buf = vec![0u8; 4 << 20];
    let mut n = 0;
    for f in files {
        let mut file = std::fs::File::open(f).unwrap();
        loop {
            let k = file.read(&mut buf).unwrap();
            if k == 0 {
                break;
            }
            n += k as u64;
        }
    }
    n
}

fn cat(files: &[PathBuf]) {
    let st = std::process::Command::new("cat")
        .args(files)
        .stdout(std::fs::File::create("/dev/null").unwrap())
        .status()
        .unwrap();
    assert!(st.success());
}

fn count_events(run: &RunFiles, smd: bool) -> u64 {
    let ix: Vec<_> = run
        .streams
        .iter()
        .map(|s| StreamIndexer::open(s, smd).unwrap())
        .collect();
    let mut b = EventBuilder::new(ix, vec![true; run.streams.len()]);
    while b.next_event().unwrap().is_some() {}
    let st = b.stats();
    assert_eq!(st.incomplete_events, 0);
    st.events
}

fn best_of<T>(n: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..n {
        let (t, v) = time(&mut f);
        best = best.min(t);
        last = Some(v);
    }
    (best, last.unwrap())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(
        args.get(1)
            .expect("usage: bench_xtc DIR [GB] [SMALL_EVENTS]"),
    );
    let gb: f64 = args.get(2).map_or(2.0, |s| s.parse().unwrap());
    let small: u64 = args.get(3).map_or(2_000_000, |s| s.parse().unwrap());
    let big_dir = dir.join("big/xtc");
    let small_dir = dir.join("small/xtc");
    let frame = [16u32, 352, 384];
    let frame_bytes = 16 * 352 * 384 * 2;
    let big_events = ((gb * 1e9) / frame_bytes as f64).ceil() as u64;
    if discover_in_dir(&big_dir, "benchbig", 1).is_err() {
        let (t, _) = time(|| write_run(&big_dir, "benchbig", 1, big_events, &frame));
        println!("wrote {big_events} ePix10k2M-sized events in {t:.1} s");
    }
    if discover_in_dir(&small_dir, "benchsmall", 1).is_err() {
        let (t, _) = time(|| write_run(&small_dir, "benchsmall", 2, small, &[4]));
        println!("wrote 2 streams x {small} small events in {t:.1} s");
    }
    let big = discover_in_dir(&big_dir, "benchbig", 1).unwrap();
    let smallrun = discover_in_dir(&small_dir, "benchsmall", 1).unwrap();
    let files = bigdata(&big);
    let bytes = size(&files);
    let gbs = |t: f64| bytes as f64 / t / 1e9;
    println!(
        "\nbigdata run: {:.2} GB, {} events (page cache warm: every figure is best of 3)",
        bytes as f64 / 1e9,
        big_events
    );
    cat(&files);
    let (t_cat, _) = best_of(3, || cat(&files));
    let (t_read, n) = best_of(3, || read_loop(&files));
    assert_eq!(n, bytes);
    let (t_scan, ev) = best_of(3, || count_events(&big, false));
    assert_eq!(ev, big_events);
    let (t_smd, ev) = best_of(3, || count_events(&big, true));
    assert_eq!(ev, big_events);
    println!("  cat > /dev/null                 {:8.2} GB/s", gbs(t_cat));
    println!(
        "  read loop (4 MiB buffers)        {:8.2} GB/s",
        gbs(t_read)
    );
    println!(
        "  header scan (no small data)      {:8.2} GB/s   {:.2}x cat",
        gbs(t_scan),
        t_cat / t_scan
    );
    println!(
        "  small-data index                 {:8.2} GB/s   {:.2}x cat",
        gbs(t_smd),
        t_cat / t_smd
    );

    let sfiles = bigdata(&smallrun);
    cat(&sfiles);
    let smd_files: Vec<PathBuf> = smallrun
        .streams
        .iter()
        .filter_map(|s| s.smd.clone())
        .collect();
    cat(&smd_files);
    let (t_eb, ev) = best_of(3, || count_events(&smallrun, true));
    assert_eq!(ev, small);
    let (t_ebs, _) = best_of(3, || count_events(&smallrun, false));
    let (t_scat, _) = best_of(3, || cat(&sfiles));
    let sbytes = size(&sfiles) as f64;
    println!(
        "\nsmall-event run: 2 streams x {small} events, {:.2} GB bigdata",
        sbytes / 1e9
    );
    println!(
        "  cat > /dev/null                  {:8.2} GB/s",
        sbytes / t_scat / 1e9
    );
    println!(
        "  header scan (no small data)      {:8.2} GB/s   {:.2}x cat",
        sbytes / t_ebs / 1e9,
        t_scat / t_ebs
    );
    println!(
        "  event building from small data   {:8.2} M events/s  ({:.0} ns/event)",
        small as f64 / t_eb / 1e6,
        t_eb / small as f64 * 1e9
    );
    println!(
        "  event building by header scan    {:8.2} M events/s",
        small as f64 / t_ebs / 1e6
    );
}
