//! Compression choices, chunk encoders producing the exact byte framing of the HDF5 filters that
//! `hdf5plugin` decodes (zstd 32015, bitshuffle 32008, deflate 1), and the in-process registration
//! of 32008 and 32015 with libhdf5 (so no plugin path is needed to write or read).

use std::cell::RefCell;
use std::ffi::{c_uint, c_void};
use std::fmt;
use std::str::FromStr;

use hdf5_metno_sys::h5::{H5allocate_memory, H5free_memory};
use hdf5_metno_sys::h5z::{H5Z_CLASS_T_VERS, H5Z_FLAG_REVERSE, H5Z_class2_t, H5Zregister};
use serde::{Deserialize, Serialize};

use super::bitshuffle::{self, BlockCodec, BlockEncoder};

/// HDF5 filter id of zstd (hdf5plugin `Zstd`).
pub const ZSTD_FILTER_ID: i32 = 32015;
/// HDF5 filter id of deflate (gzip), built into libhdf5.
pub const DEFLATE_FILTER_ID: i32 = 1;

/// Frame compression: each frame chunk goes through exactly one HDF5 filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(Default)]
pub enum Compression {
    /// No filter.
    None,
    /// Deflate (filter 1) at `level` 1-9.
    Gzip { level: u8 },
    /// Plain zstd (filter 32015), one frame per chunk carrying its content size.
    Zstd { level: i32 },
    /// Bitshuffle + LZ4 (filter 32008, `cd_values[4] = 2`), default block size.
    #[default]
    BitshuffleLz4,
    /// Bitshuffle + zstd (filter 32008, `cd_values[4] = 3`).
    BitshuffleZstd { level: i32 },
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => write!(f, "none"),
            Compression::Gzip { level } => write!(f, "gzip:{level}"),
            Compression::Zstd { level } => write!(f, "zstd:{level}"),
            Compression::BitshuffleLz4 => write!(f, "bitshuffle_lz4"),
            Compression::BitshuffleZstd { level } => write!(f, "bitshuffle_zstd:{level}"),
        }
    }
}

impl FromStr for Compression {
    type Err = String;

    /// Parses `none`, `gzip[:L]`, `zstd[:L]`, `bitshuffle_lz4`, `bitshuffle_zstd[:L]`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, level) = match s.split_once(':') {
            Some((n, l)) => (
                n,
                Some(
                    l.parse::<i32>()
                        .map_err(|_| format!("bad compression level in {s:?}"))?,
                ),
            ),
            None => (s, None),
        };
        let c = match name {
            "none" => Compression::None,
            "gzip" => {
                let level = level.unwrap_or(4);
                if !(0..=9).contains(&level) {
                    return Err(format!("gzip level must be 0-9, got {level}"));
                }
                Compression::Gzip { level: level as u8 }
            }
            "zstd" => Compression::Zstd {
                level: level.unwrap_or(3),
            },
            "bitshuffle_lz4" | "bslz4" if level.is_none() => Compression::BitshuffleLz4,
            "bitshuffle_zstd" | "bszstd" => Compression::BitshuffleZstd {
                level: level.unwrap_or(3),
            },
            _ => {
                return Err(format!(
                    "unknown compression {s:?} (none, gzip[:L], zstd[:L], bitshuffle_lz4, bitshuffle_zstd[:L])"
                ));
            }
        };
        Ok(c)
    }
}

impl Compression {
    /// The filter id and complete `cd_values` stored in the dataset's pipeline for elements of
    /// `elem_size` bytes, or `None` without compression.
    pub fn pipeline(&self, elem_size: usize) -> Option<(i32, Vec<c_uint>)> {
        let (major, minor) = bitshuffle::VERSION;
        let es = elem_size as c_uint;
        match *self {
            Compression::None => None,
            Compression::Gzip { level } => Some((DEFLATE_FILTER_ID, vec![level as c_uint])),
            Compression::Zstd { level } => Some((ZSTD_FILTER_ID, vec![level as c_uint])),
            Compression::BitshuffleLz4 => Some((
                bitshuffle::FILTER_ID,
                vec![major, minor, es, 0, bitshuffle::COMPRESS_LZ4],
            )),
            Compression::BitshuffleZstd { level } => Some((
                bitshuffle::FILTER_ID,
                vec![
                    major,
                    minor,
                    es,
                    0,
                    bitshuffle::COMPRESS_ZSTD,
                    level as c_uint,
                ],
            )),
        }
    }

    /// Appends the filtered form of one chunk to `out` (plain copy without compression).
    pub fn encode_chunk(
        &self,
        input: &[u8],
        elem_size: usize,
        out: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        ENCODERS.with(|e| e.borrow_mut().encode(*self, input, elem_size, out))
    }

    /// Writes the filtered form of one chunk at the start of `buf` and returns its length.
    /// `buf` is a reused buffer: it keeps its length between calls (bytes past the returned
    /// length are stale), so it is not cleared and refilled for every chunk.
    pub fn encode_chunk_reusing(
        &self,
        input: &[u8],
        elem_size: usize,
        buf: &mut Vec<u8>,
    ) -> std::io::Result<usize> {
        let codec = match *self {
            Compression::BitshuffleLz4 => BlockCodec::Lz4,
            Compression::BitshuffleZstd { level } => BlockCodec::Zstd(level),
            _ => {
                buf.clear();
                self.encode_chunk(input, elem_size, buf)?;
                return Ok(buf.len());
            }
        };
        let need = bitshuffle::max_chunk_len(input.len(), elem_size, 0, codec);
        if buf.len() < need {
            buf.resize(need, 0);
        }
        ENCODERS.with(|e| {
            e.borrow_mut()
                .bitshuffle
                .compress_chunk_into(input, elem_size, 0, codec, buf)
        })
    }
}

thread_local! {
    static ENCODERS: RefCell<Encoders> = RefCell::new(Encoders::default());
}

/// Per-thread reusable compressor state.
#[derive(Default)]
struct Encoders {
    bitshuffle: BlockEncoder,
    zstd: Option<(i32, zstd::bulk::Compressor<'static>)>,
    deflate: Option<(u8, flate2::Compress)>,
}

impl Encoders {
    fn encode(
        &mut self,
        c: Compression,
        input: &[u8],
        elem_size: usize,
        out: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        match c {
            Compression::None => out.extend_from_slice(input),
            Compression::BitshuffleLz4 => {
                self.bitshuffle
                    .compress_chunk(input, elem_size, 0, BlockCodec::Lz4, out)?
            }
            Compression::BitshuffleZstd { level } => {
                self.bitshuffle
                    .compress_chunk(input, elem_size, 0, BlockCodec::Zstd(level), out)?
            }
            Compression::Zstd { level } => {
                if self.zstd.as_ref().map(|z| z.0) != Some(level) {
                    let mut z = zstd::bulk::Compressor::new(level)?;
                    z.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(true))?;
                    self.zstd = Some((level, z));
                }
                let z = &mut self.zstd.as_mut().unwrap().1;
                let at = out.len();
                out.resize(at + zstd::zstd_safe::compress_bound(input.len()), 0);
                let k = z.compress_to_buffer(input, &mut out[at..])?;
                out.truncate(at + k);
            }
            Compression::Gzip { level } => {
                if self.deflate.as_ref().map(|d| d.0) != Some(level) {
                    self.deflate = Some((
                        level,
                        flate2::Compress::new(flate2::Compression::new(level.into()), true),
                    ));
                }
                let d = &mut self.deflate.as_mut().unwrap().1;
                d.reset();
                out.reserve(input.len() + input.len() / 1000 + 64);
                loop {
                    let consumed = d.total_in() as usize;
                    let status = d
                        .compress_vec(&input[consumed..], out, flate2::FlushCompress::Finish)
                        .map_err(std::io::Error::other)?;
                    if status == flate2::Status::StreamEnd {
                        break;
                    }
                    out.reserve(out.capacity().max(4096));
                }
            }
        }
        Ok(())
    }
}

/// Decodes one chunk stored with filter `id` and `cd_values` into `out` (cleared first).
/// Used by the in-process filter callbacks and by tests.
pub fn decode_chunk(
    id: i32,
    cd_values: &[c_uint],
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    match id {
        ZSTD_FILTER_ID => {
            let size = zstd::zstd_safe::get_frame_content_size(input)
                .map_err(|e| format!("zstd frame header: {e:?}"))?
                .ok_or("zstd frame does not record its content size")?;
            out.clear();
            out.resize(size as usize, 0);
            let k =
                zstd::bulk::decompress_to_buffer(input, out).map_err(|e| format!("zstd: {e}"))?;
            if k as u64 != size {
                return Err(format!(
                    "zstd frame decoded to {k} bytes, header says {size}"
                ));
            }
            Ok(())
        }
        bitshuffle::FILTER_ID => {
            if cd_values.len() < 3 {
                return Err("bitshuffle filter needs at least 3 cd_values".into());
            }
            let codec = match cd_values.get(4).copied() {
                Some(bitshuffle::COMPRESS_LZ4) => BlockCodec::Lz4,
                Some(bitshuffle::COMPRESS_ZSTD) => BlockCodec::Zstd(0),
                other => return Err(format!("bitshuffle compression {other:?} not supported")),
            };
            bitshuffle::decompress_chunk(input, cd_values[2] as usize, codec, out)
                .map_err(|e| e.to_string())
        }
        _ => Err(format!("filter {id} not handled in process")),
    }
}

fn encode_with_cd(id: i32, cd: &[c_uint], input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let c = match id {
        ZSTD_FILTER_ID => Compression::Zstd {
            level: cd.first().map(|&l| l as i32).unwrap_or(3).clamp(1, 22),
        },
        bitshuffle::FILTER_ID => {
            let es = *cd
                .get(2)
                .ok_or("bitshuffle filter needs cd_values[2] (element size)")?
                as usize;
            let block = cd.get(3).copied().unwrap_or(0) as usize;
            let codec = match cd.get(4).copied() {
                Some(bitshuffle::COMPRESS_LZ4) => BlockCodec::Lz4,
                Some(bitshuffle::COMPRESS_ZSTD) => {
                    BlockCodec::Zstd(cd.get(5).map(|&l| l as i32).unwrap_or(3))
                }
                other => return Err(format!("bitshuffle compression {other:?} not supported")),
            };
            if es == 0 || !input.len().is_multiple_of(es) || !block.is_multiple_of(8) {
                return Err("bitshuffle: bad element or block size".into());
            }
            return ENCODERS.with(|e| {
                e.borrow_mut()
                    .bitshuffle
                    .compress_chunk(input, es, block, codec, out)
                    .map_err(|e| e.to_string())
            });
        }
        _ => return Err(format!("filter {id} not handled in process")),
    };
    c.encode_chunk(input, 1, out).map_err(|e| e.to_string())
}

/// The HDF5 filter callback shared by 32008 and 32015 (`H5Z_func_t`).
unsafe fn filter_impl(
    id: i32,
    flags: c_uint,
    cd_nelmts: usize,
    cd_values: *const c_uint,
    nbytes: usize,
    buf_size: *mut usize,
    buf: *mut *mut c_void,
) -> usize {
    let result = std::panic::catch_unwind(|| {
        // SAFETY: HDF5 passes valid pointers for the lengths it gives.
        let cd = if cd_nelmts == 0 || cd_values.is_null() {
            &[][..]
        } else {
            unsafe { std::slice::from_raw_parts(cd_values, cd_nelmts) }
        };
        let input = unsafe { std::slice::from_raw_parts(*buf as *const u8, nbytes) };
        let mut out = Vec::new();
        let r = if flags & H5Z_FLAG_REVERSE != 0 {
            decode_chunk(id, cd, input, &mut out)
        } else {
            encode_with_cd(id, cd, input, &mut out)
        };
        r.map(|_| out)
    });
    let out = match result {
        Ok(Ok(out)) => out,
        _ => return 0,
    };
    unsafe {
        let new = H5allocate_memory(out.len().max(1), 0) as *mut u8;
        if new.is_null() {
            return 0;
        }
        std::ptr::copy_nonoverlapping(out.as_ptr(), new, out.len());
        H5free_memory(*buf);
        *buf = new as *mut c_void;
        *buf_size = out.len().max(1);
    }
    out.len()
}

unsafe extern "C" fn bitshuffle_filter(
    flags: c_uint,
    cd_nelmts: usize,
    cd_values: *const c_uint,
    nbytes: usize,
    buf_size: *mut usize,
    buf: *mut *mut c_void,
) -> usize {
    unsafe {
        filter_impl(
            bitshuffle::FILTER_ID,
            flags,
            cd_nelmts,
            cd_values,
            nbytes,
            buf_size,
            buf,
        )
    }
}

unsafe extern "C" fn zstd_filter(
    flags: c_uint,
    cd_nelmts: usize,
    cd_values: *const c_uint,
    nbytes: usize,
    buf_size: *mut usize,
    buf: *mut *mut c_void,
) -> usize {
    unsafe {
        filter_impl(
            ZSTD_FILTER_ID,
            flags,
            cd_nelmts,
            cd_values,
            nbytes,
            buf_size,
            buf,
        )
    }
}

/// Registers the bitshuffle (32008) and zstd (32015) filters with libhdf5 in this process
/// (idempotent). Chunks written through HDF5's own pipeline then carry exactly the framing
/// `hdf5plugin` decodes, and this process can read such files without `HDF5_PLUGIN_PATH`.
pub fn register_filters() -> Result<(), String> {
    static ONCE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        hdf5::sync::sync(|| {
            for (id, name, f) in [
                (
                    bitshuffle::FILTER_ID,
                    c"bitshuffle; lclstreamer",
                    bitshuffle_filter as unsafe extern "C" fn(_, _, _, _, _, _) -> _,
                ),
                (ZSTD_FILTER_ID, c"zstd; lclstreamer", zstd_filter),
            ] {
                let class = H5Z_class2_t {
                    version: H5Z_CLASS_T_VERS as _,
                    id,
                    encoder_present: 1,
                    decoder_present: 1,
                    name: name.as_ptr(),
                    can_apply: None,
                    set_local: None,
                    filter: Some(f),
                };
                // SAFETY: the class struct is copied by H5Zregister; name is 'static.
                if unsafe { H5Zregister(&class as *const _ as *const c_void) } < 0 {
                    return Err(format!("H5Zregister failed for filter {id}"));
                }
            }
            Ok(())
        })
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        for s in [
            "none",
            "gzip:4",
            "zstd:3",
            "bitshuffle_lz4",
            "bitshuffle_zstd:5",
        ] {
            let c: Compression = s.parse().unwrap();
            assert_eq!(c.to_string(), s);
        }
        assert_eq!(
            "gzip".parse::<Compression>().unwrap(),
            Compression::Gzip { level: 4 }
        );
        assert!("lzma".parse::<Compression>().is_err());
        assert!("gzip:12".parse::<Compression>().is_err());
    }

    #[test]
    fn zstd_chunks_record_content_size_and_decode() {
        let input: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut out = Vec::new();
        Compression::Zstd { level: 3 }
            .encode_chunk(&input, 4, &mut out)
            .unwrap();
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&out).unwrap(),
            Some(input.len() as u64)
        );
        assert!(out.len() < input.len() / 4);
        let mut back = Vec::new();
        decode_chunk(ZSTD_FILTER_ID, &[3], &out, &mut back).unwrap();
        assert_eq!(back, input);
    }

    #[test]
    fn gzip_chunks_are_zlib_streams() {
        let input: Vec<u8> = (0..50_000u32).map(|i| (i % 17) as u8).collect();
        let mut out = Vec::new();
        Compression::Gzip { level: 4 }
            .encode_chunk(&input, 1, &mut out)
            .unwrap();
        let mut d = flate2::Decompress::new(true);
        let mut back = Vec::with_capacity(input.len());
        d.decompress_vec(&out, &mut back, flate2::FlushDecompress::Finish)
            .unwrap();
        assert_eq!(back, input);
    }
}
