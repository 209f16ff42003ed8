//! Batch and event records handed from the job layer to the serializer.

use ndarray::{Array2, ArrayD};
use serde::{Deserialize, Serialize};

/// One detector frame in slab layout `(ss, fs)` (e.g. 5632 x 384 for the ePix10k2M), or an
/// assembled image `(C, H, W)` / `(H, W)` for AI batches.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Calibrated frame.
    F32(Array2<f32>),
    /// Raw ADU frame.
    U16(Array2<u16>),
    /// Assembled image, float32.
    ImageF32(ArrayD<f32>),
    /// Assembled image, float16.
    ImageF16(ArrayD<half::f16>),
}

impl Frame {
    /// `(ss, fs)` of a slab frame; an image's last two axes `(H, W)`.
    pub fn shape(&self) -> (usize, usize) {
        let d = self.dims();
        (d[d.len() - 2], d[d.len() - 1])
    }

    /// Every axis of one event's frame.
    pub fn dims(&self) -> &[usize] {
        match self {
            Frame::F32(a) => a.shape(),
            Frame::U16(a) => a.shape(),
            Frame::ImageF32(a) => a.shape(),
            Frame::ImageF16(a) => a.shape(),
        }
    }

    /// True for assembled images.
    pub fn is_image(&self) -> bool {
        matches!(self, Frame::ImageF32(_) | Frame::ImageF16(_))
    }

    /// Bytes per pixel.
    pub fn elem_size(&self) -> usize {
        match self {
            Frame::F32(_) | Frame::ImageF32(_) => 4,
            Frame::U16(_) | Frame::ImageF16(_) => 2,
        }
    }

    /// The pixels as bytes in row-major order, or `None` if the array is not contiguous.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        fn bytes<T>(s: &[T]) -> &[u8] {
            // SAFETY: f32/u16/f16 have no padding; any byte pattern is a valid u8.
            unsafe { std::slice::from_raw_parts(s.as_ptr() as *const u8, std::mem::size_of_val(s)) }
        }
        match self {
            Frame::F32(a) => a.as_slice().map(bytes),
            Frame::U16(a) => a.as_slice().map(bytes),
            Frame::ImageF32(a) => a.as_slice().map(bytes),
            Frame::ImageF16(a) => a.as_slice().map(bytes),
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Frame::F32(_) | Frame::ImageF32(_) => "float32",
            Frame::U16(_) => "uint16",
            Frame::ImageF16(_) => "float16",
        }
    }
}

/// Peaks of one event as columns of equal length, CrystFEL/Cheetah conventions: `fs`, `ss` in
/// slab pixel-index coordinates (centre of pixel i at i).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Peaks {
    pub fs: Vec<f32>,
    pub ss: Vec<f32>,
    pub total_intensity: Vec<f32>,
    pub max_value: Vec<f32>,
    pub npix: Vec<f32>,
    pub snr: Vec<f32>,
    /// Local background sigma.
    pub sigma: Vec<f32>,
}

impl Peaks {
    /// Number of peaks (length of every column).
    pub fn len(&self) -> usize {
        self.fs.len()
    }

    /// True when there are no peaks.
    pub fn is_empty(&self) -> bool {
        self.fs.is_empty()
    }

    /// The columns in dataset order with their CXI names.
    pub fn columns(&self) -> [(&'static str, &[f32]); 7] {
        [
            ("peakXPosRaw", &self.fs),
            ("peakYPosRaw", &self.ss),
            ("peakTotalIntensity", &self.total_intensity),
            ("peakMaximumValue", &self.max_value),
            ("peakNPixels", &self.npix),
            ("peakSNR", &self.snr),
            ("peakSigma", &self.sigma),
        ]
    }

    /// Appends one peak.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        fs: f32,
        ss: f32,
        total: f32,
        max: f32,
        npix: f32,
        snr: f32,
        sigma: f32,
    ) {
        self.fs.push(fs);
        self.ss.push(ss);
        self.total_intensity.push(total);
        self.max_value.push(max);
        self.npix.push(npix);
        self.snr.push(snr);
        self.sigma.push(sigma);
    }
}

/// One processed event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// `sec << 32 | nsec`.
    pub timestamp: u64,
    /// Index of the event in the run.
    pub event_index: u64,
    pub frame: Option<Frame>,
    pub peaks: Peaks,
    /// Named per-event values (`hit`, `n_peaks`, selected data); every event of a batch must
    /// carry the same names, in the same order, of the same kind.
    pub fields: Vec<Field>,
}

impl EventRecord {
    /// The value of field `name` as f64, when it is present and a numeric scalar.
    pub fn scalar(&self, name: &str) -> Option<f64> {
        self.fields
            .iter()
            .find(|f| f.name == name && f.presence != Presence::Missing)
            .and_then(|f| f.value.as_f64())
    }

    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// Element type of a numeric value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dtype {
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F32,
    F64,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::U8 | Dtype::I8 => 1,
            Dtype::U16 | Dtype::I16 => 2,
            Dtype::U32 | Dtype::I32 | Dtype::F32 => 4,
            Dtype::U64 | Dtype::I64 | Dtype::F64 => 8,
        }
    }

    /// numpy's name of the type.
    pub fn numpy(self) -> &'static str {
        match self {
            Dtype::U8 => "uint8",
            Dtype::U16 => "uint16",
            Dtype::U32 => "uint32",
            Dtype::U64 => "uint64",
            Dtype::I8 => "int8",
            Dtype::I16 => "int16",
            Dtype::I32 => "int32",
            Dtype::I64 => "int64",
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
        }
    }

    /// The little-endian bytes of one element equal to `v` (saturating for integers).
    pub fn encode(self, v: f64) -> Vec<u8> {
        match self {
            Dtype::U8 => vec![v as u8],
            Dtype::U16 => (v as u16).to_le_bytes().to_vec(),
            Dtype::U32 => (v as u32).to_le_bytes().to_vec(),
            Dtype::U64 => (v as u64).to_le_bytes().to_vec(),
            Dtype::I8 => (v as i8).to_le_bytes().to_vec(),
            Dtype::I16 => (v as i16).to_le_bytes().to_vec(),
            Dtype::I32 => (v as i32).to_le_bytes().to_vec(),
            Dtype::I64 => (v as i64).to_le_bytes().to_vec(),
            Dtype::F32 => (v as f32).to_le_bytes().to_vec(),
            Dtype::F64 => v.to_le_bytes().to_vec(),
        }
    }

    /// Element `b` (little-endian bytes of this type) as f64.
    pub fn decode(self, b: &[u8]) -> f64 {
        let a = |n: usize| -> [u8; 8] {
            let mut x = [0u8; 8];
            x[..n].copy_from_slice(&b[..n]);
            x
        };
        match self {
            Dtype::U8 => f64::from(b[0]),
            Dtype::U16 => f64::from(u16::from_le_bytes([b[0], b[1]])),
            Dtype::U32 => f64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            Dtype::U64 => u64::from_le_bytes(a(8)) as f64,
            Dtype::I8 => f64::from(b[0] as i8),
            Dtype::I16 => f64::from(i16::from_le_bytes([b[0], b[1]])),
            Dtype::I32 => f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            Dtype::I64 => i64::from_le_bytes(a(8)) as f64,
            Dtype::F32 => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            Dtype::F64 => f64::from_le_bytes(a(8)),
        }
    }
}

/// One value of a field: numbers of one type with a shape (empty for a scalar), or a string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Num {
        dtype: Dtype,
        shape: Vec<u32>,
        /// Little-endian elements in row-major order.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    Str(String),
}

impl Value {
    /// A numeric scalar.
    pub fn scalar(dtype: Dtype, v: f64) -> Value {
        Value::Num {
            dtype,
            shape: Vec::new(),
            data: dtype.encode(v),
        }
    }

    /// The value of a numeric scalar as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Num { dtype, shape, data } if shape.is_empty() && data.len() == dtype.size() => {
                Some(dtype.decode(data))
            }
            _ => None,
        }
    }

    /// The elements of a numeric value as f64, row-major.
    pub fn to_f64s(&self) -> Vec<f64> {
        match self {
            Value::Num { dtype, data, .. } => data
                .chunks_exact(dtype.size())
                .map(|b| dtype.decode(b))
                .collect(),
            Value::Str(_) => Vec::new(),
        }
    }

    /// `numpy` type name, or `str`.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Num { dtype, .. } => dtype.numpy(),
            Value::Str(_) => "str",
        }
    }

    /// The shape (empty for scalars and strings).
    pub fn shape(&self) -> &[u32] {
        match self {
            Value::Num { shape, .. } => shape,
            Value::Str(_) => &[],
        }
    }
}

/// Whether a field's value was found for the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Presence {
    /// Computed for every event (`hit`, `n_peaks`): no presence flag is written.
    Always,
    /// Found (in the event, or held from a transition).
    Present,
    /// Not found: the value is the field's fill value.
    Missing,
}

/// One named per-event value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    pub value: Value,
    pub presence: Presence,
    /// Stored flat with per-event offsets even when every event of a batch has one shape.
    pub ragged: bool,
}

impl Field {
    /// A computed f64 scalar present in every event.
    pub fn always(name: &str, v: f64) -> Field {
        Field {
            name: name.into(),
            value: Value::scalar(Dtype::F64, v),
            presence: Presence::Always,
            ragged: false,
        }
    }
}

/// Run-level metadata written as attributes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunMeta {
    pub experiment: String,
    pub run: u32,
    /// Detector / data source name, e.g. `epix10k2M`.
    pub source: String,
    pub software_version: String,
    /// Segment ids of the detector stacked in the frames' slab, in slab order.
    pub segments: Vec<u32>,
    /// Processing parameters as `(name, value)` string pairs.
    pub parameters: Vec<(String, String)>,
    /// Run-level selected values (configuration), written as attributes `data.<name>`.
    pub values: Vec<(String, Value)>,
    /// CXI layout: `(field name, path under /LCLS)` further names of a field's dataset, e.g.
    /// `("e_photon", "photon_energy_eV")`.
    pub cxi_aliases: Vec<(String, String)>,
}

/// A batch of events from one writer, serialised into one HDF5 image.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub meta: RunMeta,
    /// Rank of the writer that produced the batch.
    pub writer_rank: u32,
    /// Sequence number of the batch within that writer's stream (0, 1, 2, ...).
    pub seq: u64,
    pub events: Vec<EventRecord>,
}

/// Pixel type of [`example_batch`] frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ExampleKind {
    /// Calibrated float32 (noise around 0 plus Bragg spots), optionally rounded to `quantum`.
    Calib { quantum: Option<f32> },
    /// Raw uint16 ADU (pedestal around 1500 plus noise and spots).
    Raw,
    /// No frames (peaks and scalars only).
    NoFrame,
}

/// A deterministic batch of `n` events with `(ss, fs)` frames, a few peaks per event and two
/// scalars, for tests, benchmarks and demos.
pub fn example_batch(n: usize, ss: usize, fs: usize, kind: ExampleKind, seed: u64) -> Batch {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let gauss = move |next: &mut dyn FnMut() -> u64| {
        let u: f32 = (0..4)
            .map(|_| (next() >> 40) as f32 / (1u64 << 24) as f32)
            .sum();
        (u - 2.0) * 1.73
    };
    let events = (0..n)
        .map(|i| {
            let npeaks = (next() % 12) as usize;
            let mut peaks = Peaks::default();
            let mut spots = Vec::new();
            for _ in 0..npeaks {
                let (y, x) = ((next() % ss as u64) as usize, (next() % fs as u64) as usize);
                let amp = 50.0 + (next() % 500) as f32;
                spots.push((y, x, amp));
                let snr = amp / 3.0;
                peaks.push(
                    x as f32 + 0.25,
                    y as f32 - 0.5,
                    amp * 2.5,
                    amp,
                    4.0 + (next() % 6) as f32,
                    snr,
                    3.0,
                );
            }
            let frame = match kind {
                ExampleKind::NoFrame => None,
                ExampleKind::Calib { quantum } => {
                    let mut a = Array2::<f32>::from_shape_fn((ss, fs), |_| 3.0 * gauss(&mut next));
                    for &(y, x, amp) in &spots {
                        a[(y, x)] += amp;
                    }
                    if let Some(q) = quantum {
                        a.mapv_inplace(|v| (v / q).round() * q);
                    }
                    Some(Frame::F32(a))
                }
                ExampleKind::Raw => {
                    let mut a = Array2::<u16>::from_shape_fn((ss, fs), |_| {
                        (1500.0 + 8.0 * gauss(&mut next)) as u16
                    });
                    for &(y, x, amp) in &spots {
                        a[(y, x)] = a[(y, x)].saturating_add(amp as u16);
                    }
                    Some(Frame::U16(a))
                }
            };
            EventRecord {
                timestamp: ((1_700_000_000 + i as u64) << 32) | (next() % 1_000_000_000),
                event_index: seed * 100_000 + i as u64,
                frame,
                peaks,
                fields: vec![
                    Field::always("photon_energy_eV", 9500.0 + (next() % 100) as f64 / 10.0),
                    Field::always("pulse_energy_mJ", (next() % 1000) as f64 / 1000.0),
                ],
            }
        })
        .collect();
    Batch {
        meta: RunMeta {
            experiment: "mfxp1001121".into(),
            run: 12,
            source: "epix10k2M".into(),
            software_version: env!("CARGO_PKG_VERSION").into(),
            segments: (0..16).collect(),
            parameters: vec![
                ("adc_threshold".into(), "10".into()),
                ("min_snr".into(), "5".into()),
            ],
            values: Vec::new(),
            cxi_aliases: Vec::new(),
        },
        writer_rank: 0,
        seq: seed,
        events,
    }
}
