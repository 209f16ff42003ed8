//! The Python LCLStreamer's "Simplon" CBOR, in its newest form (upstream PRs #51/#58): one bare
//! CBOR map per message, `type` `start` / `image` / `end`, `run_id`, `image_dtype`,
//! `compressed_data` as plain bitshuffle-LZ4 bytes (block 4096 elements, the blocks of the
//! HDF5 filter framing without its 12-byte header, as Python `bitshuffle.compress_lz4` writes
//! them), per-shot `photon_energy` (eV) and `photon_wavelength` (Å) when known.
//! `timestamp` is the exact `sec << 32 | nsec` integer. With `simplon_prefix` each message
//! starts with one byte, `c` (start, end) or `m` (image), as older releases sent.

use super::cbor::Cbor;
use super::frames::{compress_bslz4, pixel_sum};
use super::{
    FormatOptions, FrameRef, HC_EV_ANGSTROM, Kind, Scratch, eos_from_json, field_u64, photon_energy,
};
use crate::output::{Batch, EventRecord, OutputError};
use crate::transport::EndOfStream;

/// Bitshuffle block size in elements, as LCLStreamer's serializer uses.
pub const BLOCK_ELEMS: usize = 4096;

fn prefixed(prefix: Option<u8>, c: Cbor) -> Vec<u8> {
    let body = c.finish();
    match prefix {
        None => body,
        Some(p) => {
            let mut v = Vec::with_capacity(body.len() + 1);
            v.push(p);
            v.extend_from_slice(&body);
            v
        }
    }
}

/// The start message.
pub fn start(batch: &Batch, frame: &FrameRef, opts: &FormatOptions) -> Vec<u8> {
    let first = &batch.events[0];
    let (ss, fs) = frame.shape2();
    let mut c = Cbor::with_capacity(1024);
    c.map(14);
    c.str("type").str("start");
    c.str("run_id").u64(batch.meta.run as u64);
    c.str("start_time").u64(first.timestamp);
    c.str("duration").str("N/A");
    c.str("beamline").str("");
    c.str("experiment").str(&batch.meta.experiment);
    c.str("beam_type").str("X-ray");
    c.str("image_dtype").str(frame.pixel.kind());
    c.str("shape").str(&format!("{ss}x{fs}"));
    c.str("algorithm").str("bitshuffle-lz4");
    c.str("detector").map(3);
    c.str("name").str(&batch.meta.source);
    c.str("id").str(&batch.meta.source);
    c.str("segments").array(batch.meta.segments.len() as u64);
    for &s in &batch.meta.segments {
        c.u32(s);
    }
    c.str("writer_rank").u32(batch.writer_rank);
    c.str("message_id").u64(0);
    c.str("timestamp").u64(first.timestamp);
    prefixed(opts.simplon_prefix.then_some(b'c'), c)
}

/// One image message. `sum` needs the pixels, so a stored chunk is decompressed; its blocks
/// are reused when they are already 4096 elements (uint16 and float16 at the bitshuffle
/// default), recompressed otherwise (float32).
pub(super) fn image(
    batch: &Batch,
    ev: &EventRecord,
    frame: &FrameRef,
    seq: u64,
    opts: &FormatOptions,
    s: &mut Scratch,
) -> Result<Vec<u8>, OutputError> {
    let (ss, fs) = frame.shape2();
    let raw = frame.raw(&mut s.raw)?;
    let sum = pixel_sum(frame.pixel, raw);
    let framed = match frame.stored_bslz4(BLOCK_ELEMS) {
        Some(chunk) => chunk,
        None => {
            compress_bslz4(
                raw,
                frame.pixel.size(),
                BLOCK_ELEMS,
                &mut s.enc,
                &mut s.chunk,
            )?;
            &s.chunk[..]
        }
    };
    let compressed = &framed[12..];
    let energy = photon_energy(&batch.meta, ev, opts);
    let mut c = Cbor::with_capacity(compressed.len() + 512 + 32 * ev.peaks.len());
    c.map(11 + 2 * energy.is_some() as u64);
    c.str("type").str("image");
    c.str("run_id").u64(batch.meta.run as u64);
    c.str("compressed_data").bytes(compressed);
    c.str("image_dtype").str(frame.pixel.kind());
    c.str("shape").str(&format!("{ss}x{fs}"));
    if let Some(e) = energy {
        c.str("photon_energy").f64(e);
        c.str("photon_wavelength").f64(HC_EV_ANGSTROM / e);
    }
    c.str("sum").f64(sum);
    c.str("message_id").u64(seq);
    c.str("timestamp").u64(ev.timestamp);
    c.str("writer_rank").u32(batch.writer_rank);
    c.str("event_index").u64(ev.event_index);
    c.str("peak_list").peaks(&ev.peaks);
    Ok(prefixed(opts.simplon_prefix.then_some(b'm'), c))
}

/// The end message with the sender's counts.
pub fn end(eos: &EndOfStream, prefix: bool) -> Vec<u8> {
    let mut c = Cbor::with_capacity(512);
    c.map(3);
    c.str("type").str("end");
    c.str("run_id").u64(eos.run.unwrap_or(0) as u64);
    c.str("lclstreamer_eos").eos(eos);
    prefixed(prefix.then_some(b'c'), c)
}

pub(super) fn identify(body: &[u8]) -> Result<Kind, String> {
    identify_value(&super::cbor::to_json(body)?)
}

pub(super) fn identify_value(v: &serde_json::Value) -> Result<Kind, String> {
    match v.get("type").and_then(|t| t.as_str()) {
        Some("start") => Ok(Kind::Start),
        Some("image") => Ok(Kind::Data {
            format: super::Format::Simplon,
            writer_rank: field_u64(v, "writer_rank")? as u32,
            seq: field_u64(v, "message_id")?,
            events: 1,
            run: field_u64(v, "run_id")? as u32,
        }),
        Some("end") => Ok(Kind::End(eos_from_json(
            v.get("lclstreamer_eos")
                .ok_or("simplon end message without lclstreamer_eos")?,
        )?)),
        t => Err(format!("CBOR message of unknown type {t:?}")),
    }
}
