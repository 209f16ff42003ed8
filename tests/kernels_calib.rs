//! Calibration against a plain transcription of psana's recipe (gain ranges from configuration
//! and data bits, per-range constants, masked median common mode, gain factors, status mask),
//! and the constant files' shape checks.

use lclstreamer::algo::spots::SplitMix64;
use lclstreamer::detector::constants::{ConstantFiles, GainConstants};
use lclstreamer::detector::epix10ka::{self, PanelConfig};
use lclstreamer::detector::epixhr2x2;
use lclstreamer::detector::{Calibrator, CommonModeParams};
use ndarray::{Array3, Array4};
use ndarray_npy::WriteNpyExt;

/// psana's table (np.select order), written independently of the library.
fn psana_gain_range(cbits: u8) -> Option<usize> {
    let conds = [
        cbits & 28 == 28,
        cbits & 28 == 12,
        cbits & 12 == 8,
        cbits & 60 == 16,
        cbits & 60 == 0,
        cbits & 60 == 48,
        cbits & 60 == 32,
    ];
    conds.iter().position(|&c| c)
}

/// `np.ma.median` of the values where `m` is set, and whether it exists.
fn ma_median(vals: &[f32], m: &[bool]) -> Option<f32> {
    let mut v: Vec<f32> = vals.iter().zip(m).filter(|x| *x.1).map(|x| *x.0).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f32::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) * 0.5
    })
}

/// psana `common_mode_epix_multigain_apply` on one segment, following its loops literally; the
/// row blocks of modes 4 and 2 are rows `0..split` and `split..rows` (psana's "halves").
fn psana_cm(
    arr: &mut [f32],
    gmask: &[bool],
    (rows, cols, split): (usize, usize, usize),
    nbanks: usize,
    p: &CommonModeParams,
) {
    let bw = cols / nbanks;
    let block = |h: usize| if h == 0 { 0..split } else { split..rows };
    let (cormax, npixmin) = (p.cormax, p.npixmin);
    if p.mode & 4 != 0 {
        for h in 0..2 {
            for b in 0..nbanks {
                let idx: Vec<usize> = block(h)
                    .flat_map(|r| (b * bw..(b + 1) * bw).map(move |c| r * cols + c))
                    .collect();
                let vals: Vec<f32> = idx.iter().map(|&i| arr[i]).collect();
                let m: Vec<bool> = idx.iter().map(|&i| gmask[i]).collect();
                let npix = m.iter().filter(|&&x| x).count();
                if npix < npixmin {
                    continue;
                }
                if let Some(cm) = ma_median(&vals, &m)
                    && cm.abs() < cormax
                {
                    for &i in &idx {
                        if gmask[i] {
                            arr[i] -= cm;
                        }
                    }
                }
            }
        }
    }
    if p.mode & 1 != 0 {
        for r in 0..rows {
            for b in 0..nbanks {
                let idx: Vec<usize> = (b * bw..(b + 1) * bw).map(|c| r * cols + c).collect();
                let vals: Vec<f32> = idx.iter().map(|&i| arr[i]).collect();
                let m: Vec<bool> = idx.iter().map(|&i| gmask[i]).collect();
                let npix = m.iter().filter(|&&x| x).count();
                let mut cm = if npix > npixmin {
                    ma_median(&vals, &m).unwrap_or(0.0)
                } else {
                    0.0
                };
                if cm.abs() >= cormax {
                    cm = 0.0;
                }
                for &i in &idx {
                    if gmask[i] {
                        arr[i] -= cm;
                    }
                }
            }
        }
    }
    if p.mode & 2 != 0 {
        for h in 0..2 {
            for c in 0..cols {
                let idx: Vec<usize> = block(h).map(|r| r * cols + c).collect();
                let vals: Vec<f32> = idx.iter().map(|&i| arr[i]).collect();
                let m: Vec<bool> = idx.iter().map(|&i| gmask[i]).collect();
                let npix = m.iter().filter(|&&x| x).count();
                let mut cm = if npix > npixmin {
                    ma_median(&vals, &m).unwrap_or(0.0)
                } else {
                    0.0
                };
                if cm.abs() >= cormax {
                    cm = 0.0;
                }
                for &i in &idx {
                    if gmask[i] {
                        arr[i] -= cm;
                    }
                }
            }
        }
    }
}

/// psana's panel assembly of the four ASIC configuration blocks, written independently.
fn psana_cbits(cfg: &PanelConfig) -> Vec<u8> {
    let (ar, ac) = (176, 192);
    let a = |k: usize, r: usize, c: usize| cfg.asic_pixel_config[(k * ar + r) * ac + c];
    let mut out = vec![0u8; 352 * 384];
    for r in 0..352 {
        for c in 0..384 {
            let (v, k) = match (r < ar, c < ac) {
                (true, true) => (a(2, ar - 1 - r, ac - 1 - c), 2),
                (true, false) => (a(1, ar - 1 - r, 2 * ac - 1 - c), 1),
                (false, true) => (a(3, r - ar, c), 3),
                (false, false) => (a(0, r - ar, c - ac), 0),
            };
            out[r * 384 + c] = (v & 12) | if cfg.trbit[k] != 0 { 16 } else { 0 };
        }
    }
    out
}

fn random_epix_case(
    nsegs: usize,
    rng: &mut SplitMix64,
) -> (GainConstants, Vec<PanelConfig>, Vec<u16>) {
    let mut c = lclstreamer::detector::synthetic::epix10ka_constants(nsegs, rng);
    // Pedestals with fractional parts and a few zero gains (divide_protected → 0).
    for g in c.pixel_gain.iter_mut().step_by(997) {
        *g = 0.0;
    }
    // Status bits above 0xFFFF mask a pixel too in psana's det.raw.calib.
    for s in c.pixel_status.iter_mut().step_by(1009) {
        *s |= 1 << 20;
    }
    let configs: Vec<PanelConfig> = (0..nsegs)
        .map(|_| {
            let choices = [0u8, 4, 8, 12, 0, 0];
            let apc = (0..4 * 176 * 192)
                .map(|_| choices[(rng.uniform() * choices.len() as f64) as usize] | 0x3)
                .collect::<Vec<u8>>();
            let trbit = [0u8, 1, (rng.uniform() < 0.5) as u8, 1];
            PanelConfig::new(0, &apc, &trbit).unwrap()
        })
        .collect();
    let n = c.frame_len();
    let raw = (0..n)
        .map(|i| {
            let row_cm = ((i / 48) % 7) as f64 * 3.0 - 9.0;
            let adc = 1500.0
                + 80.0 * rng.normal()
                + row_cm
                + if rng.uniform() < 0.05 { 400.0 } else { 0.0 };
            let bit = if rng.uniform() < 0.3 { 0x4000 } else { 0 };
            (adc.clamp(0.0, 16383.0) as u16) | bit
        })
        .collect();
    (c, configs, raw)
}

fn psana_epix_calib(
    c: &GainConstants,
    configs: &[PanelConfig],
    raw: &[u16],
    user_mask: &[u8],
    cm: Option<CommonModeParams>,
) -> Vec<f32> {
    let cbits: Vec<Vec<u8>> = configs.iter().map(psana_cbits).collect();
    psana_multigain_calib(c, &cbits, raw, user_mask, cm, (0x4000, 9))
}

/// psana `calib_epix10ka_any` on per-segment control bits `cbits`, the data gain bit moved to
/// bit 5 by `(raw & gain_bit) >> shift`.
fn psana_multigain_calib(
    c: &GainConstants,
    cbits: &[Vec<u8>],
    raw: &[u16],
    user_mask: &[u8],
    cm: Option<CommonModeParams>,
    (gain_bit, shift): (u16, u32),
) -> Vec<f32> {
    let (rows, cols) = (c.rows, c.cols);
    let seg = rows * cols;
    let n = c.frame_len();
    let mut out = vec![0.0f32; n];
    for s in 0..c.nsegs {
        let cb = &cbits[s];
        let mut arr = vec![0.0f32; seg];
        let mut mask = vec![false; seg];
        let mut gmask = vec![false; seg];
        let mut fac = vec![0.0f32; seg];
        for i in 0..seg {
            let k = s * seg + i;
            let r = raw[k];
            let bits = cb[i] | (((r & gain_bit) >> shift) as u8);
            let good = (0..5).all(|gr| c.pixel_status[gr * n + k] == 0) && user_mask[k] != 0;
            mask[i] = good;
            match psana_gain_range(bits) {
                Some(gr) => {
                    arr[i] = f32::from(r & 0x3FFF) - c.pedestals[gr * n + k];
                    let g = c.pixel_gain[gr * n + k];
                    fac[i] = if g == 0.0 { 0.0 } else { 1.0 / g };
                    gmask[i] =
                        good && (cm.is_none_or(|p| p.alg != 7) || [0, 1, 3, 4].contains(&gr));
                }
                None => {
                    // psana's defaults for a pixel with no gain range: pedestal 0, factor 1.
                    arr[i] = f32::from(r & 0x3FFF);
                    fac[i] = 1.0;
                    gmask[i] = good && cm.is_none_or(|p| p.alg != 7);
                }
            }
        }
        if let Some(p) = cm {
            psana_cm(&mut arr, &gmask, (rows, cols, rows / 2), 8, &p);
        }
        for i in 0..seg {
            out[s * seg + i] = arr[i] * fac[i] * f32::from(u8::from(mask[i]));
        }
    }
    out
}

/// psana `cbits_config_epixhr2x2`, step by step: the flat `asicPixelConfig` & 12 as the panel,
/// then `trbit` for all pixels, none, or per quadrant (A1 top left, A0 bottom left, A3 top
/// right, A2 bottom right).
fn psana_cbits_hr(cfg: &PanelConfig) -> Vec<u8> {
    let (rows, cols) = (288, 384);
    let (rh, ch) = (rows / 2, cols / 2);
    let mut cb: Vec<u8> = cfg.asic_pixel_config.iter().map(|&b| b & 12).collect();
    assert_eq!(cb.len(), rows * cols);
    let tr = cfg.trbit;
    if tr.iter().all(|&t| t != 0) {
        cb.iter_mut().for_each(|b| *b |= 16);
    } else if tr.iter().any(|&t| t != 0) {
        let quads = [
            (tr[1], 0..rh, 0..ch),
            (tr[0], rh..rows, 0..ch),
            (tr[3], 0..rh, ch..cols),
            (tr[2], rh..rows, ch..cols),
        ];
        for (t, rr, cc) in quads {
            if t != 0 {
                for r in rr {
                    for c in cc.clone() {
                        cb[r * cols + c] |= 16;
                    }
                }
            }
        }
    }
    cb
}

/// Bit for bit, the sign of masked zeros included.
fn assert_bits(ours: &[f32], reference: &[f32], what: &str) {
    let bad = ours
        .iter()
        .zip(reference)
        .position(|(a, b)| a.to_bits() != b.to_bits());
    if let Some(i) = bad {
        panic!(
            "{what}: pixel {i} ours {:e} psana {:e}",
            ours[i], reference[i]
        );
    }
}

#[test]
fn epix10ka_matches_psana_recipe_all_common_modes() {
    let mut rng = SplitMix64::new(5);
    let (c, configs, raw) = random_epix_case(2, &mut rng);
    let n = c.frame_len();
    let user_mask: Vec<u8> = (0..n).map(|i| u8::from(i % 1013 != 0)).collect();
    let mut out = vec![0.0f32; n];
    for cm in [
        None,
        Some([7.0, 1.0, 100.0, 10.0]),
        Some([7.0, 2.0, 30.0, 10.0]),
        Some([7.0, 4.0, 100.0, 10.0]),
        Some([7.0, 7.0, 100.0, 10.0]),
        Some([0.0, 7.0, 100.0, 40.0]),
    ] {
        let cm = cm.and_then(|v| CommonModeParams::from_psana(&v));
        let mut cal = Calibrator::epix10ka(&c, &configs, Some(&user_mask), cm).unwrap();
        cal.calibrate_slab(&raw, &mut out).unwrap();
        let reference = psana_epix_calib(&c, &configs, &raw, &user_mask, cm);
        assert_bits(&out, &reference, &format!("cm {cm:?}"));
        let mut par = vec![0.0f32; n];
        cal.calibrate_slab_par(&raw, &mut par).unwrap();
        assert_bits(&par, &out, &format!("cm {cm:?}, segments in parallel"));
        let segs: Vec<&[u16]> = raw.chunks(352 * 384).collect();
        cal.calibrate(&segs, &mut par).unwrap();
        assert_bits(&par, &out, &format!("cm {cm:?}, segment by segment"));
    }
}

#[test]
fn epix10ka_config_assembly_and_gain_table() {
    let mut apc = vec![0u8; 4 * 176 * 192];
    for k in 0..4 {
        for i in 0..176 * 192 {
            apc[k * 176 * 192 + i] = if k == 2 { 12 } else { 8 };
        }
    }
    apc[2 * 176 * 192] = 4; // ASIC 2 pixel (0,0): rotated 180° into panel pixel (175, 191)
    let cfg = PanelConfig::new(0, &apc, &[1, 0, 1, 0]).unwrap();
    let cb = cfg.control_bits();
    assert_eq!(cb, psana_cbits(&cfg));
    assert_eq!(cb[175 * 384 + 191], 4 | 16);
    assert_eq!(cb[0], 12 | 16); // top-left is ASIC 2 (trbit 1): fixed high
    let [g0, g1] = cfg.gain_ranges();
    assert_eq!(g0[0], Some(epix10ka::GainRange::FixedHigh));
    assert_eq!(g1[0], Some(epix10ka::GainRange::FixedHigh));
    assert_eq!(g0[351 * 384 + 383], Some(epix10ka::GainRange::FixedLow));
    assert_eq!(g0[175 * 384 + 191], None); // g=1, ga=0 is not a psana gain range
    for b in 0..64u8 {
        assert_eq!(
            epix10ka::gain_range(b).map(|g| g as usize),
            psana_gain_range(b),
            "cbits {b}"
        );
    }
    assert!(
        PanelConfig::new(3, &apc[1..], &[0; 4])
            .unwrap_err()
            .to_string()
            .contains("segment 3")
    );
}

fn random_epixhr2x2_case(
    nsegs: usize,
    trbits: &[[u8; 4]],
    rng: &mut SplitMix64,
) -> (GainConstants, Vec<PanelConfig>, Vec<u16>) {
    let (rows, cols, ngr) = (288, 384, 7);
    let n = nsegs * rows * cols;
    let gains = [41.0f32, 13.7, 0.512, 41.0, 13.7, 0.512, 0.512];
    let mut c = GainConstants {
        ngr,
        nsegs,
        rows,
        cols,
        pedestals: vec![0.0; ngr * n],
        pixel_gain: vec![0.0; ngr * n],
        pixel_status: vec![0; ngr * n],
        pixel_mask: None,
    };
    for (gr, &g) in gains.iter().enumerate() {
        for i in 0..n {
            let k = gr * n + i;
            c.pedestals[k] = 1500.0 + 60.0 * rng.normal() as f32 + 100.0 * gr as f32;
            c.pixel_gain[k] = g * (1.0 + 0.03 * rng.normal() as f32);
            if rng.uniform() < 2e-4 {
                c.pixel_status[k] = 1 << (gr % 4);
            }
        }
    }
    for g in c.pixel_gain.iter_mut().step_by(997) {
        *g = 0.0;
    }
    let configs = (0..nsegs)
        .map(|s| {
            let choices = [0u8, 4, 8, 12, 0, 0];
            let apc: Vec<u8> = (0..rows * cols)
                .map(|_| choices[(rng.uniform() * choices.len() as f64) as usize] | 0x3)
                .collect();
            epixhr2x2::panel_config(s, &apc, &trbits[s % trbits.len()]).unwrap()
        })
        .collect();
    let raw = (0..n)
        .map(|i| {
            let row_cm = ((i / 48) % 7) as f64 * 3.0 - 9.0;
            let adc = 1500.0 + 80.0 * rng.normal() + row_cm;
            // Bit 15 switches gain; bit 14, set on its own or with it, must be ignored.
            let g15 = if rng.uniform() < 0.3 { 0x8000 } else { 0 };
            let b14 = if rng.uniform() < 0.5 { 0x4000 } else { 0 };
            (adc.clamp(0.0, 16383.0) as u16) | g15 | b14
        })
        .collect();
    (c, configs, raw)
}

#[test]
fn epixhr2x2_matches_psana_recipe_gain_bit_15_all_common_modes() {
    let mut rng = SplitMix64::new(11);
    let trbits = [[1, 0, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 1, 1, 0]];
    let (c, configs, raw) = random_epixhr2x2_case(4, &trbits, &mut rng);
    let n = c.frame_len();
    let user_mask: Vec<u8> = (0..n).map(|i| u8::from(i % 1013 != 0)).collect();
    let cbits: Vec<Vec<u8>> = configs.iter().map(psana_cbits_hr).collect();
    let mut out = vec![0.0f32; n];
    for cm in [
        None,
        Some([7.0, 1.0, 100.0, 10.0]),
        Some([7.0, 2.0, 30.0, 10.0]),
        Some([7.0, 4.0, 100.0, 10.0]),
        Some([7.0, 7.0, 100.0, 10.0]),
        Some([0.0, 7.0, 100.0, 40.0]),
    ] {
        let cm = cm.and_then(|v| CommonModeParams::from_psana(&v));
        let mut cal = Calibrator::epixhr2x2(&c, &configs, Some(&user_mask), cm).unwrap();
        cal.calibrate_slab(&raw, &mut out).unwrap();
        let reference = psana_multigain_calib(&c, &cbits, &raw, &user_mask, cm, (0x8000, 10));
        assert_bits(&out, &reference, &format!("cm {cm:?}"));
        let mut par = vec![0.0f32; n];
        cal.calibrate_slab_par(&raw, &mut par).unwrap();
        assert_bits(&par, &out, &format!("cm {cm:?}, segments in parallel"));
        let segs: Vec<&[u16]> = raw.chunks(288 * 384).collect();
        cal.calibrate(&segs, &mut par).unwrap();
        assert_bits(&par, &out, &format!("cm {cm:?}, segment by segment"));
    }
    // Bit 14 alone selects nothing: clearing it changes no pixel.
    let cleared: Vec<u16> = raw.iter().map(|&r| r & !0x4000).collect();
    let mut cal = Calibrator::epixhr2x2(&c, &configs, Some(&user_mask), None).unwrap();
    let mut again = vec![0.0f32; n];
    cal.calibrate_slab(&raw, &mut out).unwrap();
    cal.calibrate_slab(&cleared, &mut again).unwrap();
    assert_bits(&again, &out, "bit 14 cleared");
}

#[test]
fn epixhr2x2_config_assembly_and_gain_bit() {
    // Auto high-to-low everywhere (asicPixelConfig 0): trbit picks H or M per ASIC quadrant and
    // data bit 15 picks the low range.
    let apc = vec![0u8; 288 * 384];
    let cfg = epixhr2x2::panel_config(0, &apc, &[1, 0, 0, 1]).unwrap();
    let cb = epixhr2x2::control_bits(&cfg).unwrap();
    assert_eq!(cb, psana_cbits_hr(&cfg));
    let px = |r: usize, c: usize| r * 384 + c;
    assert_eq!(cb[px(0, 0)], 0); // A1 top left, trbit 0
    assert_eq!(cb[px(287, 0)], 16); // A0 bottom left, trbit 1
    assert_eq!(cb[px(0, 383)], 16); // A3 top right, trbit 1
    assert_eq!(cb[px(287, 383)], 0); // A2 bottom right, trbit 0
    let [g0, g1] = epixhr2x2::gain_ranges(&cfg).unwrap();
    use epix10ka::GainRange::*;
    assert_eq!(g0[px(287, 0)], Some(AutoHighLowHigh));
    assert_eq!(g1[px(287, 0)], Some(AutoHighLowLow));
    assert_eq!(g0[px(0, 0)], Some(AutoMediumLowMedium));
    assert_eq!(g1[px(0, 0)], Some(AutoMediumLowLow));
    for trbit in [[0u8; 4], [1; 4], [0, 1, 0, 1], [2, 0, 7, 0]] {
        let apc: Vec<u8> = (0..288 * 384).map(|i| (i * 7 % 256) as u8).collect();
        let cfg = epixhr2x2::panel_config(0, &apc, &trbit).unwrap();
        assert_eq!(
            epixhr2x2::control_bits(&cfg).unwrap(),
            psana_cbits_hr(&cfg),
            "trbit {trbit:?}"
        );
    }
    // One pixel per gain range and gain-bit state, against psana's table, through the
    // calibrator: pedestal of range gr is 100·gr, gain 1, so calib = raw − 100·gr.
    let c = GainConstants {
        ngr: 7,
        nsegs: 1,
        rows: 288,
        cols: 384,
        pedestals: (0..7)
            .flat_map(|gr| vec![100.0 * gr as f32; 288 * 384])
            .collect(),
        pixel_gain: vec![1.0; 7 * 288 * 384],
        pixel_status: vec![0; 7 * 288 * 384],
        pixel_mask: None,
    };
    let mut apc = vec![0u8; 288 * 384];
    for (i, b) in apc.iter_mut().enumerate() {
        *b = [0u8, 4, 8, 12][i % 4];
    }
    for trbit in [[0u8; 4], [1; 4]] {
        let cfg = epixhr2x2::panel_config(0, &apc, &trbit).unwrap();
        let mut cal = Calibrator::epixhr2x2(&c, std::slice::from_ref(&cfg), None, None).unwrap();
        let cb = psana_cbits_hr(&cfg);
        for raw_hi in [0u16, 0x4000, 0x8000, 0xC000] {
            let raw = vec![5000u16 | raw_hi; 288 * 384];
            let mut out = vec![0.0f32; 288 * 384];
            cal.calibrate_slab(&raw, &mut out).unwrap();
            for i in 0..4 {
                let bits = cb[i] | u8::from(raw_hi & 0x8000 != 0) << 5;
                let want = psana_gain_range(bits).map_or(5000.0, |gr| 5000.0 - 100.0 * gr as f32);
                assert_eq!(out[i], want, "trbit {trbit:?} raw {raw_hi:#x} pixel {i}");
            }
        }
    }
    assert!(
        epixhr2x2::panel_config(2, &apc[1..], &[0; 4])
            .unwrap_err()
            .to_string()
            .contains("segment 2")
    );
    assert!(epixhr2x2::panel_config(2, &apc, &[0; 3]).is_err());
    // ePix10ka-sized configurations are refused, not misread.
    let wrong = PanelConfig::uniform(0, 1);
    assert!(Calibrator::epixhr2x2(&c, &[wrong], None, None).is_err());
}

#[test]
fn jungfrau_gain_bits_pedestal_offset_and_bad_code() {
    let (nsegs, rows, cols) = (1, 512, 1024);
    let n = nsegs * rows * cols;
    let mut rng = SplitMix64::new(11);
    let ped: Vec<f32> = (0..3 * n)
        .map(|i| 1000.0 + (i % 3) as f32 * 500.0 + rng.uniform() as f32)
        .collect();
    let gain: Vec<f32> = (0..3 * n).map(|i| [40.0, 1.5, 0.1][i / n]).collect();
    let c = GainConstants {
        ngr: 3,
        nsegs,
        rows,
        cols,
        pedestals: ped.clone(),
        pixel_gain: gain.clone(),
        pixel_status: vec![0; 3 * n],
        pixel_mask: None,
    };
    let raw: Vec<u16> = (0..n)
        .map(|i| (((i % 4) as u16) << 14) | (2000 + (i % 100) as u16))
        .collect();
    let mut cal = Calibrator::jungfrau(&c, None, None).unwrap();
    let mut out = vec![0.0f32; n];
    cal.calibrate_slab(&raw, &mut out).unwrap();
    for i in [0usize, 1, 2, 3, 4097, 377_778] {
        let code = raw[i] >> 14;
        let adc = f32::from(raw[i] & 0x3FFF);
        let want = match code {
            0 => (adc - ped[i]) / gain[i],
            1 => (adc - ped[n + i]) / gain[n + i],
            3 => (adc - ped[2 * n + i]) / gain[2 * n + i],
            _ => 0.0,
        };
        assert!(
            (out[i] - want).abs() <= 1e-5 * want.abs().max(1.0),
            "pixel {i} code {code}"
        );
    }
    // Common mode over gain-0 pixels only: a row offset on gain-0 pixels is removed.
    let raw0: Vec<u16> = (0..n)
        .map(|i| (1000 + ((i / 1024) % 5) * 7) as u16)
        .collect();
    let flat = GainConstants {
        pedestals: vec![1000.0; 3 * n],
        pixel_gain: vec![1.0; 3 * n],
        ..c.clone()
    };
    let cm = CommonModeParams::from_psana(&[7.0, 1.0, 100.0, 10.0]);
    let mut cal = Calibrator::jungfrau(&flat, None, cm).unwrap();
    cal.calibrate_slab(&raw0, &mut out).unwrap();
    assert!(out.iter().all(|v| v.abs() < 1e-6));
}

/// The common-mode settings every family is tested with (psana tuples).
const CM_CASES: [Option<[f64; 4]>; 7] = [
    None,
    Some([7.0, 1.0, 100.0, 10.0]),
    Some([7.0, 2.0, 30.0, 10.0]),
    Some([7.0, 4.0, 100.0, 10.0]),
    Some([7.0, 7.0, 100.0, 10.0]),
    Some([0.0, 7.0, 6.0, 10.0]),
    Some([0.0, 7.0, 100.0, 40.0]),
];

/// Calibrates `raw` all three ways (slab, slab in parallel, segment by segment) and checks each
/// against `reference` bit for bit.
fn check_all_ways(cal: &mut Calibrator, raw: &[u16], reference: &[f32], what: &str) {
    let n = raw.len();
    let mut out = vec![0.0f32; n];
    cal.calibrate_slab(raw, &mut out).unwrap();
    assert_bits(&out, reference, what);
    cal.calibrate_slab_par(raw, &mut out).unwrap();
    assert_bits(&out, reference, &format!("{what}, segments in parallel"));
    let (rows, cols) = cal.segment_shape();
    let segs: Vec<&[u16]> = raw.chunks(rows * cols).collect();
    cal.calibrate(&segs, &mut out).unwrap();
    assert_bits(&out, reference, &format!("{what}, segment by segment"));
}

/// Jungfrau constants of `nsegs` modules (as selected by segment id for a sparse set) and a raw
/// frame with every gain code, common-mode offsets by row and column, photons, zero gains and
/// status bits in each gain plane alone.
fn random_jungfrau_case(nsegs: usize, rng: &mut SplitMix64) -> (GainConstants, Vec<u16>) {
    let (rows, cols) = (512, 1024);
    let n = nsegs * rows * cols;
    let base_ped = [3000.0, 9000.0, 12000.0];
    let base_gain = [41.5f64, -1.52, -0.11];
    let mut pedestals = Vec::with_capacity(3 * n);
    let mut pixel_gain = Vec::with_capacity(3 * n);
    for gr in 0..3 {
        for _ in 0..n {
            pedestals.push((base_ped[gr] + 150.0 * rng.normal()) as f32 + 0.37);
            pixel_gain.push((base_gain[gr] * (0.9 + 0.2 * rng.uniform())) as f32);
        }
    }
    for g in pixel_gain.iter_mut().step_by(1201) {
        *g = 0.0;
    }
    let mut pixel_status = vec![0u32; 3 * n];
    for (k, s) in pixel_status.iter_mut().enumerate() {
        if k % 1777 == (k / n) * 3 {
            *s = [1, 4, 1 << 20][k / n];
        }
    }
    let raw = (0..n)
        .map(|i| {
            let (r, c) = ((i / cols) % rows, i % cols);
            let u = rng.uniform();
            let code: u16 = if u < 0.9 {
                0
            } else if u < 0.95 {
                1
            } else if u < 0.99 {
                3
            } else {
                2
            };
            let plane = [0, 1, 2, 2][code as usize];
            let offset = ((r % 9) as f64 - 4.0) * 2.5 + ((c % 5) as f64 - 2.0) * 1.5;
            let mut adc = f64::from(pedestals[plane * n + i]) + 4.0 * rng.normal() + offset;
            if rng.uniform() < 0.01 {
                adc += 600.0 * rng.uniform();
            }
            (adc.clamp(0.0, 16383.0) as u16) | (code << 14)
        })
        .collect();
    let c = GainConstants {
        ngr: 3,
        nsegs,
        rows,
        cols,
        pedestals,
        pixel_gain,
        pixel_status,
        pixel_mask: None,
    };
    (c, raw)
}

/// psana's default Jungfrau calibration (`cversion` 3, `calib_jungfrau_v3` on the cached
/// `ccons`): per gain code `00, 01, 10, 11` the pair (pedestal + offset, gain factor × mask),
/// code `10` all zeros; `out = ((raw & 0x3FFF) − po) · gm`. With `cm`, psana's python path
/// (`cversion=0`, `calib_jungfrau_single_panel`): common mode on good gain-0 pixels in 16 banks,
/// then `· gfac · mask`.
fn psana_jungfrau_calib(c: &GainConstants, raw: &[u16], cm: Option<CommonModeParams>) -> Vec<f32> {
    let n = c.frame_len();
    let seg = c.rows * c.cols;
    let mask: Vec<f32> = (0..n)
        .map(|k| f32::from(u8::from((0..3).all(|p| c.pixel_status[p * n + k] == 0))))
        .collect();
    let gfac = |k: usize| {
        let g = c.pixel_gain[k];
        if g == 0.0 { 0.0 } else { 1.0 / g }
    };
    let plane = |w: u16| match w >> 14 {
        0 => Some(0),
        1 => Some(1),
        3 => Some(2),
        _ => None,
    };
    let Some(p) = cm else {
        return (0..n)
            .map(|k| {
                let (po, gm) = match plane(raw[k]) {
                    Some(g) => (c.pedestals[g * n + k], gfac(g * n + k) * mask[k]),
                    None => (0.0, 0.0),
                };
                (f32::from(raw[k] & 0x3FFF) - po) * gm
            })
            .collect();
    };
    let mut out = vec![0.0f32; n];
    for s in 0..c.nsegs {
        let ks = s * seg..(s + 1) * seg;
        let mut arr: Vec<f32> = ks
            .clone()
            .map(|k| {
                let po = plane(raw[k]).map_or(0.0, |g| c.pedestals[g * n + k]);
                f32::from(raw[k] & 0x3FFF) - po
            })
            .collect();
        let gmask: Vec<bool> = ks
            .clone()
            .map(|k| raw[k] >> 14 == 0 && mask[k] != 0.0)
            .collect();
        psana_cm(&mut arr, &gmask, (c.rows, c.cols, c.rows / 2), 16, &p);
        for (i, k) in ks.enumerate() {
            let factor = plane(raw[k]).map_or(0.0, |g| gfac(g * n + k));
            out[k] = arr[i] * factor * mask[k];
        }
    }
    out
}

#[test]
fn jungfrau_matches_psana_one_module_and_a_sparse_set() {
    let mut rng = SplitMix64::new(16);
    // One module, and 3 modules as a sparse set of a 16M (e.g. ids 3, 17, 30) supplies them.
    for nsegs in [1, 3] {
        let (c, raw) = random_jungfrau_case(nsegs, &mut rng);
        for cm in CM_CASES {
            let cm = cm.and_then(|v| CommonModeParams::from_psana(&v));
            let mut cal = Calibrator::jungfrau(&c, None, cm).unwrap();
            let reference = psana_jungfrau_calib(&c, &raw, cm);
            check_all_ways(
                &mut cal,
                &raw,
                &reference,
                &format!("{nsegs} modules, cm {cm:?}"),
            );
        }
        let mut out = vec![0.0f32; raw.len()];
        let mut cal = Calibrator::jungfrau(&c, None, None).unwrap();
        cal.calibrate_slab(&raw, &mut out).unwrap();
        for (k, (&w, &v)) in raw.iter().zip(&out).enumerate() {
            if w >> 14 == 2 {
                assert_eq!(v.to_bits(), 0, "bad gain code at pixel {k} gives +0");
            }
        }
    }
}

/// An ePix100 frame: pedestals near 2000 ADU, common-mode offsets by bank, row and column,
/// photons that reach bits 14 and 15, zero gains, status bits.
fn random_epix100_case(rng: &mut SplitMix64) -> (GainConstants, Vec<u16>) {
    let (rows, cols) = (704, 768);
    let n = rows * cols;
    let pedestals: Vec<f32> = (0..n)
        .map(|_| (2000.0 + 100.0 * rng.normal()) as f32 + 0.25)
        .collect();
    let mut pixel_gain: Vec<f32> = (0..n)
        .map(|_| (16.4 * (0.9 + 0.2 * rng.uniform())) as f32)
        .collect();
    for g in pixel_gain.iter_mut().step_by(1301) {
        *g = 0.0;
    }
    let mut pixel_status = vec![0u32; n];
    for s in pixel_status.iter_mut().step_by(1103) {
        *s = 1 << 3;
    }
    for s in pixel_status.iter_mut().skip(7).step_by(4001) {
        *s = 1 << 25;
    }
    // A dead bank corner: rows and columns on the npixmin edges.
    for r in 10..30 {
        for c in 0..90 {
            pixel_status[r * cols + c] = 1;
        }
    }
    let raw = (0..n)
        .map(|i| {
            let (r, c) = (i / cols, i % cols);
            let bank = ((r / 352) * 8 + c / 96) as f64;
            let offset = (bank % 5.0) * 3.0 + ((r % 7) as f64 - 3.0) * 2.0 + (c % 3) as f64;
            let mut adc = f64::from(pedestals[i]) + 3.0 * rng.normal() + offset;
            if rng.uniform() < 0.01 {
                adc += 60000.0 * rng.uniform();
            }
            adc.clamp(0.0, 65535.0) as u16
        })
        .collect();
    let c = GainConstants {
        ngr: 1,
        nsegs: 1,
        rows,
        cols,
        pedestals,
        pixel_gain,
        pixel_status,
        pixel_mask: None,
    };
    (c, raw)
}

/// psana's `calib_epix100`: `arrf = raw − peds` on all 16 bits, `common_mode_apply` with
/// `nbanks_rows_cols = (2, 8)` on the good pixels, `arrf · gfac · mask`. `common_mode_apply`
/// takes `hrows = arrf.shape[1] / 2` before making `arrf` 3-D: `split` is 384 when psana's arrays
/// are the raw's `(704, 768)`, 352 when they are `(1, 704, 768)`.
fn psana_epix100_calib(
    c: &GainConstants,
    raw: &[u16],
    user_mask: &[u8],
    cm: Option<CommonModeParams>,
    split: usize,
) -> Vec<f32> {
    let n = c.frame_len();
    let mask: Vec<bool> = (0..n)
        .map(|k| c.pixel_status[k] == 0 && user_mask[k] != 0)
        .collect();
    let mut arr: Vec<f32> = (0..n).map(|k| f32::from(raw[k]) - c.pedestals[k]).collect();
    if let Some(p) = cm {
        let seg = c.rows * c.cols;
        for (a, m) in arr.chunks_mut(seg).zip(mask.chunks(seg)) {
            psana_cm(a, m, (c.rows, c.cols, split), 8, &p);
        }
    }
    (0..n)
        .map(|k| {
            let g = c.pixel_gain[k];
            let gfac = if g == 0.0 { 0.0 } else { 1.0 / g };
            arr[k] * gfac * f32::from(u8::from(mask[k]))
        })
        .collect()
}

#[test]
fn epix100_matches_psana_recipe_all_common_modes() {
    let mut rng = SplitMix64::new(100);
    let (c, raw) = random_epix100_case(&mut rng);
    assert!(raw.iter().any(|&w| w & 0xC000 == 0xC000));
    let n = c.frame_len();
    let user_mask: Vec<u8> = (0..n).map(|i| u8::from(i % 2111 != 0)).collect();
    for cm in CM_CASES {
        let cm = cm.and_then(|v| CommonModeParams::from_psana(&v));
        let mut cal = Calibrator::epix100(&c, Some(&user_mask), cm).unwrap();
        let reference = psana_epix100_calib(&c, &raw, &user_mask, cm, 384);
        check_all_ways(&mut cal, &raw, &reference, &format!("ePix100, cm {cm:?}"));
        let mut cal = Calibrator::epix100_split(&c, Some(&user_mask), cm, 352).unwrap();
        let reference = psana_epix100_calib(&c, &raw, &user_mask, cm, 352);
        check_all_ways(
            &mut cal,
            &raw,
            &reference,
            &format!("ePix100 halves, cm {cm:?}"),
        );
    }
    for split in [0, 4, 704] {
        assert!(Calibrator::epix100_split(&c, None, None, split).is_err());
    }
    // Two segments stacked work the same way, each with its own constants.
    let two = GainConstants {
        nsegs: 2,
        pedestals: [
            c.pedestals.clone(),
            c.pedestals.iter().map(|p| p + 1.5).collect(),
        ]
        .concat(),
        pixel_gain: c.pixel_gain.repeat(2),
        pixel_status: c.pixel_status.repeat(2),
        ..c.clone()
    };
    let raw2 = raw.repeat(2);
    let cm = CommonModeParams::from_psana(&[0.0, 7.0, 100.0, 10.0]);
    let mut cal = Calibrator::epix100(&two, None, cm).unwrap();
    let reference = psana_epix100_calib(&two, &raw2, &vec![1; 2 * n], cm, 384);
    check_all_ways(&mut cal, &raw2, &reference, "two ePix100 segments");
}

#[test]
fn epixm320_matches_psana_recipe() {
    // psana's epixm320_raw_0_0_0.calib: pedestal plane by bit 15, ADC in bits 14..0, times the
    // status mask of both planes; no gain factor, no common mode.
    let (nasics, rows, cols) = (4, 192, 384);
    let n = nasics * rows * cols;
    let mut rng = SplitMix64::new(320);
    let pedestals: Vec<f32> = (0..2 * n)
        .map(|i| (if i < n { 8000.0 } else { 20000.0 }) + (300.0 * rng.normal()) as f32 + 0.5)
        .collect();
    let mut pixel_status = vec![0u32; 2 * n];
    for (k, s) in pixel_status.iter_mut().enumerate() {
        if k % 997 == (k / n) * 5 {
            *s = [2, 1 << 30][k / n];
        }
    }
    let raw: Vec<u16> = (0..n)
        .map(|i| {
            let hi = rng.uniform() < 0.2;
            let ped = f64::from(pedestals[usize::from(hi) * n + i]);
            let adc = (ped + 5.0 * rng.normal()).clamp(0.0, 32767.0) as u16;
            adc | if hi { 0x8000 } else { 0 }
        })
        .collect();
    let c = GainConstants {
        ngr: 2,
        nsegs: nasics,
        rows,
        cols,
        pedestals,
        pixel_gain: vec![f32::NAN; 2 * n],
        pixel_status,
        pixel_mask: None,
    };
    let user_mask: Vec<u8> = (0..n).map(|i| u8::from(i % 3001 != 0)).collect();
    let reference: Vec<f32> = (0..n)
        .map(|k| {
            let plane = usize::from(raw[k] & 0x8000 != 0);
            let arrf = f32::from(raw[k] & 0x7FFF) - c.pedestals[plane * n + k];
            let good = c.pixel_status[k] == 0 && c.pixel_status[n + k] == 0 && user_mask[k] != 0;
            arrf * f32::from(u8::from(good))
        })
        .collect();
    assert!(reference.iter().any(|v| v.to_bits() == (-0.0f32).to_bits()));
    let mut cal = Calibrator::epixm320(&c, Some(&user_mask)).unwrap();
    check_all_ways(&mut cal, &raw, &reference, "ePixM320");
}

#[test]
fn constants_from_npy_with_shape_errors() {
    let dir = tempfile::tempdir().unwrap();
    let shape = (7, 2, 352, 384);
    let ped = Array4::<f64>::from_elem(shape, 1500.25);
    ped.write_npy(std::fs::File::create(dir.path().join("pedestals.npy")).unwrap())
        .unwrap();
    let gain = Array4::<f32>::from_elem(shape, 16.4);
    gain.write_npy(std::fs::File::create(dir.path().join("pixel_gain.npy")).unwrap())
        .unwrap();
    let status = Array4::<u16>::zeros(shape);
    status
        .write_npy(std::fs::File::create(dir.path().join("pixel_status.npy")).unwrap())
        .unwrap();
    let files = ConstantFiles::in_dir(dir.path());
    let c = GainConstants::load(&files, 7, 2, 352, 384).unwrap();
    assert_eq!(c.pedestals[5], 1500.25);
    assert_eq!(c.pixel_gain[7], 16.4);
    assert!(c.pixel_mask.is_none());

    // psana shapes with the wrong number of segments: the error names file, expected, actual.
    let err = GainConstants::load(&files, 7, 16, 352, 384)
        .unwrap_err()
        .to_string();
    assert!(err.contains("pedestals.npy"), "{err}");
    assert!(
        err.contains("[7, 16, 352, 384]") && err.contains("[7, 2, 352, 384]"),
        "{err}"
    );

    let bad = Array3::<f32>::zeros((2, 352, 384));
    bad.write_npy(std::fs::File::create(dir.path().join("pixel_gain.npy")).unwrap())
        .unwrap();
    let err = GainConstants::load(&files, 7, 2, 352, 384)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pixel_gain.npy") && err.contains("[2, 352, 384]"),
        "{err}"
    );

    std::fs::remove_file(dir.path().join("pixel_gain.npy")).unwrap();
    let err = GainConstants::load(&files, 7, 2, 352, 384)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pixel_gain.npy") && err.contains("cannot open"),
        "{err}"
    );

    std::fs::write(dir.path().join("pixel_gain.npy"), b"not an npy file").unwrap();
    let err = GainConstants::load(&files, 7, 2, 352, 384)
        .unwrap_err()
        .to_string();
    assert!(err.contains("pixel_gain.npy"), "{err}");
}

#[test]
fn calibrator_rejects_mismatched_inputs() {
    let mut rng = SplitMix64::new(3);
    let (c, configs, raw) = random_epix_case(1, &mut rng);
    assert!(Calibrator::epix10ka(&c, &configs[..0], None, None).is_err());
    assert!(Calibrator::jungfrau(&c, None, None).is_err());
    assert!(Calibrator::epix100(&c, None, None).is_err());
    assert!(Calibrator::epixm320(&c, None).is_err());
    let mut cal = Calibrator::epix10ka(&c, &configs, None, None).unwrap();
    let mut out = vec![0.0f32; raw.len()];
    assert!(cal.calibrate_slab(&raw[1..], &mut out).is_err());
    assert!(cal.calibrate(&[&raw[..10]], &mut out).is_err());
}

#[test]
fn constants_from_one_hdf5_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jungfrau_constants.h5");
    let shape = [3usize, 1, 512, 1024];
    {
        let f = hdf5::File::create(&path).unwrap();
        let g = f.create_group("calib").unwrap();
        let ped = ndarray::ArrayD::<f32>::from_elem(shape.to_vec(), 1000.5);
        g.new_dataset_builder()
            .with_data(&ped)
            .create("pedestals")
            .unwrap();
        let off = ndarray::ArrayD::<f64>::from_elem(shape.to_vec(), 2.0);
        g.new_dataset_builder()
            .with_data(&off)
            .create("pixel_offset")
            .unwrap();
        let gain = ndarray::ArrayD::<f32>::from_elem(vec![3, 1, 512, 1000], 40.0);
        g.new_dataset_builder()
            .with_data(&gain)
            .create("pixel_gain")
            .unwrap();
        let status = ndarray::ArrayD::<u8>::zeros(shape.to_vec());
        g.new_dataset_builder()
            .with_data(&status)
            .create("pixel_status")
            .unwrap();
    }
    let err = GainConstants::load_hdf5(&path, Some("calib"), 3, 1, 512, 1024)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("jungfrau_constants.h5:/calib/pixel_gain"),
        "{err}"
    );
    assert!(
        err.contains("[3, 1, 512, 1024]") && err.contains("[3, 1, 512, 1000]"),
        "{err}"
    );
    {
        let f = hdf5::File::open_rw(&path).unwrap();
        let g = f.group("calib").unwrap();
        g.unlink("pixel_gain").unwrap();
        let gain = ndarray::ArrayD::<f32>::from_elem(shape.to_vec(), 40.0);
        g.new_dataset_builder()
            .with_data(&gain)
            .create("pixel_gain")
            .unwrap();
    }
    let c = GainConstants::load_hdf5(&path, Some("calib"), 3, 1, 512, 1024).unwrap();
    assert_eq!(c.pedestals[0], 1002.5);
    assert_eq!(c.pixel_gain[1], 40.0);
    let err = GainConstants::load_hdf5(&path, None, 3, 1, 512, 1024)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("jungfrau_constants.h5:/pedestals") && err.contains("no such dataset"),
        "{err}"
    );
    let err = GainConstants::load_hdf5(&dir.path().join("missing.h5"), None, 3, 1, 512, 1024)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.h5"), "{err}");
}
