use lclstreamer::detector::synthetic::epix10k2m_case;
use lclstreamer::detector::{Calibrator, CommonModeParams};
fn main() {
    let mode: f64 = std::env::args().nth(1).unwrap().parse().unwrap();
    let reps: usize = std::env::args().nth(2).map_or(50, |s| s.parse().unwrap());
    let mut case = epix10k2m_case(2, 7, None).unwrap();
    let cm = CommonModeParams::from_psana(&[7.0, mode, 10.0, 10.0]);
    let mut nocm = Calibrator::epix10ka(&case.constants, &case.configs, None, None).unwrap();
    case.calibrator = Calibrator::epix10ka(&case.constants, &case.configs, None, cm).unwrap();
    let mut out = vec![0.0f32; case.calibrator.frame_len()];
    let t = std::time::Instant::now();
    for _ in 0..reps {
        for raw in &case.raw_frames {
            nocm.calibrate_slab(raw, &mut out).unwrap();
        }
    }
    let t0 = t.elapsed().as_secs_f64() * 1e3 / (2 * reps) as f64;
    let t = std::time::Instant::now();
    for _ in 0..reps {
        for raw in &case.raw_frames {
            case.calibrator.calibrate_slab(raw, &mut out).unwrap();
        }
    }
    println!(
        "mode {mode}: {:.3} ms/frame (no cm {t0:.3})",
        t.elapsed().as_secs_f64() * 1e3 / (2 * reps) as f64
    );
}
