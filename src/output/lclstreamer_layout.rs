//! LCLStreamer layout: one root dataset per source key, leading dimension B, as the Python
//! LCLStreamer's HDF5 serializer writes (its consumers iterate the root datasets).
//!
//! Keys: `<source>.calib` (float32) or `<source>.raw` (uint16) frames `(B, ss, fs)` chunked one
//! frame per chunk, or `<source>.image` assembled images `(B, C, H, W)` / `(B, H, W)`;
//! `timestamp`, `event_index` (u64), `run` (u32), every field (`hit`, `n_peaks`, selected data)
//! as a root dataset `<name>` (see `fields`), and the peak columns as `peaks.nPeaks` (int32) and
//! `peaks.<cxi name>` (float32, `(B, W)`).

use super::{
    Checked, Compression, OutputError, fields, peak_arrays, write_event_ids, write_frames,
};

/// Name of the frame dataset for a source and frame dtype.
pub(crate) fn frame_key(source: &str, kind: &str) -> String {
    let src = if source.is_empty() {
        "detector"
    } else {
        source
    };
    format!("{src}.{}", if kind == "float32" { "calib" } else { "raw" })
}

/// Name of the assembled-image dataset of a source.
pub(crate) fn image_key(source: &str) -> String {
    let src = if source.is_empty() {
        "detector"
    } else {
        source
    };
    format!("{src}.image")
}

pub(crate) fn write(
    file: &hdf5::File,
    c: &Checked,
    compression: Compression,
    chunks: &[&[u8]],
) -> Result<(), OutputError> {
    let events = &c.batch.events;
    if let Some(frames) = c.frames {
        let key = if frames.image {
            image_key(&c.batch.meta.source)
        } else {
            frame_key(&c.batch.meta.source, frames.kind)
        };
        write_frames(file, &key, frames, compression, chunks)?;
    }
    write_event_ids(file, c)?;
    fields::write(file, events, &|_| Vec::new())?;
    let (n, cols) = peak_arrays(c);
    file.new_dataset_builder()
        .with_data(&n)
        .create("peaks.nPeaks")?;
    for (name, a) in cols {
        file.new_dataset_builder()
            .with_data(&a)
            .create(format!("peaks.{name}").as_str())?;
    }
    Ok(())
}
