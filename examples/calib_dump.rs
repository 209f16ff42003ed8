//! Calibrates raw ePix10ka, ePixHR2x2, Jungfrau, ePix100 or ePixM320 frames from `.npy` files with [`Calibrator`] and
//! writes the result as `.npy`, so an external reference (psana, `scripts/psana-crosscheck`) can
//! compare values.
//!
//! ```text
//! calib_dump [--epixhr2x2] CONST_DIR RAW.npy PIXEL_CONFIG.npy TRBIT.npy OUT.npy [CMPARS]
//! calib_dump --jungfrau|--epix100|--epix100-halves|--epixm320 CONST_DIR RAW.npy OUT.npy [CMPARS]
//! ```
//! `CONST_DIR` holds psana-shaped constants (`pedestals.npy`, `pixel_gain.npy`, optional
//! `pixel_status.npy`, `pixel_mask.npy`; see [`ConstantFiles::in_dir`]); `RAW.npy` is u16
//! `(frames, nsegs, 352, 384)`; `PIXEL_CONFIG.npy` is u8 `(nsegs, 4, 176, 192)` (`asicPixelConfig`
//! per panel) and `TRBIT.npy` u8 `(nsegs, 4)`; `CMPARS` is psana's tuple as `7,2,100,10`
//! (none: no common mode). `OUT.npy` is f32 `(frames, nsegs, 352, 384)`. With `--jungfrau`
//! (constants `(3, nsegs, 512, 1024)`, `pixel_offset.npy` optional) or `--epix100` (constants
//! `(1, nsegs, 704, 768)`) `RAW.npy` is `(frames, nsegs, rows, cols)` and no configuration is
//! read. `--epix100-halves` splits ePix100 common mode at row 352, as psana does with 3-D
//! constants (`--epix100`: at row 384, as with the 2-D constants psana stores). `--epixm320`:
//! constants `(2, 4, 192, 384)`, one ASIC a segment, no common mode (a `pixel_gain.npy` must be
//! there for the loader but is not used). `--epixhr2x2`: the first form with constants
//! `(7, nsegs, 288, 384)`, raw `(frames, nsegs, 288, 384)` and `PIXEL_CONFIG.npy` the flat
//! `asicPixelConfig` of each panel, `(nsegs, 110592)` (or any shape of that size per segment).

use anyhow::{Context, Result, bail};
use lclstreamer::detector::epix10ka::{self, PanelConfig};
use lclstreamer::detector::epixhr2x2;
use lclstreamer::detector::{
    Calibrator, CommonModeParams, ConstantFiles, GainConstants, epix100, epixm320, jungfrau,
};
use ndarray::{Array2, Array4, ArrayD, Axis};
use ndarray_npy::{ReadNpyExt, WriteNpyExt};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

fn read<A: ReadNpyExt>(path: &Path) -> Result<A> {
    let f = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    A::read_npy(f).with_context(|| format!("{}: not the expected .npy array", path.display()))
}

/// psana's `cmpars` tuple written as `7,2,100,10`.
fn cmpars(arg: Option<&String>) -> Result<Option<CommonModeParams>> {
    let Some(s) = arg else {
        return Ok(None);
    };
    let v = s
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cmpars {s:?}: not a comma-separated list of numbers"))?;
    Ok(Some(CommonModeParams::from_psana(&v).with_context(
        || format!("cmpars {s:?}: need at least (alg, mode, cormax)"),
    )?))
}

const USAGE: &str = "usage: calib_dump [--epixhr2x2] CONST_DIR RAW.npy PIXEL_CONFIG.npy TRBIT.npy OUT.npy \
                     [CMPARS]\n       calib_dump --jungfrau|--epix100|--epix100-halves|--epixm320 CONST_DIR RAW.npy OUT.npy [CMPARS]";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (raw, cal, dest) = match args.first().map(String::as_str) {
        Some(flag @ ("--jungfrau" | "--epix100" | "--epix100-halves" | "--epixm320")) => {
            if !(4..=5).contains(&args.len()) {
                bail!("{USAGE}");
            }
            let raw: Array4<u16> = read(Path::new(&args[2]))?;
            let nsegs = raw.shape()[1];
            let files = ConstantFiles::in_dir(Path::new(&args[1]));
            let cm = cmpars(args.get(4))?;
            let cal = if flag == "--epixm320" {
                let c = GainConstants::load(
                    &files,
                    epixm320::NUM_GAIN_RANGES,
                    nsegs,
                    epixm320::ROWS,
                    epixm320::COLS,
                )?;
                Calibrator::epixm320(&c, None)?
            } else if flag == "--jungfrau" {
                let c = GainConstants::load(
                    &files,
                    jungfrau::NUM_GAIN_RANGES,
                    nsegs,
                    jungfrau::ROWS,
                    jungfrau::COLS,
                )?;
                Calibrator::jungfrau(&c, None, cm)?
            } else {
                let c = GainConstants::load(&files, 1, nsegs, epix100::ROWS, epix100::COLS)?;
                if flag == "--epix100" {
                    Calibrator::epix100(&c, None, cm)?
                } else {
                    Calibrator::epix100_split(&c, None, cm, epix100::ROWS / 2)?
                }
            };
            (raw, cal, PathBuf::from(&args[3]))
        }
        first => {
            let hr = first == Some("--epixhr2x2");
            let args = if hr { &args[1..] } else { &args[..] };
            if !(5..=6).contains(&args.len()) {
                bail!("{USAGE}");
            }
            let raw: Array4<u16> = read(Path::new(&args[1]))?;
            let cal = multigain_calibrator(args, raw.shape()[1], hr)?;
            (raw, cal, PathBuf::from(&args[4]))
        }
    };
    calibrate_all(raw, cal, &dest)
}

/// The ePix10ka (ePixHR2x2 with `hr`) calibrator of the first form's arguments.
fn multigain_calibrator(args: &[String], nsegs: usize, hr: bool) -> Result<Calibrator> {
    let pixel_config: ArrayD<u8> = read(Path::new(&args[2]))?;
    let trbit: Array2<u8> = read(Path::new(&args[3]))?;
    if pixel_config.shape()[0] != nsegs || trbit.shape()[0] != nsegs {
        bail!(
            "{nsegs} segments in the raw frames, configurations for {} / {}",
            pixel_config.shape()[0],
            trbit.shape()[0]
        );
    }
    let configs = (0..nsegs)
        .map(|s| {
            let pc = pixel_config.index_axis(Axis(0), s);
            let tr = trbit.index_axis(Axis(0), s);
            let (pc, tr) = (pc.iter().copied().collect::<Vec<_>>(), tr.to_vec());
            if hr {
                epixhr2x2::panel_config(s, &pc, &tr)
            } else {
                PanelConfig::new(s, &pc, &tr)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (rows, cols) = if hr {
        (epixhr2x2::ROWS, epixhr2x2::COLS)
    } else {
        (epix10ka::ROWS, epix10ka::COLS)
    };
    let files = ConstantFiles::in_dir(Path::new(&args[0]));
    let constants = GainConstants::load(&files, epix10ka::NUM_GAIN_RANGES, nsegs, rows, cols)?;
    let cm = cmpars(args.get(5))?;
    Ok(if hr {
        Calibrator::epixhr2x2(&constants, &configs, None, cm)?
    } else {
        Calibrator::epix10ka(&constants, &configs, None, cm)?
    })
}

/// Calibrates every frame of `raw` and writes them to `dest` (atomically).
fn calibrate_all(raw: Array4<u16>, mut cal: Calibrator, dest: &Path) -> Result<()> {
    let frames = raw.shape()[0];
    let n = cal.frame_len();
    let mut out = Array4::<f32>::zeros(raw.raw_dim());
    for f in 0..frames {
        let r = raw.index_axis(Axis(0), f);
        let r = r.as_standard_layout();
        let r = r.as_slice().context("raw frame not contiguous")?;
        let mut o = out.index_axis_mut(Axis(0), f);
        let o = o.as_slice_mut().context("output frame not contiguous")?;
        debug_assert_eq!(o.len(), n);
        cal.calibrate_slab(r, o)?;
    }
    let tmp = dest.with_extension("npy.tmp");
    {
        let w = BufWriter::new(
            File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?,
        );
        out.write_npy(w)
            .with_context(|| format!("{}: cannot write", tmp.display()))?;
    }
    std::fs::rename(&tmp, dest).with_context(|| format!("{}: cannot rename", dest.display()))?;
    Ok(())
}
