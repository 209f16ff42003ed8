//! Progress counters for the LCLS eLog's Automatic Run Processor (ARP).
//!
//! Under the ARP (`ARP_JOB_ID` set) the job POSTs its counters to the URL in `ARP_UPDATE_COUNTERS`
//! (older name `JID_UPDATE_COUNTERS`) as a JSON array of `{"key", "value"}` objects. The eLog
//! replaces the displayed list with each POST, so every POST carries every counter seen so far.
//!
//! Posting is best effort: a background thread sends the latest state at most once per interval,
//! each request has a short timeout, and failures are logged to stderr and otherwise ignored, so
//! an eLog outage never slows or fails the job. Create the reporter on one rank only.

use serde_json::Value;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Default minimum time between two POSTs.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Default limit for one POST (connect, send and response together).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends progress counters to the eLog from a background thread.
pub struct Reporter {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Outcome of the posts made by a [`Reporter`], returned by [`Reporter::finish`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// POSTs answered with a 2xx status.
    pub posted: u64,
    /// POSTs that failed (connection, timeout, non-2xx status).
    pub failed: u64,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    counters: Vec<(String, Value)>,
    dirty: bool,
    finishing: bool,
    stopped: bool,
    stats: Stats,
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Reporter {
    /// A reporter when running under the ARP: `ARP_JOB_ID` set and a counters URL in
    /// `ARP_UPDATE_COUNTERS` or `JID_UPDATE_COUNTERS`; `None` otherwise. Interval and timeout
    /// may be overridden (in seconds) with `LCLSTREAMER_ARP_INTERVAL` and
    /// `LCLSTREAMER_ARP_TIMEOUT`.
    pub fn from_env() -> Option<Reporter> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        get("ARP_JOB_ID")?;
        let url = get("ARP_UPDATE_COUNTERS").or_else(|| get("JID_UPDATE_COUNTERS"));
        let Some(url) = url else {
            eprintln!(
                "arp: ARP_JOB_ID is set but neither ARP_UPDATE_COUNTERS nor JID_UPDATE_COUNTERS is; no progress counters"
            );
            return None;
        };
        let secs = |k: &str, default: Duration| match get(k) {
            None => default,
            Some(v) => match v.trim().parse::<f64>() {
                Ok(s) if s.is_finite() && s >= 0.0 => Duration::from_secs_f64(s),
                _ => {
                    eprintln!("arp: ignoring {k}={v:?} (not a number of seconds)");
                    default
                }
            },
        };
        Some(Reporter::new(
            url,
            secs("LCLSTREAMER_ARP_INTERVAL", DEFAULT_INTERVAL),
            secs("LCLSTREAMER_ARP_TIMEOUT", DEFAULT_TIMEOUT),
        ))
    }

    /// A reporter posting to `url` at most once per `interval`, each POST limited to `timeout`.
    pub fn new(url: String, interval: Duration, timeout: Duration) -> Reporter {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(true)
            .user_agent(concat!("lclstreamer/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("arp-counters".into())
                .spawn(move || post_loop(&shared, &agent, &url, interval))
        };
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("arp: cannot start the counters thread ({e}); no progress counters");
                None
            }
        };
        Reporter { shared, thread }
    }

    /// Merges `counters` into the current list (new keys are appended, known keys take the new
    /// value) and schedules a POST of the whole list. Never blocks on the network.
    pub fn update(&self, counters: &[(&str, Value)]) {
        let mut st = lock(&self.shared);
        merge(&mut st.counters, counters);
        st.dirty = true;
        drop(st);
        self.shared.wake.notify_one();
    }

    /// Merges the final `summary`, POSTs the whole list once more without waiting for the
    /// interval, and stops the thread. Blocks at most about two POST timeouts.
    pub fn finish(mut self, summary: &[(&str, Value)]) -> Stats {
        {
            let mut st = lock(&self.shared);
            merge(&mut st.counters, summary);
            st.dirty = true;
            st.finishing = true;
        }
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        lock(&self.shared).stats
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if self.thread.is_some() {
            lock(&self.shared).stopped = true;
            self.shared.wake.notify_one();
        }
    }
}

fn merge(list: &mut Vec<(String, Value)>, new: &[(&str, Value)]) {
    for (k, v) in new {
        match list.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v.clone(),
            None => list.push(((*k).to_owned(), v.clone())),
        }
    }
}

/// The request body the eLog expects: `[{"key": k, "value": v}, ...]`.
fn body(counters: &[(String, Value)]) -> Vec<u8> {
    let list: Vec<Value> = counters
        .iter()
        .map(|(k, v)| serde_json::json!({ "key": k, "value": v }))
        .collect();
    serde_json::to_vec(&list).expect("JSON of strings and values")
}

fn post_loop(shared: &Shared, agent: &ureq::Agent, url: &str, interval: Duration) {
    let mut last_post: Option<Instant> = None;
    let mut failing = false;
    loop {
        let mut st = lock(shared);
        let payload = loop {
            if st.stopped {
                return;
            }
            if st.dirty {
                let due = last_post.map(|t| t + interval);
                match due {
                    Some(due) if !st.finishing && Instant::now() < due => {
                        let wait = due.saturating_duration_since(Instant::now());
                        st = shared
                            .wake
                            .wait_timeout(st, wait)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                        continue;
                    }
                    _ => {
                        st.dirty = false;
                        break body(&st.counters);
                    }
                }
            }
            if st.finishing {
                return;
            }
            st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
        };
        let last = st.finishing;
        drop(st);

        last_post = Some(Instant::now());
        let result = agent
            .post(url)
            .content_type("application/json")
            .send(&payload[..]);
        let mut st = lock(shared);
        match result {
            Ok(_) => {
                st.stats.posted += 1;
                if failing {
                    eprintln!("arp: counters posted again to {url}");
                    failing = false;
                }
            }
            Err(e) => {
                st.stats.failed += 1;
                if !failing {
                    eprintln!("arp: counters post to {url} failed ({e}); the job goes on");
                    failing = true;
                }
            }
        }
        if last && !st.dirty {
            return;
        }
    }
}

/// `lclstreamer arp-post`: posts counters the way a job does, to try the eLog hook by hand or
/// from a job script.
pub mod cli {
    use super::{DEFAULT_INTERVAL, DEFAULT_TIMEOUT, Reporter};
    use serde_json::Value;
    use std::time::Duration;

    /// Arguments of `lclstreamer arp-post`.
    #[derive(clap::Args, Debug)]
    pub struct PostArgs {
        /// A counter to post, as KEY=VALUE (VALUE is sent as a number when it parses as one).
        #[arg(long = "counter", value_name = "KEY=VALUE", value_parser = parse_counter)]
        pub counters: Vec<(String, Value)>,
        /// A counter for the final post only.
        #[arg(long = "final", value_name = "KEY=VALUE", value_parser = parse_counter)]
        pub finals: Vec<(String, Value)>,
        /// Post to this URL instead of the one from the ARP environment.
        #[arg(long)]
        pub url: Option<String>,
        /// Minimum seconds between posts (with --url).
        #[arg(long, default_value_t = DEFAULT_INTERVAL.as_secs_f64())]
        pub interval: f64,
        /// Seconds allowed for one post (with --url).
        #[arg(long, default_value_t = DEFAULT_TIMEOUT.as_secs_f64())]
        pub timeout: f64,
    }

    fn parse_counter(s: &str) -> Result<(String, Value), String> {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
        if k.is_empty() {
            return Err(format!("{s:?} has an empty key"));
        }
        let value = if let Ok(i) = v.parse::<i64>() {
            Value::from(i)
        } else if let Some(f) = v.parse::<f64>().ok().filter(|f| f.is_finite()) {
            Value::from(f)
        } else {
            Value::from(v)
        };
        Ok((k.to_owned(), value))
    }

    fn refs(v: &[(String, Value)]) -> Vec<(&str, Value)> {
        v.iter().map(|(k, x)| (k.as_str(), x.clone())).collect()
    }

    fn seconds(name: &str, s: f64) -> anyhow::Result<Duration> {
        anyhow::ensure!(
            s.is_finite() && s >= 0.0,
            "--{name} must be a non-negative number of seconds, not {s}"
        );
        Ok(Duration::from_secs_f64(s))
    }

    /// Posts `--counter`s, then `--final`s in the final post; reports what happened on stderr.
    /// Never fails because the eLog is unreachable.
    pub fn run(args: &PostArgs) -> anyhow::Result<()> {
        let reporter = match &args.url {
            Some(url) => Reporter::new(
                url.clone(),
                seconds("interval", args.interval)?,
                seconds("timeout", args.timeout)?,
            ),
            None => match Reporter::from_env() {
                Some(r) => r,
                None => {
                    eprintln!("arp-post: not under the ARP (ARP_JOB_ID unset); nothing posted");
                    return Ok(());
                }
            },
        };
        if !args.counters.is_empty() {
            reporter.update(&refs(&args.counters));
        }
        let stats = reporter.finish(&refs(&args.finals));
        eprintln!(
            "arp-post: {} post(s) accepted, {} failed",
            stats.posted, stats.failed
        );
        Ok(())
    }
}
