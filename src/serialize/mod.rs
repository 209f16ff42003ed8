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
pub mod msgpack;
pub mod simplon;
pub mod stream2;

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::output::{Batch, EventRecord, Frame, OutputError, read::image_info};

use crate::transport::{EndOfStream, MessageMeta};
pub use fanout::Fanout;

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
    /// Photon energy (eV) used when an event has no `photon_energy_eV` scalar; without either,
    /// the energy and wavelength keys are left out.
    pub photon_energy_ev: Option<f64>,
}

/// hc in eV·Å: wavelength (Å) = `HC_EV_ANGSTROM` / energy (eV).
pub const HC_EV_ANGSTROM: f64 = 12_398.419_843_320_026;

/// Name of the per-event scalar holding the photon energy in eV.
pub const PHOTON_ENERGY_SCALAR: &str = "photon_energy_eV";

/// A per-event number by name (the one place serializers read event scalars).
pub fn scalar(ev: &EventRecord, name: &str) -> Option<f64> {
    ev.scalars.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
}

/// The event's photon energy (eV): its scalar, else the configured value.
pub fn photon_energy(ev: &EventRecord, opts: &FormatOptions) -> Option<f64> {
    scalar(ev, PHOTON_ENERGY_SCALAR)
        .filter(|e| e.is_finite() && *e > 0.0)
        .or(opts.photon_energy_ev)
}

/// One message to send: a series start (not counted as data) or a data message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// `None` for a start message.
    pub meta: Option<MessageMeta>,
    pub bytes: Vec<u8>,
}

/// Turns batches into the messages of one event format (not HDF5, which `output` builds).
pub struct EventEncoder {
    opts: FormatOptions,
    next_seq: u64,
    started: bool,
    scratch: crate::output::bitshuffle::BlockEncoder,
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
            scratch: Default::default(),
        }
    }

    /// The messages for `batch`: the series start before the first batch (stream2, simplon),
    /// then one data message per event.
    pub fn encode(&mut self, batch: &Batch) -> Result<Vec<Message>, OutputError> {
        let mut out = Vec::with_capacity(batch.events.len() + 1);
        if !self.started {
            self.started = true;
            let start = match self.opts.format {
                Format::Stream2 => Some(stream2::start(batch, &self.opts)?),
                Format::Simplon => Some(simplon::start(batch, &self.opts)?),
                _ => None,
            };
            if let Some(bytes) = start {
                out.push(Message { meta: None, bytes });
            }
        }
        for ev in &batch.events {
            let frame = ev.frame.as_ref().ok_or_else(|| {
                OutputError::InvalidBatch(format!(
                    "event {} has no frame: format {:?} sends one frame per message (processing.send \
                     must not be none)",
                    ev.event_index, self.opts.format
                ))
            })?;
            let seq = self.next_seq;
            let bytes = match self.opts.format {
                Format::Stream2 => {
                    stream2::image(batch, ev, frame, seq, &self.opts, &mut self.scratch)?
                }
                Format::Simplon => {
                    simplon::image(batch, ev, frame, seq, &self.opts, &mut self.scratch)?
                }
                Format::Msgpack => msgpack::image(batch, ev, frame, seq, &self.opts),
                Format::Hdf5 => unreachable!("checked in new"),
            };
            self.next_seq += 1;
            out.push(Message {
                meta: Some(MessageMeta {
                    run: batch.meta.run,
                    writer_rank: batch.writer_rank,
                    seq,
                    events: 1,
                }),
                bytes,
            });
        }
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

/// Frame pixels as little-endian bytes with their element size and numpy-style dtype names.
pub(crate) struct Pixels<'a> {
    pub bytes: &'a [u8],
    pub elem_size: usize,
    /// `float32` / `uint16`.
    pub dtype: &'static str,
}

pub(crate) fn pixels(frame: &Frame) -> Result<Pixels<'_>, OutputError> {
    if cfg!(target_endian = "big") {
        return Err(OutputError::InvalidBatch(
            "event formats are written little-endian only".into(),
        ));
    }
    let bytes = frame
        .as_bytes()
        .ok_or_else(|| OutputError::InvalidBatch("frame array is not contiguous".into()))?;
    Ok(Pixels {
        bytes,
        elem_size: frame.elem_size(),
        dtype: match frame {
            Frame::F32(_) => "float32",
            Frame::U16(_) => "uint16",
        },
    })
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
