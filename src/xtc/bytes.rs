//! Unaligned little-endian reads from byte slices, with offset-carrying errors.

use super::error::{FormatError, FormatResult};

/// Reads a little-endian `u16` at `pos`, or `None` when out of bounds.
#[inline]
pub fn u16_at(b: &[u8], pos: usize) -> Option<u16> {
    b.get(pos..pos.checked_add(2)?)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
}

/// Reads a little-endian `u32` at `pos`, or `None` when out of bounds.
#[inline]
pub fn u32_at(b: &[u8], pos: usize) -> Option<u32> {
    b.get(pos..pos.checked_add(4)?)
        .map(|s| u32::from_le_bytes(s.try_into().unwrap_or_default()))
}

/// Reads a little-endian `u64` at `pos`, or `None` when out of bounds.
#[inline]
pub fn u64_at(b: &[u8], pos: usize) -> Option<u64> {
    b.get(pos..pos.checked_add(8)?)
        .map(|s| u64::from_le_bytes(s.try_into().unwrap_or_default()))
}

/// Reads a NUL-terminated string from a fixed-size field (stops at the first NUL).
pub fn cstr_field(field: &[u8]) -> String {
    let end = field.iter().position(|&c| c == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Borrows `len` bytes at `pos`, or a format error at `base + pos` saying what was being read.
pub fn slice_at<'a>(
    b: &'a [u8],
    pos: usize,
    len: usize,
    base: u64,
    what: &str,
) -> FormatResult<&'a [u8]> {
    pos.checked_add(len)
        .and_then(|end| b.get(pos..end))
        .ok_or_else(|| {
            FormatError::new(
                base + pos as u64,
                format!(
                    "{what}: needs {len} bytes, only {} left",
                    b.len().saturating_sub(pos)
                ),
            )
        })
}
