//! The consumer (`lclstreamer pull`): a Pull0 socket that receives batch images until every
//! expected producer's end-of-stream has arrived (or nothing arrived for `idle_timeout`),
//! checks the announced counts and hands each message to a callback.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::eos::EndOfStream;
use super::file_sink::write_atomic;
use super::nng_sink::Role;
use super::nng_socket::NngSocket;
use super::{MessageMeta, TransportError};
use crate::output::read::{ImageInfo, image_info};

/// Configuration of [`pull`].
#[derive(Debug, Clone)]
pub struct PullConfig {
    pub url: String,
    /// Default `Listen`: producers dial in.
    pub role: Role,
    /// Number of end-of-stream messages to wait for (one per producer and URL).
    pub producers: usize,
    /// Give up when nothing arrives for this long.
    pub idle_timeout: Duration,
    /// Largest message accepted; NNG drops the connection on larger ones.
    pub recv_max_size: usize,
    /// Write each batch as `r<run>_w<rank>_s<seq>.h5` here (atomically); `None` discards.
    pub out_dir: Option<PathBuf>,
}

impl PullConfig {
    /// Listen on `url` for one producer, 60 s idle timeout, 1 GiB receive limit, discard.
    pub fn new(url: impl Into<String>) -> Self {
        PullConfig {
            url: url.into(),
            role: Role::Listen,
            producers: 1,
            idle_timeout: Duration::from_secs(60),
            recv_max_size: 1 << 30,
            out_dir: None,
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
                "  end-of-stream from {} ({}): {} batches, {} events sent; spilled {} ({} events), dropped {} ({} events)\n",
                e.sender,
                e.url,
                e.batches,
                e.events,
                e.spilled,
                e.spilled_events,
                e.dropped,
                e.dropped_events
            );
        }
        if !self.duplicates.is_empty() {
            s += &format!(
                "  {} duplicate batches (resent after a reconnect) ignored\n",
                self.duplicates.len()
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

/// Receives until `cfg.producers` end-of-stream messages or the idle timeout, calling
/// `on_batch(bytes, info)` once for every distinct `(writer_rank, seq)` data message.
pub fn pull(
    cfg: &PullConfig,
    mut on_batch: impl FnMut(&[u8], &ImageInfo) -> Result<(), TransportError>,
) -> Result<PullSummary, TransportError> {
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
    if let Some(dir) = &cfg.out_dir {
        std::fs::create_dir_all(dir).map_err(|e| TransportError::io(dir, e))?;
    }
    let mut sum = PullSummary::default();
    let mut seen = BTreeSet::new();
    let mut start = None;
    let mut last = Instant::now();
    while sum.eos.len() < cfg.producers {
        let msg = match socket.recv() {
            Ok(m) => m,
            Err(e) if e.is_timeout() => {
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
            }
            Err(source) => {
                return Err(TransportError::Nng {
                    what: "receive from",
                    url: cfg.url.clone(),
                    source,
                });
            }
        };
        last = Instant::now();
        start.get_or_insert(last);
        if let Some(eos) = EndOfStream::parse(&msg) {
            sum.eos.push(eos.map_err(TransportError::Incomplete)?);
            continue;
        }
        let info = match image_info(&msg) {
            Ok(info) => info,
            Err(e) => {
                let p = format!(
                    "message of {} bytes is not a batch image ({e}); ignored",
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
            write_atomic(dir, &super::file_sink::batch_file_name(&meta), &msg)?;
        }
        on_batch(&msg, &info)?;
    }
    sum.elapsed = start.map(|s| s.elapsed()).unwrap_or_default();
    let (b, e) = sum
        .eos
        .iter()
        .fold((0, 0), |(b, e), x| (b + x.batches, e + x.events));
    if sum.eos.len() == cfg.producers && (b, e) != (sum.batches, sum.events) {
        sum.problems.push(format!(
            "producers announced {b} batches / {e} events, received {} / {}",
            sum.batches, sum.events
        ));
    }
    let dropped = socket.pipes().removed();
    if !sum.problems.is_empty() && dropped > 0 {
        sum.problems.push(format!(
            "{dropped} connections closed before the end (NNG closes a connection, losing its message, when a \
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
    sum.complete = sum.problems.is_empty();
    drop(socket);
    Ok(sum)
}
