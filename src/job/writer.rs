//! The writer role: gathers its workers' records into batches, serialises each batch as one
//! HDF5 image and hands it to every sink; at the end flushes, closes the sinks (end-of-stream)
//! and reports its counts.

use super::feed::WriterFeed;
use super::layout::Layout;
use super::messages::{FrameMsg, Msg, RecordMsg, WriterStats};
use super::router::Mailbox;
use super::worker::CREDITS;
use crate::config::{Config, SinkConfig};
use crate::output::{
    Batch, Compression, EventRecord, Layout as H5Layout, Peaks, RunMeta, Serializer, StoredFrames,
};
use crate::transport::{
    Distribute, FileSink, MessageMeta, NngSink, NngSinkConfig, Policy, Role, Sink,
};
use std::time::{Duration, Instant};

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
pub fn open_sinks(cfg: &Config, rank: u32) -> anyhow::Result<Vec<(String, Box<dyn Sink>)>> {
    let mut out: Vec<(String, Box<dyn Sink>)> = Vec::new();
    for s in &cfg.output.sinks {
        match s {
            SinkConfig::Files { dir } => {
                out.push((
                    format!("files:{}", dir.display()),
                    Box::new(FileSink::new(dir)?),
                ));
            }
            SinkConfig::Nng {
                urls,
                mode,
                policy,
                spill_dir,
                send_timeout,
                distribute,
                block_timeout,
                max_message_bytes,
                linger,
            } => {
                let mut c = NngSinkConfig::new(urls.clone());
                if let Some(l) = linger {
                    c.linger = Duration::from_secs_f64(*l);
                }
                c.block_timeout = match block_timeout {
                    Some(t) if *t > 0.0 => Some(Duration::from_secs_f64(*t)),
                    Some(_) => None,
                    None => c.block_timeout,
                };
                c.max_message_bytes = *max_message_bytes;
                if let Some(m) = mode {
                    c.role = m
                        .parse::<Role>()
                        .map_err(|e| anyhow::anyhow!("output.sinks nng mode: {e}"))?;
                }
                c.policy = match policy.as_deref().unwrap_or("block") {
                    "block" => Policy::Block,
                    "drop" => Policy::Drop,
                    "spill" => Policy::Spill(spill_dir.clone().ok_or_else(|| {
                        anyhow::anyhow!("output.sinks nng: policy spill needs spill_dir")
                    })?),
                    other => {
                        anyhow::bail!("output.sinks nng policy {other:?}: block, spill or drop")
                    }
                };
                if let Some(t) = send_timeout {
                    c.send_timeout = Duration::from_secs_f64(*t);
                }
                c.distribute = match distribute.as_deref().unwrap_or("by_rank") {
                    "by_rank" => Distribute::ByRank,
                    "round_robin" => Distribute::RoundRobin,
                    other => anyhow::bail!(
                        "output.sinks nng distribute {other:?}: by_rank or round_robin"
                    ),
                };
                out.push((
                    format!("nng:{}", urls.join(",")),
                    Box::new(NngSink::new(c, rank)?),
                ));
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
    sinks: Vec<(String, Box<dyn Sink>)>,
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
        let mut bytes = match stored_frames(&frames)? {
            Some(f) => self
                .ser
                .serialize_stored(&batch, &f, self.h5layout, self.compression)?,
            None => self
                .ser
                .serialize(&batch, self.h5layout, self.compression)?,
        };
        stats.ns_serialize += t0.elapsed().as_nanos() as u64;
        if n > 1 && self.max_bytes.is_some_and(|m| bytes.len() > m) {
            let mut records: Vec<Pending> = batch
                .events
                .into_iter()
                .zip(frames)
                .zip(seen)
                .map(|((e, f), s)| (e, f, s))
                .collect();
            let second = records.split_off(records.len() / 2);
            self.flush(records, stats)?;
            return self.flush(second, stats);
        }
        let t1 = Instant::now();
        let m = MessageMeta {
            run: self.meta.run,
            writer_rank: self.index,
            seq: self.seq,
            events: n,
        };
        self.seq += 1;
        // The last sink takes the image itself; only the others get copies.
        let k = self.sinks.len();
        for i in 0..k {
            let (name, sink) = &mut self.sinks[i];
            if i + 1 < k {
                sink.send(bytes.clone(), &m)?;
            } else {
                sink.send(std::mem::take(&mut bytes), &m)?;
            }
            crate::interrupt::note_progress(
                &format!("writer {} sink {name}", self.index),
                format!("took {} batches (up to seq {})", m.seq + 1, m.seq),
            );
        }
        stats.ns_send += t1.elapsed().as_nanos() as u64;
        stats.batches += 1;
        stats.events += n;
        stats.latency.sent(seen, super::latency::now_ns());
        Ok(())
    }

    fn sink_names(&self) -> Vec<String> {
        self.sinks.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Closes every sink (end-of-stream) and records its counts.
    fn finish(&mut self, stats: &mut WriterStats) {
        for (name, s) in self.sinks.iter_mut() {
            match s.finish() {
                Ok(st) => {
                    if st.eos_undelivered > 0 {
                        stats.warnings.push(format!(
                            "writer {}: sink {name}: end-of-stream not delivered (no consumer at the end)",
                            self.index
                        ));
                    }
                    stats.sinks.push((name.clone(), st));
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
    let h5layout: H5Layout = cfg
        .output
        .layout
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let compression: Compression = cfg
        .output
        .compression
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let mut out = Outbox {
        sinks: open_sinks(cfg, index)?,
        ser: Serializer::default(),
        meta,
        index,
        h5layout,
        compression,
        max_bytes: max_message_bytes(cfg),
        seq: 0,
    };
    for &w in &workers {
        mb.send(w, Msg::Credit { n: CREDITS })?;
    }
    let mut stats = WriterStats::default();
    let mut pending: Vec<Pending> = Vec::new();
    let sink_names = out.sink_names();
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
        if let Some(t) = feed.as_mut().and_then(|f| f.tick(me, &stats, &sink_names)) {
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
            SinkConfig::Files { .. } => None,
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
