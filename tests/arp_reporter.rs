//! The eLog progress reporter against an in-test HTTP server on 127.0.0.1 standing in for the eLog.

use lclstreamer::arp::Reporter;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    Error500,
    Hang,
}

#[derive(Debug, Clone)]
struct Request {
    at: Instant,
    method: String,
    path: String,
    content_type: String,
    body: Value,
}

/// A minimal HTTP/1.1 server recording every request (keep-alive aware).
struct Elog {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Elog {
    fn start(mode: Mode) -> Elog {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/arps3dfjid/jid/ws/replace_counters/xpptut15/77",
            listener.local_addr().unwrap()
        );
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let log = Arc::clone(&log);
                std::thread::spawn(move || serve(conn, mode, &log));
            }
        });
        Elog { url, requests }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(conn: TcpStream, mode: Mode, log: &Mutex<Vec<Request>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let (mut len, mut content_type) = (0usize, String::new());
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (name, value) = h.split_once(':').unwrap();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => len = value.trim().parse().unwrap(),
                "content-type" => content_type = value.trim().to_owned(),
                _ => {}
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        log.lock().unwrap().push(Request {
            at: Instant::now(),
            method,
            path,
            content_type,
            body: serde_json::from_slice(&body).unwrap(),
        });
        match mode {
            Mode::Hang => std::thread::sleep(Duration::from_secs(3600)),
            Mode::Ok => {
                let _ = out.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 16\r\n\r\n{\"success\":true}",
                );
            }
            Mode::Error500 => {
                let _ = out
                    .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n");
            }
        }
    }
}

fn counters(body: &Value) -> Vec<(String, Value)> {
    body.as_array()
        .expect("body is a JSON array")
        .iter()
        .map(|o| {
            let o = o.as_object().expect("array of objects");
            assert_eq!(o.len(), 2, "exactly key and value: {o:?}");
            (o["key"].as_str().unwrap().to_owned(), o["value"].clone())
        })
        .collect()
}

fn kv(list: &[(&str, Value)]) -> Vec<(String, Value)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn wait_for(elog: &Elog, n: usize, within: Duration) {
    let end = Instant::now() + within;
    while elog.requests().len() < n && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn every_post_carries_the_full_list_as_key_value_objects() {
    let elog = Elog::start(Mode::Ok);
    let r = Reporter::new(
        elog.url.clone(),
        Duration::from_millis(100),
        Duration::from_secs(5),
    );
    r.update(&[
        ("<b>Events</b>", json!(10)),
        ("<b>Run</b>", json!("xpptut15:14")),
    ]);
    wait_for(&elog, 1, Duration::from_secs(5));
    r.update(&[("<b>Events</b>", json!(20)), ("Hit rate", json!(0.25))]);
    wait_for(&elog, 2, Duration::from_secs(5));
    let stats = r.finish(&[("<b>Events</b>", json!(30)), ("Done", json!("yes"))]);

    let reqs = elog.requests();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert_eq!(stats.posted, 3);
    assert_eq!(stats.failed, 0);
    for q in &reqs {
        assert_eq!(q.method, "POST");
        assert_eq!(q.path, "/arps3dfjid/jid/ws/replace_counters/xpptut15/77");
        assert_eq!(q.content_type, "application/json");
    }
    assert_eq!(
        counters(&reqs[0].body),
        kv(&[
            ("<b>Events</b>", json!(10)),
            ("<b>Run</b>", json!("xpptut15:14"))
        ])
    );
    assert_eq!(
        counters(&reqs[1].body),
        kv(&[
            ("<b>Events</b>", json!(20)),
            ("<b>Run</b>", json!("xpptut15:14")),
            ("Hit rate", json!(0.25))
        ])
    );
    assert_eq!(
        counters(&reqs[2].body),
        kv(&[
            ("<b>Events</b>", json!(30)),
            ("<b>Run</b>", json!("xpptut15:14")),
            ("Hit rate", json!(0.25)),
            ("Done", json!("yes"))
        ])
    );
}

#[test]
fn posts_are_throttled_and_the_latest_state_wins() {
    let elog = Elog::start(Mode::Ok);
    let interval = Duration::from_millis(300);
    let r = Reporter::new(elog.url.clone(), interval, Duration::from_secs(5));
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_millis(1500) {
        n += 1;
        r.update(&[("events", json!(n))]);
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = r.finish(&[]);
    let reqs = elog.requests();
    assert!(n > 100, "{n} updates");
    // 1.5 s at one post per 0.3 s: about 5 posts, plus the final one; far fewer than updates.
    assert!(
        (3..=8).contains(&reqs.len()),
        "{} posts for {n} updates",
        reqs.len()
    );
    assert_eq!(stats.posted as usize, reqs.len());
    // The first update goes out at once, not after an interval.
    assert!(reqs[0].at - start < Duration::from_secs(1));
    // Regular posts are about an interval apart (the final post is exempt); the margin allows
    // for one post's connection being slower than the next one's.
    for w in reqs[..reqs.len() - 1].windows(2) {
        assert!(
            w[1].at - w[0].at >= interval / 2,
            "posts {:?} apart",
            w[1].at - w[0].at
        );
    }
    // Values only grow, and the final post carries the last update.
    let values: Vec<u64> = reqs
        .iter()
        .map(|q| counters(&q.body)[0].1.as_u64().unwrap())
        .collect();
    assert!(values.windows(2).all(|w| w[0] <= w[1]), "{values:?}");
    assert_eq!(*values.last().unwrap(), n);
}

#[test]
fn a_hanging_elog_never_blocks_updates_and_finish_is_bounded() {
    let elog = Elog::start(Mode::Hang);
    let r = Reporter::new(
        elog.url.clone(),
        Duration::from_millis(10),
        Duration::from_millis(400),
    );
    r.update(&[("events", json!(1))]);
    wait_for(&elog, 1, Duration::from_secs(5));
    let t = Instant::now();
    for i in 0..1000 {
        r.update(&[("events", json!(i))]);
    }
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "updates blocked for {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let stats = r.finish(&[("done", json!(true))]);
    // At most the post in flight plus the final post, each cut at 0.4 s.
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "finish took {:?}",
        t.elapsed()
    );
    assert_eq!(stats.posted, 0);
    assert!(stats.failed >= 2, "{stats:?}");
}

#[test]
fn nothing_listening_or_errors_are_counted_not_fatal() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let r = Reporter::new(
        format!("http://127.0.0.1:{port}/counters"),
        Duration::from_millis(0),
        Duration::from_millis(500),
    );
    r.update(&[("events", json!(1))]);
    let stats = r.finish(&[("done", json!(true))]);
    assert_eq!(stats.posted, 0);
    assert!(stats.failed >= 1);

    let elog = Elog::start(Mode::Error500);
    let r = Reporter::new(
        elog.url.clone(),
        Duration::from_millis(0),
        Duration::from_secs(2),
    );
    r.update(&[("events", json!(1))]);
    let stats = r.finish(&[("done", json!(true))]);
    assert_eq!(stats.posted, 0);
    assert!(stats.failed >= 1);
    assert!(!elog.requests().is_empty());
}

fn arp_post(env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lclstreamer"));
    cmd.arg("arp-post").args(args);
    for k in [
        "ARP_JOB_ID",
        "ARP_UPDATE_COUNTERS",
        "JID_UPDATE_COUNTERS",
        "LCLSTREAMER_ARP_INTERVAL",
        "LCLSTREAMER_ARP_TIMEOUT",
    ] {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn environment_selects_the_url_with_the_old_name_as_fallback() {
    let args = ["--counter", "events=5", "--final", "<b>Last Event</b>=done"];
    let new = Elog::start(Mode::Ok);
    let old = Elog::start(Mode::Ok);

    // Only the old name: it is used. The update may go out on its own before the final post.
    arp_post(
        &[("ARP_JOB_ID", "77"), ("JID_UPDATE_COUNTERS", &old.url)],
        &args,
    );
    let got = old.requests();
    assert!((1..=2).contains(&got.len()), "{got:?}");
    assert_eq!(
        counters(&got.last().unwrap().body),
        kv(&[("events", json!(5)), ("<b>Last Event</b>", json!("done"))])
    );
    let from_old = got.len();

    // Both names: the current one wins.
    arp_post(
        &[
            ("ARP_JOB_ID", "77"),
            ("ARP_UPDATE_COUNTERS", &new.url),
            ("JID_UPDATE_COUNTERS", &old.url),
        ],
        &args,
    );
    let from_new = new.requests().len();
    assert!((1..=2).contains(&from_new));
    assert_eq!(old.requests().len(), from_old);

    // Without ARP_JOB_ID the job is not under the ARP: nothing is posted.
    let out = arp_post(&[("ARP_UPDATE_COUNTERS", &new.url)], &args);
    assert_eq!(new.requests().len(), from_new);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not under the ARP"));

    // An unreachable eLog does not fail the command.
    let out = arp_post(
        &[
            ("ARP_JOB_ID", "77"),
            ("ARP_UPDATE_COUNTERS", "http://127.0.0.1:9/nothing"),
            ("LCLSTREAMER_ARP_TIMEOUT", "0.5"),
        ],
        &args,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed"));
}
