//! Serializers chosen per sink: `hdf5` (one HDF5 file image per batch, built by `output`),
//! `stream2` (DECTRIS Stream V2 CBOR), `simplon` (the Python LCLStreamer's CBOR variant) and
//! `msgpack` (what CrystFEL's `--data-format=msgpack --peaks=msgpack` reads).
//!
//! HDF5 sends one message per batch; the others send one message per event, numbered per writer
//! (`seq` = the writer's message counter in that format), after an optional series start message.
//! Every format ends with a message carrying the sender's [`EndOfStream`] counts: the text
//! message for HDF5, an `lclstreamer_eos` map inside the format's own end message otherwise.
//! [`identify`] tells a consumer which kind of message it received, in any format.

mod cbor;
pub mod fanout;
pub mod frames;
pub mod msgpack;
pub mod simplon;
pub mod stream2;

use std::cell::RefCell;
use std::str::FromStr;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::output::bitshuffle::BlockEncoder;
use crate::output::{
    Batch, Compression, EventRecord, OutputError, Presence, RunMeta, StoredFrames, read::image_info,
};
use crate::transport::{EndOfStream, MessageMeta};
pub use fanout::{Fanout, SinkNow};
pub use frames::{FrameData, FrameRef};

/// Message format of a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One HDF5 file image per batch (layout and compression from `output`).
    #[default]
    Hdf5,
    /// DECTRIS Stream V2: CBOR start / image / end maps.
    Stream2,
    /// The Python LCLStreamer's "Simplon" CBOR (PR #51/#58 form).
    Simplon,
    /// CrystFEL's MessagePack: one frame and its peak list per message.
    Msgpack,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hdf5" => Ok(Format::Hdf5),
            "stream2" => Ok(Format::Stream2),
            "simplon" => Ok(Format::Simplon),
            "msgpack" => Ok(Format::Msgpack),
            _ => Err(format!(
                "unknown format {s:?} (hdf5, stream2, simplon, msgpack)"
            )),
        }
    }
}

/// Per-sink options of the event formats.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FormatOptions {
    pub format: Format,
    /// Simplon only: prefix each message with one byte, `c` (start, end) or `m` (image), as
    /// LCLStreamer releases before PR #51 did.
    pub simplon_prefix: bool,
    /// Photon energy (eV) for events without their own (see [`photon_energy`]); without
    /// either, the energy and wavelength keys are left out.
    pub photon_energy_ev: Option<f64>,
}

/// hc in eV·Å: wavelength (Å) = `HC_EV_ANGSTROM` / energy (eV).
pub const HC_EV_ANGSTROM: f64 = 12_398.419_843_320_026;

/// Name under which the photon energy (eV) is sent, and of a field read as one.
pub const PHOTON_ENERGY_KEY: &str = "photon_energy_eV";

/// The field carrying the photon energy: the one with `role: photon_energy_eV` (the CXI alias
/// of that role), else one named `photon_energy_eV`.
pub fn photon_energy_field(meta: &RunMeta) -> &str {
    meta.cxi_aliases
        .iter()
        .find(|(_, alias)| alias == PHOTON_ENERGY_KEY)
        .map_or(PHOTON_ENERGY_KEY, |(name, _)| name.as_str())
}

/// The event's photon energy (eV): its photon-energy field when present, finite and positive,
/// else the sink's `photon_energy_ev`.
pub fn photon_energy(meta: &RunMeta, ev: &EventRecord, opts: &FormatOptions) -> Option<f64> {
    ev.scalar(photon_energy_field(meta))
        .filter(|e| e.is_finite() && *e > 0.0)
        .or(opts.photon_energy_ev)
}

/// The event's present numeric scalar fields other than the photon energy, by name.
pub(crate) fn scalar_fields<'e>(meta: &RunMeta, ev: &'e EventRecord) -> Vec<(&'e str, f64)> {
    let energy = photon_energy_field(meta);
    ev.fields
        .iter()
        .filter(|f| f.name != energy && f.presence != Presence::Missing)
        .filter_map(|f| Some((f.name.as_str(), f.value.as_f64()?)))
        .collect()
}

/// One message to send: a series start (not counted as data) or a data message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// `None` for a start message.
    pub meta: Option<MessageMeta>,
    pub bytes: Vec<u8>,
}

/// Per-thread buffers of the encoders (frames are encoded on the rayon pool).
#[derive(Default)]
pub(crate) struct Scratch {
    pub enc: BlockEncoder,
    /// Decompressed pixels.
    pub raw: Vec<u8>,
    /// A recompressed chunk.
    pub chunk: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Turns batches into the messages of one event format (not HDF5, which `output` builds).
pub struct EventEncoder {
    opts: FormatOptions,
    next_seq: u64,
    started: bool,
}

impl EventEncoder {
    /// An encoder for `opts.format` (must not be `Hdf5`).
    pub fn new(opts: FormatOptions) -> Self {
        assert!(
            opts.format != Format::Hdf5,
            "HDF5 images are built by output"
        );
        EventEncoder {
            opts,
            next_seq: 0,
            started: false,
        }
    }

    /// The messages for `batch`: the series start before the first batch (stream2, simplon),
    /// then one data message per event. Each event's frame is its own, else its chunk of
    /// `stored` (made with `compression`). Events are encoded in parallel.
    pub fn encode(
        &mut self,
        batch: &Batch,
        stored: Option<&StoredFrames>,
        compression: Compression,
    ) -> Result<Vec<Message>, OutputError> {
        let frames = batch
            .events
            .iter()
            .enumerate()
            .map(|(i, ev)| FrameRef::of(ev, i, stored, compression))
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(batch.events.len() + 1);
        if !self.started
            && let Some(first) = frames.first()
        {
            self.started = true;
            let start = match self.opts.format {
                Format::Stream2 => Some(stream2::start(batch, first, &self.opts)),
                Format::Simplon => Some(simplon::start(batch, first, &self.opts)),
                _ => None,
            };
            if let Some(bytes) = start {
                out.push(Message { meta: None, bytes });
            }
        }
        let base = self.next_seq;
        let opts = &self.opts;
        let encoded = batch
            .events
            .par_iter()
            .zip(&frames)
            .enumerate()
            .map(|(i, (ev, frame))| {
                let seq = base + i as u64;
                let bytes = SCRATCH.with_borrow_mut(|s| match opts.format {
                    Format::Stream2 => stream2::image(batch, ev, frame, seq, opts, s),
                    Format::Simplon => simplon::image(batch, ev, frame, seq, opts, s),
                    Format::Msgpack => msgpack::image(batch, ev, frame, seq, opts, s),
                    Format::Hdf5 => unreachable!("checked in new"),
                })?;
                Ok(Message {
                    meta: Some(MessageMeta {
                        run: batch.meta.run,
                        writer_rank: batch.writer_rank,
                        seq,
                        events: 1,
                    }),
                    bytes,
                })
            })
            .collect::<Result<Vec<_>, OutputError>>()?;
        self.next_seq += encoded.len() as u64;
        out.extend(encoded);
        Ok(out)
    }
}

/// The end-of-stream message of `format` carrying `eos`.
pub fn end_message(format: Format, opts_prefix: bool, eos: &EndOfStream) -> Vec<u8> {
    match format {
        Format::Hdf5 => eos.encode(),
        Format::Stream2 => stream2::end(eos),
        Format::Simplon => simplon::end(eos, opts_prefix),
        Format::Msgpack => msgpack::end(eos),
    }
}

/// What a received message is.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A series start (stream2, simplon): not data.
    Start,
    /// A data message: `events` events from writer `writer_rank`, message `seq` of its stream.
    Data {
        format: Format,
        writer_rank: u32,
        seq: u64,
        events: u64,
        run: u32,
    },
    /// An end-of-stream message with the sender's counts.
    End(EndOfStream),
}

/// Classifies a message of any format by its first bytes and identity keys.
pub fn identify(msg: &[u8]) -> Result<Kind, String> {
    if let Some(eos) = EndOfStream::parse(msg) {
        return eos.map(Kind::End);
    }
    if msg.starts_with(b"\x89HDF") {
        let i = image_info(msg).map_err(|e| e.to_string())?;
        return Ok(Kind::Data {
            format: Format::Hdf5,
            writer_rank: i.writer_rank,
            seq: i.seq,
            events: i.n_events,
            run: i.run,
        });
    }
    let cbor_map = |b: u8| (0xa0..=0xbb).contains(&b) || b == 0xbf;
    match msg {
        [b'c' | b'm', b, ..] if cbor_map(*b) => simplon::identify(&msg[1..]),
        [b, ..] if cbor_map(*b) => {
            let v = cbor::to_json(msg)?;
            if v.get("series_unique_id").is_some() {
                stream2::identify(&v)
            } else {
                simplon::identify_value(&v)
            }
        }
        [b, ..] if (0x80..=0x8f).contains(b) || *b == 0xde || *b == 0xdf => msgpack::identify(msg),
        [] => Err("empty message".into()),
        _ => Err(format!(
            "unknown message format (first bytes {:02x?})",
            &msg[..msg.len().min(8)]
        )),
    }
}

pub(crate) fn eos_from_json(v: &serde_json::Value) -> Result<EndOfStream, String> {
    serde_json::from_value(v.clone()).map_err(|e| format!("malformed lclstreamer_eos: {e}"))
}

pub(crate) fn field_u64(v: &serde_json::Value, key: &str) -> Result<u64, String> {
    v.get(key)
        .and_then(|x| x.as_u64())
        .ok_or_else(|| format!("message has no unsigned integer {key:?}"))
}
