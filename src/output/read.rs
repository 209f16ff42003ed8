//! Reading batch images back (consumer side and tests).

use hdf5::types::VarLenUnicode;
use hdf5::{Dataset, File, Group};
use ndarray::Array2;

use super::batch::{Batch, EventRecord, Frame, Peaks, RunMeta};
use super::{Layout, OutputError, fields, h5image, lclstreamer_layout::frame_key};

/// Stream identity of a batch image (root attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    pub writer_rank: u32,
    pub seq: u64,
    pub n_events: u64,
    pub run: u32,
}

fn attr<T: hdf5::H5Type>(file: &File, name: &str) -> Result<T, OutputError> {
    file.attr(name)
        .and_then(|a| a.read_scalar::<T>())
        .map_err(|e| OutputError::Malformed(format!("root attribute {name}: {e}")))
}

fn str_attr(file: &File, name: &str) -> Result<String, OutputError> {
    Ok(attr::<VarLenUnicode>(file, name)?.as_str().to_owned())
}

/// Reads the stream identity attributes of an image without decoding any dataset.
pub fn image_info(bytes: &[u8]) -> Result<ImageInfo, OutputError> {
    let file = h5image::open(bytes)?;
    Ok(ImageInfo {
        writer_rank: attr(&file, "writer_rank")?,
        seq: attr(&file, "seq")?,
        n_events: attr(&file, "n_events")?,
        run: attr(&file, "run")?,
    })
}

fn dataset(g: &Group, name: &str) -> Result<Dataset, OutputError> {
    g.dataset(name)
        .map_err(|e| OutputError::Malformed(format!("dataset {name}: {e}")))
}

fn read_vec<T: hdf5::H5Type>(g: &Group, name: &str, n: usize) -> Result<Vec<T>, OutputError> {
    let v = dataset(g, name)?.read_raw::<T>()?;
    if v.len() != n {
        return Err(OutputError::Malformed(format!(
            "{name} has {} values, expected {n}",
            v.len()
        )));
    }
    Ok(v)
}

/// Decodes a batch image written by [`super::serialize`] (either layout) back into a [`Batch`].
pub fn read_batch(bytes: &[u8]) -> Result<(Batch, Layout), OutputError> {
    let file = h5image::open(bytes)?;
    let n = attr::<u64>(&file, "n_events")? as usize;
    let mut parameters = Vec::new();
    for name in file.attr_names()? {
        if let Some(k) = name.strip_prefix("param.") {
            parameters.push((k.to_owned(), str_attr(&file, &name)?));
        }
    }
    let meta = RunMeta {
        experiment: str_attr(&file, "experiment")?,
        run: attr(&file, "run")?,
        source: str_attr(&file, "source")?,
        software_version: str_attr(&file, "software_version")?,
        segments: file
            .attr("segments")
            .and_then(|a| a.read_raw::<u32>())
            .map_err(|e| OutputError::Malformed(format!("root attribute segments: {e}")))?,
        parameters,
        values: fields::read_run_values(&file)?,
        cxi_aliases: Vec::new(),
    };
    let field_names: Vec<String> = serde_json::from_str(&str_attr(&file, "field_names")?)
        .map_err(|e| OutputError::Malformed(format!("field_names: {e}")))?;
    let layout = if file.link_exists("entry_1") {
        Layout::Cxi
    } else {
        Layout::Lclstreamer
    };
    let root: &Group = &file;
    let (frame_ds, peak_group, peak_prefix, per_event): (Option<Dataset>, Group, &str, Group) =
        match layout {
            Layout::Cxi => (
                file.link_exists("entry_1/data_1/data")
                    .then(|| file.dataset("entry_1/data_1/data"))
                    .transpose()?,
                file.group("entry_1/result_1")?,
                "",
                file.group("LCLS")?,
            ),
            Layout::Lclstreamer => {
                let f32_key = frame_key(&meta.source, "float32");
                let u16_key = frame_key(&meta.source, "uint16");
                let key = [f32_key, u16_key].into_iter().find(|k| file.link_exists(k));
                (
                    key.map(|k| file.dataset(&k)).transpose()?,
                    root.clone(),
                    "peaks.",
                    root.clone(),
                )
            }
        };
    let frames: Vec<Option<Frame>> = match frame_ds {
        None => vec![None; n],
        Some(ds) => {
            let shape = ds.shape();
            if shape.len() != 3 || shape[0] != n {
                return Err(OutputError::Malformed(format!(
                    "frame dataset shape {shape:?}, {n} events"
                )));
            }
            let (ss, fs) = (shape[1], shape[2]);
            if ds.dtype()?.is::<f32>() {
                let v = ds.read_raw::<f32>()?;
                v.chunks_exact(ss * fs)
                    .map(|c| {
                        Some(Frame::F32(
                            Array2::from_shape_vec((ss, fs), c.to_vec()).unwrap(),
                        ))
                    })
                    .collect()
            } else {
                let v = ds.read_raw::<u16>()?;
                v.chunks_exact(ss * fs)
                    .map(|c| {
                        Some(Frame::U16(
                            Array2::from_shape_vec((ss, fs), c.to_vec()).unwrap(),
                        ))
                    })
                    .collect()
            }
        }
    };
    let npeaks = read_vec::<i32>(&peak_group, &format!("{peak_prefix}nPeaks"), n)?;
    let col_names = Peaks::default().columns().map(|(name, _)| name);
    let mut cols = Vec::new();
    for name in col_names {
        let ds = dataset(&peak_group, &format!("{peak_prefix}{name}"))?;
        let a = ds.read_2d::<f32>()?;
        if a.nrows() != n || npeaks.iter().any(|&k| k < 0 || k as usize > a.ncols()) {
            return Err(OutputError::Malformed(format!(
                "{name}: shape {:?} does not hold nPeaks",
                a.dim()
            )));
        }
        cols.push(a);
    }
    let ts = read_vec::<u64>(&per_event, "timestamp", n)?;
    let idx = read_vec::<u64>(&per_event, "event_index", n)?;
    let mut fields = fields::read(&per_event, &field_names, n)?.into_iter();
    let events = frames
        .into_iter()
        .enumerate()
        .map(|(i, frame)| {
            let k = npeaks[i] as usize;
            let col = |c: usize| cols[c].row(i).as_slice().unwrap()[..k].to_vec();
            EventRecord {
                timestamp: ts[i],
                event_index: idx[i],
                frame,
                peaks: Peaks {
                    fs: col(0),
                    ss: col(1),
                    total_intensity: col(2),
                    max_value: col(3),
                    npix: col(4),
                    snr: col(5),
                    sigma: col(6),
                },
                fields: fields.next().unwrap_or_default(),
            }
        })
        .collect();
    Ok((
        Batch {
            meta,
            writer_rank: attr(&file, "writer_rank")?,
            seq: attr(&file, "seq")?,
            events,
        },
        layout,
    ))
}
