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
            } => {
                let mut c = NngSinkConfig::new(urls.clone());
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

/// Runs one writer until all its workers are done; reports to the monitor through `feed`.
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
    let mut sinks = open_sinks(cfg, index)?;
    for &w in &workers {
        mb.send(w, Msg::Credit { n: CREDITS })?;
    }
    let mut ser = Serializer::default();
    let mut stats = WriterStats::default();
    let mut pending: Vec<(EventRecord, Option<FrameMsg>, u64)> = Vec::new();
    let sink_names: Vec<String> = sinks.iter().map(|(n, _)| n.clone()).collect();
    let mut seq = 0u64;
    let mut flush = |records: Vec<(EventRecord, Option<FrameMsg>, u64)>,
                     stats: &mut WriterStats|
     -> anyhow::Result<()> {
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
            meta: meta.clone(),
            writer_rank: index,
            seq,
            events,
        };
        let bytes = match stored_frames(&frames)? {
            Some(f) => ser.serialize_stored(&batch, &f, h5layout, compression)?,
            None => ser.serialize(&batch, h5layout, compression)?,
        };
        let t1 = Instant::now();
        let m = MessageMeta {
            run: meta.run,
            writer_rank: index,
            seq,
            events: n,
        };
        // The last sink takes the image itself; only the others get copies.
        if let Some(((_, last), rest)) = sinks.split_last_mut() {
            for (_, s) in rest.iter_mut() {
                s.send(bytes.clone(), &m)?;
            }
            last.send(bytes, &m)?;
        }
        stats.ns_serialize += (t1 - t0).as_nanos() as u64;
        stats.ns_send += t1.elapsed().as_nanos() as u64;
        stats.batches += 1;
        stats.events += n;
        stats.latency.sent(seen, super::latency::now_ns());
        seq += 1;
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
                    flush(std::mem::replace(&mut pending, rest), &mut stats)?;
                }
            }
            Some(Msg::WorkerDone { .. }) => done += 1,
            Some(other) => anyhow::bail!("writer {me}: unexpected message {other:?}"),
        }
        if deadline.due() && !pending.is_empty() {
            flush(std::mem::take(&mut pending), &mut stats)?;
        }
        deadline.pending(pending.len());
        if let Some(t) = feed.as_mut().and_then(|f| f.tick(me, &stats, &sink_names)) {
            mb.send(Layout::COORDINATOR, t)?;
        }
    }
    if !pending.is_empty() {
        flush(std::mem::take(&mut pending), &mut stats)?;
    }
    for (name, s) in sinks.iter_mut() {
        let st = s.finish()?;
        stats.sinks.push((
            name.clone(),
            st.batches,
            st.events,
            st.bytes,
            st.spilled,
            st.dropped,
        ));
    }
    mb.send(Layout::COORDINATOR, Msg::WriterDone { writer: me, stats })?;
    Ok(())
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
