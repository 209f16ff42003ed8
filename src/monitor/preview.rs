//! A hit's frame reduced to an 8-bit grey image the page can draw.

use super::state::Preview;
use crate::detector::assemble::Assembly;
use base64::Engine;

/// Longest side of a preview in pixels.
pub const MAX_SIDE: usize = 512;

/// Downsamples a `(ss, fs)` frame by the smallest integer factor that fits [`MAX_SIDE`] (each
/// preview pixel is the maximum of its block, so spots survive), maps the 1st–99.5th percentile
/// of the result (up to the maximum when those are equal) onto 0–255, and places the peaks `(fs, ss)` on the preview grid.
pub fn preview(
    frame: &[f32],
    ss: usize,
    fs: usize,
    peaks: &[(f32, f32)],
    event_index: u64,
) -> Option<Preview> {
    if ss == 0 || fs == 0 || frame.len() != ss * fs {
        return None;
    }
    let bin = ss.max(fs).div_ceil(MAX_SIDE).max(1);
    let (h, w) = (ss.div_ceil(bin), fs.div_ceil(bin));
    let mut small = vec![f32::NEG_INFINITY; h * w];
    for (r, row) in frame.chunks_exact(fs).enumerate() {
        let out = &mut small[(r / bin) * w..(r / bin + 1) * w];
        for (c, &v) in row.iter().enumerate() {
            if v.is_finite() && v > out[c / bin] {
                out[c / bin] = v;
            }
        }
    }
    let mut sorted: Vec<f32> = small.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_unstable_by(f32::total_cmp);
    let at = |q: f64| {
        sorted
            .get(((sorted.len().saturating_sub(1)) as f64 * q) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let lo = at(0.01);
    let hi = match at(0.995) {
        h if h > lo => h,
        _ => sorted.last().copied().unwrap_or(lo),
    };
    let scale = if hi > lo { 255.0 / (hi - lo) } else { 0.0 };
    let pixels: Vec<u8> = small
        .iter()
        .map(|&v| {
            if v.is_finite() {
                ((v - lo) * scale).clamp(0.0, 255.0) as u8
            } else {
                0
            }
        })
        .collect();
    Some(Preview {
        event_index,
        n_peaks: peaks.len() as u32,
        width: w as u32,
        height: h as u32,
        bin: bin as u32,
        pixels: base64::engine::general_purpose::STANDARD.encode(&pixels),
        peaks: peaks
            .iter()
            .map(|&(x, y)| ((x + 0.5) / bin as f32, (y + 0.5) / bin as f32))
            .collect(),
    })
}

/// The preview of a slab assembled by `a` (gaps black), its peaks `(fs, ss)` (slab rows of
/// `fs` pixels) placed where their pixel lands in the image.
pub fn assembled(
    slab: &[f32],
    fs: usize,
    a: &Assembly,
    peaks: &[(f32, f32)],
    event_index: u64,
) -> Option<Preview> {
    if slab.len() != a.slab_len() || fs == 0 {
        return None;
    }
    let mut image = vec![f32::NAN; a.height * a.width];
    for (i, &v) in slab.iter().enumerate() {
        if let Some(t) = a.target_of(i) {
            image[t] = v;
        }
    }
    let placed: Vec<(f32, f32)> = peaks
        .iter()
        .filter_map(|&(x, y)| {
            let (c, r) = (x.round(), y.round());
            if c < 0.0 || r < 0.0 || c as usize >= fs {
                return None;
            }
            let t = a.target_of(r as usize * fs + c as usize)?;
            Some(((t % a.width) as f32, (t / a.width) as f32))
        })
        .collect();
    let mut p = preview(&image, a.height, a.width, &placed, event_index)?;
    p.n_peaks = peaks.len() as u32;
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(p: &Preview) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&p.pixels)
            .unwrap()
    }

    #[test]
    fn a_small_frame_keeps_its_size_and_its_brightest_pixel() {
        let mut f = vec![0.0f32; 20 * 30];
        for (i, v) in f.iter_mut().enumerate() {
            *v = (i % 7) as f32;
        }
        f[5 * 30 + 9] = 1000.0;
        let p = preview(&f, 20, 30, &[(9.0, 5.0)], 3).unwrap();
        assert_eq!((p.width, p.height, p.bin), (30, 20, 1));
        let px = decode(&p);
        assert_eq!(px.len(), 600);
        assert_eq!(px[5 * 30 + 9], 255);
        assert_eq!(p.peaks, vec![(9.5, 5.5)]);
        assert_eq!(p.event_index, 3);
    }

    #[test]
    fn a_large_frame_is_binned_by_maximum() {
        let (ss, fs) = (5632, 384);
        let mut f = vec![1.0f32; ss * fs];
        f[4000 * fs + 100] = 5000.0;
        f[7] = f32::NAN;
        let p = preview(&f, ss, fs, &[(100.0, 4000.0)], 0).unwrap();
        assert_eq!(p.bin, 11);
        assert_eq!((p.height, p.width), (512, 35));
        let px = decode(&p);
        assert_eq!(px[(4000 / 11) * 35 + 100 / 11], 255);
        let (x, y) = p.peaks[0];
        assert_eq!((x as usize, y as usize), (100 / 11, 4000 / 11));
    }

    #[test]
    fn an_assembled_preview_places_pixels_and_peaks_through_the_geometry() {
        use crate::detector::geometry::{Geometry, Panel};
        let panel = |name: &str, ss: usize, fsv: [f64; 3], ssv: [f64; 3], x: f64| Panel {
            name: name.into(),
            min_fs: 0,
            max_fs: 2,
            min_ss: ss,
            max_ss: ss + 1,
            fs: fsv,
            ss: ssv,
            corner_x: x,
            corner_y: 0.0,
            extra: Vec::new(),
        };
        // As in detector::assemble's test: panel b is turned 90°, slab (ss, fs) of b lands at
        // image row fs, column 9 − (ss − 2).
        let g = Geometry {
            globals: Vec::new(),
            panels: vec![
                panel("a", 0, [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], 0.0),
                panel("b", 2, [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], 10.0),
            ],
        };
        let a = Assembly::new(&g, None).unwrap();
        let slab: Vec<f32> = (1..=12).map(|v| v as f32).collect();
        let p = assembled(&slab, 3, &a, &[(2.0, 3.0), (0.0, 0.0)], 5).unwrap();
        assert_eq!((p.width, p.height, p.bin, p.n_peaks), (10, 3, 1, 2));
        let px = decode(&p);
        assert_eq!(px[2 * 10 + 8], 255, "slab (3, 2) = 12, the brightest");
        assert_eq!(px[5], 0, "a gap");
        assert_eq!(p.peaks, vec![(8.5, 2.5), (0.5, 0.5)]);
        assert!(assembled(&slab[1..], 3, &a, &[], 0).is_none());
    }

    #[test]
    fn a_frame_of_the_wrong_length_has_no_preview() {
        assert!(preview(&[0.0; 10], 3, 3, &[], 0).is_none());
    }
}
