//! NNG Push0 sink: one socket per URL (dial or listen), a send timeout, background reconnects,
//! and a policy for messages no consumer takes: `block` (up to `block_timeout`), `spill` or
//! `drop`.
//!
//! Push0 has no acknowledgements, so the sink keeps a resend window at least as large as what
//! can be in flight (NNG's queue, both TCP buffers, the message a consumer is handling) and sends
//! it again when a consumer connection closes; consumers drop the duplicates by writer rank and
//! sequence number. Every message ends in exactly one count of [`SinkStats`]: delivered,
//! spilled, dropped, in doubt (a resent copy no consumer took: the departed consumer may hold
//! it) or refused (every connection it was sent on closed: larger than the consumer accepts).
//! With `round_robin`, a message a consumer does not take goes to another one.
//!
//! `finish` sends an [`EndOfStream`] to every URL, then waits (up to `linger`) for the consumer
//! to close the connection, so the writer never closes while its last messages are in flight.
//! A SIGINT or SIGTERM ([`crate::interrupt`]) ends every wait within [`SLICE`].

use std::collections::VecDeque;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::interrupt::Interrupt;

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

impl Distribute {
    /// The URLs writer `writer_rank` sends to: all of them, or URL `rank % n` with `ByRank`.
    pub fn urls_for(self, urls: &[String], writer_rank: u32) -> Vec<&String> {
        match self {
            Distribute::ByRank => vec![&urls[writer_rank as usize % urls.len()]],
            Distribute::RoundRobin => urls.iter().collect(),
        }
    }
}

/// Configuration of an [`NngSink`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NngSinkConfig {
    pub urls: Vec<String>,
    pub role: Role,
    pub policy: Policy,
    pub distribute: Distribute,
    /// How long a message may wait for a consumer before `spill` or `drop` applies.
    pub send_timeout: Duration,
    /// Under `block`: the longest wait for one message (or the end-of-stream), after which the
    /// sink fails with an error naming the URL; `None` waits for ever.
    pub block_timeout: Option<Duration>,
    /// Messages larger than this are refused before sending and handled by the policy.
    pub max_message_bytes: Option<usize>,
    /// How long `finish` waits for end-of-stream delivery and for consumers to disconnect.
    pub linger: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Resend window: the most recent messages kept (at least `resend_min_messages` and at
    /// least `resend_min_bytes` worth) and sent again when a consumer connection closes.
    pub resend_min_messages: usize,
    pub resend_min_bytes: usize,
}

impl NngSinkConfig {
    /// Defaults: dial, block (at most 10 min per message), by rank, 1 s send timeout, 30 s
    /// linger, reconnect 100 ms .. 2 s, resend window of at least 4 messages and of what the TCP
    /// buffers can hold ([`in_flight_bytes`]).
    pub fn new(urls: Vec<String>) -> Self {
        NngSinkConfig {
            urls,
            role: Role::Dial,
            policy: Policy::Block,
            distribute: Distribute::ByRank,
            send_timeout: Duration::from_secs(1),
            block_timeout: Some(Duration::from_secs(600)),
            max_message_bytes: None,
            linger: Duration::from_secs(30),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(2),
            resend_min_messages: 4,
            resend_min_bytes: in_flight_bytes(),
        }
    }
}

/// Bytes that can be in flight on one TCP connection: the largest send buffer plus the largest
/// receive buffer the kernel allows (`net.ipv4.tcp_wmem`, `tcp_rmem`), at least 32 MiB.
pub fn in_flight_bytes() -> usize {
    let max_of = |name: &str| -> usize {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
            .ok()
            .and_then(|t| t.split_whitespace().nth(2)?.parse().ok())
            .unwrap_or(16 << 20)
    };
    (max_of("tcp_wmem") + max_of("tcp_rmem")).max(32 << 20)
}

/// One attempt of a send lasts at most this long, so waits notice a stop request and other
/// consumers promptly.
pub const SLICE: Duration = Duration::from_millis(100);

/// How long `finish` watches for a consumer closing again after a resend.
const SETTLE: Duration = Duration::from_secs(1);

/// A message is refused once this many connections closed while it was in flight.
const MAX_RESENDS: u32 = 4;

struct Sent {
    meta: MessageMeta,
    bytes: Vec<u8>,
    /// Connection closures this message was in flight for.
    closures: u32,
}

struct Endpoint {
    url: String,
    socket: NngSocket,
    batches: u64,
    events: u64,
    bytes: u64,
    /// Recently delivered messages, oldest first, and their total size.
    window: VecDeque<Sent>,
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
            .set_send_timeout(Some(cfg.send_timeout.min(SLICE)))
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

    /// One send attempt of at most [`SLICE`]; false when nobody took the message.
    fn try_send(&self, msg: &[u8]) -> Result<bool, TransportError> {
        match self.socket.send(msg) {
            Ok(()) => Ok(true),
            Err(e) if e.is_timeout() => Ok(false),
            Err(source) => Err(TransportError::Nng {
                what: "send to",
                url: self.url.clone(),
                source,
            }),
        }
    }

    /// Waits until no consumer is connected, or `timeout`; true if they all went away.
    fn wait_disconnect(&self, timeout: Duration) -> bool {
        self.socket.pipes().wait_zero(timeout)
    }
}

/// What became of one offer of a message.
enum Offer {
    /// Taken by endpoint `i`.
    Taken(usize),
    /// Nobody took it within the policy's time.
    NotTaken,
    /// A signal asked the job to stop.
    Stopped,
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
    /// A send failed (block timeout, refused): `finish` does not wait for consumers again.
    failed: bool,
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
        let urls = cfg.distribute.urls_for(&cfg.urls, writer_rank);
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
            failed: false,
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

    fn urls(&self, which: &[usize]) -> String {
        let u: Vec<&str> = which
            .iter()
            .map(|&i| self.endpoints[i].url.as_str())
            .collect();
        u.join(", ")
    }

    /// Connection closures so far, over all endpoints.
    fn closed(&self) -> u64 {
        self.endpoints
            .iter()
            .map(|e| e.socket.pipes().removed())
            .sum()
    }

    fn all(&self) -> Vec<usize> {
        (0..self.endpoints.len()).collect()
    }

    /// Offers `msg` to the endpoints in `candidates`, connected ones first, until one takes it,
    /// `wait` passes (`None`: the block timeout, then an error) or a stop is requested.
    fn offer(
        &self,
        candidates: &[usize],
        msg: &[u8],
        wait: Option<Duration>,
        what: &str,
    ) -> Result<Offer, TransportError> {
        let start = Instant::now();
        let mut next_log = 5.0;
        loop {
            let (live, idle): (Vec<usize>, Vec<usize>) = candidates
                .iter()
                .partition(|&&j| self.endpoints[j].socket.pipes().get() > 0);
            for j in live.into_iter().chain(idle) {
                if self.endpoints[j].try_send(msg)? {
                    return Ok(Offer::Taken(j));
                }
                if Interrupt::requested().is_some() {
                    return Ok(Offer::Stopped);
                }
            }
            let waited = start.elapsed();
            match wait {
                Some(w) if waited >= w => return Ok(Offer::NotTaken),
                Some(_) => {}
                None => {
                    if self.cfg.block_timeout.is_some_and(|b| waited >= b) {
                        return Err(TransportError::Stalled(format!(
                            "no consumer took {what} on {} for {:.0} s (policy block, block_timeout)",
                            self.urls(candidates),
                            waited.as_secs_f64()
                        )));
                    }
                    if waited.as_secs_f64() >= next_log {
                        next_log *= 2.0;
                        eprintln!(
                            "lclstreamer: no consumer has taken {what} on {} for {:.0} s; waiting (policy block)",
                            self.urls(candidates),
                            waited.as_secs_f64()
                        );
                    }
                }
            }
        }
    }

    /// How long a message waits before the policy applies; `None` under `block`.
    fn wait(&self) -> Option<Duration> {
        match self.cfg.policy {
            Policy::Block => None,
            _ => Some(self.cfg.send_timeout),
        }
    }

    /// Sends a new message, or a copy of one in doubt after a disconnect, and counts it.
    fn deliver(&mut self, first: usize, m: Sent, resend: bool) -> Result<(), TransportError> {
        let what = format!("batch {} of writer {}", m.meta.seq, m.meta.writer_rank);
        let too_big = self
            .cfg
            .max_message_bytes
            .filter(|&max| m.bytes.len() > max);
        let offer = match too_big {
            Some(_) => Offer::NotTaken,
            None => {
                let n = self.endpoints.len();
                let order: Vec<usize> = (0..n).map(|k| (first + k) % n).collect();
                self.offer(&order, &m.bytes, self.wait(), &what)?
            }
        };
        let j = match offer {
            Offer::Taken(j) => j,
            Offer::NotTaken if too_big.is_some() => {
                let max = too_big.unwrap_or_default();
                let why = format!(
                    "{what} is {} bytes, more than max_message_bytes {max}",
                    m.bytes.len()
                );
                return self.refuse(m, resend.then_some(first), &why);
            }
            Offer::NotTaken | Offer::Stopped => {
                return self.not_taken(m, resend.then_some(first), &what);
            }
        };
        if resend {
            self.stats.resent += 1;
            if j != first {
                // Another URL took it: its end-of-stream announces it, not the first's.
                self.undeliver(first, &m.meta, m.bytes.len());
            }
        }
        if !resend || j != first {
            let ep = &mut self.endpoints[j];
            ep.batches += 1;
            ep.events += m.meta.events;
            ep.bytes += m.bytes.len() as u64;
            self.stats.batches += 1;
            self.stats.events += m.meta.events;
            self.stats.bytes += m.bytes.len() as u64;
        }
        let ep = &mut self.endpoints[j];
        ep.window_bytes += m.bytes.len();
        ep.window.push_back(m);
        while ep.window.len() > self.cfg.resend_min_messages
            && ep.window_bytes - ep.window[0].bytes.len() >= self.cfg.resend_min_bytes
        {
            let old = ep.window.pop_front().expect("non-empty");
            ep.window_bytes -= old.bytes.len();
        }
        Ok(())
    }

    /// Moves a copy counted as delivered on endpoint `i` out of the delivered counts.
    fn undeliver(&mut self, i: usize, meta: &MessageMeta, bytes: usize) {
        let ep = &mut self.endpoints[i];
        ep.batches -= 1;
        ep.events -= meta.events;
        ep.bytes -= bytes as u64;
        self.stats.batches -= 1;
        self.stats.events -= meta.events;
        self.stats.bytes -= bytes as u64;
    }

    /// Applies the policy to a message nobody took.
    fn not_taken(
        &mut self,
        m: Sent,
        resent_from: Option<usize>,
        what: &str,
    ) -> Result<(), TransportError> {
        if let Policy::Spill(dir) = &self.cfg.policy {
            write_atomic(dir, &batch_file_name(&m.meta), &m.bytes)?;
        }
        if let Some(i) = resent_from {
            self.undeliver(i, &m.meta, m.bytes.len());
            self.stats.in_doubt += 1;
            self.stats.in_doubt_events += m.meta.events;
            return Ok(());
        }
        match &self.cfg.policy {
            Policy::Spill(_) => {
                self.stats.spilled += 1;
                self.stats.spilled_events += m.meta.events;
            }
            Policy::Drop => {
                self.stats.dropped += 1;
                self.stats.dropped_events += m.meta.events;
            }
            Policy::Block => {
                let Some(sig) = Interrupt::requested() else {
                    return Err(TransportError::Stalled(format!("{what} was not taken")));
                };
                eprintln!(
                    "lclstreamer: {}: {what} dropped: stopped by {} while no consumer on {} took it",
                    self.sender,
                    Interrupt::name(sig),
                    self.urls(&self.all())
                );
                self.stats.dropped += 1;
                self.stats.dropped_events += m.meta.events;
            }
        }
        Ok(())
    }

    /// Counts a message no consumer can take and applies the policy (`block` fails).
    fn refuse(
        &mut self,
        m: Sent,
        resent_from: Option<usize>,
        why: &str,
    ) -> Result<(), TransportError> {
        match &self.cfg.policy {
            Policy::Block => {
                return Err(TransportError::Refused(why.to_string()));
            }
            Policy::Spill(dir) => {
                write_atomic(dir, &batch_file_name(&m.meta), &m.bytes)?;
            }
            Policy::Drop => {}
        }
        eprintln!("lclstreamer: {}: {why}; counted as refused", self.sender);
        if let Some(i) = resent_from {
            self.undeliver(i, &m.meta, m.bytes.len());
        }
        self.stats.refused += 1;
        self.stats.refused_events += m.meta.events;
        Ok(())
    }

    /// When a consumer connection of endpoint `i` closed since the last check, sends the
    /// resend window again; a message in flight at [`MAX_RESENDS`] closures is refused.
    fn resend_after_disconnect(&mut self, i: usize) -> Result<(), TransportError> {
        let ep = &mut self.endpoints[i];
        let closed = ep.socket.pipes().removed();
        if closed == ep.closed_seen {
            return Ok(());
        }
        let newly = (closed - ep.closed_seen) as u32;
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
        for mut m in window {
            m.closures += newly;
            if m.closures >= MAX_RESENDS {
                let why = format!(
                    "batch {} of writer {} ({} bytes) was in flight each time a consumer of {} closed its connection, {} times (larger than the consumer accepts?)",
                    m.meta.seq,
                    m.meta.writer_rank,
                    m.bytes.len(),
                    self.endpoints[i].url,
                    m.closures
                );
                self.refuse(m, Some(i), &why)?;
            } else {
                self.deliver(i, m, true)?;
            }
        }
        Ok(())
    }
}

impl Sink for NngSink {
    fn stats(&self) -> SinkStats {
        self.stats
    }

    fn consumers(&mut self) -> Option<usize> {
        Some(self.endpoints.iter().map(|e| e.socket.pipes().get()).sum())
    }

    fn send(&mut self, bytes: Vec<u8>, meta: &MessageMeta) -> Result<(), TransportError> {
        if self.finished {
            return Err(TransportError::Finished);
        }
        self.run = Some(meta.run);
        let i = self.next % self.endpoints.len();
        self.next += 1;
        for j in 0..self.endpoints.len() {
            self.resend_after_disconnect(j)?;
        }
        let m = Sent {
            meta: *meta,
            bytes,
            closures: 0,
        };
        let r = self.deliver(i, m, false);
        self.failed |= r.is_err();
        r
    }

    fn finish(&mut self) -> Result<SinkStats, TransportError> {
        if self.finished {
            return Ok(self.stats);
        }
        self.finished = true;
        // Resent copies may close a connection again (a consumer refusing them); settle that
        // before the end-of-stream, within MAX_RESENDS rounds.
        for _ in 0..=MAX_RESENDS {
            let resent = self.stats.resent;
            let closed = self.closed();
            for i in 0..self.endpoints.len() {
                self.resend_after_disconnect(i)?;
            }
            if self.closed() == closed && self.stats.resent == resent {
                break;
            }
            // A consumer refusing what was just resent closes within this time, even on a
            // loaded machine; without resends there is no wait at all.
            let after = self.closed();
            let t = Instant::now();
            while self.closed() == after && t.elapsed() < SETTLE {
                std::thread::sleep(SLICE / 5);
            }
        }
        let mut undelivered = Vec::new();
        for i in 0..self.endpoints.len() {
            let ep = &self.endpoints[i];
            // Round robin: data found other consumers, so a URL nobody serves only gets `linger`.
            let wait = match self.cfg.policy {
                _ if self.failed => Some(SLICE),
                Policy::Block if ep.batches > 0 || self.endpoints.len() == 1 => None,
                _ => Some(self.cfg.linger),
            };
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
                in_doubt: self.stats.in_doubt,
                refused: self.stats.refused,
            };
            if !matches!(
                self.offer(&[i], &eos.encode(), wait, "the end-of-stream message")?,
                Offer::Taken(_)
            ) {
                undelivered.push((ep.url.clone(), wait.is_none()));
            }
        }
        let linger = if Interrupt::requested().is_some() {
            SLICE
        } else {
            self.cfg.linger
        };
        for ep in &self.endpoints {
            if !undelivered.iter().any(|(u, _)| u == &ep.url) && !ep.wait_disconnect(linger) {
                eprintln!(
                    "lclstreamer: consumer on {} still connected {:.0} s after end-of-stream; closing",
                    ep.url,
                    linger.as_secs_f64()
                );
            }
        }
        self.endpoints.clear();
        if !undelivered.is_empty() {
            let urls: Vec<&str> = undelivered.iter().map(|(u, _)| u.as_str()).collect();
            let why = format!(
                "end-of-stream not delivered to {} (no consumer at the end)",
                urls.join(", "),
            );
            // Under block, a consumer that was sent data and cannot learn the stream ended fails.
            if undelivered.iter().any(|&(_, blocking)| blocking) && Interrupt::requested().is_none()
            {
                return Err(TransportError::Stalled(why));
            }
            eprintln!("lclstreamer: {}: {why}", self.sender);
            self.stats.eos_undelivered += undelivered.len() as u64;
        }
        Ok(self.stats)
    }
}
