//! Runs [`PeakFinder8`] on frames from a `.npy` file and writes the peaks as JSON, so an external
//! peakfinder8 (psana's, `scripts/psana-crosscheck`) can be compared with it.
//!
//! ```text
//! pf8_dump FRAMES.npy PIX_R.npy MASK.npy PARAMS.json ASIC_NX,ASIC_NY,NASICS_X,NASICS_Y OUT.json
//! ```
//! `FRAMES.npy` is f32 `(frames, height, width)`, `PIX_R.npy` f32 and `MASK.npy` u8 (non-zero =
//! good) `(height, width)`; `PARAMS.json` holds [`Pf8Params`]. `OUT.json` is one object per frame:
//! `num_found` and `peaks` (every [`Peak`] field).

use anyhow::{Context, Result, bail};
use lclstreamer::algo::peakfinder8::{PeakFinder8, PeakList, Pf8Params};
use lclstreamer::detector::SlabLayout;
use ndarray::{Array2, Array3, Axis};
use ndarray_npy::ReadNpyExt;
use std::fs::File;
use std::path::Path;

fn read<A: ReadNpyExt>(path: &str) -> Result<A> {
    let f = File::open(path).with_context(|| format!("{path}: cannot open"))?;
    A::read_npy(f).with_context(|| format!("{path}: not the expected .npy array"))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 6 {
        bail!(
            "usage: pf8_dump FRAMES.npy PIX_R.npy MASK.npy PARAMS.json ASIC_NX,ASIC_NY,NASICS_X,NASICS_Y OUT.json"
        );
    }
    let frames: Array3<f32> = read(&args[0])?;
    let pix_r: Array2<f32> = read(&args[1])?;
    let mask: Array2<u8> = read(&args[2])?;
    let params: Pf8Params = serde_json::from_slice(
        &std::fs::read(&args[3]).with_context(|| format!("{}: cannot read", args[3]))?,
    )
    .with_context(|| format!("{}: not peakfinder8 parameters", args[3]))?;
    let l = args[4]
        .split(',')
        .map(str::parse::<usize>)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("layout {:?}: not four integers", args[4]))?;
    let [asic_nx, asic_ny, nasics_x, nasics_y] = l[..] else {
        bail!(
            "layout {:?}: need ASIC_NX,ASIC_NY,NASICS_X,NASICS_Y",
            args[4]
        );
    };
    let layout = SlabLayout {
        asic_nx,
        asic_ny,
        nasics_x,
        nasics_y,
    };
    let pix_r = pix_r.as_standard_layout();
    let mask = mask.as_standard_layout();
    let mut pf8 = PeakFinder8::new(
        params,
        layout,
        pix_r.as_slice().context("radius map")?,
        Some(mask.as_slice().context("mask")?),
    )?;
    let mut out = Vec::new();
    let mut peaks = PeakList::with_capacity(params.max_num_peaks);
    for f in frames.axis_iter(Axis(0)) {
        let f = f.as_standard_layout();
        pf8.find(f.as_slice().context("frame")?, &mut peaks)?;
        out.push(serde_json::json!({"num_found": peaks.num_found, "peaks": peaks.peaks}));
    }
    let dest = Path::new(&args[5]);
    std::fs::write(dest, serde_json::to_vec(&out)?)
        .with_context(|| format!("{}: cannot write", dest.display()))?;
    Ok(())
}
