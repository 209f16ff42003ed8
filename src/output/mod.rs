//! Output: batch records, in-memory HDF5 file images (CXI and LCLStreamer layouts) and the
//! compression filters that `hdf5plugin` decodes.
//!
//! One batch becomes one complete HDF5 file image. Frames are stored chunked one frame per
//! chunk; the chunks are compressed in parallel (rayon) by our own encoders and stored with
//! `H5Dwrite_chunk`, while the dataset's filter pipeline names the filter so any reader decodes
//! them. Every image carries root attributes `writer_rank`, `seq`, `n_events`, `experiment`,
//! `run`, `source`, `software_version`, `field_names` (JSON list), one `param.<name>` string per
//! parameter and one `data.<name>` per run-level selected value.

pub mod batch;
pub mod bitshuffle;
mod cxi;
mod fields;
pub mod filters;
pub mod h5image;
mod lclstreamer_layout;
pub mod read;

use std::str::FromStr;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use batch::{Batch, Dtype, EventRecord, Field, Frame, Peaks, Presence, RunMeta, Value};
pub use fields::SUFFIXES as FIELD_SUFFIXES;
pub use filters::Compression;
pub use read::read_batch;

/// Errors building or reading an HDF5 batch image.
#[derive(Debug, Error)]
pub enum OutputError {
    #[error("HDF5: {0}")]
    Hdf5(#[from] hdf5::Error),
    #[error("HDF5 call {0} failed")]
    Hdf5Call(&'static str),
    #[error("HDF5 filter registration: {0}")]
    Filter(String),
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    #[error("message is not an HDF5 file image")]
    NotHdf5,
    #[error("compressing a frame chunk: {0}")]
    Compress(#[from] std::io::Error),
    #[error("malformed batch image: {0}")]
    Malformed(String),
}

/// Dataset layout of a batch image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// CXI / CrystFEL: `/entry_1/data_1/data`, `/entry_1/result_1/peak*`, `/LCLS/*`.
    #[default]
    Cxi,
    /// Python LCLStreamer style: one root dataset per source key.
    Lclstreamer,
}

impl FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cxi" => Ok(Layout::Cxi),
            "lclstreamer" => Ok(Layout::Lclstreamer),
            _ => Err(format!("unknown layout {s:?} (cxi, lclstreamer)")),
        }
    }
}

/// Pixel type of frames stored as chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PixelType {
    F32,
    U16,
    F16,
}

impl PixelType {
    /// Bytes per pixel.
    pub fn size(self) -> usize {
        match self {
            PixelType::F32 => 4,
            PixelType::U16 | PixelType::F16 => 2,
        }
    }

    /// The element type name the layouts use.
    pub fn kind(self) -> &'static str {
        match self {
            PixelType::F32 => "float32",
            PixelType::U16 => "uint16",
            PixelType::F16 => "float16",
        }
    }
}

/// A batch's frames already filtered into their HDF5 chunks (one per event, in event order,
/// made with the batch's compression), as workers send them; stored without recompression.
#[derive(Debug, Clone)]
pub struct StoredFrames<'a> {
    pub pixel: PixelType,
    /// Axes of one frame: `(ss, fs)`, or an image's `(C, H, W)` / `(H, W)`.
    pub dims: Vec<usize>,
    pub image: bool,
    pub chunks: Vec<&'a [u8]>,
}

impl StoredFrames<'_> {
    /// Checks what can be checked cheaply: the chunk count, and the pixel count a chunk
    /// declares (stored size without compression, the bitshuffle header's size otherwise).
    fn check(&self, events: usize, compression: Compression) -> Result<(), OutputError> {
        let bad = |m: String| Err(OutputError::InvalidBatch(m));
        if self.chunks.len() != events {
            return bad(format!(
                "{} frame chunks for {events} events",
                self.chunks.len()
            ));
        }
        let frame_bytes = self.dims.iter().product::<usize>() * self.pixel.size();
        for (i, c) in self.chunks.iter().enumerate() {
            let declared = match compression {
                Compression::None => Some(c.len()),
                Compression::BitshuffleLz4 | Compression::BitshuffleZstd { .. } => c
                    .get(..8)
                    .map(|h| u64::from_be_bytes(h.try_into().expect("8 bytes")) as usize),
                _ => continue,
            };
            if declared != Some(frame_bytes) {
                return bad(format!(
                    "event {i}: frame chunk holds {declared:?} bytes of pixels, a {:?} {} frame is {frame_bytes}",
                    self.dims,
                    self.pixel.kind()
                ));
            }
        }
        Ok(())
    }
}

/// Serialises `batch` into the bytes of an HDF5 file image.
pub fn serialize(
    batch: &Batch,
    layout: Layout,
    compression: Compression,
) -> Result<Vec<u8>, OutputError> {
    Serializer::default().serialize(batch, layout, compression)
}

/// Reusable serializer: keeps the per-frame compressed-chunk buffers between batches.
#[derive(Default)]
pub struct Serializer {
    /// Reused chunk buffers and the length of the chunk each holds.
    chunks: Vec<(Vec<u8>, usize)>,
    /// Minimum width of the peak datasets (grown to the largest peak count of a batch).
    pub min_peak_width: usize,
}

/// One event's frame as the batch's frame dataset stores it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct FrameSpec<'a> {
    /// Axes after the event axis: `(ss, fs)`, or an image's `(C, H, W)` / `(H, W)`.
    pub dims: &'a [usize],
    pub elem_size: usize,
    /// `float32`, `uint16` or `float16`.
    pub kind: &'static str,
    pub image: bool,
}

impl<'a> FrameSpec<'a> {
    fn of(f: &'a Frame) -> Self {
        FrameSpec {
            dims: f.dims(),
            elem_size: f.elem_size(),
            kind: f.kind(),
            image: f.is_image(),
        }
    }
}

/// What the layouts need after validation.
pub(crate) struct Checked<'a> {
    pub batch: &'a Batch,
    /// The frames' shape and type when the batch carries frames.
    pub frames: Option<FrameSpec<'a>>,
    pub field_names: Vec<&'a str>,
    pub peak_width: usize,
}

fn check(batch: &Batch, min_peak_width: usize) -> Result<Checked<'_>, OutputError> {
    let bad = |m: String| Err(OutputError::InvalidBatch(m));
    let Some(first) = batch.events.first() else {
        return bad("batch has no events".into());
    };
    let frames = first.frame.as_ref().map(FrameSpec::of);
    let field_names: Vec<&str> = first.fields.iter().map(|f| f.name.as_str()).collect();
    fields::check(&batch.events)?;
    let mut peak_width = min_peak_width.max(1);
    for (i, ev) in batch.events.iter().enumerate() {
        let this = ev.frame.as_ref().map(FrameSpec::of);
        if this != frames {
            return bad(format!(
                "event {i} (index {}) has frame {this:?}, event 0 has {frames:?}: all events of a batch \
                 must carry frames of one shape and dtype, or none",
                ev.event_index
            ));
        }
        if let Some(f) = &ev.frame
            && f.as_bytes().is_none()
        {
            return bad(format!("event {i}: frame array is not contiguous"));
        }
        let p = &ev.peaks;
        if p.columns().iter().any(|(_, c)| c.len() != p.len()) {
            return bad(format!("event {i}: peak columns have different lengths"));
        }
        peak_width = peak_width.max(p.len());
    }
    Ok(Checked {
        batch,
        frames,
        field_names,
        peak_width,
    })
}

impl Serializer {
    /// Serialises `batch` into the bytes of an HDF5 file image.
    pub fn serialize(
        &mut self,
        batch: &Batch,
        layout: Layout,
        compression: Compression,
    ) -> Result<Vec<u8>, OutputError> {
        filters::register_filters().map_err(OutputError::Filter)?;
        let checked = check(batch, self.min_peak_width)?;
        let n = batch.events.len();
        if let Some(FrameSpec { elem_size: es, .. }) = checked.frames
            && compression != Compression::None
        {
            if self.chunks.len() < n {
                self.chunks.resize_with(n, Default::default);
            }
            self.chunks[..n]
                .par_iter_mut()
                .zip(&batch.events)
                .try_for_each(|((buf, len), ev)| {
                    let frame = ev
                        .frame
                        .as_ref()
                        .and_then(|f| f.as_bytes())
                        .expect("checked");
                    *len = compression.encode_chunk_reusing(frame, es, buf)?;
                    Ok::<_, std::io::Error>(())
                })?;
        }
        // Without compression the frames are stored as they are, without a copy.
        let chunks: Vec<&[u8]> = match checked.frames {
            None => Vec::new(),
            Some(_) if compression == Compression::None => batch
                .events
                .iter()
                .filter_map(|e| e.frame.as_ref().and_then(Frame::as_bytes))
                .collect(),
            Some(_) => self.chunks[..n].iter().map(|(b, len)| &b[..*len]).collect(),
        };
        assemble(&checked, layout, compression, &chunks)
    }

    /// Serialises `batch`, whose events carry no frames, with `frames` as its frames: the
    /// chunks are written as they are (direct chunk writes), so nothing is recompressed.
    pub fn serialize_stored(
        &mut self,
        batch: &Batch,
        frames: &StoredFrames,
        layout: Layout,
        compression: Compression,
    ) -> Result<Vec<u8>, OutputError> {
        filters::register_filters().map_err(OutputError::Filter)?;
        let mut checked = check(batch, self.min_peak_width)?;
        if checked.frames.is_some() {
            return Err(OutputError::InvalidBatch(
                "events carry frames besides the stored chunks".into(),
            ));
        }
        frames.check(batch.events.len(), compression)?;
        checked.frames = Some(FrameSpec {
            dims: &frames.dims,
            elem_size: frames.pixel.size(),
            kind: frames.pixel.kind(),
            image: frames.image,
        });
        assemble(&checked, layout, compression, &frames.chunks)
    }
}

/// Writes a checked batch and its frame chunks into a new file image.
fn assemble(
    checked: &Checked,
    layout: Layout,
    compression: Compression,
    chunks: &[&[u8]],
) -> Result<Vec<u8>, OutputError> {
    let image = h5image::MemFile::create(image_capacity(checked, chunks), 1 << 20)?;
    let file = image.file();
    write_root_attrs(file, checked.batch)?;
    match layout {
        Layout::Cxi => cxi::write(file, checked, compression, chunks)?,
        Layout::Lclstreamer => lclstreamer_layout::write(file, checked, compression, chunks)?,
    }
    image.finish()
}

/// Bytes reserved for a batch image up front: the frame chunks, the per-event arrays and room
/// for HDF5's own structures, so the image rarely has to grow.
fn image_capacity(c: &Checked, chunks: &[&[u8]]) -> usize {
    let b = c.batch.events.len();
    let frames: usize = chunks.iter().map(|c| c.len()).sum();
    let values: usize = c.batch.events[0]
        .fields
        .iter()
        .map(|f| match &f.value {
            Value::Num { data, .. } => data.len() + 8,
            Value::Str(s) => s.len() + 16,
        })
        .sum();
    let per_event = 8 * c.peak_width * 4 + values + (c.field_names.len() + 8) * 8;
    frames + b * (per_event + 64) + (2 << 20)
}

fn write_root_attrs(file: &hdf5::File, batch: &Batch) -> Result<(), OutputError> {
    use hdf5::types::VarLenUnicode;
    let m = &batch.meta;
    scalar_attr(file, "writer_rank", batch.writer_rank)?;
    scalar_attr(file, "seq", batch.seq)?;
    scalar_attr(file, "n_events", batch.events.len() as u64)?;
    scalar_attr(file, "run", m.run)?;
    file.new_attr_builder()
        .with_data(&ndarray::Array1::from_vec(m.segments.clone()))
        .create("segments")?;
    let mut strs = vec![
        ("experiment".to_string(), m.experiment.as_str()),
        ("source".to_string(), m.source.as_str()),
        ("software_version".to_string(), m.software_version.as_str()),
    ];
    let names: Vec<&str> = batch
        .events
        .first()
        .map(|e| e.fields.iter().map(|f| f.name.as_str()).collect())
        .unwrap_or_default();
    let names = serde_json::to_string(&names).expect("strings serialise");
    strs.push(("field_names".to_string(), names.as_str()));
    strs.extend(
        m.parameters
            .iter()
            .map(|(k, v)| (format!("param.{k}"), v.as_str())),
    );
    for (name, value) in strs {
        let v: VarLenUnicode = value
            .parse()
            .map_err(|e| OutputError::InvalidBatch(format!("attribute {name}: {e}")))?;
        scalar_attr(file, &name, v)?;
    }
    fields::write_run_values(file, &m.values)?;
    Ok(())
}

pub(crate) fn scalar_attr<T: hdf5::H5Type>(
    loc: &hdf5::Location,
    name: &str,
    v: T,
) -> Result<(), OutputError> {
    loc.new_attr_builder()
        .with_data(&ndarray::arr0(v))
        .create(name)?;
    Ok(())
}

/// Per-event `timestamp`, `event_index` and `run` datasets in `group`.
pub(crate) fn write_event_ids(group: &hdf5::Group, c: &Checked<'_>) -> Result<(), OutputError> {
    let events = &c.batch.events;
    let ts = ndarray::Array1::from_iter(events.iter().map(|e| e.timestamp));
    group
        .new_dataset_builder()
        .with_data(&ts)
        .create("timestamp")?;
    let idx = ndarray::Array1::from_iter(events.iter().map(|e| e.event_index));
    group
        .new_dataset_builder()
        .with_data(&idx)
        .create("event_index")?;
    let run = ndarray::Array1::from_elem(events.len(), c.batch.meta.run);
    group.new_dataset_builder().with_data(&run).create("run")?;
    Ok(())
}

/// Creates the frame dataset `(B, ...)` with one frame per chunk and stores the compressed chunks.
pub(crate) fn write_frames(
    group: &hdf5::Group,
    name: &str,
    frames: FrameSpec<'_>,
    compression: Compression,
    chunks: &[&[u8]],
) -> Result<hdf5::Dataset, OutputError> {
    let b = chunks.len();
    let shape: Vec<usize> = std::iter::once(b)
        .chain(frames.dims.iter().copied())
        .collect();
    let chunk: Vec<usize> = std::iter::once(1)
        .chain(frames.dims.iter().copied())
        .collect();
    let builder = group.new_dataset_builder();
    let mut builder = match frames.kind {
        "float32" => builder.empty::<f32>(),
        "float16" => builder.empty::<half::f16>(),
        _ => builder.empty::<u16>(),
    }
    .shape(shape)
    .chunk(chunk);
    if let Some((id, cd)) = compression.pipeline(frames.elem_size) {
        builder = builder.add_filter(id, &cd);
    }
    let ds = builder.create(name)?;
    let mut at = vec![0u64; frames.dims.len() + 1];
    for (i, c) in chunks.iter().enumerate() {
        at[0] = i as u64;
        h5image::write_chunk(&ds, &at, c)?;
    }
    Ok(ds)
}

/// The `(B,)` / `(B, W)` peak arrays of a batch.
pub(crate) fn peak_arrays(
    c: &Checked,
) -> (
    ndarray::Array1<i32>,
    Vec<(&'static str, ndarray::Array2<f32>)>,
) {
    let b = c.batch.events.len();
    let n = ndarray::Array1::from_iter(c.batch.events.iter().map(|e| e.peaks.len() as i32));
    let names = c.batch.events[0].peaks.columns().map(|(name, _)| name);
    let cols = names
        .iter()
        .enumerate()
        .map(|(k, &name)| {
            let mut a = ndarray::Array2::<f32>::zeros((b, c.peak_width));
            for (i, ev) in c.batch.events.iter().enumerate() {
                let col = ev.peaks.columns()[k].1;
                a.row_mut(i)
                    .slice_mut(ndarray::s![..col.len()])
                    .assign(&ndarray::aview1(col));
            }
            (name, a)
        })
        .collect();
    (n, cols)
}

#[cfg(test)]
mod tests {
    use super::*;
    use batch::{ExampleKind, example_batch};

    fn frames(chunks: Vec<&[u8]>) -> StoredFrames<'_> {
        StoredFrames {
            pixel: PixelType::F32,
            dims: vec![10, 8],
            image: false,
            chunks,
        }
    }

    #[test]
    fn stored_chunks_that_do_not_fit_the_batch_are_refused_by_name() {
        let mut b = example_batch(2, 10, 8, ExampleKind::NoFrame, 1);
        b.events.iter_mut().for_each(|e| e.frame = None);
        let mut ser = Serializer::default();
        let px = vec![0u8; 10 * 8 * 4];
        let mut chunk = Vec::new();
        Compression::BitshuffleLz4
            .encode_chunk(&px, 4, &mut chunk)
            .unwrap();
        let ok = frames(vec![&chunk, &chunk]);
        assert!(
            ser.serialize_stored(&b, &ok, Layout::Cxi, Compression::BitshuffleLz4)
                .is_ok()
        );
        let short = frames(vec![&chunk]);
        let e = ser.serialize_stored(&b, &short, Layout::Cxi, Compression::BitshuffleLz4);
        assert!(format!("{}", e.unwrap_err()).contains("1 frame chunks for 2 events"));
        let wrong = StoredFrames {
            dims: vec![10, 9],
            image: false,
            ..ok.clone()
        };
        let e = ser.serialize_stored(&b, &wrong, Layout::Cxi, Compression::BitshuffleLz4);
        assert!(format!("{}", e.unwrap_err()).contains("event 0: frame chunk holds Some(320)"));
        let e = ser.serialize_stored(&b, &ok, Layout::Cxi, Compression::None);
        assert!(format!("{}", e.unwrap_err()).contains("event 0"));
    }
}
