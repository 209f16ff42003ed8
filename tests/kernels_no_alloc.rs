//! Steady state allocates nothing: once a calibrator and a peak finder have seen a few frames,
//! calibrating (every common-mode mode, ePix10ka with gain-switched pixels and Jungfrau) and
//! finding peaks reuse their buffers. A counting global allocator (this test binary only)
//! checks it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use lclstreamer::algo::spots::{SplitMix64, SpotRecipe, synth_frame};
use lclstreamer::algo::{PeakFinder8, PeakList, Pf8Params};
use lclstreamer::detector::constants::GainConstants;
use lclstreamer::detector::synthetic::epix10k2m_case;
use lclstreamer::detector::{Calibrator, CommonModeParams, Geometry, SlabLayout};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f`.
fn allocations(f: impl FnOnce()) -> usize {
    ALLOCS.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    f();
    COUNTING.store(false, Ordering::Relaxed);
    ALLOCS.load(Ordering::Relaxed)
}

// One test function: the counter is global, and tests of one binary run in parallel.
#[test]
fn calibration_and_peakfinder8_reuse_their_buffers() {
    let case = epix10k2m_case(2, 5, None).unwrap();
    let switched = case.raw_frames[0]
        .iter()
        .filter(|&&r| r & 0x4000 != 0)
        .count();
    assert!(switched > 1000, "the frames need gain-switched pixels");
    let n = case.calibrator.frame_len();
    let mut out = vec![0.0f32; n];
    for mode in [0.0, 1.0, 2.0, 4.0, 7.0] {
        let cm = CommonModeParams::from_psana(&[7.0, mode, 100.0, 10.0]);
        let mut cal = Calibrator::epix10ka(&case.constants, &case.configs, None, cm).unwrap();
        for raw in &case.raw_frames {
            cal.calibrate_slab(raw, &mut out).unwrap();
        }
        let got = allocations(|| {
            for raw in case.raw_frames.iter().chain(&case.raw_frames) {
                cal.calibrate_slab(raw, &mut out).unwrap();
            }
        });
        assert_eq!(got, 0, "ePix10k2M, common mode {mode}");
    }

    let (rows, cols) = (512, 1024);
    let jn = 2 * rows * cols;
    let c = GainConstants {
        ngr: 3,
        nsegs: 2,
        rows,
        cols,
        pedestals: (0..3 * jn).map(|i| 1000.0 + (i % 7) as f32).collect(),
        pixel_gain: vec![1.0; 3 * jn],
        pixel_status: vec![0; 3 * jn],
        pixel_mask: None,
    };
    let raw: Vec<u16> = (0..jn)
        .map(|i| (u16::from(i % 97 == 0) << 14) | (1000 + (i % 13) as u16))
        .collect();
    let cm = CommonModeParams::from_psana(&[7.0, 7.0, 100.0, 10.0]);
    let mut cal = Calibrator::jungfrau(&c, None, cm).unwrap();
    let mut jout = vec![0.0f32; jn];
    cal.calibrate_slab(&raw, &mut jout).unwrap();
    let got = allocations(|| {
        for _ in 0..3 {
            cal.calibrate_slab(&raw, &mut jout).unwrap();
        }
    });
    assert_eq!(got, 0, "Jungfrau, all common modes");

    let layout = SlabLayout::EPIX10K2M;
    let pix_r = Geometry::synthetic_epix10k2m(0.37, -0.61).radius_map();
    let mut rng = SplitMix64::new(3);
    let frames: Vec<Vec<f32>> = (0..2)
        .map(|_| {
            let mut f = vec![0.0f32; layout.len()];
            synth_frame(layout, &pix_r, &SpotRecipe::default(), &mut rng, &mut f);
            f
        })
        .collect();
    let params = Pf8Params::default();
    let mut pf = PeakFinder8::new(params, layout, &pix_r, None).unwrap();
    let mut peaks = PeakList::with_capacity(params.max_num_peaks);
    for f in &frames {
        pf.find(f, &mut peaks).unwrap();
    }
    let found = peaks.peaks.len();
    let got = allocations(|| {
        for f in frames.iter().chain(&frames) {
            pf.find(f, &mut peaks).unwrap();
        }
    });
    assert!(found > 0);
    assert_eq!(got, 0, "peakfinder8");
}
