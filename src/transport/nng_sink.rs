//! NNG Push0 sink: one socket per URL (dial or listen), a send timeout, background reconnects,
//! and a policy for messages no consumer takes: `block`, `spill` or `drop`.
//!
//! `finish` sends an [`EndOfStream`] to every URL, then waits (up to `linger`) for the consumer
//! to close the connection, so the writer never closes while its last messages are in flight.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::eos::EndOfStream;
use super::file_sink::{batch_file_name, write_atomic};
use super::nng_socket::NngSocket;
use super::{MessageMeta, Sink, SinkStats, TransportError};

/// Whether the sink connects to consumers or waits for them to connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Connect to the URL (retrying in the background until a consumer listens).
    #[default]
    Dial,
    /// Bind the URL and wait for consumers to dial in.
    Listen,
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dial" => Ok(Role::Dial),
            "listen" => Ok(Role::Listen),
            _ => Err(format!("unknown role {s:?} (dial, listen)")),
        }
    }
}

/// What to do with a message no consumer takes within the send timeout.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Keep waiting (back-pressure), logging every send timeout.
    #[default]
    Block,
    /// Write the batch as a `.h5` file into this directory and go on.
    Spill(PathBuf),
    /// Count it as dropped and go on.
    Drop,
}

/// How messages are spread over several URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distribute {
    /// Writer rank `r` uses only URL `r % n`.
    #[default]
    ByRank,
    /// Every writer connects to all URLs and sends message `k` to URL `k % n`.
    RoundRobin,
}

/// Configuration of an [`NngSink`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NngSinkConfig {
    pub urls: Vec<String>,
    pub role: Role,
    pub policy: Policy,
    pub distribute: Distribute,
    pub send_timeout: Duration,
    /// How long `finish` waits for end-of-stream delivery and for consumers to disconnect.
    pub linger: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Resend window: the most recent messages kept (at least `resend_min_messages` and at
    /// least `resend_min_bytes` worth) and sent again when a consumer connection closes, since
    /// Push0 cannot tell which of them the departed consumer had really read.
    pub resend_min_messages: usize,
    pub resend_min_bytes: usize,
}

impl NngSinkConfig {
    /// Defaults: dial, block, by rank, 1 s send timeout, 30 s linger, reconnect 100 ms .. 2 s,
    /// resend window of at least 2 messages and 32 MiB.
    pub fn new(urls: Vec<String>) -> Self {
        NngSinkConfig {
            urls,
            role: Role::Dial,
            policy: Policy::Block,
            distribute: Distribute::ByRank,
            send_timeout: Duration::from_secs(1),
            linger: Duration::from_secs(30),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(2),
            resend_min_messages: 2,
            resend_min_bytes: 32 << 20,
        }
    }
}

struct Endpoint {
    url: String,
    socket: NngSocket,
    batches: u64,
    events: u64,
    bytes: u64,
    /// Recently delivered messages, oldest first, and their total size.
    window: VecDeque<(MessageMeta, Vec<u8>)>,
    window_bytes: usize,
    /// Connection closures already answered by a resend.
    closed_seen: u64,
}

impl Endpoint {
    fn open(url: &str, cfg: &NngSinkConfig) -> Result<Self, TransportError> {
        let err = |what| {
            move |source| TransportError::Nng {
                what,
                url: url.to_owned(),
                source,
            }
        };
        let socket = NngSocket::push().map_err(err("socket for"))?;
        socket
            .set_send_timeout(Some(cfg.send_timeout))
            .map_err(err("send timeout on"))?;
        socket
            .set_reconnect(cfg.reconnect_min, cfg.reconnect_max)
            .map_err(err("reconnect time on"))?;
        match cfg.role {
            Role::Dial => socket.dial(url).map_err(err("dial"))?,
            Role::Listen => socket.listen(url).map_err(err("listen on"))?,
        }
        Ok(Endpoint {
            url: url.to_owned(),
            socket,
            batches: 0,
            events: 0,
            bytes: 0,
            window: VecDeque::new(),
            window_bytes: 0,
            closed_seen: 0,
        })
    }

    /// Sends until delivered (true), or until `deadline` (false).
    fn send_until(
        &self,
        msg: &[u8],
        deadline: Option<Instant>,
        what: &str,
    ) -> Result<bool, TransportError> {
        let start = Instant::now();
        let mut next_log = 5.0;
        loop {
            match self.socket.send(msg) {
                Ok(()) => return Ok(true),
                Err(e) if e.is_timeout() => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(false);
                    }
                    if deadline.is_none() && start.elapsed().as_secs_f64() >= next_log {
                        next_log *= 2.0;
                        eprintln!(
                            "lclstreamer: no consumer has taken {what} on {} for {:.0} s; waiting (policy block)",
                            self.url,
                            start.elapsed().as_secs_f64()
                        );
                    }
                }
                Err(source) => {
                    return Err(TransportError::Nng {
                        what: "send to",
                        url: self.url.clone(),
                        source,
                    });
                }
            }
        }
    }

    /// Waits until no consumer is connected, or `timeout`; true if they all went away.
    fn wait_disconnect(&self, timeout: Duration) -> bool {
        self.socket.pipes().wait_zero(timeout)
    }
}

/// NNG Push0 sink for one writer.
pub struct NngSink {
    cfg: NngSinkConfig,
    writer_rank: u32,
    sender: String,
    run: Option<u32>,
    endpoints: Vec<Endpoint>,
    next: usize,
    stats: SinkStats,
    finished: bool,
}

impl NngSink {
    /// Opens the sockets for writer `writer_rank` (all URLs, or URL `rank % n` with `ByRank`).
    pub fn new(cfg: NngSinkConfig, writer_rank: u32) -> Result<Self, TransportError> {
        if cfg.urls.is_empty() {
            return Err(TransportError::Config("no NNG URL given".into()));
        }
        if let Policy::Spill(dir) = &cfg.policy {
            std::fs::create_dir_all(dir).map_err(|e| TransportError::io(dir, e))?;
        }
        let urls: Vec<&String> = match cfg.distribute {
            Distribute::ByRank => vec![&cfg.urls[writer_rank as usize % cfg.urls.len()]],
            Distribute::RoundRobin => cfg.urls.iter().collect(),
        };
        let endpoints = urls
            .into_iter()
            .map(|u| Endpoint::open(u, &cfg))
            .collect::<Result<_, _>>()?;
        Ok(NngSink {
            cfg,
            writer_rank,
            sender: format!("writer {writer_rank}"),
            run: None,
            endpoints,
            next: 0,
            stats: SinkStats::default(),
            finished: false,
        })
    }

    /// Names the sender in the end-of-stream message (default `writer <rank>`).
    pub fn set_sender(&mut self, sender: impl Into<String>) {
        self.sender = sender.into();
    }

    /// Number of consumer connections currently open, per URL.
    pub fn connections(&self) -> Vec<(String, usize)> {
        self.endpoints
            .iter()
            .map(|e| (e.url.clone(), e.socket.pipes().get()))
            .collect()
    }
}

impl NngSink {
    fn deadline(&self) -> Option<Instant> {
        match self.cfg.policy {
            Policy::Block => None,
            _ => Some(Instant::now()),
        }
    }

    /// Sends one message to endpoint `i`, applying the policy when nobody takes it.
    /// `resend`: a copy of a message already counted as delivered.
    fn deliver(
        &mut self,
        i: usize,
        bytes: Vec<u8>,
        meta: MessageMeta,
        resend: bool,
    ) -> Result<(), TransportError> {
        let deadline = self.deadline();
        let ep = &mut self.endpoints[i];
        let what = format!("batch {} of writer {}", meta.seq, meta.writer_rank);
        if ep.send_until(&bytes, deadline, &what)? {
            if resend {
                self.stats.resent += 1;
            } else {
                ep.batches += 1;
                ep.events += meta.events;
                ep.bytes += bytes.len() as u64;
                self.stats.batches += 1;
                self.stats.events += meta.events;
                self.stats.bytes += bytes.len() as u64;
            }
            ep.window_bytes += bytes.len();
            ep.window.push_back((meta, bytes));
            while ep.window.len() > self.cfg.resend_min_messages
                && ep.window_bytes - ep.window[0].1.len() >= self.cfg.resend_min_bytes
            {
                let (_, old) = ep.window.pop_front().expect("non-empty");
                ep.window_bytes -= old.len();
            }
            return Ok(());
        }
        match &self.cfg.policy {
            Policy::Spill(dir) => {
                write_atomic(dir, &batch_file_name(&meta), &bytes)?;
                if !resend {
                    self.stats.spilled += 1;
                    self.stats.spilled_events += meta.events;
                }
            }
            _ if !resend => {
                self.stats.dropped += 1;
                self.stats.dropped_events += meta.events;
            }
            _ => {}
        }
        Ok(())
    }

    /// When a consumer connection of endpoint `i` closed since the last check, sends the
    /// resend window again (consumers drop duplicates by writer rank and sequence number).
    fn resend_after_disconnect(&mut self, i: usize) -> Result<(), TransportError> {
        let ep = &mut self.endpoints[i];
        let closed = ep.socket.pipes().removed();
        if closed == ep.closed_seen {
            return Ok(());
        }
        ep.closed_seen = closed;
        let window = std::mem::take(&mut ep.window);
        ep.window_bytes = 0;
        if !window.is_empty() {
            eprintln!(
                "lclstreamer: a consumer of {} disconnected; resending the last {} batches",
                ep.url,
                window.len()
            );
        }
        for (meta, bytes) in window {
            self.deliver(i, bytes, meta, true)?;
        }
        Ok(())
    }
}

impl Sink for NngSink {
    fn send(&mut self, bytes: Vec<u8>, meta: &MessageMeta) -> Result<(), TransportError> {
        if self.finished {
            return Err(TransportError::Finished);
        }
        self.run = Some(meta.run);
        let i = self.next % self.endpoints.len();
        self.next += 1;
        self.resend_after_disconnect(i)?;
        self.deliver(i, bytes, *meta, false)
    }

    fn finish(&mut self) -> Result<SinkStats, TransportError> {
        if self.finished {
            return Ok(self.stats);
        }
        self.finished = true;
        for i in 0..self.endpoints.len() {
            self.resend_after_disconnect(i)?;
        }
        let deadline = match self.cfg.policy {
            Policy::Block => None,
            _ => Some(Instant::now() + self.cfg.linger),
        };
        let mut undelivered = Vec::new();
        for ep in &self.endpoints {
            let eos = EndOfStream {
                sender: self.sender.clone(),
                writer_rank: Some(self.writer_rank),
                run: self.run,
                url: ep.url.clone(),
                batches: ep.batches,
                events: ep.events,
                bytes: ep.bytes,
                spilled: self.stats.spilled,
                spilled_events: self.stats.spilled_events,
                dropped: self.stats.dropped,
                dropped_events: self.stats.dropped_events,
                resent: self.stats.resent,
                rejected: 0,
            };
            if !ep.send_until(&eos.encode(), deadline, "the end-of-stream message")? {
                undelivered.push(ep.url.clone());
            }
        }
        for ep in &self.endpoints {
            if !undelivered.contains(&ep.url) && !ep.wait_disconnect(self.cfg.linger) {
                eprintln!(
                    "lclstreamer: consumer on {} still connected {:.0} s after end-of-stream; closing",
                    ep.url,
                    self.cfg.linger.as_secs_f64()
                );
            }
        }
        self.endpoints.clear();
        if !undelivered.is_empty() {
            return Err(TransportError::Incomplete(format!(
                "{}: end-of-stream not delivered to {} within {:.0} s (no consumer)",
                self.sender,
                undelivered.join(", "),
                self.cfg.linger.as_secs_f64()
            )));
        }
        Ok(self.stats)
    }
}
