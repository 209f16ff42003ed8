//! ZeroMQ sinks (libzmq through the `zmq` crate): PUSH (each message to one consumer), PUB
//! (each message to every subscriber) and REP (each request gets the next message; CrystFEL's
//! `--zmq-request=next`). Connect (`dial`) or bind (`listen`) on several URLs, distributed as
//! the NNG sink does, with the same `block` / `spill` / `drop` policies, resend window and
//! end-of-stream counts, in the sink's message [`Format`].
//!
//! Sockets use `ZMQ_IMMEDIATE` and a small high-water mark, so a message is only queued for a
//! live connection and back-pressure reaches the writer. A consumer's disconnect (socket
//! monitor) triggers a resend of the recent window; consumers drop duplicates by writer rank
//! and sequence number. PUB sends only while a subscriber is connected (otherwise the policy
//! applies), since libzmq silently discards what a PUB socket sends to nobody. A REP request
//! other than the configured one (`next`) is answered with an `LCLSTREAMER-ERROR` text and
//! counted (`rejected`).
//!
//! REP is served by a ROUTER socket speaking REP's envelope, with `ZMQ_ROUTER_MANDATORY`: a
//! request whose connection closed before it was answered (it stays queued; a REQ that dials
//! before the sink binds leaves one behind about once in 20 runs) makes the reply fail with
//! `EHOSTUNREACH` instead of vanishing, and the message waits for the next request.

use std::collections::VecDeque;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::eos::EndOfStream;
use super::file_sink::write_atomic;
use super::nng_sink::{Distribute, Policy, Role};
use super::zmq_socket::{ZmqSocket, ms};
use super::{MessageMeta, Sink, SinkStats, TransportError};
use crate::serialize::{Format, end_message};

/// Prefix of the reply to a malformed REP request.
pub const ERROR_MAGIC: &[u8] = b"LCLSTREAMER-ERROR\n";

/// ZeroMQ socket pattern of a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    #[default]
    Push,
    Pub,
    Rep,
}

impl FromStr for Pattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "push" => Ok(Pattern::Push),
            "pub" => Ok(Pattern::Pub),
            "rep" => Ok(Pattern::Rep),
            _ => Err(format!("unknown ZeroMQ pattern {s:?} (push, pub, rep)")),
        }
    }
}

/// Configuration of a [`ZmqSink`].
#[derive(Debug, Clone, PartialEq)]
pub struct ZmqSinkConfig {
    pub urls: Vec<String>,
    pub pattern: Pattern,
    pub role: Role,
    pub policy: Policy,
    pub distribute: Distribute,
    pub send_timeout: Duration,
    /// How long `finish` waits for end-of-stream delivery and for consumers to leave.
    pub linger: Duration,
    /// Send high-water mark in messages.
    pub hwm: i32,
    /// Resend window (see [`super::NngSinkConfig`]).
    pub resend_min_messages: usize,
    pub resend_min_bytes: usize,
    pub format: Format,
    /// Simplon only: one-byte message prefixes (`c`, `m`).
    pub simplon_prefix: bool,
    /// REP: the request that asks for the next message.
    pub request: Vec<u8>,
}

impl ZmqSinkConfig {
    /// Defaults: PUSH, connect, block, by rank, 1 s send timeout, 30 s linger, high-water mark 2,
    /// resend window of at least 8 messages and 32 MiB, HDF5, request `next`.
    pub fn new(urls: Vec<String>) -> Self {
        ZmqSinkConfig {
            urls,
            pattern: Pattern::Push,
            role: Role::Dial,
            policy: Policy::Block,
            distribute: Distribute::ByRank,
            send_timeout: Duration::from_secs(1),
            linger: Duration::from_secs(30),
            hwm: 2,
            resend_min_messages: 8,
            resend_min_bytes: 32 << 20,
            format: Format::Hdf5,
            simplon_prefix: false,
            request: b"next".to_vec(),
        }
    }
}

struct Endpoint {
    sock: ZmqSocket,
    batches: u64,
    events: u64,
    bytes: u64,
    window: VecDeque<(MessageMeta, Vec<u8>)>,
    window_bytes: usize,
    closed_seen: u64,
}

/// A ZeroMQ sink for one writer.
pub struct ZmqSink {
    cfg: ZmqSinkConfig,
    writer_rank: u32,
    sender: String,
    run: Option<u32>,
    _ctx: zmq::Context,
    endpoints: Vec<Endpoint>,
    next: usize,
    stats: SinkStats,
    finished: bool,
}

impl ZmqSink {
    /// Opens the sockets for writer `writer_rank` (all URLs, or URL `rank % n` with `ByRank`).
    pub fn new(cfg: ZmqSinkConfig, writer_rank: u32) -> Result<Self, TransportError> {
        if cfg.urls.is_empty() {
            return Err(TransportError::Config("no ZeroMQ URL given".into()));
        }
        if let Policy::Spill(dir) = &cfg.policy {
            std::fs::create_dir_all(dir).map_err(|e| TransportError::io(dir, e))?;
        }
        let urls = cfg.distribute.urls_for(&cfg.urls, writer_rank);
        let ctx = zmq::Context::new();
        let kind = match cfg.pattern {
            Pattern::Push => zmq::PUSH,
            Pattern::Pub => zmq::PUB,
            Pattern::Rep => zmq::ROUTER,
        };
        let mut endpoints = Vec::new();
        for url in urls {
            let sock = ZmqSocket::open(&ctx, kind, url, cfg.role, |s| {
                s.set_sndhwm(cfg.hwm)?;
                s.set_rcvhwm(cfg.hwm)?;
                s.set_sndtimeo(ms(cfg.send_timeout))?;
                s.set_rcvtimeo(ms(cfg.send_timeout.min(Duration::from_millis(200))))?;
                s.set_linger(ms(cfg.linger))?;
                s.set_reconnect_ivl(100)?;
                s.set_reconnect_ivl_max(2000)?;
                if cfg.pattern == Pattern::Push {
                    s.set_immediate(true)?;
                }
                if cfg.pattern == Pattern::Rep {
                    s.set_router_mandatory(true)?;
                }
                Ok(())
            })
            .map_err(TransportError::Zmq)?;
            endpoints.push(Endpoint {
                sock,
                batches: 0,
                events: 0,
                bytes: 0,
                window: VecDeque::new(),
                window_bytes: 0,
                closed_seen: 0,
            });
        }
        Ok(ZmqSink {
            writer_rank,
            sender: format!("writer {writer_rank}"),
            run: None,
            _ctx: ctx,
            endpoints,
            next: 0,
            stats: SinkStats::default(),
            finished: false,
            cfg,
        })
    }

    /// Names the sender in the end-of-stream message (default `writer <rank>`).
    pub fn set_sender(&mut self, sender: impl Into<String>) {
        self.sender = sender.into();
    }

    /// Open consumer connections per URL.
    pub fn connections(&mut self) -> Vec<(String, usize)> {
        self.endpoints
            .iter_mut()
            .map(|e| (e.sock.url.clone(), e.sock.connections()))
            .collect()
    }

    fn deadline(&self) -> Option<Instant> {
        match self.cfg.policy {
            Policy::Block => None,
            _ => Some(Instant::now() + self.cfg.send_timeout),
        }
    }
}

/// Outcome of [`send_until`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Yes,
    TimedOut,
    /// REP: a consumer connection closed while waiting for a request (its last reply may be
    /// lost and it may wait for it); resend the window first.
    Disconnected,
}

/// Sends `msg` on `ep` until delivered or `deadline`; REP answers malformed requests with an
/// error and counts them, and reports a connection closed while it waits.
fn send_until(
    cfg: &ZmqSinkConfig,
    ep: &mut Endpoint,
    msg: &[u8],
    deadline: Option<Instant>,
    what: &str,
    rejected: &mut u64,
) -> Result<Sent, TransportError> {
    let start = Instant::now();
    let mut next_log = 5.0;
    let zerr = |url: &str, what: &str, e: zmq::Error| {
        TransportError::Zmq(format!("ZeroMQ {what} {url}: {e}"))
    };
    loop {
        let sent = match cfg.pattern {
            Pattern::Push => match ep.sock.socket.send(msg, 0) {
                Ok(()) => true,
                Err(zmq::Error::EAGAIN) => false,
                Err(e) => return Err(zerr(&ep.sock.url, "send to", e)),
            },
            Pattern::Pub => {
                if ep.sock.wait_connected(cfg.send_timeout) {
                    match ep.sock.socket.send(msg, 0) {
                        Ok(()) => true,
                        Err(zmq::Error::EAGAIN) => false,
                        Err(e) => return Err(zerr(&ep.sock.url, "send to", e)),
                    }
                } else {
                    false
                }
            }
            Pattern::Rep => match ep.sock.socket.recv_multipart(0) {
                Ok(parts) => {
                    // REQ's envelope on a ROUTER: [peer id, empty delimiter, request].
                    let (peer, req) = match &parts[..] {
                        [peer, delim, req] if delim.is_empty() => (peer, &req[..]),
                        [peer, ..] => (peer, &b"<not a REQ envelope>"[..]),
                        [] => continue,
                    };
                    let reply =
                        |body: &[u8]| ep.sock.socket.send_multipart([&peer[..], &[], body], 0);
                    if req == cfg.request {
                        match reply(msg) {
                            Ok(()) => true,
                            // The requester left before its answer: wait for the next one.
                            Err(zmq::Error::EHOSTUNREACH) => continue,
                            Err(e) => return Err(zerr(&ep.sock.url, "reply to", e)),
                        }
                    } else {
                        *rejected += 1;
                        let shown = String::from_utf8_lossy(&req[..req.len().min(40)]).into_owned();
                        let text = format!(
                            "malformed request #{} of {} bytes ({shown:?}); the only request is {:?}",
                            *rejected,
                            req.len(),
                            String::from_utf8_lossy(&cfg.request)
                        );
                        eprintln!("lclstreamer: REP {}: {text}", ep.sock.url);
                        let mut body = ERROR_MAGIC.to_vec();
                        body.extend_from_slice(text.as_bytes());
                        match reply(&body) {
                            Ok(()) | Err(zmq::Error::EHOSTUNREACH) => {}
                            Err(e) => return Err(zerr(&ep.sock.url, "reply to", e)),
                        }
                        continue;
                    }
                }
                Err(zmq::Error::EAGAIN) => {
                    if ep.sock.closed() != ep.closed_seen {
                        return Ok(Sent::Disconnected);
                    }
                    false
                }
                Err(e) => return Err(zerr(&ep.sock.url, "receive from", e)),
            },
        };
        if sent {
            return Ok(Sent::Yes);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(Sent::TimedOut);
        }
        if deadline.is_none() && start.elapsed().as_secs_f64() >= next_log {
            next_log *= 2.0;
            eprintln!(
                "lclstreamer: no consumer has taken {what} on {} for {:.0} s; waiting (policy block)",
                ep.sock.url,
                start.elapsed().as_secs_f64()
            );
        }
    }
}

impl ZmqSink {
    fn deliver(
        &mut self,
        i: usize,
        bytes: Vec<u8>,
        meta: MessageMeta,
        resend: bool,
    ) -> Result<(), TransportError> {
        let deadline = self.deadline();
        let what = format!("message {} of writer {}", meta.seq, meta.writer_rank);
        let sent = loop {
            let ep = &mut self.endpoints[i];
            match send_until(
                &self.cfg,
                ep,
                &bytes,
                deadline,
                &what,
                &mut self.stats.rejected,
            )? {
                Sent::Disconnected if !resend => self.resend_after_disconnect(i)?,
                Sent::Disconnected => ep.closed_seen = ep.sock.closed(),
                s => break s == Sent::Yes,
            }
        };
        let ep = &mut self.endpoints[i];
        if sent {
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
                let name = format!(
                    "r{:04}_w{:04}_s{:09}.{}",
                    meta.run,
                    meta.writer_rank,
                    meta.seq,
                    extension(self.cfg.format)
                );
                write_atomic(dir, &name, &bytes)?;
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

    fn resend_after_disconnect(&mut self, i: usize) -> Result<(), TransportError> {
        let ep = &mut self.endpoints[i];
        let closed = ep.sock.closed();
        if closed == ep.closed_seen {
            return Ok(());
        }
        ep.closed_seen = closed;
        let window = std::mem::take(&mut ep.window);
        ep.window_bytes = 0;
        if !window.is_empty() {
            eprintln!(
                "lclstreamer: a consumer of {} disconnected; resending the last {} messages",
                ep.sock.url,
                window.len()
            );
        }
        for (meta, bytes) in window {
            self.deliver(i, bytes, meta, true)?;
        }
        Ok(())
    }
}

/// File extension of spilled messages of `format`.
pub fn extension(format: Format) -> &'static str {
    match format {
        Format::Hdf5 => "h5",
        Format::Stream2 | Format::Simplon => "cbor",
        Format::Msgpack => "msgpack",
    }
}

impl Sink for ZmqSink {
    fn stats(&self) -> SinkStats {
        self.stats
    }

    fn consumers(&mut self) -> Option<usize> {
        Some(self.connections().iter().map(|c| c.1).sum())
    }

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

    fn send_control(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        let deadline = self.deadline();
        for ep in &mut self.endpoints {
            if send_until(
                &self.cfg,
                ep,
                bytes,
                deadline,
                "the series start message",
                &mut self.stats.rejected,
            )? != Sent::Yes
            {
                eprintln!(
                    "lclstreamer: no consumer took the series start message on {}",
                    ep.sock.url
                );
            }
        }
        Ok(())
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
        for i in 0..self.endpoints.len() {
            let ep = &self.endpoints[i];
            let eos = EndOfStream {
                sender: self.sender.clone(),
                writer_rank: Some(self.writer_rank),
                run: self.run,
                url: ep.sock.url.clone(),
                batches: ep.batches,
                events: ep.events,
                bytes: ep.bytes,
                spilled: self.stats.spilled,
                spilled_events: self.stats.spilled_events,
                dropped: self.stats.dropped,
                dropped_events: self.stats.dropped_events,
                resent: self.stats.resent,
                rejected: self.stats.rejected,
                in_doubt: self.stats.in_doubt,
                refused: self.stats.refused,
            };
            let msg = end_message(self.cfg.format, self.cfg.simplon_prefix, &eos);
            let mut rejected = 0;
            let sent = loop {
                let ep = &mut self.endpoints[i];
                match send_until(
                    &self.cfg,
                    ep,
                    &msg,
                    deadline,
                    "the end-of-stream message",
                    &mut rejected,
                )? {
                    Sent::Disconnected => self.resend_after_disconnect(i)?,
                    s => break s == Sent::Yes,
                }
            };
            let ep = &mut self.endpoints[i];
            if !sent {
                undelivered.push(ep.sock.url.clone());
                continue;
            }
            // REP: every further request during the linger gets the end-of-stream message too.
            let end = Instant::now() + self.cfg.linger;
            if self.cfg.pattern == Pattern::Rep {
                while Instant::now() < end && ep.sock.connections() > 0 {
                    if send_until(&self.cfg, ep, &msg, Some(end), "", &mut rejected)?
                        == Sent::Disconnected
                    {
                        ep.closed_seen = ep.sock.closed();
                    }
                }
            }
            if !ep
                .sock
                .wait_zero(end.saturating_duration_since(Instant::now()))
            {
                eprintln!(
                    "lclstreamer: consumer on {} still connected {:.0} s after end-of-stream; closing",
                    ep.sock.url,
                    self.cfg.linger.as_secs_f64()
                );
            }
            self.stats.rejected += rejected;
        }
        self.endpoints.clear();
        if !undelivered.is_empty() {
            let why = format!(
                "{}: end-of-stream not delivered to {} within {:.0} s (no consumer)",
                self.sender,
                undelivered.join(", "),
                self.cfg.linger.as_secs_f64()
            );
            if self.cfg.policy == Policy::Block {
                return Err(TransportError::Incomplete(why));
            }
            // Under spill and drop an absent consumer is what the policy accepts: counted.
            eprintln!("lclstreamer: {why}");
            self.stats.eos_undelivered += undelivered.len() as u64;
        }
        Ok(self.stats)
    }
}
