//! A writer's sinks with their formats: each batch is encoded once per format in use and the
//! messages handed to every sink of that format (moved to the last one, copied for the others).

use super::{EventEncoder, Format, FormatOptions, Message};
use crate::output::{Batch, Compression, StoredFrames};
use crate::transport::{MessageMeta, Sink, SinkStats, TransportError};

/// A sink: name, options, index of its encoder (`None`: HDF5), the sink.
type Entry = (String, FormatOptions, Option<usize>, Box<dyn Sink>);

/// A sink's state while the job runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SinkNow {
    pub name: String,
    pub stats: SinkStats,
    pub consumers: Option<u32>,
}

/// Sinks and the encoders of the event formats they use.
#[derive(Default)]
pub struct Fanout {
    sinks: Vec<Entry>,
    /// One encoder per distinct options (format, prefix, photon energy).
    encoders: Vec<(FormatOptions, EventEncoder)>,
    /// The compression of the stored frame chunks handed to [`Self::send`].
    compression: Compression,
    /// Who sends (`writer 3`), for the progress lines a stopped rank prints.
    owner: String,
}

impl Fanout {
    /// Sinks for frames stored with `compression` (the job's `output.compression`).
    pub fn new(compression: Compression) -> Self {
        Fanout {
            compression,
            ..Default::default()
        }
    }

    /// Names the sender in the progress lines ([`crate::interrupt::note_progress`]).
    pub fn set_owner(&mut self, owner: impl Into<String>) {
        self.owner = owner.into();
    }

    /// Each sink's name, counts so far and connected consumers (where known).
    pub fn now(&mut self) -> Vec<SinkNow> {
        self.sinks
            .iter_mut()
            .map(|(name, _, _, sink)| SinkNow {
                name: name.clone(),
                stats: sink.stats(),
                consumers: sink.consumers().map(|n| n as u32),
            })
            .collect()
    }

    /// The sinks' names.
    pub fn names(&self) -> Vec<String> {
        self.sinks.iter().map(|s| s.0.clone()).collect()
    }

    /// Adds a sink named `name` that takes messages of `opts.format`.
    pub fn push(&mut self, name: String, opts: FormatOptions, sink: Box<dyn Sink>) {
        let enc = (opts.format != Format::Hdf5).then(|| {
            self.encoders
                .iter()
                .position(|(o, _)| *o == opts)
                .unwrap_or_else(|| {
                    self.encoders
                        .push((opts.clone(), EventEncoder::new(opts.clone())));
                    self.encoders.len() - 1
                })
        });
        self.sinks.push((name, opts, enc, sink));
    }

    /// Whether any sink takes HDF5 batch images.
    pub fn needs_hdf5(&self) -> bool {
        self.sinks.iter().any(|(_, _, e, _)| e.is_none())
    }

    /// Number of sinks.
    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    /// True without sinks.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Encodes `batch` (frames: the events' own, else `stored`) for every event format in use.
    pub fn encode(
        &mut self,
        batch: &Batch,
        stored: Option<&StoredFrames>,
    ) -> anyhow::Result<Vec<Vec<Message>>> {
        let c = self.compression;
        self.encoders
            .iter_mut()
            .map(|(o, enc)| {
                enc.encode(batch, stored, c)
                    .map_err(|e| anyhow::anyhow!("format {:?}: {e}", o.format))
            })
            .collect()
    }

    /// Hands `hdf5` (the batch image, when [`Self::needs_hdf5`]) to the HDF5 sinks and the
    /// `encoded` messages of [`Self::encode`] to the others.
    pub fn send(
        &mut self,
        hdf5: Option<Vec<u8>>,
        mut encoded: Vec<Vec<Message>>,
        meta: &MessageMeta,
    ) -> anyhow::Result<()> {
        let last_user =
            |k: usize, e: Option<usize>, sinks: &[Entry]| sinks[k + 1..].iter().all(|s| s.2 != e);
        let mut hdf5 = hdf5;
        for k in 0..self.sinks.len() {
            let last = last_user(k, self.sinks[k].2, &self.sinks);
            let (name, _, enc, sink) = &mut self.sinks[k];
            let ctx = |e: TransportError| anyhow::anyhow!("sink {name}: {e}");
            let progress = |owner: &str, name: &str| {
                crate::interrupt::note_progress(
                    &format!("{owner} sink {name}"),
                    format!("took {} batches (up to seq {})", meta.seq + 1, meta.seq),
                )
            };
            let Some(e) = *enc else {
                let bytes = if last { hdf5.take() } else { hdf5.clone() }
                    .ok_or_else(|| anyhow::anyhow!("sink {name}: no HDF5 image was built"))?;
                sink.send(bytes, meta).map_err(ctx)?;
                progress(&self.owner, name);
                continue;
            };
            let msgs = if last {
                std::mem::take(&mut encoded[e])
            } else {
                encoded[e].clone()
            };
            for m in msgs {
                match &m.meta {
                    None => sink.send_control(&m.bytes).map_err(ctx)?,
                    Some(meta) => sink.send(m.bytes, meta).map_err(ctx)?,
                }
            }
            progress(&self.owner, name);
        }
        Ok(())
    }

    /// Finishes every sink (end-of-stream): its name and counts, or why it failed.
    pub fn finish(&mut self) -> Vec<(String, Result<SinkStats, TransportError>)> {
        self.sinks
            .iter_mut()
            .map(|(name, _, _, sink)| (name.clone(), sink.finish()))
            .collect()
    }
}
