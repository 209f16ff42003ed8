//! The live monitor rank 0 serves while a job runs (`monitor.listen` in the configuration): a
//! page (`/`) with the hit rate over time, the peaks-per-event histogram, the latest hit with its
//! peaks, per-rank rates and sink state; the same numbers as JSON (`/status.json`, the image at
//! `/latest-hit.json`) and as Prometheus text (`/metrics`).
//!
//! Requests are answered on the monitor's own thread from a copy of the snapshot, so rank 0's
//! coordinator only ever takes a lock for the time of an assignment.

pub mod metrics;
pub mod preview;
pub mod state;

use serde::Deserialize;
use state::{Preview, Snapshot};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

const PAGE: &str = include_str!("page.html");

/// The `monitor:` section of the job configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// `HOST:PORT` to serve on (`0.0.0.0:8765`; port 0 takes any free port).
    pub listen: String,
    /// Seconds to keep serving the final numbers after the job ends.
    #[serde(default)]
    pub linger: f64,
}

impl MonitorConfig {
    /// Checks the values that binding does not.
    pub fn check(&self) -> anyhow::Result<()> {
        if !(self.linger.is_finite() && self.linger >= 0.0) {
            anyhow::bail!("monitor.linger: {} is not a number of seconds", self.linger);
        }
        Ok(())
    }
}

#[derive(Default)]
struct Shared {
    snapshot: Mutex<Snapshot>,
    latest: Mutex<Option<Arc<Preview>>>,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running monitor; the server thread stops when this is dropped.
pub struct Monitor {
    shared: Arc<Shared>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Binds `listen` (`HOST:PORT`; port 0 picks a free one) and starts serving `initial`.
    pub fn start(listen: &str, initial: Snapshot) -> anyhow::Result<Monitor> {
        let server = tiny_http::Server::http(listen)
            .map_err(|e| anyhow::anyhow!("monitor.listen {listen:?}: cannot listen: {e}"))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| anyhow::anyhow!("monitor.listen {listen:?}: not an IP address"))?;
        let shared = Arc::new(Shared {
            snapshot: Mutex::new(initial),
            ..Shared::default()
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("monitor".into())
            .spawn(move || serve(&server, &s))?;
        Ok(Monitor {
            shared,
            addr,
            thread: Some(thread),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's URL: the host's name when listening on every interface.
    pub fn url(&self) -> String {
        let host = if self.addr.ip().is_unspecified() {
            hostname().unwrap_or_else(|| self.addr.ip().to_string())
        } else {
            self.addr.ip().to_string()
        };
        format!("http://{host}:{}/", self.addr.port())
    }

    /// Changes the snapshot.
    pub fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        f(&mut lock(&self.shared.snapshot));
    }

    /// Replaces the latest hit.
    pub fn set_latest_hit(&self, p: Preview) {
        *lock(&self.shared.latest) = Some(Arc::new(p));
        lock(&self.shared.snapshot).latest_hit_seq += 1;
    }

    /// A copy of the snapshot.
    pub fn snapshot(&self) -> Snapshot {
        lock(&self.shared.snapshot).clone()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(server: &tiny_http::Server, shared: &Shared) {
    while !shared.stop.load(Ordering::Relaxed) {
        let req = match server.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(_) => return,
        };
        let path = req.url().split('?').next().unwrap_or("").to_string();
        let (body, kind, status) = match (req.method(), path.as_str()) {
            (tiny_http::Method::Get, "/") => (PAGE.to_string(), "text/html; charset=utf-8", 200),
            (tiny_http::Method::Get, "/status.json") => {
                let s = lock(&shared.snapshot).clone();
                (
                    serde_json::to_string(&s).unwrap_or_default(),
                    "application/json",
                    200,
                )
            }
            (tiny_http::Method::Get, "/latest-hit.json") => {
                let p = lock(&shared.latest).clone();
                (
                    serde_json::to_string(&p.as_deref()).unwrap_or_default(),
                    "application/json",
                    200,
                )
            }
            (tiny_http::Method::Get, "/metrics") => {
                let s = lock(&shared.snapshot).clone();
                (metrics::render(&s), "text/plain; version=0.0.4", 200)
            }
            _ => ("not found\n".to_string(), "text/plain", 404),
        };
        let header = tiny_http::Header::from_bytes("Content-Type", kind).expect("static header");
        let resp = tiny_http::Response::from_string(body)
            .with_status_code(status)
            .with_header(header);
        // A client that went away is not the job's problem.
        let _ = req.respond(resp);
    }
}

/// This host's name, as the kernel has it.
fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let n = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..n].to_vec())
        .ok()
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn parse(monitor: &str) -> anyhow::Result<Config> {
        let text = format!(
            "source: {{files: [a.xtc2], detector: epixquad}}\nprocessing: {{keep: all}}\noutput: {{sinks: [{{kind: files, dir: out}}]}}\n{monitor}"
        );
        Config::parse(&text, "job.yaml", Path::new("/base"))
    }

    #[test]
    fn the_monitor_section_is_optional_and_strict() {
        assert!(parse("").unwrap().monitor.is_none());
        let m = parse("monitor: {listen: \"0.0.0.0:8765\", linger: 2.5}\n")
            .unwrap()
            .monitor
            .unwrap();
        assert_eq!((m.listen.as_str(), m.linger), ("0.0.0.0:8765", 2.5));
        assert!(m.check().is_ok());
        let m = parse("monitor: {listen: \"127.0.0.1:0\"}\n")
            .unwrap()
            .monitor;
        assert_eq!(m.unwrap().linger, 0.0);
        let e = parse("monitor: {listen: \"x:1\", port: 3}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("monitor") && e.contains("port"), "{e}");
        let e = parse("monitor: {linger: 1}\n").unwrap_err().to_string();
        assert!(e.contains("listen"), "{e}");
        let bad = super::MonitorConfig {
            listen: "x:1".into(),
            linger: -1.0,
        };
        assert!(
            bad.check()
                .unwrap_err()
                .to_string()
                .contains("monitor.linger")
        );
    }
}
