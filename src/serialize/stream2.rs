//! DECTRIS Stream V2 (`dectris/documentation` `stream_v2`): one CBOR map per message, `type`
//! first. Images go under `data.threshold_1` as a row-major multi-dimensional array (tag 40,
//! dims `[ss, fs]`) of a little-endian typed array (tag 85 float32, 69 uint16, 84 float16) whose
//! bytes are bitshuffle-LZ4 compressed under the DECTRIS compression tag 56500 (`["bslz4",
//! elem_size, HDF5-filter framing]`). The detector is described as one flat panel of the slab
//! (an image's channels stacked into rows); the segments, frame axes, peaks, timestamps,
//! photon energy and event scalars travel in `user_data`, which the spec leaves to the sender.
//! The end message adds `lclstreamer_eos` (the sender's counts).

use super::cbor::{Cbor, TAG_DECTRIS_COMPRESSION, TAG_MULTI_DIM, typed_array_tag};
use super::{
    FormatOptions, FrameRef, HC_EV_ANGSTROM, Kind, PHOTON_ENERGY_KEY, Scratch, eos_from_json,
    field_u64, photon_energy, scalar_fields,
};
use crate::output::{Batch, EventRecord, OutputError};
use crate::transport::EndOfStream;

/// `series_unique_id` of writer `writer_rank`'s stream of run `run`.
pub fn series_unique_id(run: u32, writer_rank: u32) -> String {
    format!("lclstreamer-r{run:04}-w{writer_rank}")
}

/// The start message, described from the first batch's first frame.
pub fn start(batch: &Batch, frame: &FrameRef, opts: &FormatOptions) -> Vec<u8> {
    let first = &batch.events[0];
    let (ss, fs) = frame.shape2();
    let energy = photon_energy(&batch.meta, first, opts);
    let mut c = Cbor::with_capacity(1024);
    c.map(11 + 2 * energy.is_some() as u64);
    c.str("type").str("start");
    c.str("series_id").u64(batch.meta.run as u64);
    c.str("series_unique_id")
        .str(&series_unique_id(batch.meta.run, batch.writer_rank));
    c.str("channels").array(1).str("threshold_1");
    c.str("detector_description").str(&batch.meta.source);
    c.str("image_dtype").str(frame.pixel.kind());
    c.str("image_size_x").u64(fs as u64);
    c.str("image_size_y").u64(ss as u64);
    c.str("number_of_images").u64(0);
    c.str("pixel_mask_enabled").bool(false);
    if let Some(e) = energy {
        c.str("incident_energy").f64(e);
        c.str("incident_wavelength").f64(HC_EV_ANGSTROM / e);
    }
    c.str("user_data").map(7);
    c.str("experiment").str(&batch.meta.experiment);
    c.str("source").str(&batch.meta.source);
    c.str("writer_rank").u32(batch.writer_rank);
    c.str("software_version").str(&batch.meta.software_version);
    c.str("frame_dims").array(frame.dims.len() as u64);
    for &d in frame.dims {
        c.u64(d as u64);
    }
    c.str("segments").array(batch.meta.segments.len() as u64);
    for &s in &batch.meta.segments {
        c.u32(s);
    }
    c.str("parameters").map(batch.meta.parameters.len() as u64);
    for (k, v) in &batch.meta.parameters {
        c.str(k).str(v);
    }
    c.finish()
}

/// One image message. A worker's bitshuffle-LZ4 chunk (default block size) goes out as it is:
/// the HDF5 filter framing is what DECTRIS `bslz4` is.
pub(super) fn image(
    batch: &Batch,
    ev: &EventRecord,
    frame: &FrameRef,
    seq: u64,
    opts: &FormatOptions,
    s: &mut Scratch,
) -> Result<Vec<u8>, OutputError> {
    let (ss, fs) = frame.shape2();
    let compressed = frame.bslz4(0, &mut s.enc, &mut s.raw, &mut s.chunk)?;
    let energy = photon_energy(&batch.meta, ev, opts);
    let scalars = scalar_fields(&batch.meta, ev);
    let mut c = Cbor::with_capacity(compressed.len() + 512 + 32 * ev.peaks.len());
    c.map(6);
    c.str("type").str("image");
    c.str("series_id").u64(batch.meta.run as u64);
    c.str("series_unique_id")
        .str(&series_unique_id(batch.meta.run, batch.writer_rank));
    c.str("image_id").u64(seq);
    c.str("data").map(1).str("threshold_1");
    c.tag(TAG_MULTI_DIM).array(2);
    c.array(2).u64(ss as u64).u64(fs as u64);
    c.tag(typed_array_tag(frame.pixel));
    c.tag(TAG_DECTRIS_COMPRESSION).array(3);
    c.str("bslz4")
        .u64(frame.pixel.size() as u64)
        .bytes(compressed);
    c.str("user_data")
        .map(6 + scalars.len() as u64 + 2 * energy.is_some() as u64);
    c.str("writer_rank").u32(batch.writer_rank);
    c.str("seq").u64(seq);
    c.str("batch_seq").u64(batch.seq);
    c.str("timestamp").u64(ev.timestamp);
    c.str("event_index").u64(ev.event_index);
    c.str("peak_list").peaks(&ev.peaks);
    for (k, v) in scalars {
        c.str(k).f64(v);
    }
    if let Some(e) = energy {
        c.str(PHOTON_ENERGY_KEY).f64(e);
        c.str("incident_wavelength").f64(HC_EV_ANGSTROM / e);
    }
    Ok(c.finish())
}

/// The end message with the sender's counts.
pub fn end(eos: &EndOfStream) -> Vec<u8> {
    let mut c = Cbor::with_capacity(512);
    c.map(4);
    c.str("type").str("end");
    c.str("series_id").u64(eos.run.unwrap_or(0) as u64);
    c.str("series_unique_id").str(&series_unique_id(
        eos.run.unwrap_or(0),
        eos.writer_rank.unwrap_or(0),
    ));
    c.str("lclstreamer_eos").eos(eos);
    c.finish()
}

pub(super) fn identify(v: &serde_json::Value) -> Result<Kind, String> {
    match v.get("type").and_then(|t| t.as_str()) {
        Some("start") => Ok(Kind::Start),
        Some("image") => {
            let u = v
                .get("user_data")
                .ok_or("stream2 image without user_data")?;
            Ok(Kind::Data {
                format: super::Format::Stream2,
                writer_rank: field_u64(u, "writer_rank")? as u32,
                seq: field_u64(v, "image_id")?,
                events: 1,
                run: field_u64(v, "series_id")? as u32,
            })
        }
        Some("end") => Ok(Kind::End(eos_from_json(
            v.get("lclstreamer_eos")
                .ok_or("stream2 end message without lclstreamer_eos")?,
        )?)),
        t => Err(format!("stream2 message of unknown type {t:?}")),
    }
}
