//! An event's frame as the event formats read it: the pixels an event carries itself (tests,
//! tools), or the chunk a worker compressed with the job's `output.compression` (the job).
//! Formats that ship bitshuffle-LZ4 take a worker's chunk as it is when its framing fits,
//! and decompress only what they must.

use crate::output::bitshuffle::{self, BlockCodec, BlockEncoder};
use crate::output::filters::{self, Compression};
use crate::output::{EventRecord, Frame, OutputError, PixelType, StoredFrames};

/// Where a frame's bytes are.
#[derive(Debug, Clone, Copy)]
pub enum FrameData<'a> {
    /// Row-major little-endian pixels.
    Raw(&'a [u8]),
    /// One HDF5 chunk made with `compression`.
    Stored {
        chunk: &'a [u8],
        compression: Compression,
    },
}

/// One event's frame.
#[derive(Debug, Clone, Copy)]
pub struct FrameRef<'a> {
    pub pixel: PixelType,
    /// Every axis: `(ss, fs)`, or an image's `(C, H, W)` / `(H, W)`.
    pub dims: &'a [usize],
    pub data: FrameData<'a>,
}

fn bad(m: String) -> OutputError {
    OutputError::InvalidBatch(m)
}

impl<'a> FrameRef<'a> {
    /// Event `i`'s frame: its own, else chunk `i` of `stored` (made with `compression`).
    pub fn of(
        ev: &'a EventRecord,
        i: usize,
        stored: Option<&'a StoredFrames<'a>>,
        compression: Compression,
    ) -> Result<FrameRef<'a>, OutputError> {
        if let Some(f) = &ev.frame {
            let pixel = match f {
                Frame::F32(_) | Frame::ImageF32(_) => PixelType::F32,
                Frame::U16(_) => PixelType::U16,
                Frame::ImageF16(_) => PixelType::F16,
            };
            let bytes = f
                .as_bytes()
                .ok_or_else(|| bad(format!("event {i}: frame array is not contiguous")))?;
            return Ok(FrameRef {
                pixel,
                dims: f.dims(),
                data: FrameData::Raw(bytes),
            });
        }
        let s = stored.ok_or_else(|| {
            bad(format!(
                "event {} has no frame: the event formats send one frame per message \
                 (processing.send must not be none)",
                ev.event_index
            ))
        })?;
        let chunk = s.chunks.get(i).ok_or_else(|| {
            bad(format!(
                "{} frame chunks for event {i} of the batch",
                s.chunks.len()
            ))
        })?;
        Ok(FrameRef {
            pixel: s.pixel,
            dims: &s.dims,
            data: FrameData::Stored { chunk, compression },
        })
    }

    /// `(rows, columns)`: the last axis, and every other axis stacked into rows (an image's
    /// channels one below the other, as the slab stacks its segments).
    pub fn shape2(&self) -> (usize, usize) {
        let fs = self.dims.last().copied().unwrap_or(0);
        (self.dims.iter().rev().skip(1).product(), fs)
    }

    /// Bytes of the uncompressed frame.
    pub fn raw_len(&self) -> usize {
        self.dims.iter().product::<usize>() * self.pixel.size()
    }

    /// The pixels, decompressed into `scratch` when stored compressed.
    pub fn raw<'s>(&'s self, scratch: &'s mut Vec<u8>) -> Result<&'s [u8], OutputError> {
        let es = self.pixel.size();
        let (chunk, compression) = match self.data {
            FrameData::Raw(b) => return self.checked(b),
            FrameData::Stored { chunk, compression } => (chunk, compression),
        };
        let err = |e: String| bad(format!("frame chunk ({compression}): {e}"));
        match compression {
            Compression::None => return self.checked(chunk),
            Compression::BitshuffleLz4 => {
                bitshuffle::decompress_chunk(chunk, es, BlockCodec::Lz4, scratch)
                    .map_err(|e| err(e.to_string()))?
            }
            Compression::BitshuffleZstd { .. } => {
                bitshuffle::decompress_chunk(chunk, es, BlockCodec::Zstd(0), scratch)
                    .map_err(|e| err(e.to_string()))?
            }
            Compression::Zstd { .. } => {
                filters::decode_chunk(filters::ZSTD_FILTER_ID, &[], chunk, scratch).map_err(err)?
            }
            Compression::Gzip { .. } => {
                scratch.clear();
                scratch.reserve(self.raw_len());
                flate2::Decompress::new(true)
                    .decompress_vec(chunk, scratch, flate2::FlushDecompress::Finish)
                    .map_err(|e| err(e.to_string()))?;
            }
        }
        self.checked(scratch)
    }

    fn checked<'s>(&self, b: &'s [u8]) -> Result<&'s [u8], OutputError> {
        if b.len() != self.raw_len() {
            return Err(bad(format!(
                "frame holds {} bytes, a {:?} {} frame is {}",
                b.len(),
                self.dims,
                self.pixel.kind(),
                self.raw_len()
            )));
        }
        Ok(b)
    }

    /// The worker's chunk when it already is a framed bitshuffle-LZ4 chunk (HDF5 filter 32008
    /// framing: u64 BE bytes, u32 BE block bytes, then the blocks) of `block_elems` elements
    /// per block (0: the bitshuffle default).
    pub fn stored_bslz4(&self, block_elems: usize) -> Option<&'a [u8]> {
        let es = self.pixel.size();
        let block = if block_elems == 0 {
            bitshuffle::default_block_elems(es)
        } else {
            block_elems
        };
        match self.data {
            FrameData::Stored {
                chunk,
                compression: Compression::BitshuffleLz4,
            } if chunk.len() >= 12
                && u64::from_be_bytes(chunk[..8].try_into().expect("8 bytes")) as usize
                    == self.raw_len()
                && u32::from_be_bytes(chunk[8..12].try_into().expect("4 bytes")) as usize
                    == block * es =>
            {
                Some(chunk)
            }
            _ => None,
        }
    }

    /// The frame as a framed bitshuffle-LZ4 chunk of `block_elems` elements per block: the
    /// worker's chunk as it is when [`Self::stored_bslz4`], else the pixels (decompressed and)
    /// compressed into `out`.
    pub fn bslz4<'s>(
        &'s self,
        block_elems: usize,
        enc: &mut BlockEncoder,
        scratch: &'s mut Vec<u8>,
        out: &'s mut Vec<u8>,
    ) -> Result<&'s [u8], OutputError> {
        if let Some(chunk) = self.stored_bslz4(block_elems) {
            return Ok(chunk);
        }
        let raw = self.raw(scratch)?;
        compress_bslz4(raw, self.pixel.size(), block_elems, enc, out)?;
        Ok(out)
    }
}

/// `raw` as a framed bitshuffle-LZ4 chunk in `out` (cleared first).
pub fn compress_bslz4(
    raw: &[u8],
    elem_size: usize,
    block_elems: usize,
    enc: &mut BlockEncoder,
    out: &mut Vec<u8>,
) -> Result<(), OutputError> {
    out.clear();
    enc.compress_chunk(raw, elem_size, block_elems, BlockCodec::Lz4, out)?;
    Ok(())
}

/// Bytes of little-endian `pixel` values as f64, summed.
pub fn pixel_sum(pixel: PixelType, raw: &[u8]) -> f64 {
    match pixel {
        PixelType::F32 => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")) as f64)
            .sum(),
        PixelType::U16 => raw
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes(b.try_into().expect("2 bytes")) as f64)
            .sum(),
        PixelType::F16 => raw
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes(b.try_into().expect("2 bytes")).to_f64())
            .sum(),
    }
}
