//! Bitshuffle transform and the HDF5 bitshuffle filter (id 32008) chunk framing.
//!
//! The transform matches `kiyo-masui/bitshuffle` (`bshuf_trans_bit_elem`): a block of `n`
//! elements (`n % 8 == 0`) of `elem_size` bytes becomes `8 * elem_size` bit rows of `n / 8`
//! bytes; row `8 * j + k` holds bit `k` of byte `j` of every element, element `i` at byte
//! `i / 8`, bit `i % 8`.
//!
//! Compressed chunk framing (filter `cd_values[4]` = 2 for LZ4, 3 for zstd): a 12-byte header
//! (u64 BE uncompressed bytes, u32 BE block size in bytes), then per block a u32 BE compressed
//! length and the compressed bit rows; the last partial block is trimmed to a multiple of 8
//! elements and the `(n % 8) * elem_size` leftover bytes are copied verbatim.

use thiserror::Error;

/// Target block size in bytes used by bitshuffle's automatic block size.
pub const TARGET_BLOCK_BYTES: usize = 8192;
/// Filter id registered with the HDF Group for bitshuffle.
pub const FILTER_ID: i32 = 32008;
/// `cd_values[4]` for LZ4 compression.
pub const COMPRESS_LZ4: u32 = 2;
/// `cd_values[4]` for zstd compression.
pub const COMPRESS_ZSTD: u32 = 3;
/// Bitshuffle version recorded in `cd_values[0..2]` (what hdf5plugin 7 stores).
pub const VERSION: (u32, u32) = (0, 5);

/// Errors decoding a bitshuffle chunk.
#[derive(Debug, Error)]
pub enum BitshuffleError {
    #[error("bitshuffle chunk truncated: {0}")]
    Truncated(&'static str),
    #[error("bitshuffle chunk header declares {declared} bytes, expected {expected}")]
    SizeMismatch { declared: usize, expected: usize },
    #[error("bitshuffle block size {0} bytes is not a multiple of 8 elements")]
    BadBlockSize(usize),
    #[error("element size must be > 0")]
    ZeroElemSize,
    #[error("lz4 block: {0}")]
    Lz4(String),
    #[error("zstd block: {0}")]
    Zstd(String),
}

/// Block size in elements that bitshuffle picks when the user passes 0.
pub fn default_block_elems(elem_size: usize) -> usize {
    ((TARGET_BLOCK_BYTES / elem_size.max(1)) / 8 * 8).max(128)
}

/// Transposes an 8x8 bit matrix held as 8 bytes (row = byte, column = bit).
#[inline(always)]
fn transpose8(mut x: u64) -> u64 {
    let t = (x ^ (x >> 7)) & 0x00AA_00AA_00AA_00AA;
    x = x ^ t ^ (t << 7);
    let t = (x ^ (x >> 14)) & 0x0000_CCCC_0000_CCCC;
    x = x ^ t ^ (t << 14);
    let t = (x ^ (x >> 28)) & 0x0000_0000_F0F0_F0F0;
    x ^ t ^ (t << 28)
}

/// Bit-transposes one block. `input.len() == output.len() == n * elem_size`, `n % 8 == 0`.
/// `planes` is scratch space (resized as needed).
pub fn shuffle_block(input: &[u8], output: &mut [u8], elem_size: usize, planes: &mut Vec<u8>) {
    assert_eq!(input.len(), output.len());
    assert!(elem_size > 0 && input.len().is_multiple_of(8 * elem_size));
    #[cfg(target_arch = "x86_64")]
    {
        if (elem_size == 2 || elem_size == 4) && std::arch::is_x86_feature_detected!("avx2") {
            let n = input.len() / elem_size;
            // SAFETY: AVX2 is available; lengths checked above.
            let done = unsafe { avx2::shuffle(input, output, elem_size) };
            shuffle_scalar_from(input, output, elem_size, n, done);
            return;
        }
    }
    shuffle_block_portable(input, output, elem_size, planes);
}

/// [`shuffle_block`] without AVX2: byte planes first (SSE2 on x86_64), then bit rows.
pub(crate) fn shuffle_block_portable(
    input: &[u8],
    output: &mut [u8],
    elem_size: usize,
    planes: &mut Vec<u8>,
) {
    let n = input.len() / elem_size;
    if elem_size == 1 {
        bits_of_planes(input, output, n);
        return;
    }
    planes.resize(input.len(), 0);
    byte_transpose(input, planes, elem_size, n);
    bits_of_planes(planes, output, n);
}

/// Scalar bit rows of elements `first..n` (`first % 8 == 0`), read straight from the input.
fn shuffle_scalar_from(input: &[u8], output: &mut [u8], elem_size: usize, n: usize, first: usize) {
    let row = n / 8;
    for j in 0..elem_size {
        for b in first / 8..row {
            let mut x = [0u8; 8];
            for (t, v) in x.iter_mut().enumerate() {
                *v = input[(8 * b + t) * elem_size + j];
            }
            let t = transpose8(u64::from_le_bytes(x)).to_le_bytes();
            for (k, &byte) in t.iter().enumerate() {
                output[(8 * j + k) * row + b] = byte;
            }
        }
    }
}

/// `planes[j * n + i] = input[i * elem_size + j]`.
fn byte_transpose(input: &[u8], planes: &mut [u8], elem_size: usize, n: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if elem_size == 2 || elem_size == 4 {
            // SAFETY: SSE2 is part of the x86_64 baseline; lengths checked by the caller.
            unsafe { sse2::byte_transpose(input, planes, elem_size, n) };
            return;
        }
    }
    for (i, elem) in input.chunks_exact(elem_size).enumerate() {
        for (j, &b) in elem.iter().enumerate() {
            planes[j * n + i] = b;
        }
    }
}

/// For each byte plane `j` of `n` bytes, writes its 8 bit rows to `output[(8j + k) * n/8 ..]`.
fn bits_of_planes(planes: &[u8], output: &mut [u8], n: usize) {
    let row = n / 8;
    for (j, plane) in planes.chunks_exact(n).enumerate() {
        let rows = &mut output[8 * j * row..8 * (j + 1) * row];
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: SSE2 is part of the x86_64 baseline; `plane.len() == n`, `rows.len() == n`.
            unsafe { sse2::bit_rows(plane, rows, row) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        bit_rows_scalar(plane, rows, row, 0);
    }
}

/// Scalar bit rows of `plane[8*b0..]` (groups of 8 bytes starting at group `b0`).
fn bit_rows_scalar(plane: &[u8], rows: &mut [u8], row: usize, b0: usize) {
    for b in b0..row {
        let x = u64::from_le_bytes(plane[8 * b..8 * b + 8].try_into().unwrap());
        let t = transpose8(x).to_le_bytes();
        for (k, &byte) in t.iter().enumerate() {
            rows[k * row + b] = byte;
        }
    }
}

/// Inverse of [`shuffle_block`].
pub fn unshuffle_block(input: &[u8], output: &mut [u8], elem_size: usize, planes: &mut Vec<u8>) {
    assert_eq!(input.len(), output.len());
    assert!(elem_size > 0 && input.len().is_multiple_of(8 * elem_size));
    let n = input.len() / elem_size;
    let row = n / 8;
    planes.resize(input.len(), 0);
    for j in 0..elem_size {
        let rows = &input[8 * j * row..8 * (j + 1) * row];
        let plane = &mut planes[j * n..(j + 1) * n];
        for b in 0..row {
            let mut x = [0u8; 8];
            for (k, v) in x.iter_mut().enumerate() {
                *v = rows[k * row + b];
            }
            let t = transpose8(u64::from_le_bytes(x)).to_le_bytes();
            plane[8 * b..8 * b + 8].copy_from_slice(&t);
        }
    }
    for (i, elem) in output.chunks_exact_mut(elem_size).enumerate() {
        for (j, b) in elem.iter_mut().enumerate() {
            *b = planes[j * n + i];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Bit rows of the leading groups of 32 elements of 2 or 4 bytes, straight from the input
    /// (byte transpose in registers, then 8 `movemask`s per byte plane). Returns the number of
    /// elements done (a multiple of 32); the caller finishes the rest.
    #[target_feature(enable = "avx2")]
    pub unsafe fn shuffle(input: &[u8], output: &mut [u8], elem_size: usize) -> usize {
        let n = input.len() / elem_size;
        let row = n / 8;
        let groups = n / 32;
        let ip = input.as_ptr();
        let op = output.as_mut_ptr();
        // SAFETY: every load reads inside group g's 32 * elem_size input bytes and every store
        // writes 4 bytes at offset 4g < row of a bit row inside `output`.
        unsafe {
            if elem_size == 2 {
                // Per 128-bit lane: the low bytes of its 8 elements, then their high bytes.
                let m = _mm256_setr_epi8(
                    0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10, 12,
                    14, 1, 3, 5, 7, 9, 11, 13, 15,
                );
                for g in 0..groups {
                    let base = ip.add(64 * g);
                    let a = _mm256_shuffle_epi8(_mm256_loadu_si256(base as *const __m256i), m);
                    let b =
                        _mm256_shuffle_epi8(_mm256_loadu_si256(base.add(32) as *const __m256i), m);
                    // Quadwords hold elements 0-7, 16-23, 8-15, 24-31: put them in order.
                    let p0 = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_unpacklo_epi64(a, b));
                    let p1 = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_unpackhi_epi64(a, b));
                    bit_rows(p0, op.add(4 * g), row, 0);
                    bit_rows(p1, op.add(4 * g), row, 1);
                }
            } else {
                // Per lane: byte j of its 4 elements in doubleword j.
                let m = _mm256_setr_epi8(
                    0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0, 4, 8, 12, 1, 5, 9, 13,
                    2, 6, 10, 14, 3, 7, 11, 15,
                );
                // Doublewords hold elements 0-3, 8-11, 16-19, 24-27, 4-7, ...: put them in order.
                let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
                for g in 0..groups {
                    let base = ip.add(128 * g);
                    let ld = |k: usize| {
                        _mm256_shuffle_epi8(
                            _mm256_loadu_si256(base.add(32 * k) as *const __m256i),
                            m,
                        )
                    };
                    let (s0, s1, s2, s3) = (ld(0), ld(1), ld(2), ld(3));
                    let t0 = _mm256_unpacklo_epi32(s0, s1);
                    let t1 = _mm256_unpackhi_epi32(s0, s1);
                    let t2 = _mm256_unpacklo_epi32(s2, s3);
                    let t3 = _mm256_unpackhi_epi32(s2, s3);
                    let planes = [
                        _mm256_unpacklo_epi64(t0, t2),
                        _mm256_unpackhi_epi64(t0, t2),
                        _mm256_unpacklo_epi64(t1, t3),
                        _mm256_unpackhi_epi64(t1, t3),
                    ];
                    for (j, p) in planes.into_iter().enumerate() {
                        bit_rows(_mm256_permutevar8x32_epi32(p, order), op.add(4 * g), row, j);
                    }
                }
            }
        }
        groups * 32
    }

    /// Writes the 8 bit rows of byte plane `j` (32 elements, byte i = element i) at `out`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn bit_rows(mut v: __m256i, out: *mut u8, row: usize, j: usize) {
        for k in (0..8).rev() {
            let bits = _mm256_movemask_epi8(v) as u32;
            // SAFETY: the caller passes a pointer with 4 writable bytes in every bit row.
            unsafe {
                std::ptr::write_unaligned(out.add((8 * j + k) * row) as *mut u32, bits.to_le())
            };
            v = _mm256_slli_epi16(v, 1);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::*;

    /// Byte transpose for 2- and 4-byte elements, 16 elements at a time.
    pub unsafe fn byte_transpose(input: &[u8], planes: &mut [u8], elem_size: usize, n: usize) {
        let groups = n / 16;
        unsafe {
            let ip = input.as_ptr();
            let op = planes.as_mut_ptr();
            let lo8 = _mm_set1_epi16(0x00ff);
            let lo8_32 = _mm_set1_epi32(0xff);
            for g in 0..groups {
                let base = ip.add(g * 16 * elem_size);
                if elem_size == 2 {
                    let a = _mm_loadu_si128(base as *const __m128i);
                    let b = _mm_loadu_si128(base.add(16) as *const __m128i);
                    let p0 = _mm_packus_epi16(_mm_and_si128(a, lo8), _mm_and_si128(b, lo8));
                    let p1 = _mm_packus_epi16(_mm_srli_epi16(a, 8), _mm_srli_epi16(b, 8));
                    _mm_storeu_si128(op.add(g * 16) as *mut __m128i, p0);
                    _mm_storeu_si128(op.add(n + g * 16) as *mut __m128i, p1);
                } else {
                    let v = [
                        _mm_loadu_si128(base as *const __m128i),
                        _mm_loadu_si128(base.add(16) as *const __m128i),
                        _mm_loadu_si128(base.add(32) as *const __m128i),
                        _mm_loadu_si128(base.add(48) as *const __m128i),
                    ];
                    macro_rules! plane {
                        ($shift:literal, $j:literal) => {{
                            let s = |x| _mm_and_si128(_mm_srli_epi32(x, $shift), lo8_32);
                            let w0 = _mm_packs_epi32(s(v[0]), s(v[1]));
                            let w1 = _mm_packs_epi32(s(v[2]), s(v[3]));
                            let p = _mm_packus_epi16(w0, w1);
                            _mm_storeu_si128(op.add($j * n + g * 16) as *mut __m128i, p);
                        }};
                    }
                    plane!(0, 0);
                    plane!(8, 1);
                    plane!(16, 2);
                    plane!(24, 3);
                }
            }
        }
        for i in groups * 16..n {
            for j in 0..elem_size {
                planes[j * n + i] = input[i * elem_size + j];
            }
        }
    }

    /// Bit rows of one byte plane of `8 * row` bytes, 16 bytes at a time with `movemask`.
    pub unsafe fn bit_rows(plane: &[u8], rows: &mut [u8], row: usize) {
        let groups = plane.len() / 16;
        unsafe {
            let ip = plane.as_ptr();
            let op = rows.as_mut_ptr();
            for g in 0..groups {
                let mut v = _mm_loadu_si128(ip.add(16 * g) as *const __m128i);
                for k in (0..8).rev() {
                    let m = _mm_movemask_epi8(v) as u16;
                    std::ptr::write_unaligned(op.add(k * row + 2 * g) as *mut u16, m.to_le());
                    v = _mm_slli_epi16(v, 1);
                }
            }
        }
        super::bit_rows_scalar(plane, rows, row, groups * 2);
    }
}

/// The compressor applied to each bit-transposed block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockCodec {
    /// LZ4 block format (`cd_values[4] = 2`).
    Lz4,
    /// zstd frame at the given level (`cd_values[4] = 3`).
    Zstd(i32),
}

/// Reusable per-thread state for compressing bitshuffle chunks.
#[derive(Default)]
pub struct BlockEncoder {
    shuffled: Vec<u8>,
    planes: Vec<u8>,
    lz4_table: Option<lz4_flex::block::CompressTable>,
    zstd: Option<(i32, zstd::bulk::Compressor<'static>)>,
}

/// The blocks of a chunk of `len` bytes: `(full blocks, block bytes, bytes of the trimmed last
/// block)`; `block_elems == 0` selects the bitshuffle default.
fn blocks(len: usize, elem_size: usize, block_elems: usize) -> (usize, usize, usize) {
    let block_elems = if block_elems == 0 {
        default_block_elems(elem_size)
    } else {
        block_elems
    };
    let n = len / elem_size;
    let last = (n % block_elems) / 8 * 8;
    (n / block_elems, block_elems * elem_size, last * elem_size)
}

fn block_bound(len: usize, codec: BlockCodec) -> usize {
    match codec {
        BlockCodec::Lz4 => lz4_flex::block::get_maximum_output_size(len),
        BlockCodec::Zstd(_) => zstd::zstd_safe::compress_bound(len),
    }
}

/// The most bytes a framed chunk of `len` input bytes can take.
pub fn max_chunk_len(len: usize, elem_size: usize, block_elems: usize, codec: BlockCodec) -> usize {
    let (full, block_bytes, last) = blocks(len, elem_size.max(1), block_elems);
    let framed = full * (4 + block_bound(block_bytes, codec))
        + if last > 0 {
            4 + block_bound(last, codec)
        } else {
            0
        };
    12 + framed + (len - full * block_bytes - last)
}

impl BlockEncoder {
    /// Appends the framed bitshuffle-compressed form of `input` to `out`.
    /// `block_elems == 0` selects the bitshuffle default.
    pub fn compress_chunk(
        &mut self,
        input: &[u8],
        elem_size: usize,
        block_elems: usize,
        codec: BlockCodec,
        out: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        let at = out.len();
        out.resize(
            at + max_chunk_len(input.len(), elem_size, block_elems, codec),
            0,
        );
        let k = self.compress_chunk_into(input, elem_size, block_elems, codec, &mut out[at..])?;
        out.truncate(at + k);
        Ok(())
    }

    /// Writes the framed bitshuffle-compressed form of `input` at the start of `out`, which
    /// must hold [`max_chunk_len`] bytes; returns the bytes written.
    pub fn compress_chunk_into(
        &mut self,
        input: &[u8],
        elem_size: usize,
        block_elems: usize,
        codec: BlockCodec,
        out: &mut [u8],
    ) -> std::io::Result<usize> {
        assert!(elem_size > 0 && input.len().is_multiple_of(elem_size));
        assert!(out.len() >= max_chunk_len(input.len(), elem_size, block_elems, codec));
        let (full, block_bytes, last) = blocks(input.len(), elem_size, block_elems);
        out[0..8].copy_from_slice(&(input.len() as u64).to_be_bytes());
        out[8..12].copy_from_slice(&(block_bytes as u32).to_be_bytes());
        let mut at = 12;
        let mut pos = 0;
        for len in std::iter::repeat_n(block_bytes, full).chain((last > 0).then_some(last)) {
            let k =
                self.compress_block(&input[pos..pos + len], elem_size, codec, &mut out[at + 4..])?;
            out[at..at + 4].copy_from_slice(&(k as u32).to_be_bytes());
            at += 4 + k;
            pos += len;
        }
        let rest = input.len() - pos;
        out[at..at + rest].copy_from_slice(&input[pos..]);
        Ok(at + rest)
    }

    /// Shuffles and compresses one block into `out`; returns the compressed length.
    fn compress_block(
        &mut self,
        block: &[u8],
        elem_size: usize,
        codec: BlockCodec,
        out: &mut [u8],
    ) -> std::io::Result<usize> {
        self.shuffled.resize(block.len(), 0);
        shuffle_block(block, &mut self.shuffled, elem_size, &mut self.planes);
        match codec {
            BlockCodec::Lz4 => {
                let table = self.lz4_table.get_or_insert_with(Default::default);
                lz4_flex::block::compress_into_with_table(&self.shuffled, out, table)
                    .map_err(std::io::Error::other)
            }
            BlockCodec::Zstd(level) => {
                if self.zstd.as_ref().map(|z| z.0) != Some(level) {
                    self.zstd = Some((level, zstd::bulk::Compressor::new(level)?));
                }
                let z = &mut self.zstd.as_mut().unwrap().1;
                z.compress_to_buffer(&self.shuffled[..], out)
            }
        }
    }
}

/// Decodes a framed bitshuffle chunk (LZ4 or zstd blocks) into `out` (cleared first).
pub fn decompress_chunk(
    input: &[u8],
    elem_size: usize,
    codec: BlockCodec,
    out: &mut Vec<u8>,
) -> Result<(), BitshuffleError> {
    if elem_size == 0 {
        return Err(BitshuffleError::ZeroElemSize);
    }
    if input.len() < 12 {
        return Err(BitshuffleError::Truncated("header"));
    }
    let total = u64::from_be_bytes(input[0..8].try_into().unwrap()) as usize;
    let block_bytes = u32::from_be_bytes(input[8..12].try_into().unwrap()) as usize;
    if block_bytes == 0 || !block_bytes.is_multiple_of(8 * elem_size) {
        return Err(BitshuffleError::BadBlockSize(block_bytes));
    }
    if !total.is_multiple_of(elem_size) {
        return Err(BitshuffleError::SizeMismatch {
            declared: total,
            expected: total / elem_size * elem_size,
        });
    }
    out.clear();
    out.resize(total, 0);
    let n = total / elem_size;
    let block_elems = block_bytes / elem_size;
    let full = n / block_elems;
    let last = (n % block_elems) / 8 * 8;
    let mut src = &input[12..];
    let mut pos = 0;
    let mut raw = vec![0u8; block_bytes];
    let mut planes = Vec::new();
    for len in std::iter::repeat_n(block_bytes, full).chain((last > 0).then_some(last * elem_size))
    {
        if src.len() < 4 {
            return Err(BitshuffleError::Truncated("block length"));
        }
        let k = u32::from_be_bytes(src[0..4].try_into().unwrap()) as usize;
        let payload = src
            .get(4..4 + k)
            .ok_or(BitshuffleError::Truncated("block payload"))?;
        let raw = &mut raw[..len];
        let got = match codec {
            BlockCodec::Lz4 => lz4_flex::block::decompress_into(payload, raw)
                .map_err(|e| BitshuffleError::Lz4(e.to_string()))?,
            BlockCodec::Zstd(_) => zstd::bulk::decompress_to_buffer(payload, raw)
                .map_err(|e| BitshuffleError::Zstd(e.to_string()))?,
        };
        if got != len {
            return Err(BitshuffleError::SizeMismatch {
                declared: got,
                expected: len,
            });
        }
        unshuffle_block(raw, &mut out[pos..pos + len], elem_size, &mut planes);
        pos += len;
        src = &src[4 + k..];
    }
    let rest = total - pos;
    if src.len() < rest {
        return Err(BitshuffleError::Truncated("leftover bytes"));
    }
    out[pos..].copy_from_slice(&src[..rest]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_shuffle(input: &[u8], elem_size: usize) -> Vec<u8> {
        let n = input.len() / elem_size;
        let mut out = vec![0u8; input.len()];
        for i in 0..n {
            for j in 0..elem_size {
                for k in 0..8 {
                    if input[i * elem_size + j] >> k & 1 == 1 {
                        out[(j * 8 + k) * (n / 8) + i / 8] |= 1 << (i % 8);
                    }
                }
            }
        }
        out
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn shuffle_matches_definition_and_inverts() {
        for elem_size in [1, 2, 3, 4, 8] {
            for n in [8, 16, 24, 32, 40, 64, 128, 136, 2048, 4096 + 24] {
                let input = pseudo_random(n * elem_size, (n * 31 + elem_size) as u64);
                let mut out = vec![0u8; input.len()];
                let mut planes = Vec::new();
                shuffle_block(&input, &mut out, elem_size, &mut planes);
                assert_eq!(
                    out,
                    naive_shuffle(&input, elem_size),
                    "elem {elem_size} n {n}"
                );
                let mut portable = vec![0u8; input.len()];
                shuffle_block_portable(&input, &mut portable, elem_size, &mut planes);
                assert_eq!(portable, out, "portable, elem {elem_size} n {n}");
                let mut back = vec![0u8; input.len()];
                unshuffle_block(&out, &mut back, elem_size, &mut planes);
                assert_eq!(back, input);
            }
        }
    }

    #[test]
    fn framing_round_trips_with_partial_and_leftover() {
        let mut enc = BlockEncoder::default();
        for codec in [BlockCodec::Lz4, BlockCodec::Zstd(3)] {
            for (elem_size, n) in [(2, 0), (2, 5), (2, 4096 + 13), (4, 2048 * 3 + 100), (4, 1)] {
                let input: Vec<u8> = (0..n * elem_size).map(|i| (i / 7 % 13) as u8).collect();
                let mut framed = Vec::new();
                enc.compress_chunk(&input, elem_size, 0, codec, &mut framed)
                    .unwrap();
                assert_eq!(
                    u64::from_be_bytes(framed[0..8].try_into().unwrap()) as usize,
                    input.len()
                );
                assert_eq!(
                    u32::from_be_bytes(framed[8..12].try_into().unwrap()) as usize,
                    default_block_elems(elem_size) * elem_size
                );
                let mut back = Vec::new();
                decompress_chunk(&framed, elem_size, codec, &mut back).unwrap();
                assert_eq!(back, input);
            }
        }
    }

    #[test]
    fn default_block_size_matches_bitshuffle() {
        assert_eq!(default_block_elems(1), 8192);
        assert_eq!(default_block_elems(2), 4096);
        assert_eq!(default_block_elems(4), 2048);
        assert_eq!(default_block_elems(128), 128);
    }

    #[test]
    fn truncated_chunk_is_an_error() {
        let mut enc = BlockEncoder::default();
        let input = vec![7u8; 4096];
        let mut framed = Vec::new();
        enc.compress_chunk(&input, 4, 0, BlockCodec::Lz4, &mut framed)
            .unwrap();
        let mut out = Vec::new();
        assert!(
            decompress_chunk(&framed[..framed.len() - 3], 4, BlockCodec::Lz4, &mut out).is_err()
        );
        assert!(decompress_chunk(&framed[..5], 4, BlockCodec::Lz4, &mut out).is_err());
    }
}
