//! CrystFEL's MessagePack input (`libcrystfel/src/image-msgpack.c`): one map per message with
//! the frame under `data` as `{type: "<f4" | "<i4", shape: [ss, fs], data: bin}` (raw uint16
//! frames widened to `<i4`, which CrystFEL accepts) and the peaks under `peak_list` as
//! `{fs, ss, intensity}` float64 arrays in slab pixel-index coordinates (CrystFEL adds its half
//! pixel). CrystFEL finds keys by comparing only the stored key's length, so no key here is a
//! prefix of another key it looks up (`data`, `peak_list`, `timestamp`, `event_id`, `source`,
//! `photon_energy_eV`); the event's other scalar fields, whose names the user picks, go in a
//! `fields` map CrystFEL does not look into. The end message `{type: "end", lclstreamer_eos: {...}}` has no `data`,
//! so CrystFEL logs it as an unreadable frame and goes on.

use rmp::encode as mp;
use serde::Deserialize;

use super::{
    FormatOptions, FrameRef, Kind, PHOTON_ENERGY_KEY, Scratch, photon_energy, scalar_fields,
};
use crate::output::{Batch, EventRecord, OutputError, Peaks, PixelType};
use crate::transport::EndOfStream;

/// Writing into a `Vec<u8>` cannot fail.
const VEC_WRITE: &str = "writing MessagePack into a Vec cannot fail";

fn str(v: &mut Vec<u8>, s: &str) {
    mp::write_str(v, s).expect(VEC_WRITE);
}
fn u64(v: &mut Vec<u8>, x: u64) {
    mp::write_uint(v, x).expect(VEC_WRITE);
}
fn f64(v: &mut Vec<u8>, x: f64) {
    mp::write_f64(v, x).expect(VEC_WRITE);
}
fn map(v: &mut Vec<u8>, n: u32) {
    mp::write_map_len(v, n).expect(VEC_WRITE);
}
fn array(v: &mut Vec<u8>, n: u32) {
    mp::write_array_len(v, n).expect(VEC_WRITE);
}
fn f32s(v: &mut Vec<u8>, xs: &[f32]) {
    array(v, xs.len() as u32);
    for &x in xs {
        f64(v, x as f64);
    }
}
fn bin_header(v: &mut Vec<u8>, n: usize) {
    mp::write_bin_len(v, n as u32).expect(VEC_WRITE);
}

fn peaks(v: &mut Vec<u8>, p: &Peaks) {
    map(v, 3);
    str(v, "fs");
    f32s(v, &p.fs);
    str(v, "ss");
    f32s(v, &p.ss);
    str(v, "intensity");
    f32s(v, &p.total_intensity);
}

/// One event: frame, peaks and identity. The pixels go raw (`<f4`, or `<i4` for integer
/// pixels; float16 widened to `<f4`), so a stored chunk is decompressed.
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
    let energy = photon_energy(&batch.meta, ev, opts);
    let scalars = scalar_fields(&batch.meta, ev);
    let mut v = Vec::with_capacity(ss * fs * 4 + 256 + 24 * ev.peaks.len() + 32 * scalars.len());
    map(
        &mut v,
        10 + energy.is_some() as u32 + !scalars.is_empty() as u32,
    );
    str(&mut v, "data");
    map(&mut v, 3);
    str(&mut v, "type");
    str(
        &mut v,
        if frame.pixel == PixelType::U16 {
            "<i4"
        } else {
            "<f4"
        },
    );
    str(&mut v, "shape");
    array(&mut v, 2);
    u64(&mut v, ss as u64);
    u64(&mut v, fs as u64);
    str(&mut v, "data");
    bin_header(&mut v, ss * fs * 4);
    match frame.pixel {
        PixelType::F32 => v.extend_from_slice(raw),
        PixelType::U16 => v.extend(
            raw.chunks_exact(2)
                .flat_map(|b| (u16::from_le_bytes([b[0], b[1]]) as i32).to_le_bytes()),
        ),
        PixelType::F16 => v.extend(raw.chunks_exact(2).flat_map(|b| {
            half::f16::from_le_bytes([b[0], b[1]])
                .to_f32()
                .to_le_bytes()
        })),
    }
    str(&mut v, "peak_list");
    peaks(&mut v, &ev.peaks);
    str(&mut v, "timestamp");
    u64(&mut v, ev.timestamp);
    str(&mut v, "event_id");
    u64(&mut v, ev.event_index);
    str(&mut v, "source");
    str(&mut v, &batch.meta.source);
    if let Some(e) = energy {
        str(&mut v, PHOTON_ENERGY_KEY);
        f64(&mut v, e);
    }
    if !scalars.is_empty() {
        str(&mut v, "fields");
        map(&mut v, scalars.len() as u32);
        for (k, x) in scalars {
            str(&mut v, k);
            f64(&mut v, x);
        }
    }
    str(&mut v, "type");
    str(&mut v, "image");
    str(&mut v, "run");
    u64(&mut v, batch.meta.run as u64);
    str(&mut v, "experiment");
    str(&mut v, &batch.meta.experiment);
    str(&mut v, "writer_rank");
    u64(&mut v, batch.writer_rank as u64);
    str(&mut v, "seq");
    u64(&mut v, seq);
    Ok(v)
}

/// The end message with the sender's counts.
pub fn end(eos: &EndOfStream) -> Vec<u8> {
    let mut v = Vec::with_capacity(512);
    map(&mut v, 2);
    str(&mut v, "type");
    str(&mut v, "end");
    str(&mut v, "lclstreamer_eos");
    let body = rmp_serde::to_vec_named(eos).expect("plain struct serialises");
    v.extend_from_slice(&body);
    v
}

#[derive(Deserialize)]
struct Ident {
    #[serde(rename = "type")]
    kind: Option<String>,
    writer_rank: Option<u32>,
    seq: Option<u64>,
    run: Option<u32>,
    lclstreamer_eos: Option<EndOfStream>,
}

pub(super) fn identify(msg: &[u8]) -> Result<Kind, String> {
    let id: Ident =
        rmp_serde::from_slice(msg).map_err(|e| format!("malformed MessagePack message: {e}"))?;
    match id.kind.as_deref() {
        Some("image") => Ok(Kind::Data {
            format: super::Format::Msgpack,
            writer_rank: id.writer_rank.ok_or("msgpack image without writer_rank")?,
            seq: id.seq.ok_or("msgpack image without seq")?,
            events: 1,
            run: id.run.unwrap_or(0),
        }),
        Some("end") => Ok(Kind::End(
            id.lclstreamer_eos
                .ok_or("msgpack end message without lclstreamer_eos")?,
        )),
        t => Err(format!("msgpack message of unknown type {t:?}")),
    }
}
