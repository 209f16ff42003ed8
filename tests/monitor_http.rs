//! The monitor's HTTP endpoints, read back the way a browser and Prometheus would.

use base64::Engine;
use lclstreamer::monitor::Monitor;
use lclstreamer::monitor::preview::preview;
use lclstreamer::monitor::state::{RankRate, SinkState, Snapshot, peak_bin};

fn get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent.get(url).call().unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

#[test]
fn the_endpoints_serve_the_snapshot() {
    let m = Monitor::start(
        "127.0.0.1:0",
        Snapshot::new(Some("mfxp1001121".into()), Some(12), "epix10k2M"),
    )
    .unwrap();
    let base = format!("http://{}", m.addr());
    m.update(|s| {
        s.record(2.0, 120, 100, 3, 25);
        s.peaks_per_event[peak_bin(0)] += 60;
        s.peaks_per_event[peak_bin(17)] += 40;
        s.ranks.push(RankRate {
            role: "worker",
            rank: 1,
            events: 100,
            events_per_second: 50.0,
        });
        s.sinks.push(SinkState {
            name: "nng:tcp://127.0.0.1:5555".into(),
            batches: 7,
            events: 25,
            bytes: Some(1 << 20),
            spilled: Some(1),
            dropped: None,
            consumers: Some(2),
        });
    });
    let (code, body) = get(&format!("{base}/status.json"));
    assert_eq!(code, 200);
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["processed"], 100);
    assert_eq!(j["hits"], 25);
    assert_eq!(j["hit_rate"], 0.25);
    assert_eq!(j["events_read"], 120);
    assert_eq!(j["peaks_per_event"][0], 60);
    assert_eq!(j["peaks_per_event"][peak_bin(17)], 40);
    assert_eq!(j["ranks"][0]["rank"], 1);
    assert_eq!(j["sinks"][0]["consumers"], 2);
    assert_eq!(j["state"], "running");
    assert_eq!(j["latest_hit_seq"], 0);

    let (code, text) = get(&format!("{base}/metrics"));
    assert_eq!(code, 200);
    for line in [
        "lclstreamer_events_processed_total 100",
        "lclstreamer_hits_total 25",
        "lclstreamer_hit_rate 0.25",
        "lclstreamer_peaks_per_event_bucket{le=\"0\"} 60",
        "lclstreamer_peaks_per_event_bucket{le=\"+Inf\"} 100",
        "lclstreamer_peaks_per_event_count 100",
        "lclstreamer_rank_events_total{role=\"worker\",rank=\"1\"} 100",
        "lclstreamer_sink_spilled_total{sink=\"nng:tcp://127.0.0.1:5555\"} 1",
        "lclstreamer_sink_consumers{sink=\"nng:tcp://127.0.0.1:5555\"} 2",
        "lclstreamer_events_sent_total 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from\n{text}"
        );
    }
    assert!(
        !text.contains("lclstreamer_sink_dropped_total{"),
        "a count not known yet is left out:\n{text}"
    );
    assert!(!text.contains("lclstreamer_latency_seconds{"), "{text}");
    // Every sample line is `name{labels} number` after its HELP/TYPE lines.
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let v = l.rsplit(' ').next().unwrap();
        assert!(v.parse::<f64>().is_ok(), "{l}");
    }

    let mut frame = vec![0.0f32; 64 * 64];
    frame[10 * 64 + 20] = 500.0;
    m.set_latest_hit(preview(&frame, 64, 64, &[(20.0, 10.0)], 42).unwrap());
    let (_, body) = get(&format!("{base}/status.json"));
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["latest_hit_seq"], 1);
    let (code, body) = get(&format!("{base}/latest-hit.json"));
    assert_eq!(code, 200);
    let p: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(p["event_index"], 42);
    let px = base64::engine::general_purpose::STANDARD
        .decode(p["pixels"].as_str().unwrap())
        .unwrap();
    assert_eq!(px.len(), 64 * 64);
    assert_eq!(px[10 * 64 + 20], 255);

    let (code, page) = get(&format!("{base}/"));
    assert_eq!(code, 200);
    assert!(page.contains("status.json") && page.contains("latest-hit.json"));
    assert_eq!(get(&format!("{base}/nothing")).0, 404);
}

#[test]
fn a_busy_address_is_one_clear_error() {
    let m = Monitor::start("127.0.0.1:0", Snapshot::new(None, None, "d")).unwrap();
    let err = Monitor::start(&m.addr().to_string(), Snapshot::new(None, None, "d"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("monitor.listen") && err.contains(&m.addr().to_string()),
        "{err}"
    );
}

#[test]
fn a_job_with_an_unusable_monitor_address_stops_at_start_up() {
    use std::process::Command;
    const EXE: &str = env!("CARGO_BIN_EXE_lclstreamer");
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(EXE)
        .args(["synth", "--out"])
        .arg(tmp.path())
        .args(["--exp", "mfxmon09", "--run", "1", "--detector", "epixquad"])
        .args(["--segments", "0", "--events", "4", "--npy-only"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let side = tmp.path().join("mfx/mfxmon09/synth/r0001");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    for (listen, want) in [
        ("not-an-address".to_string(), "not-an-address"),
        (busy.local_addr().unwrap().to_string(), "cannot listen"),
    ] {
        let cfg = tmp.path().join("job.yaml");
        std::fs::write(
            &cfg,
            format!(
                "source: {{exp: mfxmon09, run: 1, root: {root}, detector: epixquad}}\ndetector: {{kind: epixquad, constants: {side}}}\nprocessing: {{keep: all}}\noutput: {{sinks: [{{kind: files, dir: {root}/out}}]}}\nmonitor: {{listen: \"{listen}\"}}\n",
                root = tmp.path().display(),
                side = side.display()
            ),
        )
        .unwrap();
        let out = Command::new(EXE)
            .args(["run", "--quiet", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("monitor.listen") && err.contains(want),
            "{err}"
        );
        assert!(
            !tmp.path().join("out").exists()
                || std::fs::read_dir(tmp.path().join("out"))
                    .unwrap()
                    .next()
                    .is_none()
        );
    }
}
