//! Faults under `mpirun`: no hang, no silent loss, a summary whatever happens. A detector not
//! in the run and an unroutable URL are start-up errors on any rank count; `block` with no
//! consumer ends at its timeout with an error and a summary; `spill` and `drop` with no
//! consumer count every batch and exit 0; SIGTERM to `mpirun` stops the job with a summary
//! marked interrupted and no temporary file; a worker killed with SIGKILL ends the job.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_lclstreamer");
const EXP: &str = "mfxfault01";
const EVENTS: u64 = 24;

/// One small synthetic two-stream run shared by every test (kept for the process).
fn run_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let out = Command::new(EXE)
            .args(["synth", "--out"])
            .arg(&dir)
            .args(["--exp", EXP, "--run", "5", "--detector", "epix10k2M"])
            .args(["--streams", "2", "--seed", "3", "--hit-rate", "0.5"])
            .args(["--events", &EVENTS.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

fn free_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("tcp://127.0.0.1:{}", l.local_addr().unwrap().port())
}

/// A raw-forwarding job of the shared run into `dir/files` and the sink given in YAML flow
/// style; batches of 4.
fn config(dir: &Path, detector: &str, sink: &str) -> PathBuf {
    let text = format!(
        "source: {{exp: {EXP}, run: 5, root: {root}, detector: {detector}}}\nprocessing: {{steps: none, keep: all, send: raw}}\noutput:\n  batch_size: 4\n  sinks:\n    - {{kind: files, dir: {files}}}\n    - {sink}\n",
        root = run_root().display(),
        files = dir.join("files").display(),
    );
    let p = dir.join("job.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

fn mpirun(ranks: u32, cfg: &Path, summary: &Path) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--oversubscribe", "-n", &ranks.to_string(), EXE])
        .args(["run", "--quiet", "--config"])
        .arg(cfg)
        .arg("--summary")
        .arg(summary)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Waits for `child` at most `limit`; a job still running then has hung (it is killed).
fn finish_within(mut child: Child, limit: Duration) -> (Output, Duration) {
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "hung: still running after {limit:?}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (child.wait_with_output().unwrap(), t.elapsed())
}

fn json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The counts of the summary's NNG sink.
fn nng_sink(summary: &Value) -> &Value {
    summary["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"].as_str().unwrap().starts_with("nng:"))
        .unwrap()
}

#[test]
fn a_detector_not_in_the_run_is_one_error_on_one_two_and_three_ranks() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "jungfrau4M", "{kind: files, dir: /dev/null/x}");
    for ranks in [1, 2, 3] {
        let child = mpirun(ranks, &cfg, &tmp.path().join("s.json"))
            .spawn()
            .unwrap();
        let (out, _) = finish_within(child, Duration::from_secs(60));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{ranks} ranks");
        assert_eq!(
            err.matches("jungfrau4M").count(),
            1,
            "{ranks} ranks: one message naming the detector:\n{err}"
        );
    }
}

#[test]
fn an_unroutable_sink_url_is_a_startup_error() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(
        tmp.path(),
        "epix10k2M",
        "{kind: nng, urls: [tcp://999.1.1.1:1]}",
    );
    let child = mpirun(3, &cfg, &tmp.path().join("s.json")).spawn().unwrap();
    let (out, _) = finish_within(child, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("999.1.1.1") && err.contains("does not resolve"),
        "{err}"
    );
    assert!(
        files_in(&tmp.path().join("files")).is_empty(),
        "no data moved"
    );
}

#[test]
fn block_without_a_consumer_stops_at_block_timeout_with_a_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let url = free_url();
    let sink = format!("{{kind: nng, urls: [{url}], policy: block, block_timeout: 2}}");
    let cfg = config(tmp.path(), "epix10k2M", &sink);
    let summary = tmp.path().join("s.json");
    let child = mpirun(3, &cfg, &summary).spawn().unwrap();
    let (out, took) = finish_within(child, Duration::from_secs(90));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let s = json(&summary);
    let errors = s["errors"].to_string();
    assert!(
        errors.contains(&url) && errors.contains("block_timeout"),
        "{errors}"
    );
    assert_eq!(nng_sink(&s)["batches"], 0);
    assert!(
        s["undelivered"].as_u64().unwrap() > 0,
        "events not delivered are counted: {s}"
    );
    let files = files_in(&tmp.path().join("files"));
    assert!(files.iter().all(|f| f.ends_with(".h5")), "{files:?}");
    assert!(took < Duration::from_secs(60), "{took:?}");
}

#[test]
fn spill_and_drop_without_a_consumer_count_every_batch_and_exit_zero() {
    for policy in ["spill", "drop"] {
        let tmp = tempfile::tempdir().unwrap();
        let spill = tmp.path().join("spill");
        let sink = format!(
            "{{kind: nng, urls: [{}], policy: {policy}, spill_dir: {}, send_timeout: 0.1, linger: 0.5}}",
            free_url(),
            spill.display()
        );
        let cfg = config(tmp.path(), "epix10k2M", &sink);
        let summary = tmp.path().join("s.json");
        let child = mpirun(3, &cfg, &summary).spawn().unwrap();
        let (out, _) = finish_within(child, Duration::from_secs(90));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{policy}: {err}");
        let s = json(&summary);
        let batches = s["batches"].as_u64().unwrap();
        assert_eq!(s["events_sent"].as_u64().unwrap(), EVENTS, "{s}");
        let k = nng_sink(&s);
        let key = if policy == "spill" {
            "spilled"
        } else {
            "dropped"
        };
        assert_eq!(k[key].as_u64().unwrap(), batches, "{policy}: {k}");
        assert_eq!(k["batches"], 0, "{policy}: {k}");
        assert_eq!(k["eos_undelivered"], 1, "{policy}: {k}");
        assert!(s["warnings"].to_string().contains("end-of-stream"), "{s}");
        let spilled = files_in(&spill).len() as u64;
        assert_eq!(spilled, if policy == "spill" { batches } else { 0 });
    }
}

/// The rank (from Open MPI's environment) of each `lclstreamer run` process under `mpirun`.
fn ranks_of(mpirun: u32) -> Vec<(u32, i32)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|t| t.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(mpirun) || !String::from_utf8_lossy(&cmd).contains("lclstreamer") {
            continue;
        }
        for var in env.split(|&b| b == 0) {
            if let Some(r) = var.strip_prefix(b"OMPI_COMM_WORLD_RANK=") {
                v.push((String::from_utf8_lossy(r).parse().unwrap(), pid));
            }
        }
    }
    v
}

/// Starts a job that blocks on a consumer that never comes, once its first batch is on disk.
fn blocked_job(tmp: &Path) -> (Child, PathBuf) {
    let sink = format!("{{kind: nng, urls: [{}], policy: block}}", free_url());
    let cfg = config(tmp, "epix10k2M", &sink);
    let summary = tmp.join("s.json");
    let child = mpirun(3, &cfg, &summary).spawn().unwrap();
    let t = Instant::now();
    while files_in(&tmp.join("files"))
        .iter()
        .all(|f| !f.ends_with(".h5"))
    {
        assert!(t.elapsed() < Duration::from_secs(60), "no batch written");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, summary)
}

#[test]
fn sigterm_to_mpirun_stops_with_an_interrupted_summary_and_no_temporary_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (child, summary) = blocked_job(tmp.path());
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let (out, took) = finish_within(child, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let s = json(&summary);
    assert_eq!(s["interrupted"], "SIGTERM", "{s}");
    assert!(s["events_read"].as_u64().unwrap() <= EVENTS);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("INTERRUPTED by SIGTERM"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for dir in [tmp.path().to_path_buf(), tmp.path().join("files")] {
        let left: Vec<_> = files_in(&dir)
            .into_iter()
            .filter(|f| f.contains(".tmp"))
            .collect();
        assert!(left.is_empty(), "{}: {left:?}", dir.display());
    }
    assert!(took < Duration::from_secs(15), "{took:?}");
}

#[test]
fn a_worker_killed_with_sigkill_ends_the_job_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (child, _) = blocked_job(tmp.path());
    let ranks = ranks_of(child.id());
    let (_, pid) = *ranks
        .iter()
        .find(|(r, _)| *r == 1)
        .unwrap_or_else(|| panic!("rank 1 (a worker) among {ranks:?}"));
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let (out, took) = finish_within(child, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("rank 1"), "the dead rank is named:\n{err}");
    assert!(
        err.contains("writer 0 sink files:") && err.contains(": took "),
        "the writer says what it delivered:\n{err}"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[test]
fn a_misspelt_option_is_one_startup_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = format!("{{kind: nng, urls: [{}], policy: spil}}", free_url());
    let cfg = config(tmp.path(), "epix10k2M", &sink);
    let child = mpirun(3, &cfg, &tmp.path().join("s.json")).spawn().unwrap();
    let (out, _) = finish_within(child, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.matches("lclstreamer:").count(), 1, "{err}");
    assert!(err.contains("spil") && err.contains("spill"), "{err}");
    assert!(!err.contains("MPI_ABORT"), "{err}");
    assert!(
        files_in(&tmp.path().join("files")).is_empty(),
        "no data moved"
    );
}
