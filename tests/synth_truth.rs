//! The ground truth describes the frames: spot centroids and intensities come back from simple
//! moments of the noise-free image, and calibrating the written raw frames with the written
//! constants (through `detector::Calibrator`) gives back the noise-free energies: exactly up to
//! ADC rounding without noise, within the modelled noise with it.

mod synth_support;
use lclstreamer::algo::spots::{TrueSpot, score};
use lclstreamer::algo::{PeakFinder8, PeakList, Pf8Params};
use lclstreamer::detector::constants::read_npy_any;
use lclstreamer::detector::model::Family;
use lclstreamer::detector::{Calibrator, ConstantFiles, GainConstants, Geometry};
use lclstreamer::synth::scene::SPOT_HALF_WINDOW;
use lclstreamer::synth::{
    EventScene, Noise, Scene, SceneParams, SynthDetector, SynthParams, generate_with,
};
use synth_support::{read_run, read_truth};

#[test]
fn spot_moments_on_noise_free_frames_recover_the_truth() {
    for (model, segments) in [
        ("epix10k2M", None),
        ("jungfrau4M", None),
        ("jungfrau16M", Some(vec![0, 9, 22, 31])),
        ("epix100", None),
    ] {
        let det = SynthDetector::new(model, segments).unwrap();
        let scene = Scene::new(&det, SceneParams::default(), 5, 1.0);
        let w = det.cols();
        let (mut img, mut bg) = (vec![0f32; det.frame_len()], vec![0f32; det.frame_len()]);
        let mut checked = 0;
        for e in 0..3 {
            let ev = scene.event(e);
            assert!(ev.hit && ev.spots.len() >= 20, "{model}: event {e}");
            scene.render_energy(&ev, &mut img);
            let empty = EventScene {
                spots: Vec::new(),
                ..ev.clone()
            };
            scene.render_energy(&empty, &mut bg);
            let l = scene.layout;
            for s in &ev.spots {
                let (r0, c0) = (s.ss.round() as i64, s.fs.round() as i64);
                let h = SPOT_HALF_WINDOW;
                // The whole window lies in one ASIC, the one the named panel covers.
                let asic = |r: i64, c: i64| (r as usize / l.asic_ny, c as usize / l.asic_nx);
                assert_eq!(asic(r0 - h, c0 - h), asic(r0 + h, c0 + h), "{s:?}");
                let p = scene
                    .geometry
                    .panels
                    .iter()
                    .find(|p| p.name == s.panel)
                    .unwrap();
                assert!((p.min_ss as i64..=p.max_ss as i64).contains(&(r0 - h)));
                assert!((p.min_ss as i64..=p.max_ss as i64).contains(&(r0 + h)));
                assert!((p.min_fs as i64..=p.max_fs as i64).contains(&(c0 - h)));
                assert!((p.min_fs as i64..=p.max_fs as i64).contains(&(c0 + h)));
                assert_eq!(s.segment, det.segment_id(s.ss as usize / det.rows()));
                let (mut sum, mut mss, mut mfs) = (0f64, 0f64, 0f64);
                for r in r0 - h..=r0 + h {
                    for c in c0 - h..=c0 + h {
                        let i = r as usize * w + c as usize;
                        let v = f64::from(img[i] - bg[i]);
                        sum += v;
                        mss += v * r as f64;
                        mfs += v * c as f64;
                    }
                }
                let (css, cfs) = (mss / sum, mfs / sum);
                assert!(
                    (css - s.ss).abs() < 0.01 && (cfs - s.fs).abs() < 0.01,
                    "{model}: centroid ({css}, {cfs}) vs truth ({}, {})",
                    s.ss,
                    s.fs
                );
                assert!(
                    (sum / s.intensity_kev - 1.0).abs() < 2e-3,
                    "{model}: {sum} keV vs {}",
                    s.intensity_kev
                );
                checked += 1;
            }
        }
        assert!(checked > 60, "{model}: {checked} spots");
        // Intensities span faint (a few photons) to very bright.
        let all: Vec<f64> = (0..20)
            .flat_map(|e| scene.event(e).spots)
            .map(|s| s.intensity_kev / 9.5)
            .collect();
        let (lo, hi) = all
            .iter()
            .fold((f64::MAX, 0f64), |(a, b), &v| (a.min(v), b.max(v)));
        assert!(lo < 5.0 && hi > 3000.0, "{lo} .. {hi} photons");
    }
}

/// psana's ePix100 recipe without common mode, `(raw − pedestal) / gain · status mask`, until
/// `Calibrator` has it.
struct Epix100Cal {
    ped: Vec<f32>,
    gain: Vec<f32>,
    mask: Vec<u8>,
}

enum Cal {
    Calibrator(Box<Calibrator>),
    Epix100(Epix100Cal),
}

impl Cal {
    fn mask(&self) -> &[u8] {
        match self {
            Cal::Calibrator(c) => c.mask(),
            Cal::Epix100(c) => &c.mask,
        }
    }
    fn calibrate_slab(&mut self, raw: &[u16], out: &mut [f32]) {
        match self {
            Cal::Calibrator(c) => c.calibrate_slab(raw, out).unwrap(),
            Cal::Epix100(c) => {
                for (i, o) in out.iter_mut().enumerate() {
                    *o = (f32::from(raw[i]) - c.ped[i]) / c.gain[i] * f32::from(c.mask[i]);
                }
            }
        }
    }
}

/// Writes a run of `model` with `noise`, reads it back and calibrates every frame.
fn calibrate_run(model: &str, noise: Noise, events: u64) -> CalRun {
    let tmp = tempfile::tempdir().unwrap();
    let det = SynthDetector::full(model).unwrap();
    let mut p = SynthParams::new(tmp.path(), "cxil0001", 3, det.clone());
    p.events = events;
    p.streams = p.streams.min(2);
    p.seed = 99;
    p.hit_rate = 1.0;
    p.text_constants = false;
    generate_with(&p, SceneParams::default(), noise).unwrap();
    let side = p.side_dir();
    let files = ConstantFiles::in_dir(&side);
    let consts =
        GainConstants::load(&files, det.ngr(), det.nsegs(), det.rows(), det.cols()).unwrap();
    let back = read_run(&p, true);
    let mut cal = match det.family() {
        Family::Epix10ka => Cal::Calibrator(Box::new(
            Calibrator::epix10ka(&consts, &back.configs, None, None).unwrap(),
        )),
        Family::Jungfrau => {
            Cal::Calibrator(Box::new(Calibrator::jungfrau(&consts, None, None).unwrap()))
        }
        _ => Cal::Epix100(Epix100Cal {
            ped: consts.pedestals.clone(),
            gain: consts.pixel_gain.clone(),
            mask: consts
                .pixel_status
                .iter()
                .map(|&s| u8::from(s == 0))
                .collect(),
        }),
    };
    let spec = &det;
    // The geometry written next to the run is the scene's geometry, and CrystFEL-complete.
    let geom = Geometry::from_file(&side.join("geometry.geom")).unwrap();
    let scene = Scene::new(spec, SceneParams::default(), p.seed, p.hit_rate);
    let layout = scene.layout;
    assert_eq!(geom.panels.len(), scene.geometry.panels.len());
    assert_eq!(geom.slab_shape(), (layout.height(), layout.width()));
    for key in [
        "data",
        "dim0",
        "dim1",
        "dim2",
        "peak_list",
        "peak_list_type",
        "photon_energy",
        "clen",
        "adu_per_eV",
        "res",
    ] {
        // Panel keys given globally become every panel's default.
        let global = geom.globals.iter().any(|(k, _)| k == key);
        let per_panel = geom
            .panels
            .iter()
            .all(|p| p.extra.iter().any(|(k, _)| k == key));
        assert!(global || per_panel, "geometry lacks {key}");
    }
    assert!(
        geom.globals
            .contains(&("peak_list".into(), "/entry_1/result_1".into()))
    );
    let text = std::fs::read_to_string(side.join("geometry.geom")).unwrap();
    for line in [
        "data = /entry_1/data_1/data",
        "dim0 = %",
        "dim1 = ss",
        "dim2 = fs",
        "peak_list_type = cxi",
    ] {
        assert!(text.lines().any(|l| l == line), "geometry lacks `{line}`");
    }
    let rms = read_npy_any(&side.join("pixel_rms.npy")).unwrap();
    let cm: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(side.join("common_mode.json")).unwrap())
            .unwrap();
    assert_eq!(cm["cmpars"].as_array().unwrap().len(), 4);
    let truth = read_truth(&p);
    let mut frames = Vec::new();
    let mut events = Vec::new();
    for (f, t) in back.frames.iter().zip(&truth) {
        let e = t["event"].as_u64().unwrap();
        let ev = scene.event(e);
        // The truth file is the scene's truth.
        assert_eq!(t["spots"].as_array().unwrap().len(), ev.spots.len());
        for (js, s) in t["spots"].as_array().unwrap().iter().zip(&ev.spots) {
            // serde_json parses floats to within an ulp, not always bit-exactly.
            let close = |k: &str, v: f64| (js[k].as_f64().unwrap() - v).abs() <= 1e-12 * v.abs();
            assert!(
                close("ss", s.ss) && close("fs", s.fs) && close("intensity_kev", s.intensity_kev)
            );
            assert!(close("sigma", s.sigma));
            assert_eq!(js["panel"].as_str(), Some(s.panel.as_str()));
            assert_eq!(js["segment"].as_u64(), Some(s.segment as u64));
        }
        let mut expected = vec![0f32; spec.frame_len()];
        scene.render_energy(&ev, &mut expected);
        let mut out = vec![0f32; spec.frame_len()];
        cal.calibrate_slab(&f.raw, &mut out);
        frames.push((f.raw.clone(), out, expected));
        events.push(ev);
    }
    CalRun {
        mask: cal.mask().to_vec(),
        consts,
        rms: rms.iter().map(|&v| v as f32).collect(),
        frames,
        events,
        radius: scene.radius.clone(),
        bad_status: files.pixel_status.is_some(),
    }
}

struct CalRun {
    mask: Vec<u8>,
    consts: GainConstants,
    rms: Vec<f32>,
    /// (raw, calibrated, noise-free expected)
    frames: Vec<(Vec<u16>, Vec<f32>, Vec<f32>)>,
    /// The truth of each frame.
    events: Vec<EventScene>,
    radius: Vec<f32>,
    bad_status: bool,
}

/// The constants range and gain the hardware used for a raw word.
fn range_of(family: Family, raw: u16) -> usize {
    match family {
        Family::Epix10ka => {
            if raw & 0x4000 != 0 {
                5
            } else {
                3
            }
        }
        Family::Jungfrau => match raw >> 14 {
            0 => 0,
            1 => 1,
            _ => 2,
        },
        _ => 0,
    }
}

#[test]
fn noise_free_raw_calibrates_back_to_the_energies_up_to_adc_rounding() {
    for model in ["epix10k2M", "jungfrau4M", "epix100"] {
        let family = SynthDetector::full(model).unwrap().family();
        let r = calibrate_run(model, Noise::NONE, 2);
        assert!(r.bad_status);
        let n = r.mask.len();
        let bad = r.mask.iter().filter(|&&m| m == 0).count() as f64 / n as f64;
        assert!((0.001..0.005).contains(&bad), "{model}: bad fraction {bad}");
        let mut per_range = [0usize; 7];
        for (raw, cal, exp) in &r.frames {
            for i in 0..n {
                if r.mask[i] == 0 {
                    assert_eq!(cal[i], 0.0);
                    continue;
                }
                if family == Family::Epix100 && raw[i] == 0x3FFF {
                    // One gain: the brightest spot pixels saturate the ADC.
                    assert!(cal[i] < exp[i]);
                    continue;
                }
                let gr = range_of(family, raw[i]);
                per_range[gr] += 1;
                let g = r.consts.pixel_gain[gr * n + i].abs();
                let tol = 0.5 / g + 1e-5 * exp[i].abs() + 1e-3;
                assert!(
                    (cal[i] - exp[i]).abs() <= tol,
                    "{model}: pixel {i} range {gr}: calibrated {} vs expected {} (raw {:#06x})",
                    cal[i],
                    exp[i],
                    raw[i]
                );
            }
        }
        // Bright spot pixels switched gain: every range the hardware uses occurs.
        match family {
            Family::Epix10ka => {
                assert!(per_range[3] > 0 && per_range[5] > 0, "{per_range:?}")
            }
            Family::Jungfrau => {
                assert!(per_range[..3].iter().all(|&c| c > 0), "{per_range:?}")
            }
            _ => assert!(per_range[0] > 0, "{per_range:?}"),
        }
    }
}

#[test]
fn noisy_raw_calibrates_back_within_the_modelled_noise() {
    let r = calibrate_run("epix10k2M", Noise::ALL, 2);
    let n = r.mask.len();
    let e_ph = 9.5f64;
    let (mut s1, mut s2, mut cnt) = (0f64, 0f64, 0f64);
    let (mut r1, mut r2, mut rmax) = (0f64, 0f64, 0f64);
    let (mut photons, mut expected) = (0f64, 0f64);
    for (raw, cal, exp) in &r.frames {
        for i in 0..n {
            if r.mask[i] == 0 || raw[i] & 0x4000 != 0 {
                continue;
            }
            let gr = 3;
            let g = f64::from(r.consts.pixel_gain[gr * n + i]);
            let (cal, exp) = (f64::from(cal[i]), f64::from(exp[i]));
            let e_var = (f64::from(r.rms[gr * n + i]) / g).powi(2) + 1.0 / (12.0 * g * g);
            // Against the expectation: Poisson photons plus electronic noise and ADC rounding.
            let z = (cal - exp) / (e_ph * exp + e_var).sqrt();
            s1 += z;
            s2 += z * z;
            cnt += 1.0;
            // High gain counts photons: what is left after removing whole photons is the
            // electronic noise of pixel_rms.
            let k = (cal / e_ph).round();
            let zr = (cal - k * e_ph) / e_var.sqrt();
            r1 += zr;
            r2 += zr * zr;
            rmax = rmax.max(zr.abs());
            photons += k;
            expected += exp / e_ph;
        }
    }
    let (mean, sd) = (s1 / cnt, (s2 / cnt - (s1 / cnt).powi(2)).sqrt());
    assert!(mean.abs() < 0.01, "mean z {mean}");
    assert!((sd - 1.0).abs() < 0.03, "sd z {sd}");
    let (rmean, rsd) = (r1 / cnt, (r2 / cnt - (r1 / cnt).powi(2)).sqrt());
    assert!(
        rmean.abs() < 0.01 && (rsd - 1.0).abs() < 0.02,
        "electronic z {rmean} ± {rsd}"
    );
    assert!(rmax < 6.0, "electronic noise beyond 6 sigma: {rmax}");
    assert!(
        (photons - expected).abs() < 5.0 * expected.sqrt(),
        "{photons} photons counted, {expected} expected"
    );
}

#[test]
fn peakfinder8_on_calibrated_frames_finds_bright_spots_and_misses_faint_ones() {
    let r = calibrate_run("epix10k2M", Noise::ALL, 2);
    let layout = SynthDetector::full("epix10k2M").unwrap().layout();
    // OM-like settings in calibrated keV (one photon = 9.5 keV): a peak needs two pixels above
    // about five photons.
    let params = Pf8Params {
        adc_threshold: 50.0,
        minimum_snr: 5.0,
        min_pixel_count: 2,
        // Spots of thousands of photons cover well over OM's usual 30 pixels.
        max_pixel_count: 200,
        local_bg_radius: 4,
        min_res: 60.0,
        max_res: 2000.0,
        ..Pf8Params::default()
    };
    let mut pf = PeakFinder8::new(params, layout, &r.radius, Some(&r.mask)).unwrap();
    let mut peaks = PeakList::with_capacity(params.max_num_peaks);
    let (mut bright, mut bright_found, mut faint, mut faint_found) = (0, 0, 0, 0);
    let (mut found_total, mut matched_total) = (0usize, 0usize);
    for ((_, cal, _), ev) in r.frames.iter().zip(&r.events) {
        pf.find(cal, &mut peaks).unwrap();
        let found: Vec<(f32, f32)> = peaks.peaks.iter().map(|p| (p.fs, p.ss)).collect();
        let truth: Vec<TrueSpot> = ev
            .spots
            .iter()
            .map(|s| TrueSpot {
                fs: s.fs,
                ss: s.ss,
                intensity: s.intensity_kev,
                sigma: s.sigma,
            })
            .collect();
        let (_, _, matched) = score(&found, &truth, 2.0);
        found_total += found.len();
        matched_total += matched;
        for t in &truth {
            let hit = found
                .iter()
                .any(|f| (f64::from(f.0) - t.fs).hypot(f64::from(f.1) - t.ss) <= 2.0);
            let photons = t.intensity / 9.5;
            if photons > 100.0 {
                bright += 1;
                bright_found += usize::from(hit);
            } else if photons < 6.0 {
                faint += 1;
                faint_found += usize::from(hit);
            }
        }
    }
    let precision = matched_total as f64 / found_total.max(1) as f64;
    eprintln!(
        "peakfinder8: precision {precision:.3} ({matched_total}/{found_total}), bright (>100 ph) \
         {bright_found}/{bright}, faint (<6 ph) {faint_found}/{faint}"
    );
    assert!(
        precision > 0.9,
        "precision {precision} ({matched_total}/{found_total})"
    );
    assert!(
        bright > 20 && faint > 5,
        "{bright} bright, {faint} faint spots"
    );
    assert!(
        bright_found as f64 >= 0.95 * bright as f64,
        "bright {bright_found}/{bright}"
    );
    assert!(
        faint_found < faint,
        "faint spots sit near the detection limit: {faint_found}/{faint}"
    );
}
