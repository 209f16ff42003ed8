//! The writer role: gathers its workers' records into batches, serialises each batch as one
//! HDF5 image and hands it to every sink; at the end flushes, closes the sinks (end-of-stream)
//! and reports its counts.

use super::layout::Layout;
use super::messages::{FrameMsg, Msg, RecordMsg, WriterStats};
use super::router::Mailbox;
use super::worker::CREDITS;
use crate::config::{Config, SinkConfig};
use crate::output::{
    Batch, Compression, EventRecord, Layout as H5Layout, Peaks, RunMeta, Serializer, StoredFrames,
};
use crate::serialize::{Fanout, Format, FormatOptions};
use crate::transport::{
    Distribute, FileSink, MessageMeta, NngSink, NngSinkConfig, Pattern, Policy, Role, ZmqSink,
    ZmqSinkConfig,
};
use std::time::{Duration, Instant};

fn parse_policy(
    policy: &Option<String>,
    spill_dir: &Option<std::path::PathBuf>,
    kind: &str,
) -> anyhow::Result<Policy> {
    Ok(match policy.as_deref().unwrap_or("block") {
        "block" => Policy::Block,
        "drop" => Policy::Drop,
        "spill" => {
            Policy::Spill(spill_dir.clone().ok_or_else(|| {
                anyhow::anyhow!("output.sinks {kind}: policy spill needs spill_dir")
            })?)
        }
        other => anyhow::bail!("output.sinks {kind} policy {other:?}: block, spill or drop"),
    })
}

fn parse_distribute(d: &Option<String>, kind: &str) -> anyhow::Result<Distribute> {
    Ok(match d.as_deref().unwrap_or("by_rank") {
        "by_rank" => Distribute::ByRank,
        "round_robin" => Distribute::RoundRobin,
        other => {
            anyhow::bail!("output.sinks {kind} distribute {other:?}: by_rank or round_robin")
        }
    })
}

/// The ZeroMQ sink and message format a `kind: zmq` sink entry describes.
pub fn zmq_sink_config(s: &SinkConfig) -> anyhow::Result<(ZmqSinkConfig, FormatOptions)> {
    let SinkConfig::Zmq {
        urls,
        pattern,
        mode,
        policy,
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
    let e = |k: &str, m: String| anyhow::anyhow!("output.sinks zmq {k}: {m}");
    let mut c = ZmqSinkConfig::new(urls.clone());
    if let Some(p) = pattern {
        c.pattern = p.parse::<Pattern>().map_err(|m| e("pattern", m))?;
    }
    if let Some(m) = mode {
        c.role = m.parse::<Role>().map_err(|m| e("mode", m))?;
    }
    c.policy = parse_policy(policy, spill_dir, "zmq")?;
    c.distribute = parse_distribute(distribute, "zmq")?;
    if let Some(t) = send_timeout {
        c.send_timeout =
            Duration::try_from_secs_f64(*t).map_err(|m| e("send_timeout", m.to_string()))?;
    }
    if let Some(t) = linger {
        c.linger = Duration::try_from_secs_f64(*t).map_err(|m| e("linger", m.to_string()))?;
    }
    if let Some(h) = hwm {
        if *h < 1 {
            return Err(e("hwm", format!("{h}: at least 1")));
        }
        c.hwm = *h;
    }
    let opts = FormatOptions {
        format: match format {
            Some(f) => f.parse::<Format>().map_err(|m| e("format", m))?,
            None => Format::Hdf5,
        },
        simplon_prefix: *simplon_prefix,
        photon_energy_ev: *photon_energy_ev,
    };
    c.format = opts.format;
    c.simplon_prefix = opts.simplon_prefix;
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
    let compression: Compression = cfg
        .output
        .compression
        .parse()
        .map_err(|e: String| anyhow::anyhow!("output.compression: {e}"))?;
    let mut out = Fanout::new(compression);
    for s in &cfg.output.sinks {
        match s {
            SinkConfig::Files { dir } => {
                out.push(
                    format!("files:{}", dir.display()),
                    FormatOptions::default(),
                    Box::new(FileSink::new(dir)?),
                );
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
                c.policy = parse_policy(policy, spill_dir, "nng")?;
                if let Some(t) = send_timeout {
                    c.send_timeout = Duration::from_secs_f64(*t);
                }
                c.distribute = parse_distribute(distribute, "nng")?;
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

/// The record's event without its frame, and the frame (its stored chunk).
fn to_record(r: RecordMsg) -> (EventRecord, Option<FrameMsg>) {
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
    (event, r.frame)
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

/// Runs one writer until all its workers are done.
pub fn run(mb: Mailbox, layout: &Layout, cfg: &Config, meta: RunMeta) -> anyhow::Result<()> {
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
    let mut pending: Vec<(EventRecord, Option<FrameMsg>)> = Vec::new();
    let mut seq = 0u64;
    let mut flush = |records: Vec<(EventRecord, Option<FrameMsg>)>,
                     stats: &mut WriterStats|
     -> anyhow::Result<()> {
        let n = records.len() as u64;
        let t0 = Instant::now();
        let (events, frames): (Vec<_>, Vec<_>) = records.into_iter().unzip();
        let batch = Batch {
            meta: meta.clone(),
            writer_rank: index,
            seq,
            events,
        };
        let stored = stored_frames(&frames)?;
        let bytes = if !sinks.needs_hdf5() {
            None
        } else if let Some(f) = &stored {
            Some(ser.serialize_stored(&batch, f, h5layout, compression)?)
        } else {
            Some(ser.serialize(&batch, h5layout, compression)?)
        };
        let encoded = sinks.encode(&batch, stored.as_ref())?;
        let t1 = Instant::now();
        let m = MessageMeta {
            run: meta.run,
            writer_rank: index,
            seq,
            events: n,
        };
        sinks.send(bytes, encoded, &m)?;
        stats.ns_serialize += (t1 - t0).as_nanos() as u64;
        stats.ns_send += t1.elapsed().as_nanos() as u64;
        stats.batches += 1;
        stats.events += n;
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
        let msg = match deadline.wait() {
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
    }
    if !pending.is_empty() {
        flush(std::mem::take(&mut pending), &mut stats)?;
    }
    for (name, st) in sinks.finish()? {
        stats.sinks.push((
            name, st.batches, st.events, st.bytes, st.spilled, st.dropped,
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
