//! Pixel masks as psana builds them: status per gain range merged, pixel_mask constant, user mask.

/// The status bits `det.raw.calib` masks in psana: all of them (`mask_comb` uses
/// `status_bits = (1 << 64) - 1`; only `_mask_from_status` defaults to 0xFFFF).
pub const DEFAULT_STATUS_BITS: u32 = u32::MAX;

/// `1` where `(status[gr] & status_bits) == 0` for every gain range in `grinds`, else `0`
/// (psana `status_as_mask` merged over `gain_range_inds`). `status` is `(ngr, n)` flattened.
pub fn status_mask(status: &[u32], n: usize, grinds: &[usize], status_bits: u32) -> Vec<u8> {
    let mut m = vec![1u8; n];
    for &gr in grinds {
        for (mv, &s) in m.iter_mut().zip(&status[gr * n..(gr + 1) * n]) {
            if s & status_bits != 0 {
                *mv = 0;
            }
        }
    }
    m
}

/// ANDs `other` (non-zero = good) into `mask`.
pub fn and_into(mask: &mut [u8], other: &[u8]) {
    for (m, &o) in mask.iter_mut().zip(other) {
        if o == 0 {
            *m = 0;
        }
    }
}

/// The inclusive radius window `min_res ≤ r ≤ max_res` as a mask (OM's semantics).
pub fn radius_window(pix_r: &[f32], min_res: f32, max_res: f32) -> Vec<u8> {
    pix_r
        .iter()
        .map(|&r| u8::from(r >= min_res && r <= max_res))
        .collect()
}
