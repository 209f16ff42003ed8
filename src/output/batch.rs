//! Batch and event records handed from the job layer to the serializer.

use ndarray::{Array2, ArrayD};

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
    /// Named per-event scalars; every event of a batch must carry the same names in the same order.
    pub scalars: Vec<(String, f64)>,
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
                scalars: vec![
                    (
                        "photon_energy_eV".into(),
                        9500.0 + (next() % 100) as f64 / 10.0,
                    ),
                    ("pulse_energy_mJ".into(), (next() % 1000) as f64 / 1000.0),
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
        },
        writer_rank: 0,
        seq: seed,
        events,
    }
}
