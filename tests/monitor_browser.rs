//! The web monitor of a real job, in a real browser: `lclstreamer run --live` on 3 ranks follows
//! a run `lclstreamer replay` writes at 60 Hz, with `monitor:` on. Headless Chromium (Debian's
//! `chromium`, from scripts/install-deps) loads the page while the job runs and again after
//! it ended (`linger`); the numbers its script rendered must be the summary's, and a screenshot
//! is saved (`MONITOR_SCREENSHOT=docs/monitor.png` to refresh the README's).

use serde_json::Value;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_lclstreamer");
const EXP: &str = "mfxmon01";
const EVENTS: u32 = 240;

/// Chromium, or `None` (skipped) outside CI when it is not installed.
fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium missing under CI: scripts/test must run scripts/install-deps"
        );
        eprintln!("SKIPPED: chromium missing; run scripts/install-deps");
    }
    found
}

/// Runs headless Chromium on `url` with `args`; its stdout.
fn browse(chrome: &Path, url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        // Runs the page's timers (one refresh a second) and waits for its fetches.
        .arg("--virtual-time-budget=2500")
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element with `id` in a DOM dump.
fn by_id<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in\n{dom}"));
    let open = at + dom[at..].find('>').unwrap() + 1;
    let close = open + dom[open..].find('<').unwrap();
    &dom[open..close]
}

fn get_json(url: &str) -> Value {
    let mut r = ureq::get(url).call().unwrap();
    serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
}

fn xtc(root: &Path) -> PathBuf {
    root.join("mfx").join(EXP).join("xtc")
}

#[test]
fn the_page_of_a_live_job_shows_the_summary_numbers() {
    let Some(chrome) = chromium() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (src, live) = (tmp.path().join("src"), tmp.path().join("live"));
    std::fs::create_dir_all(&live).unwrap();
    let synth = Command::new(EXE)
        .args(["synth", "--out"])
        .arg(&src)
        .args(["--exp", EXP, "--run", "7", "--detector", "epixquad"])
        .args(["--segments", "0,1", "--streams", "2", "--npy-only"])
        .args(["--hit-rate", "0.5", "--seed", "4"])
        .args(["--events", &EVENTS.to_string()])
        .output()
        .unwrap();
    assert!(synth.status.success(), "{synth:?}");
    let side = src.join("mfx").join(EXP).join("synth/r0007");
    let cfg = live.join("job.yaml");
    std::fs::write(
        &cfg,
        format!(
            "source:\n  exp: {EXP}\n  run: 7\n  root: {root}\n  detector: epixquad\n  live_idle_timeout: 20\n  live_flush: 0.25\n\
             detector:\n  kind: epixquad\n  constants: {side}\n  geometry: {side}/geometry.geom\n\
             processing:\n  peakfinder8: {{adc_threshold: 25.0, minimum_snr: 6.0, min_pixel_count: 2, max_pixel_count: 200, local_bg_radius: 3, min_res: 0, max_res: 3000, max_num_peaks: 2048}}\n  min_num_peaks_for_hit: 10\n  max_num_peaks_for_hit: 5000\n\
             output:\n  batch_size: 8\n  sinks:\n    - kind: files\n      dir: {out}\n\
             parallel:\n  events_per_unit: 2\n\
             monitor:\n  listen: 127.0.0.1:0\n  linger: 10\n",
            root = live.display(),
            side = side.display(),
            out = live.join("out").display(),
        ),
    )
    .unwrap();
    // Writes the run's first datagrams, then waits for `go` to write its events.
    let go = live.join("go");
    let replay = {
        let mut c = Command::new(EXE);
        c.arg("replay")
            .arg("--wait-for")
            .arg(&go)
            .args(["--rate", "60", "--from"])
            .arg(xtc(&src))
            .arg("--to")
            .arg(xtc(&live));
        c.spawn().unwrap()
    };
    let summary = live.join("summary.json");
    let mut job = Command::new("mpirun")
        .args(["--oversubscribe", "-n", "3", EXE])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .args(["run", "--live", "--config"])
        .arg(&cfg)
        .arg("--summary")
        .arg(&summary)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The page's address, and the line rank 0 prints once every worker asked for work.
    let (tx, rx) = mpsc::channel();
    let stderr = job.stderr.take().unwrap();
    let job_err = std::thread::spawn(move || {
        let mut text = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if let Some(url) = line.strip_prefix("lclstreamer: monitor: http") {
                let _ = tx.send(Some(format!("http{}", url.trim())));
            } else if line.starts_with("lclstreamer: live:") {
                let _ = tx.send(None);
            }
            text += &line;
            text.push('\n');
        }
        text
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the job printed no monitor address")
        .expect("the monitor address comes first");
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with('/'),
        "{url}"
    );
    assert_eq!(rx.recv_timeout(Duration::from_secs(60)).unwrap(), None);
    std::fs::write(&go, b"").unwrap();

    // While the job runs: the page shows a running job whose counts are on their way.
    let t0 = Instant::now();
    loop {
        let s = get_json(&format!("{url}status.json"));
        if s["processed"].as_u64().unwrap() >= 20 {
            assert_eq!(s["state"], "running", "{s}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no progress: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let dom = browse(&chrome, &url, &["--dump-dom"]);
    assert_eq!(by_id(&dom, "state"), "running", "{dom}");
    let read: u64 = by_id(&dom, "events_read").parse().unwrap();
    assert!(read >= 20 && read < u64::from(EVENTS), "{read}");

    // After the end (the summary is written before the monitor lingers): the same numbers.
    let t0 = Instant::now();
    while !summary.exists() {
        assert!(t0.elapsed() < Duration::from_secs(60), "no summary");
        std::thread::sleep(Duration::from_millis(100));
    }
    let sum: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let st = get_json(&format!("{url}status.json"));
    assert_eq!(st["state"], "finished", "{st}");
    for k in [
        "events_read",
        "processed",
        "damaged",
        "hits",
        "hit_rate",
        "events_sent",
        "batches",
        "events_per_second",
    ] {
        assert_eq!(st[k], sum[k], "{k}: status {st}\nsummary {sum}");
    }
    assert_eq!(sum["events_read"], u64::from(EVENTS));
    assert_eq!(sum["live"]["ended"], "EndRun", "{sum}");
    let hits = sum["hits"].as_u64().unwrap();
    assert!(hits > 50 && hits < 190, "{sum}");
    let hist: u64 = st["peaks_per_event"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(hist, sum["processed"].as_u64().unwrap(), "{st}");
    for k in ["batches", "events", "bytes", "spilled", "dropped"] {
        assert_eq!(st["sinks"][0][k], sum["sinks"][0][k], "sink {k}");
    }
    let (lat, slat) = (&st["latency"], &sum["latency"]);
    assert_eq!(lat["median_seconds"], slat["median_seconds"], "{st}\n{sum}");
    assert_eq!(lat["p99_seconds"], slat["p99_seconds"]);
    assert_eq!(lat["events"], sum["events_sent"]);
    let median = slat["median_seconds"].as_f64().unwrap();
    assert!(median > 0.0 && median < 1.0, "{slat}");
    let ranks = st["ranks"].as_array().unwrap();
    assert_eq!(
        ranks
            .iter()
            .map(|r| (r["role"].as_str().unwrap(), r["events"].as_u64().unwrap()))
            .collect::<Vec<_>>(),
        [
            ("coordinator", u64::from(EVENTS)),
            ("worker", u64::from(EVENTS)),
            ("writer", sum["events_sent"].as_u64().unwrap())
        ]
    );
    let preview = get_json(&format!("{url}latest-hit.json"));
    assert!(
        preview["n_peaks"].as_u64().unwrap() >= 10,
        "a hit: {preview}"
    );
    let metrics = ureq::get(&format!("{url}metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == format!("lclstreamer_hits_total {hits}")),
        "{metrics}"
    );

    let dom = browse(&chrome, &url, &["--dump-dom"]);
    assert_eq!(by_id(&dom, "state"), "finished");
    for k in ["events_read", "processed", "hits", "events_sent", "batches"] {
        assert_eq!(by_id(&dom, k), sum[k].to_string(), "#{k}");
    }
    assert_eq!(
        by_id(&dom, "hit_rate"),
        format!("{:.1} %", 100.0 * sum["hit_rate"].as_f64().unwrap())
    );
    assert_eq!(
        by_id(&dom, "latency"),
        format!(
            "{:.0} / {:.0} ms",
            1e3 * median,
            1e3 * slat["p99_seconds"].as_f64().unwrap()
        )
    );
    assert!(
        by_id(&dom, "hit_caption").starts_with(&format!(
            "(event {}, {} peaks",
            preview["event_index"], preview["n_peaks"]
        )),
        "the latest hit was drawn"
    );
    let sink_row = format!(
        "<td>{}</td><td>{}</td><td>{}</td>",
        sum["sinks"][0]["name"].as_str().unwrap(),
        sum["sinks"][0]["batches"],
        sum["sinks"][0]["events"]
    );
    assert!(dom.contains(&sink_row), "{sink_row} not in\n{dom}");

    let png = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("monitor.png");
    browse(
        &chrome,
        &url,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,760",
        ],
    );
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 20_000,
        "{} bytes",
        bytes.len()
    );
    println!(
        "screenshot: {} ({} bytes); latency median {:.0} ms, p99 {:.0} ms",
        png.display(),
        bytes.len(),
        1e3 * median,
        1e3 * slat["p99_seconds"].as_f64().unwrap()
    );
    if let Some(to) = std::env::var_os("MONITOR_SCREENSHOT") {
        std::fs::copy(&png, Path::new(env!("CARGO_MANIFEST_DIR")).join(to)).unwrap();
    }

    // The job ends by itself once it has lingered.
    let replay = replay.wait_with_output().unwrap();
    assert!(replay.status.success());
    let out = job.wait_with_output().unwrap();
    let err = job_err.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{err}");
    assert!(
        err.contains("lclstreamer: monitor: serving the final numbers"),
        "{err}"
    );
    assert!(
        stdout.contains("latency discovered → sent: median"),
        "{stdout}"
    );
}
