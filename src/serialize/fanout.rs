//! A writer's sinks with their formats: each batch is encoded once per format in use and the
//! messages handed to every sink of that format.

use std::collections::HashMap;

use super::{EventEncoder, Format, FormatOptions};
use crate::output::Batch;
use crate::transport::{MessageMeta, Sink, SinkStats, TransportError};

/// Sinks and the encoders of the event formats they use.
#[derive(Default)]
pub struct Fanout {
    sinks: Vec<(String, FormatOptions, Box<dyn Sink>)>,
    /// One encoder per distinct options (format, prefix, photon energy).
    encoders: Vec<(FormatOptions, EventEncoder)>,
}

impl Fanout {
    /// Adds a sink named `name` that takes messages of `opts.format`.
    pub fn push(&mut self, name: String, opts: FormatOptions, sink: Box<dyn Sink>) {
        if opts.format != Format::Hdf5 && !self.encoders.iter().any(|(o, _)| *o == opts) {
            self.encoders
                .push((opts.clone(), EventEncoder::new(opts.clone())));
        }
        self.sinks.push((name, opts, sink));
    }

    /// Whether any sink takes HDF5 batch images.
    pub fn needs_hdf5(&self) -> bool {
        self.sinks.iter().any(|(_, o, _)| o.format == Format::Hdf5)
    }

    /// Number of sinks.
    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    /// True without sinks.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Hands `batch` to every sink: `hdf5` (its image, when [`Self::needs_hdf5`]) to the HDF5
    /// sinks, the encoded event messages to the others.
    pub fn send(
        &mut self,
        batch: &Batch,
        hdf5: Option<Vec<u8>>,
        meta: &MessageMeta,
    ) -> anyhow::Result<()> {
        let mut encoded = HashMap::new();
        for (i, (opts, enc)) in self.encoders.iter_mut().enumerate() {
            encoded.insert(i, (opts.clone(), enc.encode(batch)?));
        }
        let last_hdf5 = self
            .sinks
            .iter()
            .rposition(|(_, o, _)| o.format == Format::Hdf5);
        let mut hdf5 = hdf5;
        for (k, (name, opts, sink)) in self.sinks.iter_mut().enumerate() {
            let ctx = |e: TransportError| anyhow::anyhow!("sink {name}: {e}");
            if opts.format == Format::Hdf5 {
                let bytes = if Some(k) == last_hdf5 {
                    hdf5.take()
                } else {
                    hdf5.clone()
                }
                .ok_or_else(|| anyhow::anyhow!("sink {name}: no HDF5 image was built"))?;
                sink.send(bytes, meta).map_err(ctx)?;
                continue;
            }
            let (_, msgs) = encoded
                .values()
                .find(|(o, _)| o == opts)
                .expect("an encoder per event format");
            for m in msgs {
                match &m.meta {
                    None => sink.send_control(&m.bytes).map_err(ctx)?,
                    Some(meta) => sink.send(m.bytes.clone(), meta).map_err(ctx)?,
                }
            }
        }
        Ok(())
    }

    /// Finishes every sink (end-of-stream) and returns its name and counts.
    pub fn finish(&mut self) -> anyhow::Result<Vec<(String, SinkStats)>> {
        let mut out = Vec::new();
        for (name, _, sink) in &mut self.sinks {
            let st = sink
                .finish()
                .map_err(|e| anyhow::anyhow!("sink {name}: {e}"))?;
            out.push((name.clone(), st));
        }
        Ok(out)
    }
}
