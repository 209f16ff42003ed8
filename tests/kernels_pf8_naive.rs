//! The fast radial statistics (one windowed pass + candidates, window learned from the previous
//! frame) against a direct transcription of OM's five full clipping passes: the included pixel
//! counts must be identical in every bin and every frame, whatever the frame history, and the
//! thresholds equal to float rounding. Also precision/recall of peakfinder8 on synthetic spots.

use lclstreamer::algo::spots::{SplitMix64, SpotRecipe, score, synth_frame};
use lclstreamer::algo::{HitCriteria, PeakFinder8, PeakList, Pf8Params};
use lclstreamer::detector::{Geometry, SlabLayout};

struct Naive {
    offset: Vec<f64>,
    rthr: Vec<f32>,
    count: Vec<u32>,
}

/// OM's `compute_radial_bins`, written plainly (f64 sums).
fn naive_stats(data: &[f32], mask: &[u8], pix_r: &[f32], p: &Pf8Params) -> Naive {
    let max_r = pix_r.iter().copied().fold(-1e9f32, f32::max);
    let nb = max_r.ceil() as usize + 1;
    let mut rthr = vec![1e9f32; nb];
    let mut lthr = vec![-1e9f32; nb];
    let mut offset = vec![0.0f64; nb];
    let mut count = vec![0u32; nb];
    for _ in 0..5 {
        let mut s = vec![[0.0f64; 2]; nb];
        count.iter_mut().for_each(|c| *c = 0);
        for i in 0..data.len() {
            if mask[i] == 0 {
                continue;
            }
            let b = pix_r[i].round_ties_even() as usize;
            let v = data[i];
            if v < rthr[b] && v > lthr[b] {
                s[b][0] += v as f64;
                s[b][1] += (v as f64) * (v as f64);
                count[b] += 1;
            }
        }
        for b in 0..nb {
            if count[b] == 0 {
                offset[b] = 0.0;
                rthr[b] = f32::MAX;
                lthr[b] = f32::MIN_POSITIVE;
            } else {
                let n = count[b] as f64;
                let mu = s[b][0] / n;
                let var = s[b][1] / n - mu * mu;
                let sig = if var >= 0.0 { var.sqrt() } else { var };
                offset[b] = mu;
                rthr[b] = ((mu + p.minimum_snr as f64 * sig) as f32).max(p.adc_threshold);
                lthr[b] = (mu - p.minimum_snr as f64 * sig) as f32;
            }
        }
    }
    Naive {
        offset,
        rthr,
        count,
    }
}

fn small_layout() -> (SlabLayout, Vec<f32>) {
    let layout = SlabLayout {
        asic_nx: 64,
        asic_ny: 48,
        nasics_x: 2,
        nasics_y: 4,
    };
    let (h, w) = (layout.height(), layout.width());
    let mut r = vec![0.0f32; h * w];
    for ss in 0..h {
        for fs in 0..w {
            let (x, y) = (fs as f64 - 61.3, ss as f64 - 97.8);
            r[ss * w + fs] = (x * x + y * y).sqrt() as f32;
        }
    }
    (layout, r)
}

#[test]
fn windowed_radial_stats_equal_five_full_passes() {
    let (layout, pix_r) = small_layout();
    let n = layout.len();
    let mut rng = SplitMix64::new(99);
    let mut mask = vec![1u8; n];
    for m in mask.iter_mut() {
        if rng.uniform() < 0.02 {
            *m = 0;
        }
    }
    let p = Pf8Params {
        min_res: 3.0,
        max_res: 150.0,
        adc_threshold: 20.0,
        ..Pf8Params::default()
    };
    let mut pf = PeakFinder8::new(p, layout, &pix_r, Some(&mask)).unwrap();
    let eff = pf.effective_mask();
    let mut peaks = PeakList::default();
    // Frames whose statistics jump around (level, noise, outliers, NaN, constant patches), so
    // windows learned from one frame are often wrong for the next.
    for f in 0..24 {
        let level = [10.0, 200.0, -30.0, 0.0][f % 4] as f32;
        let noise = [1.0, 25.0, 0.0, 4.0, 100.0][f % 5] as f32;
        let mut frame: Vec<f32> = (0..n)
            .map(|_| level + noise * rng.normal() as f32)
            .collect();
        for _ in 0..(f * 13) % 97 {
            let i = (rng.uniform() * n as f64) as usize;
            frame[i] = [5e3f32, -5e3, f32::NAN, 2e9, -2e9][(i + f) % 5];
        }
        if f % 3 == 0 {
            frame[1000..1400].iter_mut().for_each(|v| *v = 7.0);
        }
        pf.find(&frame, &mut peaks).unwrap();
        let nv = naive_stats(&frame, &eff, &pix_r, &p);
        let st = pf.radial_stats();
        for b in 0..nv.count.len() {
            if st.count[b] != nv.count[b] {
                let vals: Vec<f32> = (0..n)
                    .filter(|&i| eff[i] != 0 && pix_r[i].round_ties_even() as usize == b)
                    .map(|i| frame[i])
                    .filter(|v| *v != level)
                    .collect();
                eprintln!(
                    "bin {b}: ours count {} rthr {} lthr {} off {}; naive rthr {} off {}; non-level values {vals:?}",
                    st.count[b], st.rthr[b], st.lthr[b], st.offset[b], nv.rthr[b], nv.offset[b]
                );
            }
            assert_eq!(
                st.count[b], nv.count[b],
                "frame {f} bin {b}: pixel counts differ"
            );
            let (a, e) = (st.rthr[b], nv.rthr[b]);
            assert!(
                (a - e).abs() <= 1e-5 * e.abs().max(1.0),
                "frame {f} bin {b}: rthr {a} vs {e}"
            );
            let (a, e) = (st.offset[b] as f64, nv.offset[b]);
            assert!(
                (a - e).abs() <= 1e-5 * e.abs().max(1.0),
                "frame {f} bin {b}"
            );
        }
    }
}

#[test]
fn synthetic_epix10k2m_precision_recall_and_hits() {
    let layout = SlabLayout::EPIX10K2M;
    let geom = Geometry::synthetic_epix10k2m(0.37, -0.61);
    assert_eq!(geom.layout("synthetic").unwrap(), layout);
    let pix_r = geom.radius_map();
    let mut pf = PeakFinder8::new(Pf8Params::default(), layout, &pix_r, None).unwrap();
    let mut rng = SplitMix64::new(7);
    let mut frame = vec![0.0f32; layout.len()];
    let mut peaks = PeakList::default();
    let (mut found, mut matched, mut truth_n) = (0, 0, 0);
    let hit = HitCriteria::default();
    for k in 0..3 {
        let recipe = SpotRecipe {
            num_spots: [150, 4, 0][k],
            ..SpotRecipe::default()
        };
        let truth = synth_frame(layout, &pix_r, &recipe, &mut rng, &mut frame);
        pf.find(&frame, &mut peaks).unwrap();
        let pos: Vec<(f32, f32)> = peaks.peaks.iter().map(|p| (p.fs, p.ss)).collect();
        let (_, _, m) = score(&pos, &truth, 1.5);
        found += pos.len();
        matched += m;
        truth_n += truth.len();
        assert_eq!(
            hit.is_hit(peaks.len()),
            k == 0,
            "frame {k}: {} peaks",
            peaks.len()
        );
        for p in &peaks.peaks {
            assert!((p.snr - p.intensity / p.sigma).abs() <= 1e-3 * p.snr.abs());
        }
    }
    let (precision, recall) = (
        matched as f64 / found as f64,
        matched as f64 / truth_n as f64,
    );
    println!("precision {precision:.4} recall {recall:.4} ({found} found, {truth_n} true)");
    assert!(precision >= 0.98, "precision {precision}");
    assert!(recall >= 0.80, "recall {recall}");
}

#[test]
fn hit_criteria_are_strict() {
    let h = HitCriteria {
        min_num_peaks_for_hit: 8,
        max_num_peaks_for_hit: 10,
    };
    assert!(!h.is_hit(8));
    assert!(h.is_hit(9));
    assert!(!h.is_hit(10));
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let (layout, pix_r) = small_layout();
    assert!(PeakFinder8::new(Pf8Params::default(), layout, &pix_r[1..], None).is_err());
    let mut bad_r = pix_r.clone();
    bad_r[5] = f32::NAN;
    assert!(PeakFinder8::new(Pf8Params::default(), layout, &bad_r, None).is_err());
    let mut pf = PeakFinder8::new(Pf8Params::default(), layout, &pix_r, None).unwrap();
    let mut peaks = PeakList::default();
    let err = pf.find(&[0.0; 10], &mut peaks).unwrap_err();
    assert!(err.to_string().contains("frame has 10 elements"), "{err}");
}
