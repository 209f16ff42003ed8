//! Assembled images from slab frames with a CrystFEL geometry, padded or cropped to a target
//! size (LCLStreamer's `PeaknetPreprocessingPipeline` pad styles), for AI batches.
//!
//! Pixel placement: the centre of slab pixel `(ss, fs)` of a panel lies at
//! `corner + (fs − min_fs + ½)·fs_vec + (ss − min_ss + ½)·ss_vec` (lab x, y in pixel units). Each
//! slab pixel goes to the image pixel nearest its centre on a grid of one pixel size anchored at
//! the smallest centre: `col = round(x − x_min)`, `row = round(y − y_min)` (rows grow with lab y,
//! columns with lab x; matplotlib shows it the lab way up with `origin="lower"`). The image is the
//! bounding box of the centres; pixels no panel covers (gaps) are 0. Where two slab pixels land
//! on one image pixel (tilted panels) the later one in slab order wins, as psana's
//! `img[rows, cols] = values` does; [`Assembly::collisions`] counts them.
//!
//! Padding and cropping: `center` pads `(t − n) / 2` before and the rest after (as `numpy.pad`
//! in LCLStreamer), and crops `(n − t) / 2` before and the rest after; `bottom-right` pads or
//! crops at the bottom and right only, keeping the top-left corner.

use super::geometry::Geometry;
use serde::Deserialize;

/// Where padding (or cropping) goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PadStyle {
    #[default]
    Center,
    BottomRight,
}

/// Offset added to an index along an axis of `n` pixels to place it in `t` pixels.
pub fn pad_offset(n: usize, t: usize, style: PadStyle) -> isize {
    match style {
        // Truncating division: floor of the padding, floor of the crop (negated).
        PadStyle::Center => (t as isize - n as isize) / 2,
        PadStyle::BottomRight => 0,
    }
}

const OFF: u32 = u32::MAX;

/// Where every slab pixel goes in the (padded or cropped) image.
#[derive(Debug, Clone)]
pub struct Assembly {
    /// Image rows and columns after padding or cropping.
    pub height: usize,
    pub width: usize,
    /// The assembled bounding box `(rows, cols)` before padding or cropping.
    pub natural: (usize, usize),
    /// Image index of each slab pixel; `OFF` where no panel covers it or it was cropped.
    map: Vec<u32>,
    /// Beam axis (lab x = y = 0) in the image as `(row, col)`, pixel centres at integers.
    pub beam: (f64, f64),
    /// Slab pixels that landed on an image pixel already taken.
    pub collisions: usize,
    /// Slab pixels cut off by cropping.
    pub cropped: usize,
}

/// Largest image accepted (pixels); a bigger one means a geometry not in pixel units.
const MAX_PIXELS: usize = 1 << 28;

impl Assembly {
    /// The placement of `geometry`'s slab; `target` = `(height, width, style)` to pad or crop to.
    pub fn new(
        geometry: &Geometry,
        target: Option<(usize, usize, PadStyle)>,
    ) -> Result<Assembly, String> {
        if geometry.panels.is_empty() {
            return Err("the geometry has no panels".into());
        }
        let (h, w) = geometry.slab_shape();
        let mut centres = vec![(f64::NAN, f64::NAN); h * w];
        let (mut xmin, mut ymin) = (f64::INFINITY, f64::INFINITY);
        let (mut xmax, mut ymax) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
        for p in &geometry.panels {
            for ss in p.min_ss..=p.max_ss {
                for fs in p.min_fs..=p.max_fs {
                    let (a, b) = ((fs - p.min_fs) as f64 + 0.5, (ss - p.min_ss) as f64 + 0.5);
                    let x = p.corner_x + a * p.fs[0] + b * p.ss[0];
                    let y = p.corner_y + a * p.fs[1] + b * p.ss[1];
                    if !(x.is_finite() && y.is_finite()) {
                        return Err(format!("panel {}: non-finite pixel position", p.name));
                    }
                    centres[ss * w + fs] = (x, y);
                    (xmin, xmax) = (xmin.min(x), xmax.max(x));
                    (ymin, ymax) = (ymin.min(y), ymax.max(y));
                }
            }
        }
        let nh = (ymax - ymin).round() as usize + 1;
        let nw = (xmax - xmin).round() as usize + 1;
        if nh.saturating_mul(nw) > MAX_PIXELS {
            return Err(format!(
                "assembled image {nh}x{nw} is too large: are corner_x/corner_y and fs/ss in pixels?"
            ));
        }
        let (th, tw, style) = target.unwrap_or((nh, nw, PadStyle::Center));
        if th == 0 || tw == 0 || th.saturating_mul(tw) > MAX_PIXELS {
            return Err(format!("image size {th}x{tw} out of range"));
        }
        let (dr, dc) = (pad_offset(nh, th, style), pad_offset(nw, tw, style));
        let mut taken = vec![false; th * tw];
        let (mut collisions, mut cropped) = (0, 0);
        let map = centres
            .iter()
            .map(|&(x, y)| {
                if x.is_nan() {
                    return OFF;
                }
                let r = (y - ymin).round() as isize + dr;
                let c = (x - xmin).round() as isize + dc;
                if r < 0 || c < 0 || r >= th as isize || c >= tw as isize {
                    cropped += 1;
                    return OFF;
                }
                let i = r as usize * tw + c as usize;
                collisions += usize::from(taken[i]);
                taken[i] = true;
                i as u32
            })
            .collect();
        Ok(Assembly {
            height: th,
            width: tw,
            natural: (nh, nw),
            map,
            beam: (-ymin + dr as f64, -xmin + dc as f64),
            collisions,
            cropped,
        })
    }

    /// Slab pixels (the length a slab frame must have).
    pub fn slab_len(&self) -> usize {
        self.map.len()
    }

    /// Image index of slab pixel `i`, `None` when it is not in the image.
    pub fn target_of(&self, i: usize) -> Option<usize> {
        self.map.get(i).filter(|&&d| d != OFF).map(|&d| d as usize)
    }

    /// Assembles `slab` into `out` (`height × width`, gaps 0).
    pub fn assemble(&self, slab: &[f32], out: &mut [f32]) {
        assert_eq!(slab.len(), self.map.len(), "slab length");
        assert_eq!(out.len(), self.height * self.width, "image length");
        out.fill(0.0);
        for (&d, &v) in self.map.iter().zip(slab) {
            if d != OFF {
                out[d as usize] = v;
            }
        }
    }

    /// Assembles `slab` into `out` of `c` channels (`c × height × width`, each channel a copy).
    pub fn assemble_channels(&self, slab: &[f32], c: usize, out: &mut [f32]) {
        let n = self.height * self.width;
        assert_eq!(out.len(), c * n, "image length");
        let (first, rest) = out.split_at_mut(n);
        self.assemble(slab, first);
        for ch in rest.chunks_exact_mut(n) {
            ch.copy_from_slice(first);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::geometry::Panel;

    fn panel(
        name: &str,
        ss: (usize, usize),
        fs: (usize, usize),
        fsv: [f64; 2],
        ssv: [f64; 2],
        corner: (f64, f64),
    ) -> Panel {
        Panel {
            name: name.into(),
            min_fs: fs.0,
            max_fs: fs.1,
            min_ss: ss.0,
            max_ss: ss.1,
            fs: [fsv[0], fsv[1], 0.0],
            ss: [ssv[0], ssv[1], 0.0],
            corner_x: corner.0,
            corner_y: corner.1,
            extra: Vec::new(),
        }
    }

    /// Panel a: slab rows 0–1, cols 0–2, unrotated at the origin. Panel b: slab rows 2–3,
    /// cols 0–2, rotated 90° (fs → +y, ss → −x) with its corner at x = 10: centre of b's
    /// (ss, fs) = (9.5 − ss, fs + 0.5), so it lands at row fs, col 9 − ss.
    fn two_panels() -> Geometry {
        Geometry {
            globals: Vec::new(),
            panels: vec![
                panel("a", (0, 1), (0, 2), [1.0, 0.0], [0.0, 1.0], (0.0, 0.0)),
                panel("b", (2, 3), (0, 2), [0.0, 1.0], [-1.0, 0.0], (10.0, 0.0)),
            ],
        }
    }

    #[test]
    fn hand_computed_two_panel_image() {
        let a = Assembly::new(&two_panels(), None).unwrap();
        assert_eq!((a.height, a.width), (3, 10));
        let slab: Vec<f32> = (1..=12).map(|v| v as f32).collect();
        let mut img = vec![-1.0; 30];
        a.assemble(&slab, &mut img);
        #[rustfmt::skip]
        let want = [
            1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 10.0, 7.0,
            4.0, 5.0, 6.0, 0.0, 0.0, 0.0, 0.0, 0.0, 11.0, 8.0,
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 12.0, 9.0,
        ];
        assert_eq!(img, want);
        assert_eq!(a.beam, (-0.5, -0.5));
        assert_eq!((a.collisions, a.cropped), (0, 0));
    }

    #[test]
    fn pad_and_crop_styles() {
        let g = two_panels();
        let slab: Vec<f32> = (1..=12).map(|v| v as f32).collect();
        let img = |t| {
            let a = Assembly::new(&g, Some(t)).unwrap();
            let mut out = vec![0.0; a.height * a.width];
            a.assemble(&slab, &mut out);
            (a, out)
        };
        // Centre pad 3x10 → 6x13: (3/2, 3/2) = 1 before, 2 after in both axes.
        let (a, out) = img((6, 13, PadStyle::Center));
        assert_eq!(out[13 + 1], 1.0);
        assert_eq!(out[3 * 13 + 9], 12.0);
        assert_eq!(a.beam, (0.5, 0.5));
        assert_eq!(out.iter().filter(|&&v| v != 0.0).count(), 12);
        // Bottom-right pad keeps the top-left corner.
        let (_, out) = img((6, 13, PadStyle::BottomRight));
        assert_eq!((out[0], out[2 * 13 + 8]), (1.0, 12.0));
        // Centre crop 3x10 → 2x7: 1 row (0 before, 1 after), 3 cols (1 before, 2 after).
        let (a, out) = img((2, 7, PadStyle::Center));
        assert_eq!(
            out,
            [
                2.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.0, 6.0, 0.0, 0.0, 0.0, 0.0, 0.0
            ]
        );
        assert_eq!(a.cropped, 8);
        // Bottom-right crop keeps the top-left 2x9.
        let (a, out) = img((2, 9, PadStyle::BottomRight));
        assert_eq!(out[8], 10.0);
        assert_eq!(a.cropped, 12 - 8);
        assert_eq!(pad_offset(5, 8, PadStyle::Center), 1);
        assert_eq!(pad_offset(8, 5, PadStyle::Center), -1);
    }

    #[test]
    fn channels_are_copies() {
        let a = Assembly::new(&two_panels(), None).unwrap();
        let slab: Vec<f32> = (1..=12).map(|v| v as f32).collect();
        let mut out = vec![0.0; 3 * 30];
        a.assemble_channels(&slab, 3, &mut out);
        assert_eq!(out[..30], out[30..60]);
        assert_eq!(out[..30], out[60..]);
    }

    #[test]
    fn synthetic_epix10k2m_every_pixel_lands_where_the_geometry_says() {
        let g = Geometry::synthetic_epix10k2m(3.0, -2.0);
        let a = Assembly::new(&g, None).unwrap();
        let n = a.slab_len();
        assert_eq!(n, 5632 * 384);
        let slab: Vec<f32> = (0..n).map(|i| (i + 1) as f32).collect();
        let mut img = vec![0.0; a.height * a.width];
        a.assemble(&slab, &mut img);
        // Recompute each pixel's centre from the panel it belongs to and compare.
        let (_, w) = g.slab_shape();
        let mut xs = Vec::with_capacity(n);
        for p in &g.panels {
            for ss in p.min_ss..=p.max_ss {
                for fs in p.min_fs..=p.max_fs {
                    let (u, v) = ((fs - p.min_fs) as f64 + 0.5, (ss - p.min_ss) as f64 + 0.5);
                    let x = p.corner_x + u * p.fs[0] + v * p.ss[0];
                    let y = p.corner_y + u * p.fs[1] + v * p.ss[1];
                    xs.push((ss * w + fs, x, y));
                }
            }
        }
        let xmin = xs.iter().map(|t| t.1).fold(f64::INFINITY, f64::min);
        let ymin = xs.iter().map(|t| t.2).fold(f64::INFINITY, f64::min);
        for &(i, x, y) in &xs {
            let (r, c) = ((y - ymin) as usize, (x - xmin) as usize);
            assert_eq!(img[r * a.width + c], (i + 1) as f32, "slab pixel {i}");
        }
        // Counts and sums conserved, gaps zero, beam where lab (0, 0) is.
        assert_eq!(img.iter().filter(|&&v| v != 0.0).count(), n);
        let sum = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>();
        assert_eq!(sum(&img), sum(&slab));
        assert_eq!((a.collisions, a.cropped), (0, 0));
        assert_eq!(a.beam, (-ymin, -xmin));
        // Padding conserves everything; cropping keeps exactly the pixels inside.
        let big = Assembly::new(&g, Some((a.height + 7, a.width + 10, PadStyle::Center))).unwrap();
        let mut out = vec![0.0; big.height * big.width];
        big.assemble(&slab, &mut out);
        assert_eq!(sum(&out), sum(&slab));
        assert_eq!(big.beam, (a.beam.0 + 3.0, a.beam.1 + 5.0));
        let small = Assembly::new(&g, Some((1024, 1024, PadStyle::Center))).unwrap();
        let mut out = vec![0.0; 1024 * 1024];
        small.assemble(&slab, &mut out);
        let kept = out.iter().filter(|&&v| v != 0.0).count();
        assert_eq!(kept + small.cropped, n);
        assert!(small.cropped > 0);
    }

    #[test]
    fn bad_geometry_is_refused() {
        let mut g = two_panels();
        g.panels[1].corner_x = 1e9;
        assert!(Assembly::new(&g, None).unwrap_err().contains("too large"));
        assert!(Assembly::new(&Geometry::default(), None).is_err());
    }
}
