//! Times `synth`: one core encoding ePix10k2M frames (per stage), then the whole generation of a
//! run, against a reference measured in the same process: writing the same number of bytes
//! with `std::fs::write` (the I/O floor).
//!
//! `cargo run --release --example bench_synth -- [DIR] [EVENTS]` (DIR: where the run is written)

use lclstreamer::synth::random::{FastNormal, poisson, substream, uniform_hi32};
use lclstreamer::synth::{
    Encoder, Noise, Scene, SceneParams, SegmentInput, SynthConstants, SynthDetector, SynthParams,
    generate,
};
use std::path::PathBuf;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "/tmp/lclstreamer-bench-synth".into()),
    );
    let events: u64 = args.next().map_or(Ok(1000), |s| s.parse())?;
    let det = SynthDetector::full("epix10k2M")?;
    let n = det.frame_len();

    let t = Instant::now();
    let c = SynthConstants::generate(&det, 1);
    println!(
        "constants (7x16x352x384, all cores): {:.3} s",
        t.elapsed().as_secs_f64()
    );
    let scene = Scene::new(&det, SceneParams::default(), 1, 1.0);

    let mut rng = substream(1, 0, 0);
    let normal = FastNormal::new();
    let reps = 20_000_000;
    let t = Instant::now();
    let mut acc = 0f32;
    for i in 0..reps {
        let b = rng.next_u64();
        acc += poisson(
            0.2 + (i % 7) as f32 * 0.05,
            uniform_hi32(b),
            normal.from_bits(b),
        );
    }
    let ns_poisson = t.elapsed().as_nanos() as f64 / reps as f64;
    println!(
        "one core: general Poisson deviate (mean 0.2-0.5) {ns_poisson:.2} ns (checksum {acc:.0})"
    );

    // Reference in the same run: stream three f32 per pixel into one u16 (a memory-bound loop
    // with the bytes per pixel of a calibration pass).
    let (ra, rb, rc) = (vec![1.5f32; n], vec![2.5f32; n], vec![0.5f32; n]);
    let mut rout = vec![0u16; n];
    let t = Instant::now();
    for _ in 0..8 {
        for (((o, a), b), c) in rout.iter_mut().zip(&ra).zip(&rb).zip(&rc) {
            *o = (a + b * 0.5 + c * 0.25) as u16;
        }
        std::hint::black_box(&mut rout);
    }
    let ref_ns = t.elapsed().as_secs_f64() * 1e9 / (8 * n) as f64;
    println!("one core, reference stream of 3 f32 -> u16: {ref_ns:.2} ns/pixel");
    let frames = 4;
    let mut raw = vec![0u16; n];
    let encoder = Encoder::new(&c);
    for (what, noise) in [
        ("no noise", Noise::NONE),
        (
            "electronic noise",
            Noise {
                photon: false,
                electronic: true,
            },
        ),
        (
            "photon noise",
            Noise {
                photon: true,
                electronic: false,
            },
        ),
        ("all noise", Noise::ALL),
    ] {
        let t = Instant::now();
        let mut nspots = 0;
        for e in 0..frames {
            let ev = scene.event(e);
            nspots += ev.spots.len();
            for (seg, out) in raw.chunks_mut(det.seg_len()).enumerate() {
                let input = SegmentInput {
                    background: scene.segment_background(seg),
                    background_scale: ev.background_scale as f32,
                    spots: &ev.spots,
                    photon_kev: 9.5,
                    noise,
                };
                let mut r = substream(1, 4 + e, seg as u64);
                encoder.encode_segment(seg, &input, &mut r, out);
            }
        }
        let per_frame = t.elapsed().as_secs_f64() / frames as f64;
        println!(
            "one core, one ePix10k2M hit frame ({} spots), {what}: encode {:.1} ms = {:.2} ns/pixel (x{:.1} reference)",
            nspots / frames as usize,
            per_frame * 1e3,
            per_frame * 1e9 / n as f64,
            per_frame * 1e9 / n as f64 / ref_ns,
        );
    }

    let _ = std::fs::remove_dir_all(&dir);
    let mut p = SynthParams::new(&dir, "mfxbench1", 1, det.clone());
    p.events = events;
    p.streams = 4;
    // The run and its binary constants, as measured before text constants existed.
    p.text_constants = false;
    let t = Instant::now();
    let s = generate(&p)?;
    let gen_s = t.elapsed().as_secs_f64();
    let bytes: u64 = s
        .xtc_files
        .iter()
        .chain(&s.side_files)
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    std::fs::remove_dir_all(&dir)?;
    let ref_dir = dir.with_extension("ref");
    std::fs::create_dir_all(&ref_dir)?;
    let block = vec![7u8; 64 << 20];
    let t = Instant::now();
    let mut left = bytes;
    let mut k = 0;
    while left > 0 {
        let m = left.min(block.len() as u64) as usize;
        let f = ref_dir.join(format!("f{k}"));
        std::fs::write(&f, &block[..m])?;
        std::fs::File::open(&f)?.sync_data()?;
        left -= m as u64;
        k += 1;
    }
    let write_s = t.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&ref_dir)?;
    println!(
        "generate {events} ePix10k2M events, 4 streams, {} threads: {gen_s:.2} s ({:.1} MB written); \
         writing the same bytes with std::fs::write: {write_s:.2} s (ratio {:.2})",
        rayon::current_num_threads(),
        bytes as f64 / 1e6,
        gen_s / write_s
    );
    Ok(())
}
