//! Messages between the roles of the job, and their binary encoding for MPI (postcard).
//! Roles on the same rank pass them by value; nothing here knows about MPI.

pub use crate::output::PixelType;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A role's global address: 0 is the coordinator, then the workers, then the writers.
pub type RoleId = u32;

/// Where one stream's datagram of an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub stream: u32,
    pub chunk: u32,
    pub offset: u64,
    pub size: u64,
}

/// One event to process: its key, index in the run and per-stream locations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventDesc {
    pub index: u64,
    pub timestamp: u64,
    pub parts: Vec<Part>,
    /// Live runs: when the coordinator found the event (ns since the epoch); 0 otherwise.
    pub seen_ns: u64,
}

/// A transition as every worker must see it: per-stream datagram bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionMsg {
    pub service: u8,
    pub timestamp: u64,
    pub per_stream: Vec<(u32, serde_bytes::ByteBuf)>,
}

/// A frame as carried between ranks: the HDF5 chunk the writer stores as it is, i.e. the
/// pixels after the job's compression filter (the pixels themselves with `none`). The worker
/// that made the frame compresses it, so uncompressed pixels never cross MPI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameMsg {
    pub pixel: PixelType,
    /// Axes of one frame: a slab's `(ss, fs)`, or an image's `(C, H, W)` / `(H, W)`.
    pub dims: Vec<u32>,
    /// An assembled image rather than the detector slab.
    pub image: bool,
    pub chunk: serde_bytes::ByteBuf,
}

impl FrameMsg {
    /// Compresses `pixels` (row-major over `dims`) into a frame message.
    pub fn compress(
        pixel: PixelType,
        dims: &[usize],
        image: bool,
        pixels: &[u8],
        compression: crate::output::Compression,
    ) -> std::io::Result<FrameMsg> {
        // The encoder's worst-case buffer is reused; the message gets only the chunk's bytes.
        let chunk = SCRATCH.with_borrow_mut(|buf| {
            let n = compression.encode_chunk_reusing(pixels, pixel.size(), buf)?;
            Ok::<_, std::io::Error>(buf[..n].to_vec())
        })?;
        Ok(FrameMsg {
            pixel,
            dims: dims.iter().map(|&d| d as u32).collect(),
            image,
            chunk: serde_bytes::ByteBuf::from(chunk),
        })
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One processed event on its way to a writer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordMsg {
    pub timestamp: u64,
    pub index: u64,
    pub frame: Option<FrameMsg>,
    /// fs, ss, total intensity, max pixel, npix, snr, sigma per peak.
    pub peaks: [Vec<f32>; 7],
    /// `hit`, `n_peaks` (when peak finding runs) and the selected data.
    pub fields: Vec<crate::output::Field>,
    /// The event's [`EventDesc::seen_ns`].
    pub seen_ns: u64,
}

/// Counts a worker keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStats {
    pub processed: u64,
    pub damaged: u64,
    pub hits: u64,
    pub peaks: u64,
    pub sent: u64,
    pub units: u64,
    /// Nanoseconds spent per stage: read, calibrate, peak find, compress.
    pub ns_read: u64,
    pub ns_calib: u64,
    pub ns_peaks: u64,
    pub ns_compress: u64,
}

/// Counts a writer keeps, per sink.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterStats {
    pub events: u64,
    pub batches: u64,
    pub ns_serialize: u64,
    pub ns_send: u64,
    /// Per sink: its name and counts.
    pub sinks: Vec<(String, crate::transport::SinkStats)>,
    /// Failures that stopped this writer's deliveries (the job exits non-zero).
    pub errors: Vec<String>,
    /// What went wrong without failing the job (an end-of-stream no consumer took).
    pub warnings: Vec<String>,
    /// Events received after a failure and not delivered anywhere.
    pub undelivered: u64,
    /// (selected field, events sent without it)
    pub missing: Vec<(String, u64)>,
    /// Live runs: latency of the events sent.
    pub latency: super::latency::Latency,
}

/// Everything the roles say to each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Msg {
    /// Worker → coordinator: give me work; carries the worker's counts so far.
    Ready { worker: RoleId, stats: WorkerStats },
    /// Coordinator → worker: transitions to apply first, files first needed here, events.
    Work {
        transitions: Vec<TransitionMsg>,
        files: Vec<(u32, u32, PathBuf)>,
        events: Vec<EventDesc>,
    },
    /// Coordinator → worker: the run is over after these transitions.
    End { transitions: Vec<TransitionMsg> },
    /// Worker → writer: processed events (needs one credit).
    Records {
        worker: RoleId,
        records: Vec<RecordMsg>,
    },
    /// Writer → worker: you may send `n` more Records messages.
    Credit { n: u32 },
    /// Worker → writer: no more records from me.
    WorkerDone { worker: RoleId },
    /// Worker → coordinator: final counts.
    WorkerFinal { worker: RoleId, stats: WorkerStats },
    /// Writer → coordinator: final counts.
    WriterDone { writer: RoleId, stats: WriterStats },
    /// Writer → coordinator: deliveries failed; hand out no more events.
    Stop { reason: String },
    /// Worker → coordinator, with the monitor on: peaks-per-event counts so far (bins of
    /// `monitor::state::PEAK_BINS`) and maybe a preview of a recent hit.
    WorkerTick {
        worker: RoleId,
        peaks: Vec<u64>,
        preview: Option<Box<crate::monitor::state::Preview>>,
    },
    /// Writer → coordinator, with the monitor on: counts so far and the sinks' state.
    WriterTick {
        writer: RoleId,
        stats: WriterStats,
        sinks: Vec<crate::serialize::SinkNow>,
    },
}

impl Msg {
    /// Bytes of frame chunks the message carries (to size its encoding in one allocation).
    pub fn frame_bytes(&self) -> usize {
        match self {
            Msg::Records { records, .. } => records
                .iter()
                .map(|r| {
                    r.frame.as_ref().map_or(0, |f| f.chunk.len())
                        + r.peaks.iter().map(|c| 5 + 4 * c.len()).sum::<usize>()
                })
                .sum(),
            _ => 0,
        }
    }
}

/// Encodes a message addressed to `to` for another rank, into one buffer sized up front so
/// frame chunks are copied once.
pub fn encode(to: RoleId, msg: &Msg) -> Result<Vec<u8>, postcard::Error> {
    let mut out = Vec::with_capacity(4096 + msg.frame_bytes());
    out.extend_from_slice(&to.to_le_bytes());
    postcard::serialize_with_flavor(msg, VecFlavor(out))
}

/// A postcard output appending to a `Vec` with `extend_from_slice` (one `memcpy` per byte
/// string, where `postcard::to_extend` goes byte by byte).
struct VecFlavor(Vec<u8>);

impl postcard::ser_flavors::Flavor for VecFlavor {
    type Output = Vec<u8>;

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// Decodes a message received from another rank: (addressee, message).
pub fn decode(bytes: &[u8]) -> Result<(RoleId, Msg), String> {
    let to = bytes
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or("message shorter than its 4-byte address")?;
    let msg = postcard::from_bytes(&bytes[4..]).map_err(|e| format!("undecodable message: {e}"))?;
    Ok((to, msg))
}
