//! The writer role: gathers its workers' records into batches, serialises each batch as one
//! HDF5 image and hands it to every sink; at the end flushes, closes the sinks (end-of-stream)
//! and reports its counts.

use super::feed::WriterFeed;
use super::layout::Layout;
use super::messages::{FrameMsg, Msg, RecordMsg, WriterStats};
use super::router::Mailbox;
use super::worker::CREDITS;
use crate::config::{Config, PolicyKind, SinkConfig};
use crate::output::{
    Batch, Compression, EventRecord, Layout as H5Layout, Peaks, RunMeta, Serializer, StoredFrames,
};
use crate::serialize::{Fanout, FormatOptions};
use crate::transport::{
    FileSink, MessageMeta, NngSink, NngSinkConfig, Policy, Role, ZmqSink, ZmqSinkConfig,
};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The transport policy of a sink entry (`spill` needs its `spill_dir`).
fn policy(
    kind: Option<PolicyKind>,
    spill_dir: &Option<PathBuf>,
    sink: &str,
) -> anyhow::Result<Policy> {
    Ok(match kind.unwrap_or_default() {
        PolicyKind::Block => Policy::Block,
        PolicyKind::Drop => Policy::Drop,
        PolicyKind::Spill => {
            Policy::Spill(spill_dir.clone().ok_or_else(|| {
                anyhow::anyhow!("output.sinks {sink}: policy spill needs spill_dir")
            })?)
        }
    })
}

fn seconds(key: &str, sink: &str, t: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(t)
        .map_err(|e| anyhow::anyhow!("output.sinks {sink} {key}: {t}: {e}"))
}

/// The NNG sink a `kind: nng` entry describes; every check a sink entry needs, so rank 0 can
/// run it before data moves.
pub fn nng_sink_config(s: &SinkConfig) -> anyhow::Result<NngSinkConfig> {
    let SinkConfig::Nng {
        urls,
        mode,
        policy: kind,
        spill_dir,
        send_timeout,
        distribute,
        block_timeout,
        max_message_bytes,
        linger,
    } = s
    else {
        anyhow::bail!("not an nng sink");
    };
    let mut c = NngSinkConfig::new(urls.clone());
    c.role = mode.unwrap_or_default();
    c.policy = policy(*kind, spill_dir, "nng")?;
    c.distribute = distribute.unwrap_or_default();
    if let Some(t) = send_timeout {
        c.send_timeout = seconds("send_timeout", "nng", *t)?;
    }
    if let Some(t) = linger {
        c.linger = seconds("linger", "nng", *t)?;
    }
    c.block_timeout = match block_timeout {
        Some(t) if *t == 0.0 => None,
        Some(t) => Some(seconds("block_timeout", "nng", *t)?),
        None => c.block_timeout,
    };
    c.max_message_bytes = *max_message_bytes;
    for u in urls {
        crate::transport::check_url(u, c.role == Role::Listen)
            .map_err(|e| anyhow::anyhow!("output.sinks nng url {e}"))?;
    }
    Ok(c)
}

/// The ZeroMQ sink and message format a `kind: zmq` sink entry describes.
pub fn zmq_sink_config(s: &SinkConfig) -> anyhow::Result<(ZmqSinkConfig, FormatOptions)> {
    let SinkConfig::Zmq {
        urls,
        pattern,
        mode,
        policy: kind,
        spill_dir,
        send_timeout,
        distribute,
        hwm,
        linger,
        format,
        simplon_prefix,
        photon_energy_ev,
    } = s
    else {
        anyhow::bail!("not a zmq sink");
    };
    let mut c = ZmqSinkConfig::new(urls.clone());
    c.pattern = pattern.unwrap_or_default();
    c.role = mode.unwrap_or_default();
    c.policy = policy(*kind, spill_dir, "zmq")?;
    c.distribute = distribute.unwrap_or_default();
    if let Some(t) = send_timeout {
        c.send_timeout = seconds("send_timeout", "zmq", *t)?;
    }
    if let Some(t) = linger {
        c.linger = seconds("linger", "zmq", *t)?;
    }
    if let Some(h) = hwm {
        if *h < 1 {
            anyhow::bail!("output.sinks zmq hwm {h}: at least 1");
        }
        c.hwm = *h;
    }
    let opts = FormatOptions {
        format: format.unwrap_or_default(),
        simplon_prefix: *simplon_prefix,
        photon_energy_ev: *photon_energy_ev,
    };
    c.format = opts.format;
    c.simplon_prefix = opts.simplon_prefix;
    for u in urls {
        crate::transport::check_url(u, c.role == Role::Listen)
            .map_err(|e| anyhow::anyhow!("output.sinks zmq url {e}"))?;
    }
    Ok((c, opts))
}

/// When a partial batch must go out: `after` the oldest pending record arrived (live runs),
/// or never.
#[derive(Debug, Clone, Copy)]
pub struct FlushDeadline {
    after: Option<Duration>,
    since: Option<Instant>,
}

impl FlushDeadline {
    pub fn new(after: Option<Duration>) -> Self {
        Self { after, since: None }
    }

    /// Tells how many records are pending now (starts the clock when the first arrives).
    pub fn pending(&mut self, n: usize) {
        if n == 0 {
            self.since = None;
        } else if self.since.is_none() {
            self.since = Some(Instant::now());
        }
    }

    /// How long to wait for the next message; `None`: without limit.
    pub fn wait(&self) -> Option<Duration> {
        let (after, since) = (self.after?, self.since?);
        Some(after.saturating_sub(since.elapsed()))
    }

    /// True when the pending records are due.
    pub fn due(&self) -> bool {
        self.wait().is_some_and(|w| w.is_zero())
    }
}

/// Builds the configured sinks for writer `rank` (its index among writers).
pub fn open_sinks(cfg: &Config, rank: u32) -> anyhow::Result<Fanout> {
    let mut out = Fanout::new(cfg.output.compression);
    for s in &cfg.output.sinks {
        match s {
            SinkConfig::Files { dir } => {
                out.push(
                    format!("files:{}", dir.display()),
                    FormatOptions::default(),
                    Box::new(FileSink::new(dir)?),
                );
            }
            SinkConfig::Nng { urls, .. } => {
                let c = nng_sink_config(s)?;
                out.push(
                    format!("nng:{}", urls.join(",")),
                    FormatOptions::default(),
                    Box::new(NngSink::new(c, rank)?),
                );
            }
            SinkConfig::Zmq { urls, .. } => {
                let (c, opts) = zmq_sink_config(s)?;
                let name = format!("zmq-{:?}-{:?}:{}", c.pattern, opts.format, urls.join(","))
                    .to_lowercase();
                out.push(name, opts, Box::new(ZmqSink::new(c, rank)?));
            }
        }
    }
    Ok(out)
}

/// The record's event without its frame, the frame (its stored chunk), and when the event was
/// found.
fn to_record(r: RecordMsg) -> (EventRecord, Option<FrameMsg>, u64) {
    let [fs, ss, total_intensity, max_value, npix, snr, sigma] = r.peaks;
    let event = EventRecord {
        timestamp: r.timestamp,
        event_index: r.index,
        frame: None,
        peaks: Peaks {
            fs,
            ss,
            total_intensity,
            max_value,
            npix,
            snr,
            sigma,
        },
        fields: r.fields,
    };
    (event, r.frame, r.seen_ns)
}

/// The frames of a batch as stored chunks; `None` when its events carry none.
fn stored_frames(frames: &[Option<FrameMsg>]) -> anyhow::Result<Option<StoredFrames<'_>>> {
    let Some(Some(first)) = frames.first() else {
        if frames.iter().any(Option::is_some) {
            anyhow::bail!("a batch mixes events with and without frames");
        }
        return Ok(None);
    };
    let mut chunks = Vec::with_capacity(frames.len());
    for f in frames {
        match f {
            Some(f) if (f.pixel, &f.dims, f.image) == (first.pixel, &first.dims, first.image) => {
                chunks.push(&f.chunk[..])
            }
            other => anyhow::bail!(
                "a batch mixes frames: {:?} {:?} and {:?}",
                first.pixel,
                first.dims,
                other.as_ref().map(|f| (f.pixel, &f.dims))
            ),
        }
    }
    Ok(Some(StoredFrames {
        pixel: first.pixel,
        dims: first.dims.iter().map(|&d| d as usize).collect(),
        image: first.image,
        chunks,
    }))
}

/// A record waiting for its batch: the event, its frame, when the coordinator saw it (ns).
type Pending = (EventRecord, Option<FrameMsg>, u64);

/// The writer's batches in flight to its sinks: serialises, caps message size, sends.
struct Outbox {
    sinks: Fanout,
    ser: Serializer,
    meta: RunMeta,
    index: u32,
    h5layout: H5Layout,
    compression: Compression,
    /// Batches whose image is larger are split (down to single events).
    max_bytes: Option<usize>,
    seq: u64,
}

impl Outbox {
    /// Serialises `records` as one batch (split in halves while larger than `max_bytes`) and
    /// hands each image to every sink.
    fn flush(&mut self, records: Vec<Pending>, stats: &mut WriterStats) -> anyhow::Result<()> {
        let n = records.len() as u64;
        let t0 = Instant::now();
        let mut seen = Vec::with_capacity(records.len());
        let (events, frames): (Vec<_>, Vec<_>) = records
            .into_iter()
            .map(|(e, f, s)| {
                seen.push(s);
                (e, f)
            })
            .unzip();
        let batch = Batch {
            meta: self.meta.clone(),
            writer_rank: self.index,
            seq: self.seq,
            events,
        };
        let stored = stored_frames(&frames)?;
        let bytes = if !self.sinks.needs_hdf5() {
            None
        } else if let Some(f) = &stored {
            Some(
                self.ser
                    .serialize_stored(&batch, f, self.h5layout, self.compression)?,
            )
        } else {
            Some(
                self.ser
                    .serialize(&batch, self.h5layout, self.compression)?,
            )
        };
        let size = bytes.as_ref().map_or(0, Vec::len);
        if n > 1 && self.max_bytes.is_some_and(|m| size > m) {
            drop(stored);
            let mut records: Vec<Pending> = batch
                .events
                .into_iter()
                .zip(frames)
                .zip(seen)
                .map(|((e, f), s)| (e, f, s))
                .collect();
            let second = records.split_off(records.len() / 2);
            stats.ns_serialize += t0.elapsed().as_nanos() as u64;
            self.flush(records, stats)?;
            return self.flush(second, stats);
        }
        let encoded = self.sinks.encode(&batch, stored.as_ref())?;
        stats.ns_serialize += t0.elapsed().as_nanos() as u64;
        let t1 = Instant::now();
        let m = MessageMeta {
            run: self.meta.run,
            writer_rank: self.index,
            seq: self.seq,
            events: n,
        };
        self.seq += 1;
        self.sinks.send(bytes, encoded, &m)?;
        stats.ns_send += t1.elapsed().as_nanos() as u64;
        stats.batches += 1;
        stats.events += n;
        stats.latency.sent(seen, super::latency::now_ns());
        Ok(())
    }

    /// Closes every sink (end-of-stream) and records its counts.
    fn finish(&mut self, stats: &mut WriterStats) {
        for (name, r) in self.sinks.finish() {
            match r {
                Ok(st) => {
                    if st.eos_undelivered > 0 {
                        stats.warnings.push(format!(
                            "writer {}: sink {name}: end-of-stream not delivered (no consumer at the end)",
                            self.index
                        ));
                    }
                    stats.sinks.push((name, st));
                }
                Err(e) => stats
                    .errors
                    .push(format!("writer {}: sink {name}: {e:#}", self.index)),
            }
        }
    }
}

/// Runs one writer until all its workers are done; reports to the monitor through `feed`. A
/// delivery failure is reported (the job exits non-zero) rather than aborting: the writer asks
/// the coordinator to stop, keeps taking its workers' records so nobody waits for ever, and
/// counts them as undelivered.
pub fn run(
    mb: Mailbox,
    layout: &Layout,
    cfg: &Config,
    meta: RunMeta,
    mut feed: Option<WriterFeed>,
) -> anyhow::Result<()> {
    let me = mb.id;
    let index = me - 1 - layout.workers;
    let workers = layout.workers_of(index);
    let mut out = Outbox {
        sinks: {
            let mut f = open_sinks(cfg, index)?;
            f.set_owner(format!("writer {index}"));
            f
        },
        ser: Serializer::default(),
        meta,
        index,
        h5layout: cfg.output.layout,
        compression: cfg.output.compression,
        max_bytes: max_message_bytes(cfg),
        seq: 0,
    };
    for &w in &workers {
        mb.send(w, Msg::Credit { n: CREDITS })?;
    }
    let mut stats = WriterStats::default();
    let mut pending: Vec<Pending> = Vec::new();
    let mut failed = false;
    let mut deliver =
        |records: Vec<Pending>, stats: &mut WriterStats, out: &mut Outbox| -> anyhow::Result<()> {
            if failed {
                stats.undelivered += records.len() as u64;
                return Ok(());
            }
            let n = records.len() as u64;
            if let Err(e) = out.flush(records, stats) {
                let reason = format!("writer {index}: {e:#}");
                eprintln!("lclstreamer: {reason}; stopping the run");
                stats.errors.push(reason.clone());
                stats.undelivered += n;
                failed = true;
                mb.send(Layout::COORDINATOR, Msg::Stop { reason })?;
            }
            Ok(())
        };
    let mut done = 0;
    let mut deadline = FlushDeadline::new(
        cfg.source
            .live
            .then(|| Duration::from_secs_f64(cfg.source.live_flush)),
    );
    while done < workers.len() {
        let wait = match (deadline.wait(), &feed) {
            (Some(w), Some(f)) => Some(w.min(f.wait())),
            (w, f) => w.or(f.as_ref().map(WriterFeed::wait)),
        };
        let msg = match wait {
            Some(w) => mb.recv_timeout(w)?,
            None => Some(mb.recv()?),
        };
        match msg {
            None => {}
            Some(Msg::Records { worker, records }) => {
                super::summary::count_missing(&mut stats.missing, &records);
                pending.extend(records.into_iter().map(to_record));
                mb.send(worker, Msg::Credit { n: 1 })?;
                while pending.len() >= cfg.output.batch_size {
                    let rest = pending.split_off(cfg.output.batch_size);
                    deliver(std::mem::replace(&mut pending, rest), &mut stats, &mut out)?;
                }
            }
            Some(Msg::WorkerDone { .. }) => done += 1,
            Some(other) => anyhow::bail!("writer {me}: unexpected message {other:?}"),
        }
        if deadline.due() && !pending.is_empty() {
            deliver(std::mem::take(&mut pending), &mut stats, &mut out)?;
        }
        deadline.pending(pending.len());
        if let Some(t) = feed
            .as_mut()
            .and_then(|f| f.tick(me, &stats, || out.sinks.now()))
        {
            mb.send(Layout::COORDINATOR, t)?;
        }
    }
    if !pending.is_empty() {
        deliver(std::mem::take(&mut pending), &mut stats, &mut out)?;
    }
    out.finish(&mut stats);
    mb.send(Layout::COORDINATOR, Msg::WriterDone { writer: me, stats })?;
    Ok(())
}

/// The smallest `max_message_bytes` of the configured sinks.
fn max_message_bytes(cfg: &Config) -> Option<usize> {
    cfg.output
        .sinks
        .iter()
        .filter_map(|s| match s {
            SinkConfig::Nng {
                max_message_bytes, ..
            } => *max_message_bytes,
            SinkConfig::Zmq { .. } | SinkConfig::Files { .. } => None,
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::FlushDeadline;
    use std::time::Duration;

    #[test]
    fn flush_deadline_runs_from_the_oldest_pending_record() {
        let mut never = FlushDeadline::new(None);
        never.pending(3);
        assert_eq!((never.wait(), never.due()), (None, false));
        let mut d = FlushDeadline::new(Some(Duration::from_millis(30)));
        assert_eq!(d.wait(), None);
        d.pending(1);
        let first = d.wait().unwrap();
        assert!(first <= Duration::from_millis(30) && !d.due());
        std::thread::sleep(Duration::from_millis(15));
        d.pending(2);
        assert!(d.wait().unwrap() <= Duration::from_millis(15));
        std::thread::sleep(Duration::from_millis(20));
        assert!(d.due());
        d.pending(0);
        assert_eq!((d.wait(), d.due()), (None, false));
    }
}
