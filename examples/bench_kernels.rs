//! Times calibration and peakfinder8 on synthetic ePix10k2M frames (release build, one core;
//! calibration without and with psana's default common mode also with panels on the rayon
//! pool), and scores peakfinder8 against the synthetic truth. Then, per detector model
//! (ePix10k2M, Jungfrau 16M, ePix100), calibration with psana's default for the family followed
//! by peakfinder8 on synth's raw frames (spots, gain switching), in ms per frame and per
//! megapixel against ePix10k2M's in the same run.
//!
//! `cargo run --release --example bench_kernels -- [--frames N] [--reps N] [--dump DIR]
//! [--skip-calib] [--skip-models] [--om-bit-exact]`
//!
//! With `--dump DIR` it also writes `frames.npy` (f32, N×5632×384), `pix_r.npy`, `mask.npy`
//! (i8, radius window folded in), `params.json` and `rust_peaks.json` for `scripts/bench-kernels`.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use lclstreamer::algo::spots::{SplitMix64, SpotRecipe, TrueSpot, score, synth_frame};
use lclstreamer::algo::{PeakFinder8, PeakList, Pf8Params};
use lclstreamer::detector::synthetic::epix10k2m_case;
use lclstreamer::detector::{CalibError, Calibrator, CommonModeParams};
use lclstreamer::detector::{Family, GainConstants, Geometry, SlabLayout};
use lclstreamer::synth::random::substream;
use lclstreamer::synth::{
    Encoder, Noise, Scene, SceneParams, SegmentInput, SynthConstants, SynthDetector,
};
use ndarray::{Array1, Array2, Array3};
use ndarray_npy::WriteNpyExt as _;
use rayon::prelude::*;

/// `Calibrator::calibrate_slab` or its parallel form.
type CalibrateFn = fn(&mut Calibrator, &[u16], &mut [f32]) -> Result<(), CalibError>;

struct Args {
    frames: usize,
    reps: usize,
    dump: Option<PathBuf>,
    skip_calib: bool,
    skip_models: bool,
    om_bit_exact: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        frames: 8,
        reps: 5,
        dump: None,
        skip_calib: false,
        skip_models: false,
        om_bit_exact: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--frames" => a.frames = val()?.parse()?,
            "--reps" => a.reps = val()?.parse()?,
            "--dump" => a.dump = Some(PathBuf::from(val()?)),
            "--skip-calib" => a.skip_calib = true,
            "--skip-models" => a.skip_models = true,
            "--om-bit-exact" => a.om_bit_exact = true,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Single-core memory bandwidth in GB/s: (read-only sum, copy counted as read + write).
fn bandwidth() -> (f64, f64) {
    let n = 64 << 20; // 256 MiB of f32
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    let (mut best_read, mut best_copy) = (0.0f64, 0.0f64);
    for _ in 0..3 {
        let t = Instant::now();
        let mut acc = [0.0f32; 16];
        for ch in src.chunks_exact(16) {
            for j in 0..16 {
                acc[j] += ch[j];
            }
        }
        std::hint::black_box(acc);
        best_read = best_read.max((n * 4) as f64 / t.elapsed().as_secs_f64() / 1e9);
        let t = Instant::now();
        dst.copy_from_slice(&src);
        std::hint::black_box(&dst);
        best_copy = best_copy.max((n * 8) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    (best_read, best_copy)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let (bw_read, bw_copy) = bandwidth();
    println!("memory_bandwidth_gb_s read {bw_read:.1} copy(read+write) {bw_copy:.1}");
    let layout = SlabLayout::EPIX10K2M;
    let geom = Geometry::synthetic_epix10k2m(0.37, -0.61);
    let pix_r = geom.radius_map();
    let (h, w) = (layout.height(), layout.width());
    let n = layout.len();
    let params = Pf8Params {
        om_bit_exact: args.om_bit_exact,
        ..Pf8Params::default()
    };

    // Calibration: raw ePix10ka frames from synthetic constants.
    let mut out = vec![0.0f32; n];
    let mut cal_ms = Vec::new();
    let mut par_ms = Vec::new();
    let mut base_case = None;
    for (label, cm) in [
        ("no common mode", None),
        ("cm (7,1,100,10) rows", Some([7.0, 1.0, 100.0, 10.0])),
        ("cm (7,2,100,10) columns", Some([7.0, 2.0, 100.0, 10.0])),
        (
            "cm (7,2,10,10) columns, psana's default cmpars",
            Some([7.0, 2.0, 10.0, 10.0]),
        ),
        ("cm (7,4,100,10) banks", Some([7.0, 4.0, 100.0, 10.0])),
        ("cm (7,7,100,10) all", Some([7.0, 7.0, 100.0, 10.0])),
    ] {
        if args.skip_calib {
            break;
        }
        let cm = cm.and_then(|c| CommonModeParams::from_psana(&c));
        let case = base_case.get_or_insert_with(|| epix10k2m_case(args.frames.min(4), 7, None));
        let case = case.as_mut().map_err(|e| anyhow::anyhow!("{e}"))?;
        case.calibrator = Calibrator::epix10ka(&case.constants, &case.configs, None, cm)?;
        // ms per frame over `reps` rounds of the frames, after one warm-up round.
        let mut timed = |cal: &mut Calibrator, f: CalibrateFn| -> anyhow::Result<(f64, f64)> {
            let mut times = Vec::new();
            for rep in 0..args.reps + 1 {
                for raw in &case.raw_frames {
                    let t = Instant::now();
                    f(cal, raw, &mut out)?;
                    if rep > 0 {
                        times.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                }
            }
            Ok((min(&times), median(&mut times)))
        };
        let (best, med) = timed(&mut case.calibrator, Calibrator::calibrate_slab)?;
        cal_ms.push((label, best, med));
        if label == "no common mode" || label.contains("default") {
            // Panels in parallel on the rayon pool, for a rank with spare threads.
            let (best, med) = timed(&mut case.calibrator, Calibrator::calibrate_slab_par)?;
            par_ms.push((label, best, med));
        }
    }

    // peakfinder8 on spot frames.
    let mut rng = SplitMix64::new(20260101);
    let recipe = SpotRecipe::default();
    let mut frames = Vec::new();
    let mut truth: Vec<Vec<TrueSpot>> = Vec::new();
    for _ in 0..args.frames {
        let mut f = vec![0.0f32; n];
        truth.push(synth_frame(layout, &pix_r, &recipe, &mut rng, &mut f));
        frames.push(f);
    }
    let mut pf = PeakFinder8::new(params, layout, &pix_r, None)?;
    let mut peaks = PeakList::with_capacity(params.max_num_peaks);
    let mut pf_times = Vec::new();
    let mut all_peaks: Vec<PeakList> = Vec::new();
    for rep in 0..args.reps + 1 {
        for f in &frames {
            let t = Instant::now();
            pf.find(f, &mut peaks)?;
            if rep > 0 {
                pf_times.push(t.elapsed().as_secs_f64() * 1e3);
            } else {
                all_peaks.push(peaks.clone());
            }
        }
    }
    let pf_min = min(&pf_times);
    let pf_ms = median(&mut pf_times);
    let (mut found, mut matched, mut total) = (0usize, 0usize, 0usize);
    for (p, t) in all_peaks.iter().zip(&truth) {
        let pos: Vec<(f32, f32)> = p.peaks.iter().map(|q| (q.fs, q.ss)).collect();
        let (_, _, m) = score(&pos, t, 1.5);
        found += pos.len();
        matched += m;
        total += t.len();
    }
    // Jungfrau 4M (4096x1024, 256x256 ASICs), same recipe scaled to its size.
    let jgeom = Geometry::synthetic_jungfrau4m(0.41, -0.27);
    let jl = SlabLayout::JUNGFRAU4M;
    let jr = jgeom.radius_map();
    let jparams = Pf8Params {
        min_res: 10.0,
        max_res: 1000.0,
        adc_threshold: 250.0,
        minimum_snr: 6.0,
        min_pixel_count: 2,
        ..params
    };
    let mut jpf = PeakFinder8::from_geometry(jparams, &jgeom, "jungfrau4m", None)?;
    let mut jframes = Vec::new();
    for _ in 0..2 {
        let mut f = vec![0.0f32; jl.len()];
        let rec = SpotRecipe {
            min_r: 20.0,
            max_r: 1000.0,
            min_intensity: 1500.0,
            max_intensity: 6000.0,
            ..recipe
        };
        synth_frame(jl, &jr, &rec, &mut rng, &mut f);
        jframes.push(f);
    }
    let mut jpeaks = PeakList::with_capacity(2048);
    let mut jt = Vec::new();
    for rep in 0..args.reps + 1 {
        for f in &jframes {
            let t = Instant::now();
            jpf.find(f, &mut jpeaks)?;
            if rep > 0 {
                jt.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }

    println!(
        "frames {} x reps {} on {}x{} ePix10k2M slab",
        args.frames, args.reps, h, w
    );
    for (label, best, ms) in &cal_ms {
        println!("calibration_ms_per_frame {ms:.3}  (best {best:.3})  [{label}]");
    }
    for (label, best, ms) in &par_ms {
        println!(
            "calibration_parallel_ms_per_frame {ms:.3}  (best {best:.3})  [{label}; panels on {} rayon threads]",
            rayon::current_num_threads()
        );
    }
    println!("peakfinder8_ms_per_frame {pf_ms:.3}  (best {pf_min:.3})");
    println!(
        "peakfinder8_jungfrau4m_ms_per_frame {:.3}  (best {:.3}; 4096x1024 slab, 2 synthetic frames; gathered {:.4}, candidates {})",
        median(&mut jt),
        min(&jt),
        jpf.radial_stats().gathered_fraction(),
        jpf.radial_stats().num_candidates()
    );
    println!(
        "radial statistics: exactly gathered pixels {:.4}, candidates outside the windows {}",
        pf.radial_stats().gathered_fraction(),
        pf.radial_stats().num_candidates()
    );
    let unmasked = pf.effective_mask().iter().filter(|&&m| m != 0).count();
    let pf_bytes = n * 4 + unmasked * 2;
    // Distinct cache lines of the second gain table that switched pixels touch (first frame).
    let lines_of = |per_line: usize| -> usize {
        let raw = base_case
            .as_ref()
            .and_then(|c| c.as_ref().ok())
            .map_or(&[][..], |c| &c.raw_frames[0][..]);
        let mut lines: Vec<usize> = (0..raw.len())
            .filter(|&i| raw[i] & 0x4000 != 0)
            .map(|i| i / per_line)
            .collect();
        lines.dedup();
        lines.len()
    };
    // Pedestal and gain factor side by side (8 B a pixel), eligibility bits (512 pixels a line).
    let (pair_lines, bit_lines) = (lines_of(8), lines_of(512));
    let second = pair_lines * 64;
    let cal_bytes = n * (2 + 4 + 4 + 4 + 4) + second;
    let cm_bytes = n * (2 + 4 + 4 + 4 + 4) + n / 4 + second + bit_lines * 64;
    println!(
        "bytes_per_frame peakfinder8 {:.1} MB (frame f32 + 2 B/unmasked pixel of bin-sorted index) -> {:.1} GB/s at the median",
        pf_bytes as f64 / 1e6,
        pf_bytes as f64 / pf_ms / 1e6
    );
    println!(
        "bytes_per_frame calibration {:.1} MB (raw u16, pedestal + gain f32, output f32 + write-allocate, {:.2} MB of second-table lines for switched pixels; tables partly from L3) -> {:.1} GB/s at the no-common-mode median",
        cal_bytes as f64 / 1e6,
        second as f64 / 1e6,
        cal_ms.first().map_or(0.0, |c| cal_bytes as f64 / c.2 / 1e6)
    );
    if let Some(c) = cal_ms.iter().find(|c| c.0.contains("default")) {
        println!(
            "bytes_per_frame calibration with common mode {:.1} MB (+ pixel roles, 2 bits a pixel, and eligibility bits of switched pixels; strips of eligible values in L2/L3) -> {:.1} GB/s at the psana-default median",
            cm_bytes as f64 / 1e6,
            cm_bytes as f64 / c.2 / 1e6
        );
    }
    println!(
        "synthetic_truth precision {:.4} recall {:.4} (found {found}, matched {matched}, true {total}, match <= 1.5 px)",
        matched as f64 / found.max(1) as f64,
        matched as f64 / total.max(1) as f64
    );

    if !args.skip_models {
        model_section(&args, bw_copy)?;
    }

    if let Some(dir) = args.dump {
        std::fs::create_dir_all(&dir)?;
        let mut fr = Array3::<f32>::zeros((frames.len(), h, w));
        for (i, f) in frames.iter().enumerate() {
            fr.index_axis_mut(ndarray::Axis(0), i)
                .assign(&ndarray::ArrayView2::from_shape((h, w), f)?);
        }
        fr.write_npy(std::fs::File::create(dir.join("frames.npy"))?)?;
        Array2::from_shape_vec((h, w), pix_r.clone())?
            .write_npy(std::fs::File::create(dir.join("pix_r.npy"))?)?;
        let mask: Vec<i8> = pf.effective_mask().iter().map(|&m| m as i8).collect();
        Array1::from(mask)
            .into_shape_with_order((h, w))?
            .write_npy(std::fs::File::create(dir.join("mask.npy"))?)?;
        std::fs::write(
            dir.join("params.json"),
            serde_json::to_string_pretty(&params)?,
        )?;
        let peaks_json: Vec<_> = all_peaks.iter().map(|p| &p.peaks).collect();
        let mut f = std::fs::File::create(dir.join("rust_peaks.json"))?;
        f.write_all(serde_json::to_string(&peaks_json)?.as_bytes())?;
        println!("dumped to {}", dir.display());
    }
    Ok(())
}

/// The models of the per-model section: label, synth preset, psana's default common mode for
/// the family (`cmpars`; none for Jungfrau, `cversion` 3, and ePix100) and whether the goal
/// applies. The first is the reference; ePix10k2M without common mode is the like-for-like
/// reference of the families calibrated without it.
const MODELS: &[(&str, &str, Option<[f64; 4]>, bool)] = &[
    (
        "epix10k2M",
        "epix10k2M",
        Some([7.0, 2.0, 10.0, 10.0]),
        false,
    ),
    ("epix10k2M-no-cm", "epix10k2M", None, false),
    ("jungfrau16M", "jungfrau16M", None, true),
    ("epix100", "epix100", None, true),
];

/// The goal of issue 13: ms per megapixel within this factor of ePix10k2M's.
const GOAL: f64 = 1.2;

/// One model's medians and what peakfinder8 found.
struct ModelTimes {
    mpx: f64,
    cal_ms: f64,
    pf_ms: f64,
    max_res: f32,
    /// Bytes a frame streams: calibration (raw, pedestal and gain factor, output with
    /// write-allocate), peakfinder8 (frame, 2 B a pixel of bin-sorted index).
    cal_bytes: f64,
    pf_bytes: f64,
    switched: f64,
    peaks: usize,
    matched: usize,
    spots: usize,
}

/// Times calibration (one core) and then peakfinder8 on its output, per frame as a worker does,
/// on `frames` synthetic hits of preset `name`.
fn time_model(name: &str, cm: Option<[f64; 4]>, a: &Args) -> anyhow::Result<ModelTimes> {
    let seed = 13;
    let det = SynthDetector::full(name)?;
    let (n, mpx) = (det.frame_len(), det.frame_len() as f64 / 1e6);
    // The same spot density per megapixel as synth's 20..150 spots on an ePix10k2M.
    let scale = mpx / (16.0 * 352.0 * 384.0 / 1e6);
    let scene = Scene::new(
        &det,
        SceneParams {
            spots_per_hit: (
                (20.0 * scale).round().max(1.0) as u32,
                (150.0 * scale).round().max(1.0) as u32,
            ),
            ..SceneParams::default()
        },
        seed,
        1.0,
    );
    let mut raw = vec![vec![0u16; n]; a.frames];
    let mut truth = Vec::new();
    let gc = {
        let sc = SynthConstants::generate(&det, seed);
        let enc = Encoder::new(&sc);
        for (e, r) in raw.iter_mut().enumerate() {
            let ev = scene.event(e as u64);
            r.par_chunks_mut(det.seg_len())
                .enumerate()
                .for_each(|(k, out)| {
                    let input = SegmentInput {
                        background: scene.segment_background(k),
                        background_scale: ev.background_scale as f32,
                        spots: &ev.spots,
                        photon_kev: scene.params.photon_kev as f32,
                        noise: Noise::ALL,
                    };
                    let mut rng = substream(seed, 4 + e as u64, k as u64);
                    enc.encode_segment(k, &input, &mut rng, out);
                });
            let t = ev.spots.iter().map(|s| TrueSpot {
                fs: s.fs,
                ss: s.ss,
                intensity: s.intensity_kev,
                sigma: s.sigma,
            });
            truth.push(t.collect::<Vec<_>>());
        }
        GainConstants {
            ngr: det.ngr(),
            nsegs: det.nsegs(),
            rows: det.rows(),
            cols: det.cols(),
            pedestals: (0..sc.pedestals.len()).map(|j| sc.baseline(j)).collect(),
            pixel_gain: sc.pixel_gain.clone(),
            pixel_status: sc.pixel_status().into_iter().map(u32::from).collect(),
            pixel_mask: None,
        }
    };
    let cm = cm.and_then(|c| CommonModeParams::from_psana(&c));
    let mut cal = match det.family() {
        Family::Epix10ka => {
            let configs = vec![det.epix_panel_config(); det.nsegs()];
            Calibrator::epix10ka(&gc, &configs, None, cm)?
        }
        Family::Jungfrau => Calibrator::jungfrau(&gc, None, cm)?,
        Family::Epix100 => Calibrator::epix100(&gc, None, cm)?,
        f => anyhow::bail!("no calibrator for {f}"),
    };
    drop(gc);
    // Scaled as the Jungfrau 4M block: the radius window over the whole detector; thresholds
    // in keV as `synth`'s end-to-end runs use them.
    let max_res = scene.radius.iter().copied().fold(0.0f32, f32::max).ceil();
    let params = Pf8Params {
        adc_threshold: 25.0,
        minimum_snr: 6.0,
        min_pixel_count: 2,
        max_pixel_count: 200,
        local_bg_radius: 3,
        min_res: 10.0,
        max_res,
        ..Pf8Params::default()
    };
    let layout = SlabLayout::of_model(&det.model);
    let mut pf = PeakFinder8::new(params, layout, &scene.radius, Some(cal.mask()))?;
    let gain_bits = det.physics.codes.iter().fold(0u16, |m, &c| m | c);
    let switched = raw[0].iter().filter(|&&w| w & gain_bits != 0).count() as f64 / n as f64;
    let mut out = vec![0.0f32; n];
    let mut peaks = PeakList::with_capacity(params.max_num_peaks);
    let (mut cal_t, mut pf_t) = (Vec::new(), Vec::new());
    let (mut found, mut matched) = (0, 0);
    for rep in 0..a.reps + 1 {
        for (r, t) in raw.iter().zip(&truth) {
            let t0 = Instant::now();
            cal.calibrate_slab(r, &mut out)?;
            let t1 = Instant::now();
            pf.find(&out, &mut peaks)?;
            let t2 = Instant::now();
            if rep > 0 {
                cal_t.push((t1 - t0).as_secs_f64() * 1e3);
                pf_t.push((t2 - t1).as_secs_f64() * 1e3);
            } else {
                let pos: Vec<(f32, f32)> = peaks.peaks.iter().map(|q| (q.fs, q.ss)).collect();
                found += pos.len();
                matched += score(&pos, t, 1.5).2;
            }
        }
    }
    let unmasked = pf.effective_mask().iter().filter(|&&m| m != 0).count();
    Ok(ModelTimes {
        mpx,
        cal_ms: median(&mut cal_t),
        pf_ms: median(&mut pf_t),
        max_res,
        cal_bytes: (n * (2 + 4 + 4 + 4 + 4)) as f64,
        pf_bytes: (n * 4 + unmasked * 2) as f64,
        switched,
        peaks: found,
        matched,
        spots: truth.iter().map(Vec::len).sum(),
    })
}

/// Prints one line per model and whether the goal holds.
fn model_section(a: &Args, bw_copy: f64) -> anyhow::Result<()> {
    println!(
        "per model: {} synthetic hits x reps {}, calibrate_slab (one core, psana's default for the family) then peakfinder8 on its output",
        a.frames, a.reps
    );
    let mut goal = Vec::new();
    let mut totals = Vec::new();
    let mut reference: Option<ModelTimes> = None;
    for &(name, preset, cm, in_goal) in MODELS {
        let m = time_model(preset, cm, a)?;
        let r = reference.as_ref().unwrap_or(&m);
        let per = |ms: f64, m: &ModelTimes| ms / m.mpx;
        let total = |m: &ModelTimes| per(m.cal_ms + m.pf_ms, m);
        let ratio = total(&m) / total(r);
        println!(
            "model_kernels {name} {:.2} calibration_ms {:.3} peakfinder8_ms {:.3} sum_ms {:.3} ms_per_Mpx {:.3} ratio_vs_epix10k2M {:.2}",
            m.mpx,
            m.cal_ms,
            m.pf_ms,
            m.cal_ms + m.pf_ms,
            total(&m),
            ratio
        );
        println!(
            "model_kernels_detail {name} calibration_ms_per_Mpx {:.3} ({:.2}x, {:.0} MB at {:.1} GB/s, copy bandwidth {bw_copy:.1}) peakfinder8_ms_per_Mpx {:.3} ({:.2}x, {:.0} MB at {:.1} GB/s)  [cm {}; switched pixels {:.5}; pf8 radius 10..{}; peaks {} matched {} of {} true spots]",
            per(m.cal_ms, &m),
            per(m.cal_ms, &m) / per(r.cal_ms, r),
            m.cal_bytes / 1e6,
            m.cal_bytes / m.cal_ms / 1e6,
            per(m.pf_ms, &m),
            per(m.pf_ms, &m) / per(r.pf_ms, r),
            m.pf_bytes / 1e6,
            m.pf_bytes / m.pf_ms / 1e6,
            cm.map_or("none".into(), |c| format!("{c:?}")),
            m.switched,
            m.max_res,
            m.peaks,
            m.matched,
            m.spots
        );
        if in_goal {
            let verdict = if ratio <= GOAL { "holds" } else { "misses" };
            let like = totals
                .iter()
                .find(|(l, _)| *l == "epix10k2M-no-cm")
                .map_or(String::new(), |(_, t)| {
                    format!("; {:.2}x of epix10k2M-no-cm", total(&m) / t)
                });
            goal.push(format!("{name} {verdict} ({ratio:.2}x{like})"));
        }
        totals.push((name, total(&m)));
        reference.get_or_insert(m);
    }
    println!(
        "model_kernels_goal ms_per_Mpx within {GOAL}x of epix10k2M: {}",
        goal.join(", ")
    );
    Ok(())
}
