//! CXI layout (CrystFEL / Cheetah conventions).
//!
//! `/cxi_version` = 140; `/entry_1/data_1/data` `(B, ss, fs)` frames, or assembled images as
//! `/entry_1/image_1/data` `(B, C, H, W)` / `(B, H, W)`; `/entry_1/result_1/nPeaks`
//! int32 `(B,)` and `peakXPosRaw` (fs), `peakYPosRaw` (ss), `peakTotalIntensity`,
//! `peakMaximumValue`, `peakNPixels`, `peakSNR`, `peakSigma` float32 `(B, W)` with `W >= nPeaks`,
//! unused slots 0; `/LCLS/timestamp` u64, `/LCLS/event_index` u64, `/LCLS/run` u32,
//! `/LCLS/experiment` string, all `(B,)`; every field (`hit`, `n_peaks`, selected data) as
//! `/LCLS/<name>` (see `fields` for types, presence flags and the ragged layout), with the
//! run's CXI aliases (e.g. `/LCLS/photon_energy_eV`, `/LCLS/detector_1/EncoderValue`) as hard
//! links to the same dataset; `/LCLS/detector_1/segments` u32 the detector's segment ids in
//! slab order.

use hdf5::types::VarLenUnicode;
use ndarray::Array1;

use super::{
    Checked, Compression, OutputError, fields, peak_arrays, write_event_ids, write_frames,
};

pub(crate) fn write(
    file: &hdf5::File,
    c: &Checked,
    compression: Compression,
    chunks: &[&[u8]],
) -> Result<(), OutputError> {
    let events = &c.batch.events;
    file.new_dataset_builder()
        .with_data(&ndarray::arr0(140i32))
        .create("cxi_version")?;
    let entry = file.create_group("entry_1")?;
    if let Some(frames) = c.frames {
        // Assembled images go where CXI keeps them, apart from the slab frames.
        let data = entry.create_group(if frames.image { "image_1" } else { "data_1" })?;
        write_frames(&data, "data", frames, compression, chunks)?;
    }
    let result = entry.create_group("result_1")?;
    let (n, cols) = peak_arrays(c);
    result
        .new_dataset_builder()
        .with_data(&n)
        .create("nPeaks")?;
    for (name, a) in cols {
        result.new_dataset_builder().with_data(&a).create(name)?;
    }
    let lcls = file.create_group("LCLS")?;
    write_event_ids(&lcls, c)?;
    lcls.create_group("detector_1")?
        .new_dataset_builder()
        .with_data(&Array1::from_vec(c.batch.meta.segments.clone()))
        .create("segments")?;
    let exp: VarLenUnicode = c
        .batch
        .meta
        .experiment
        .parse()
        .map_err(|e| OutputError::InvalidBatch(format!("experiment: {e}")))?;
    lcls.new_dataset_builder()
        .with_data(&Array1::from_elem(events.len(), exp))
        .create("experiment")?;
    let aliases = &c.batch.meta.cxi_aliases;
    fields::write(&lcls, events, &|name| {
        aliases
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, path)| path.clone())
            .collect()
    })?;
    Ok(())
}
