//! The consumer (`lclstreamer pull`): an NNG Pull0 socket or a ZeroMQ PULL, SUB or REQ socket
//! that receives messages of any format (`serialize::identify`) until every expected
//! producer's end-of-stream has arrived (or nothing arrived for `idle_timeout`), checks the
//! announced counts and hands each data message to a callback.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::eos::EndOfStream;
use super::file_sink::write_atomic;
use super::nng_sink::Role;
use super::nng_socket::{NngMsg, NngSocket};
use super::zmq_socket::ZmqSocket;
use super::{MessageMeta, TransportError};
use crate::serialize::{Format, Kind, identify};

/// Which socket `pull` receives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullSocket {
    /// NNG Pull0 (the NNG sink's consumer).
    #[default]
    Nng,
    /// ZeroMQ PULL (a PUSH sink's consumer).
    ZmqPull,
    /// ZeroMQ SUB, subscribed to everything (a PUB sink's consumer).
    ZmqSub,
    /// ZeroMQ REQ sending `next` (a REP sink's consumer, as CrystFEL is).
    ZmqReq,
}

impl std::str::FromStr for PullSocket {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nng" => Ok(PullSocket::Nng),
            "zmq" | "zmq-pull" => Ok(PullSocket::ZmqPull),
            "zmq-sub" => Ok(PullSocket::ZmqSub),
            "zmq-req" => Ok(PullSocket::ZmqReq),
            _ => Err(format!(
                "unknown socket {s:?} (nng, zmq-pull, zmq-sub, zmq-req)"
            )),
        }
    }
}

/// Identity of a received data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: Format,
    pub writer_rank: u32,
    pub seq: u64,
    pub n_events: u64,
    pub run: u32,
}

enum Received {
    Nng(NngMsg),
    Zmq(zmq::Message),
}

impl std::ops::Deref for Received {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Received::Nng(m) => m,
            Received::Zmq(m) => m,
        }
    }
}

/// A REQ consumer's pending request, retried in the lazy-pirate way: a request without a
/// reply after `wait` is given up with its socket, and a fresh socket asks again (a request
/// lost before a connection existed, or with one that died, is never answered otherwise).
/// `wait` doubles after each retry up to [`REQ_RETRY_MAX`] (a slow producer is not asked
/// ever more often) and returns to `PullConfig::req_retry` with the next reply.
struct Req {
    asked: Option<Instant>,
    wait: Duration,
    retries: u64,
}

/// Longest wait of a REQ consumer before it asks again.
pub const REQ_RETRY_MAX: Duration = Duration::from_secs(30);

enum Rx {
    Nng(NngSocket),
    Zmq {
        sock: ZmqSocket,
        ctx: zmq::Context,
        kind: zmq::SocketType,
        req: Option<Req>,
        /// Connections closed on REQ sockets given up.
        closed_before: u64,
    },
}

fn open_zmq(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    cfg: &PullConfig,
) -> Result<ZmqSocket, TransportError> {
    ZmqSocket::open(ctx, kind, &cfg.url, cfg.role, |s| {
        s.set_rcvhwm(2)?;
        s.set_maxmsgsize(cfg.recv_max_size.min(i64::MAX as usize) as i64)?;
        s.set_rcvtimeo(200)?;
        s.set_linger(0)?;
        s.set_reconnect_ivl(100)?;
        s.set_reconnect_ivl_max(1000)?;
        if kind == zmq::SUB {
            s.set_subscribe(b"")?;
        }
        Ok(())
    })
    .map_err(TransportError::Zmq)
}

impl Rx {
    fn open(cfg: &PullConfig) -> Result<Rx, TransportError> {
        let kind = match cfg.socket {
            PullSocket::Nng => {
                let err = |what| {
                    move |source| TransportError::Nng {
                        what,
                        url: cfg.url.clone(),
                        source,
                    }
                };
                let socket = NngSocket::pull().map_err(err("socket for"))?;
                socket
                    .set_recv_max_size(cfg.recv_max_size)
                    .map_err(err("receive limit on"))?;
                socket
                    .set_recv_timeout(Some(Duration::from_millis(200)))
                    .map_err(err("receive timeout on"))?;
                match cfg.role {
                    Role::Listen => socket.listen(&cfg.url).map_err(err("listen on"))?,
                    Role::Dial => socket.dial(&cfg.url).map_err(err("dial"))?,
                }
                return Ok(Rx::Nng(socket));
            }
            PullSocket::ZmqPull => zmq::PULL,
            PullSocket::ZmqSub => zmq::SUB,
            PullSocket::ZmqReq => zmq::REQ,
        };
        let ctx = zmq::Context::new();
        let sock = open_zmq(&ctx, kind, cfg)?;
        Ok(Rx::Zmq {
            sock,
            ctx,
            kind,
            req: (kind == zmq::REQ).then_some(Req {
                asked: None,
                wait: cfg.req_retry,
                retries: 0,
            }),
            closed_before: 0,
        })
    }

    /// The next message, or `None` after a 200 ms timeout.
    fn recv(&mut self, cfg: &PullConfig) -> Result<Option<Received>, TransportError> {
        let url = &cfg.url;
        match self {
            Rx::Nng(s) => match s.recv() {
                Ok(m) => Ok(Some(Received::Nng(m))),
                Err(e) if e.is_timeout() => Ok(None),
                Err(source) => Err(TransportError::Nng {
                    what: "receive from",
                    url: url.to_owned(),
                    source,
                }),
            },
            Rx::Zmq {
                sock,
                ctx,
                kind,
                req,
                closed_before,
            } => {
                if let Some(r) = req {
                    match r.asked {
                        None => match sock.socket.send(&b"next"[..], zmq::DONTWAIT) {
                            Ok(()) => r.asked = Some(Instant::now()),
                            Err(zmq::Error::EAGAIN) => {
                                std::thread::sleep(Duration::from_millis(200));
                                return Ok(None);
                            }
                            Err(e) => {
                                return Err(TransportError::Zmq(format!(
                                    "ZeroMQ request to {url}: {e}"
                                )));
                            }
                        },
                        Some(at) if at.elapsed() >= r.wait => {
                            r.retries += 1;
                            eprintln!(
                                "pull: no reply from {url} {:.1} s after asking; asking again on a new socket",
                                r.wait.as_secs_f64()
                            );
                            *closed_before += sock.closed();
                            *sock = open_zmq(ctx, *kind, cfg)?;
                            r.asked = None;
                            r.wait = (r.wait * 2).min(REQ_RETRY_MAX.max(cfg.req_retry));
                            return Ok(None);
                        }
                        Some(_) => {}
                    }
                }
                match sock.socket.recv_msg(0) {
                    Ok(m) => {
                        if let Some(r) = req {
                            r.asked = None;
                            r.wait = cfg.req_retry;
                        }
                        Ok(Some(Received::Zmq(m)))
                    }
                    Err(zmq::Error::EAGAIN) => Ok(None),
                    Err(e) => Err(TransportError::Zmq(format!(
                        "ZeroMQ receive from {url}: {e}"
                    ))),
                }
            }
        }
    }

    /// Requests given up and asked again (REQ).
    fn retries(&self) -> u64 {
        match self {
            Rx::Zmq { req: Some(r), .. } => r.retries,
            _ => 0,
        }
    }

    fn closed(&mut self) -> u64 {
        match self {
            Rx::Nng(s) => s.pipes().removed(),
            Rx::Zmq {
                sock,
                closed_before,
                ..
            } => *closed_before + sock.closed(),
        }
    }
}

/// Configuration of [`pull`].
#[derive(Debug, Clone)]
pub struct PullConfig {
    pub url: String,
    /// NNG (default) or a ZeroMQ socket.
    pub socket: PullSocket,
    /// Default `Listen`: producers dial in.
    pub role: Role,
    /// Number of end-of-stream messages to wait for (one per producer and URL).
    pub producers: usize,
    /// Give up when nothing arrives for this long.
    pub idle_timeout: Duration,
    /// Largest message accepted; NNG and ZeroMQ drop the connection on larger ones.
    pub recv_max_size: usize,
    /// Write each data message as `r<run>_w<rank>_s<seq>.<h5|cbor|msgpack>` here (atomically);
    /// `None` discards.
    pub out_dir: Option<PathBuf>,
    /// ZeroMQ REQ: ask again on a new socket after this long without a reply (doubling up to
    /// [`REQ_RETRY_MAX`] while none comes).
    pub req_retry: Duration,
}

impl PullConfig {
    /// Listen on `url` for one producer, 60 s idle timeout, 1 GiB receive limit, discard.
    pub fn new(url: impl Into<String>) -> Self {
        PullConfig {
            url: url.into(),
            socket: PullSocket::Nng,
            role: Role::Listen,
            producers: 1,
            idle_timeout: Duration::from_secs(60),
            recv_max_size: 1 << 30,
            out_dir: None,
            req_retry: Duration::from_secs(2),
        }
    }
}

/// What a pull received.
#[derive(Debug, Clone, Default)]
pub struct PullSummary {
    pub batches: u64,
    pub events: u64,
    pub bytes: u64,
    pub eos: Vec<EndOfStream>,
    /// `(writer_rank, seq)` pairs received again (resent after a reconnect) and ignored.
    pub duplicates: Vec<(u32, u64)>,
    /// Batches found in `out_dir` at the start, written by an earlier pull of the same stream.
    pub resumed: u64,
    /// ZeroMQ REQ: requests without a reply asked again on a new socket.
    pub req_retries: u64,
    pub elapsed: Duration,
    /// True when all expected end-of-stream messages arrived and the counts match.
    pub complete: bool,
    /// Why the stream is not complete (empty when complete).
    pub problems: Vec<String>,
}

impl PullSummary {
    /// Human-readable summary (several lines).
    pub fn report(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let mut s = format!(
            "pull: {} batches, {} events, {:.1} MB in {:.2} s ({:.1} MB/s, {:.1} events/s)\n",
            self.batches,
            self.events,
            self.bytes as f64 / 1e6,
            secs,
            self.bytes as f64 / 1e6 / secs,
            self.events as f64 / secs
        );
        for e in &self.eos {
            s += &format!(
                "  end-of-stream from {} ({}): {} batches, {} events sent; spilled {} ({} events), dropped {} ({} events), refused {}, in doubt {}\n",
                e.sender,
                e.url,
                e.batches,
                e.events,
                e.spilled,
                e.spilled_events,
                e.dropped,
                e.dropped_events,
                e.refused,
                e.in_doubt
            );
        }
        if !self.duplicates.is_empty() {
            s += &format!(
                "  {} duplicate batches (resent after a reconnect) ignored\n",
                self.duplicates.len()
            );
        }
        if self.req_retries > 0 {
            s += &format!(
                "  {} requests without a reply asked again on a new socket\n",
                self.req_retries
            );
        }
        if self.complete {
            s += "  complete: every announced batch and event was received\n";
        }
        for p in &self.problems {
            s += &format!("  INCOMPLETE: {p}\n");
        }
        s
    }
}

/// Counts the batches an earlier `pull` into `dir` already wrote (a restarted consumer), so
/// their copies resent by the producers are duplicates and the totals cover the whole stream.
fn resume(
    dir: &std::path::Path,
    seen: &mut BTreeSet<(u32, u64)>,
    sum: &mut PullSummary,
) -> Result<(), TransportError> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| TransportError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            name.is_some_and(|n| n.starts_with('r') && n.contains("_w") && !n.ends_with(".tmp"))
        })
        .collect();
    paths.sort();
    for p in paths {
        let bytes = std::fs::read(&p).map_err(|e| TransportError::io(&p, e))?;
        if let Ok(Kind::Data {
            writer_rank,
            seq,
            events,
            ..
        }) = identify(&bytes)
            && seen.insert((writer_rank, seq))
        {
            sum.batches += 1;
            sum.events += events;
            sum.bytes += bytes.len() as u64;
            sum.resumed += 1;
        }
    }
    if sum.resumed > 0 {
        eprintln!(
            "pull: {} batches already in {} (an earlier pull); their copies are duplicates",
            sum.resumed,
            dir.display()
        );
    }
    Ok(())
}

/// Receives until `cfg.producers` end-of-stream messages or the idle timeout, calling
/// `on_batch(bytes, info)` once for every distinct `(writer_rank, seq)` data message.
pub fn pull(
    cfg: &PullConfig,
    mut on_batch: impl FnMut(&[u8], &ImageInfo) -> Result<(), TransportError>,
) -> Result<PullSummary, TransportError> {
    let mut rx = Rx::open(cfg)?;
    if let Some(dir) = &cfg.out_dir {
        std::fs::create_dir_all(dir).map_err(|e| TransportError::io(dir, e))?;
    }
    let mut sum = PullSummary::default();
    let mut seen = BTreeSet::new();
    if let Some(dir) = &cfg.out_dir {
        resume(dir, &mut seen, &mut sum)?;
    }
    let mut start = None;
    let mut last = Instant::now();
    while sum.eos.len() < cfg.producers {
        let Some(msg) = rx.recv(cfg)? else {
            if last.elapsed() >= cfg.idle_timeout {
                sum.problems.push(format!(
                    "nothing received for {:.0} s; {} of {} end-of-stream messages arrived",
                    cfg.idle_timeout.as_secs_f64(),
                    sum.eos.len(),
                    cfg.producers
                ));
                break;
            }
            continue;
        };
        last = Instant::now();
        start.get_or_insert(last);
        let info = match identify(&msg) {
            Ok(Kind::Start) => continue,
            Ok(Kind::End(eos)) => {
                // A REP sink answers every request after its end with the end again.
                if !sum
                    .eos
                    .iter()
                    .any(|e| e.sender == eos.sender && e.url == eos.url)
                {
                    sum.eos.push(eos);
                }
                continue;
            }
            Ok(Kind::Data {
                format,
                writer_rank,
                seq,
                events,
                run,
            }) => ImageInfo {
                format,
                writer_rank,
                seq,
                n_events: events,
                run,
            },
            Err(e) => {
                let p = format!(
                    "message of {} bytes is not a batch image or event message ({e}); ignored",
                    msg.len()
                );
                eprintln!("pull: {p}");
                sum.problems.push(p);
                continue;
            }
        };
        if !seen.insert((info.writer_rank, info.seq)) {
            sum.duplicates.push((info.writer_rank, info.seq));
            continue;
        }
        sum.batches += 1;
        sum.events += info.n_events;
        sum.bytes += msg.len() as u64;
        if let Some(dir) = &cfg.out_dir {
            let meta = MessageMeta {
                run: info.run,
                writer_rank: info.writer_rank,
                seq: info.seq,
                events: info.n_events,
            };
            let name = match info.format {
                Format::Hdf5 => super::file_sink::batch_file_name(&meta),
                f => format!(
                    "r{:04}_w{:04}_s{:09}.{}",
                    meta.run,
                    meta.writer_rank,
                    meta.seq,
                    super::zmq_sink::extension(f)
                ),
            };
            write_atomic(dir, &name, &msg)?;
        }
        on_batch(&msg, &info)?;
    }
    sum.elapsed = start.map(|s| s.elapsed()).unwrap_or_default();
    let (b, e) = sum
        .eos
        .iter()
        .fold((0, 0), |(b, e), x| (b + x.batches, e + x.events));
    let in_doubt: u64 = sum.eos.iter().map(|x| x.in_doubt).sum();
    let counts_match = if in_doubt == 0 {
        (b, e) == (sum.batches, sum.events)
    } else {
        // Batches in doubt may or may not have reached this consumer before a reconnect.
        (b..=b + in_doubt).contains(&sum.batches) && sum.events >= e
    };
    if sum.eos.len() == cfg.producers && !counts_match {
        sum.problems.push(format!(
            "producers announced {b} batches / {e} events (and {in_doubt} batches in doubt), received {} / {}",
            sum.batches, sum.events
        ));
    }
    let dropped = rx.closed();
    if !sum.problems.is_empty() && dropped > 0 {
        sum.problems.push(format!(
            "{dropped} connections closed before the end (NNG and ZeroMQ close a connection, losing its message, when a \
             message exceeds the {} byte receive limit, or when a producer dies)",
            cfg.recv_max_size
        ));
    }
    for e in &sum.eos {
        if e.spilled > 0 {
            eprintln!(
                "pull: {} spilled {} batches to its spill directory; resend them with `lclstreamer push DIR {}`",
                e.sender, e.spilled, cfg.url
            );
        }
    }
    sum.req_retries = rx.retries();
    sum.complete = sum.problems.is_empty();
    drop(rx);
    Ok(sum)
}
