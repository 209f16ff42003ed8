//! Raw → calibrated f32 frames for ePix10ka, ePixHR2x2, Jungfrau, ePix100 and ePixM320,
//! psana's recipe:
//! `calib = ((raw & adc) − ped[gr]) → common mode → × (1/pixel_gain[gr]) × mask`, `adc` being
//! `0x3FFF` below the gain bits (ePix10ka, ePixHR2x2, Jungfrau) or all 16 bits (ePix100).
//!
//! Everything that depends only on constants and configuration is precomputed per pixel: for each
//! value of the raw gain bits a table of pedestal, gain factor with the mask folded in, and
//! common-mode eligibility. The hot loop is one vectorised pass ([`calib_passes`]) with the
//! table of gain code 0 (the common case), followed by a fix-up of the few pixels whose gain bits
//! select another table, listed by a vectorised scan and handled with their table entries
//! prefetched. Work is done per half segment (L2-resident), which is also the unit of every
//! common-mode mode: with common mode, a pedestal pass (which also lists the switched pixels),
//! the median search on a strip-major copy of the eligible pixels, and a gain pass that runs
//! fused with the next half's pedestal pass.

use super::calib_passes::{self, Aside, GainPass, Half, PedestalPass, Roles, Strips};
use super::common_mode::{self, CmScratch, CommonModeParams};
use super::constants::GainConstants;
use super::epix10ka::{self, PanelConfig};
use super::epix100;
use super::epixhr2x2;
use super::epixm320;
use super::jungfrau;
use super::mask;
use super::model::Family;
use crate::algo::median::LANES;
use crate::huge_pages;

/// Errors building or running a calibrator.
#[derive(Debug, thiserror::Error)]
pub enum CalibError {
    #[error("{what}: got {actual} values, expected {expected}")]
    Size {
        what: String,
        actual: usize,
        expected: usize,
    },
    #[error(
        "constants are ({ngr}, {nsegs}, {rows}, {cols}), {kind:?} needs ({e_ngr}, nsegs, {e_rows}, {e_cols})"
    )]
    ConstantsShape {
        kind: Family,
        ngr: usize,
        nsegs: usize,
        rows: usize,
        cols: usize,
        e_ngr: usize,
        e_rows: usize,
        e_cols: usize,
    },
    #[error("one panel configuration per segment needed: got {actual}, constants have {expected}")]
    Configs { actual: usize, expected: usize },
    #[error("common-mode row split {split}: needs a positive multiple of 8 below the segment rows")]
    Split { split: usize },
}

#[derive(Debug, Clone)]
struct Table {
    ped: Vec<f32>,
    gfac: Vec<f32>,
    /// 1 where eligible for common mode (packed into `Kernel::roles` for the primary table).
    role: Vec<u8>,
}

/// A table read only at scattered pixels (those whose gain bits select it): pedestal and gain
/// factor side by side, so that one cache line serves a pixel, and eligibility as bits.
#[derive(Debug, Clone)]
struct SparseTable {
    ped_gfac: Vec<[f32; 2]>,
    cm_ok: Vec<u64>,
}

impl From<Table> for SparseTable {
    fn from(t: Table) -> SparseTable {
        let mut cm_ok = vec![0u64; t.role.len().div_ceil(64)];
        for (i, &k) in t.role.iter().enumerate() {
            cm_ok[i / 64] |= u64::from(k != 0) << (i % 64);
        }
        SparseTable {
            ped_gfac: huge_pages::collect(
                t.ped.len(),
                t.ped.iter().zip(&t.gfac).map(|(&p, &g)| [p, g]),
            ),
            cm_ok,
        }
    }
}

impl SparseTable {
    /// Pedestal, gain factor and eligibility 0 everywhere (Jungfrau's bad gain code); stores
    /// nothing.
    fn zeros() -> SparseTable {
        SparseTable {
            ped_gfac: Vec::new(),
            cm_ok: Vec::new(),
        }
    }

    /// Pedestal, gain factor and common-mode eligibility of pixel `i`.
    #[inline(always)]
    fn entry(&self, i: usize) -> (f32, f32, bool) {
        match self.ped_gfac.get(i) {
            Some(&[p, g]) => (p, g, self.cm_ok[i / 64] >> (i % 64) & 1 != 0),
            None => (0.0, 0.0, false),
        }
    }
}

/// How raw words are read: their ADC bits, and which table each gain code (`raw >> 14 & mask`)
/// selects (0: the primary, `j`: sparse table `j − 1`).
#[derive(Debug, Clone, Copy)]
struct Codes {
    adc: u16,
    mask: u16,
    table: [usize; 4],
}

/// Switched pixels looked ahead when prefetching their table entries.
const PREFETCH: usize = 8;

/// A calibrator for one detector; reuse it for every frame.
#[derive(Debug, Clone)]
pub struct Calibrator {
    kind: Family,
    nsegs: usize,
    rows: usize,
    kernel: Kernel,
    mask: Vec<u8>,
    /// Scratch: one for sequential calls, one per segment once a parallel call needed them.
    scratch: Vec<SegScratch>,
}

/// The read-only per-pixel tables and parameters used by the hot loops.
#[derive(Debug, Clone)]
struct Kernel {
    /// Rows of a half segment.
    hrows: usize,
    /// Rows of the first of the two row blocks common mode works in: `hrows`, or psana's
    /// uneven split (ePix100 with 2-D constants).
    split: usize,
    cols: usize,
    /// ADC bits of a raw word.
    adc: u16,
    code_mask: u16,
    /// Table per raw gain code (`raw >> 14 & code_mask`): 0 is `primary`, `j` is `sparse[j − 1]`.
    code_table: [usize; 4],
    /// The table of gain code 0, streamed by the vectorised passes (its `role` packed into
    /// `roles`).
    primary: Table,
    /// Common-mode roles of the pixels with the primary table.
    roles: Vec<Roles>,
    sparse: Vec<SparseTable>,
    cm: Option<CommonModeParams>,
    nbanks: usize,
}

#[derive(Debug, Clone)]
struct SegScratch {
    /// Pedestal-subtracted pixels eligible for common mode, NaN elsewhere (half a segment,
    /// strip-major).
    cmv: Vec<f32>,
    cm: CmScratch,
    halves: [HalfScratch; 2],
}

/// What a half segment sets aside between its passes.
#[derive(Debug, Clone, Default)]
struct HalfScratch {
    /// The pixels of the first table that are kept (not eligible, with a gain factor) or NaN,
    /// and their pedestal-subtracted values.
    kept: Vec<(u32, f32)>,
    /// Pixels whose gain bits select another table than the first one.
    switched: Vec<u32>,
    /// Their pedestal-subtracted values and gain factors, then their calibrated values.
    others: Vec<(f32, f32)>,
    /// Column corrections of the half segment.
    cms: Vec<f32>,
}

impl SegScratch {
    fn new(st: Strips, cols: usize) -> SegScratch {
        SegScratch {
            cmv: vec![f32::NAN; st.len(cols)],
            cm: CmScratch::default(),
            halves: Default::default(),
        }
    }
}

fn gain_factor(gain: f32) -> f32 {
    if gain == 0.0 { 0.0 } else { 1.0 / gain }
}

/// Checks that `c` has the per-gain-range shape of `kind`.
fn check_shape(
    c: &GainConstants,
    kind: Family,
    ngr: usize,
    rows: usize,
    cols: usize,
) -> Result<(), CalibError> {
    if c.ngr != ngr || c.rows != rows || c.cols != cols {
        return Err(CalibError::ConstantsShape {
            kind,
            ngr: c.ngr,
            nsegs: c.nsegs,
            rows: c.rows,
            cols: c.cols,
            e_ngr: ngr,
            e_rows: rows,
            e_cols: cols,
        });
    }
    Ok(())
}

impl Calibrator {
    /// ePix10ka: `configs` one per segment; `user_mask` optional `(nsegs·352·384)`, non-zero = good.
    pub fn epix10ka(
        constants: &GainConstants,
        configs: &[PanelConfig],
        user_mask: Option<&[u8]>,
        cm: Option<CommonModeParams>,
    ) -> Result<Calibrator, CalibError> {
        check_shape(
            constants,
            Family::Epix10ka,
            epix10ka::NUM_GAIN_RANGES,
            epix10ka::ROWS,
            epix10ka::COLS,
        )?;
        Self::epix_multigain(
            Family::Epix10ka,
            constants,
            configs,
            |cfg| Some(cfg.gain_ranges()),
            epix10ka::GAIN_BIT,
            user_mask,
            cm,
        )
    }

    /// ePixHR2x2 (psana `epixhr2x2_raw_2_0_1`): the ePix10ka recipe on `(7, nsegs, 288, 384)`
    /// constants, with the gain bit at 15 and `configs` assembled as [`epixhr2x2`] says; psana
    /// applies the common mode of its constants (`cm`) as for ePix10ka.
    pub fn epixhr2x2(
        constants: &GainConstants,
        configs: &[PanelConfig],
        user_mask: Option<&[u8]>,
        cm: Option<CommonModeParams>,
    ) -> Result<Calibrator, CalibError> {
        check_shape(
            constants,
            Family::EpixHr2x2,
            epixhr2x2::NUM_GAIN_RANGES,
            epixhr2x2::ROWS,
            epixhr2x2::COLS,
        )?;
        Self::epix_multigain(
            Family::EpixHr2x2,
            constants,
            configs,
            epixhr2x2::gain_ranges,
            epixhr2x2::GAIN_BIT,
            user_mask,
            cm,
        )
    }

    /// psana's `calib_epix10ka_any`: per pixel, the gain range of its configuration with the
    /// data `gain_bit` clear and set (`ranges`, per segment), ADC `0x3FFF`, common mode in 8
    /// banks per half segment.
    fn epix_multigain(
        kind: Family,
        c: &GainConstants,
        configs: &[PanelConfig],
        ranges: impl Fn(&PanelConfig) -> Option<[Vec<Option<epix10ka::GainRange>>; 2]>,
        gain_bit: u16,
        user_mask: Option<&[u8]>,
        cm: Option<CommonModeParams>,
    ) -> Result<Calibrator, CalibError> {
        if configs.len() != c.nsegs {
            return Err(CalibError::Configs {
                actual: configs.len(),
                expected: c.nsegs,
            });
        }
        let n = c.frame_len();
        let seg = c.rows * c.cols;
        let pmask = Self::merged_mask(c, &[0, 1, 2, 3, 4], user_mask)?;
        let alg7 = cm.is_some_and(|p| p.alg == 7);
        let mut per_bit: [Vec<Option<epix10ka::GainRange>>; 2] = [vec![None; n], vec![None; n]];
        for (s, cfg) in configs.iter().enumerate() {
            let [g0, g1] = ranges(cfg).ok_or_else(|| CalibError::Size {
                what: format!("segment {s} asicPixelConfig"),
                actual: cfg.asic_pixel_config.len(),
                expected: seg,
            })?;
            per_bit[0][s * seg..(s + 1) * seg].copy_from_slice(&g0);
            per_bit[1][s * seg..(s + 1) * seg].copy_from_slice(&g1);
        }
        let build = |grs: &[Option<epix10ka::GainRange>]| {
            let mut t = Table {
                ped: huge_pages::collect(n, std::iter::repeat_n(0.0, n)),
                gfac: huge_pages::collect(n, std::iter::repeat_n(0.0, n)),
                role: vec![0; n],
            };
            for (i, gr) in grs.iter().enumerate() {
                let m = f32::from(pmask[i]);
                if let Some(gr) = gr {
                    let k = *gr as usize * n + i;
                    t.ped[i] = c.pedestals[k];
                    t.gfac[i] = gain_factor(c.pixel_gain[k]) * m;
                    t.role[i] = u8::from(pmask[i] != 0 && (!alg7 || gr.in_common_mode()));
                } else {
                    // A configuration psana maps to no gain range (g=1, ga=0): like psana,
                    // pedestal 0 and gain factor 1, so the raw ADC comes through.
                    t.gfac[i] = m;
                    t.role[i] = u8::from(pmask[i] != 0 && !alg7);
                }
            }
            t
        };
        let primary = build(&per_bit[0]);
        let (second, sparse) = if per_bit[1] == per_bit[0] {
            (0, vec![])
        } else {
            (1, vec![SparseTable::from(build(&per_bit[1]))])
        };
        let code_mask = gain_bit >> 14;
        let table = |code: u16| if code & code_mask != 0 { second } else { 0 };
        let codes = Codes {
            adc: epix10ka::DATA_MASK,
            mask: code_mask,
            table: [table(0), table(1), table(2), table(3)],
        };
        Ok(Self::assemble(
            kind, c, codes, primary, sparse, 8, cm, pmask,
        ))
    }

    /// The calibrator of `c`'s shape from its tables, common mode in halves.
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        kind: Family,
        c: &GainConstants,
        codes: Codes,
        primary: Table,
        sparse: Vec<SparseTable>,
        nbanks: usize,
        cm: Option<CommonModeParams>,
        mask: Vec<u8>,
    ) -> Calibrator {
        Calibrator {
            kind,
            nsegs: c.nsegs,
            rows: c.rows,
            kernel: Kernel {
                hrows: c.rows / 2,
                split: c.rows / 2,
                cols: c.cols,
                adc: codes.adc,
                code_mask: codes.mask,
                code_table: codes.table,
                roles: calib_passes::pack_roles(&primary.role, &primary.gfac),
                primary: Table {
                    role: Vec::new(),
                    ..primary
                },
                sparse,
                cm: cm.filter(|p| p.enabled()),
                nbanks,
            },
            mask,
            scratch: vec![SegScratch::new(Strips::new(c.rows / 2), c.cols)],
        }
    }

    /// Jungfrau, psana's default (`cversion` 3): constants `(3, nsegs, 512, 1024)` of the modules
    /// present, in slab order, with `pixel_offset` already added to the pedestals; the mask is
    /// `pixel_status` of all three gain planes; the bad gain code `10` gives 0. Common mode, which
    /// psana applies only with `cversion=0`, is over good gain-0 pixels in 16 banks.
    pub fn jungfrau(
        constants: &GainConstants,
        user_mask: Option<&[u8]>,
        cm: Option<CommonModeParams>,
    ) -> Result<Calibrator, CalibError> {
        let c = constants;
        check_shape(
            c,
            Family::Jungfrau,
            jungfrau::NUM_GAIN_RANGES,
            jungfrau::ROWS,
            jungfrau::COLS,
        )?;
        let n = c.frame_len();
        let pmask = Self::merged_mask(c, &[0, 1, 2], user_mask)?;
        let mut tables = Vec::new();
        for gr in 0..3 {
            let mut t = Table {
                ped: huge_pages::collect(n, c.pedestals[gr * n..(gr + 1) * n].iter().copied()),
                gfac: huge_pages::collect(n, std::iter::repeat_n(0.0, n)),
                role: vec![0; n],
            };
            let gains = &c.pixel_gain[gr * n..(gr + 1) * n];
            for (i, (&g, &m)) in gains.iter().zip(&pmask).enumerate() {
                t.gfac[i] = gain_factor(g) * f32::from(m);
                t.role[i] = u8::from(gr == 0 && m != 0);
            }
            tables.push(t);
        }
        let mut tables = tables.into_iter();
        let primary = tables.next().expect("three gain ranges");
        let mut sparse: Vec<SparseTable> = tables.map(SparseTable::from).collect();
        sparse.push(SparseTable::zeros());
        let codes = Codes {
            adc: jungfrau::DATA_MASK,
            mask: 3,
            table: [0, 1, 3, 2],
        };
        Ok(Self::assemble(
            Family::Jungfrau,
            c,
            codes,
            primary,
            sparse,
            16,
            cm,
            pmask,
        ))
    }

    /// ePix100 (psana `epix100_raw_2_0_1`): constants `(1, nsegs, 704, 768)`, one gain range;
    /// `((raw − ped) → common mode) × (1/pixel_gain) × mask` on all 16 raw bits. psana applies no
    /// common mode by default; with `cm` it corrects good pixels in 8 banks of 96 columns per
    /// row block (`UtilsCommonMode.common_mode_apply`, whose algorithm number is not used). Its
    /// row blocks are rows 0..384 and 384..704 with the constants psana stores for ePix100
    /// (shaped as the raw `(704, 768)`: it halves `shape[1]`); see [`Calibrator::epix100_split`].
    pub fn epix100(
        constants: &GainConstants,
        user_mask: Option<&[u8]>,
        cm: Option<CommonModeParams>,
    ) -> Result<Calibrator, CalibError> {
        Self::epix100_split(constants, user_mask, cm, epix100::COLS / 2)
    }

    /// [`Calibrator::epix100`] with common-mode row blocks of `split` and `704 − split` rows:
    /// 352 is what psana does with 3-D `(1, 704, 768)` constants. `split` must be a positive
    /// multiple of 8 below 704.
    pub fn epix100_split(
        constants: &GainConstants,
        user_mask: Option<&[u8]>,
        cm: Option<CommonModeParams>,
        split: usize,
    ) -> Result<Calibrator, CalibError> {
        if split == 0 || split >= epix100::ROWS || !split.is_multiple_of(LANES) {
            return Err(CalibError::Split { split });
        }
        let c = constants;
        check_shape(c, Family::Epix100, 1, epix100::ROWS, epix100::COLS)?;
        let n = c.frame_len();
        let pmask = Self::merged_mask(c, &[0], user_mask)?;
        let primary = Table {
            ped: huge_pages::collect(n, c.pedestals.iter().copied()),
            gfac: huge_pages::collect(
                n,
                c.pixel_gain
                    .iter()
                    .zip(&pmask)
                    .map(|(&g, &m)| gain_factor(g) * f32::from(m)),
            ),
            role: pmask.iter().map(|&m| u8::from(m != 0)).collect(),
        };
        let codes = Codes {
            adc: epix100::DATA_MASK,
            mask: 0,
            table: [0; 4],
        };
        let mut cal = Self::assemble(Family::Epix100, c, codes, primary, vec![], 8, cm, pmask);
        cal.kernel.split = split;
        cal.scratch = vec![cal.kernel.seg_scratch()];
        Ok(cal)
    }

    /// ePixM320 (psana `epixm320_raw_0_0_0.calib`): constants `(2, nasics, 192, 384)` (one ASIC
    /// a segment); `((raw & 0x7FFF) − ped[bit 15]) × mask`. psana applies neither gain nor common
    /// mode, so `pixel_gain` is not read; the mask is `pixel_status` of both planes.
    pub fn epixm320(
        constants: &GainConstants,
        user_mask: Option<&[u8]>,
    ) -> Result<Calibrator, CalibError> {
        let c = constants;
        check_shape(
            c,
            Family::EpixM320,
            epixm320::NUM_GAIN_RANGES,
            epixm320::ROWS,
            epixm320::COLS,
        )?;
        let n = c.frame_len();
        let pmask = Self::merged_mask(c, &[0, 1], user_mask)?;
        let table = |gr: usize| Table {
            ped: huge_pages::collect(n, c.pedestals[gr * n..(gr + 1) * n].iter().copied()),
            gfac: huge_pages::collect(n, pmask.iter().map(|&m| f32::from(m))),
            role: vec![0; n],
        };
        let codes = Codes {
            adc: epixm320::DATA_MASK,
            mask: epixm320::GAIN_BIT >> 14,
            table: [0, 0, 1, 1],
        };
        let sparse = vec![SparseTable::from(table(1))];
        Ok(Self::assemble(
            Family::EpixM320,
            c,
            codes,
            table(0),
            sparse,
            8,
            None,
            pmask,
        ))
    }

    fn merged_mask(
        c: &GainConstants,
        grinds: &[usize],
        user_mask: Option<&[u8]>,
    ) -> Result<Vec<u8>, CalibError> {
        let n = c.frame_len();
        let mut m = mask::status_mask(&c.pixel_status, n, grinds, mask::DEFAULT_STATUS_BITS);
        if let Some(pm) = &c.pixel_mask {
            mask::and_into(&mut m, pm);
        }
        if let Some(um) = user_mask {
            if um.len() != n {
                return Err(CalibError::Size {
                    what: "user mask".into(),
                    actual: um.len(),
                    expected: n,
                });
            }
            mask::and_into(&mut m, um);
        }
        Ok(m)
    }

    /// Detector family.
    pub fn kind(&self) -> Family {
        self.kind
    }

    /// Pixels per frame (`nsegs·rows·cols`), also the slab size.
    pub fn frame_len(&self) -> usize {
        self.nsegs * self.rows * self.kernel.cols
    }

    /// Segment shape `(rows, cols)`.
    pub fn segment_shape(&self) -> (usize, usize) {
        (self.rows, self.kernel.cols)
    }

    /// The merged pixel mask (status, pixel_mask constant, user mask), 1 = good.
    pub fn mask(&self) -> &[u8] {
        &self.mask
    }

    fn check_slab(&self, raw: &[u16], out: &[f32]) -> Result<(), CalibError> {
        let n = self.frame_len();
        if raw.len() != n || out.len() != n {
            return Err(CalibError::Size {
                what: "raw frame / output".into(),
                actual: raw.len().min(out.len()),
                expected: n,
            });
        }
        Ok(())
    }

    /// Calibrates a whole frame given as the slab (segments stacked, psana order).
    pub fn calibrate_slab(&mut self, raw: &[u16], out: &mut [f32]) -> Result<(), CalibError> {
        self.check_slab(raw, out)?;
        // One scratch for every segment keeps it cache-resident.
        self.kernel.segments(0, raw, out, &mut self.scratch[0]);
        Ok(())
    }

    /// Like [`Calibrator::calibrate_slab`], segments in parallel on the current rayon pool.
    pub fn calibrate_slab_par(&mut self, raw: &[u16], out: &mut [f32]) -> Result<(), CalibError> {
        use rayon::prelude::*;
        self.check_slab(raw, out)?;
        let seg = self.rows * self.kernel.cols;
        let kernel = &self.kernel;
        self.scratch
            .resize_with(self.nsegs, || kernel.seg_scratch());
        let kernel = &self.kernel;
        out.par_chunks_exact_mut(seg)
            .zip(raw.par_chunks_exact(seg))
            .zip(self.scratch.par_iter_mut())
            .enumerate()
            .for_each(|(s, ((o, r), sc))| kernel.segments(s * seg, r, o, sc));
        Ok(())
    }

    /// Calibrates a frame given as one raw slice per segment (e.g. straight from the XTC data).
    pub fn calibrate(
        &mut self,
        raw_segments: &[&[u16]],
        out: &mut [f32],
    ) -> Result<(), CalibError> {
        let seg = self.rows * self.kernel.cols;
        if raw_segments.len() != self.nsegs || out.len() != self.frame_len() {
            return Err(CalibError::Size {
                what: "segments / output".into(),
                actual: raw_segments.len(),
                expected: self.nsegs,
            });
        }
        for (s, r) in raw_segments.iter().enumerate() {
            if r.len() != seg {
                return Err(CalibError::Size {
                    what: format!("raw segment {s}"),
                    actual: r.len(),
                    expected: seg,
                });
            }
            let o = &mut out[s * seg..(s + 1) * seg];
            self.kernel.segments(s * seg, r, o, &mut self.scratch[0]);
        }
        Ok(())
    }
}

impl Kernel {
    /// Scratch for one segment (strips for its taller row block).
    fn seg_scratch(&self) -> SegScratch {
        let rows = self.split.max(2 * self.hrows - self.split);
        SegScratch::new(Strips::new(rows), self.cols)
    }

    /// Whole segments from pixel `base` of the slab.
    fn segments(&self, base: usize, raw: &[u16], out: &mut [f32], sc: &mut SegScratch) {
        if self.cm.is_some() {
            return self.segments_with_cm(base, raw, out, sc);
        }
        let half = self.hrows * self.cols;
        for (k, (r, o)) in raw
            .chunks_exact(half)
            .zip(out.chunks_exact_mut(half))
            .enumerate()
        {
            self.calibrate_plain(base + k * half, r, o, &mut sc.halves[0]);
        }
    }

    /// The table of a switched pixel's raw word.
    #[inline(always)]
    fn sparse_of(&self, raw: u16) -> &SparseTable {
        &self.sparse[self.code_table[((raw >> 14) & self.code_mask) as usize] - 1]
    }

    /// Asks for the table entries of a switched pixel handled later (they are scattered, most
    /// come from memory).
    #[inline(always)]
    fn prefetch(&self, base: usize, raw: &[u16], i: Option<&u32>) {
        #[cfg(target_arch = "x86_64")]
        if let Some(&i) = i {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let i = i as usize;
            let t = self.sparse_of(raw[i]);
            let j = base + i;
            if j < t.ped_gfac.len() {
                // SAFETY: prefetching has no effect on memory; the indices are in range.
                unsafe {
                    _mm_prefetch::<_MM_HINT_T0>(t.ped_gfac.as_ptr().add(j).cast());
                    _mm_prefetch::<_MM_HINT_T0>(t.cm_ok.as_ptr().add(j / 64).cast());
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (base, raw, i);
    }

    /// The raw gain bits that select another table than code 0's (every non-zero code does
    /// when there is another table).
    fn switch_bits(&self) -> u16 {
        let m = self.code_mask as usize;
        debug_assert!(
            self.sparse.is_empty()
                || (1..=m)
                    .filter(|c| c & !m == 0)
                    .all(|c| self.code_table[c] != 0)
        );
        if self.sparse.is_empty() {
            0
        } else {
            self.code_mask << 14
        }
    }

    /// Collects into `idx` the pixels whose gain bits select another table than code 0's.
    /// Handling them afterwards, from a list, lets the scattered loads from the other tables
    /// overlap.
    fn switched(&self, raw: &[u16], idx: &mut Vec<u32>) {
        idx.clear();
        let bits = self.switch_bits();
        if bits != 0 {
            calib_passes::coded(raw, bits, idx);
        }
    }

    /// `out = ((raw & adc) − ped) · gfac` with the table chosen by the gain bits: every pixel
    /// with code 0's table (vectorised), then the switched pixels.
    fn calibrate_plain(&self, base: usize, raw: &[u16], out: &mut [f32], sc: &mut HalfScratch) {
        let range = base..base + raw.len();
        let t0 = &self.primary;
        calib_passes::plain(raw, self.adc, &t0.ped[range.clone()], &t0.gfac[range], out);
        self.switched(raw, &mut sc.switched);
        for (j, &i) in sc.switched.iter().enumerate() {
            self.prefetch(base, raw, sc.switched.get(j + PREFETCH));
            let (i, r) = (i as usize, raw[i as usize]);
            let (p, g, _) = self.sparse_of(r).entry(base + i);
            out[i] = (f32::from(r & self.adc) - p) * g;
        }
    }

    /// The pedestal pass of the half segment starting at slab pixel `base`, its pixels set
    /// aside into `hs`.
    fn pedestal_pass<'a>(
        &'a self,
        base: usize,
        raw: &'a [u16],
        hs: &'a mut HalfScratch,
    ) -> PedestalPass<'a> {
        let n = raw.len();
        hs.kept.clear();
        hs.switched.clear();
        PedestalPass {
            h: Half {
                raw,
                adc: self.adc,
                ped: &self.primary.ped[base..base + n],
                cols: self.cols,
                st: Strips::new(n / self.cols),
            },
            role: &self.roles[base / LANES..(base + n) / LANES],
            aside: Aside {
                code_bits: self.switch_bits(),
                switched: &mut hs.switched,
                kept: &mut hs.kept,
            },
        }
    }

    /// After the pedestal pass of a half: the switched pixels' eligible values into the strips,
    /// common mode bank by bank (the strips L2-resident), the column corrections into `hs.cms`
    /// and the switched pixels' calibrated values into `hs.others` (the strips are overwritten
    /// before the output is).
    fn common_mode(
        &self,
        base: usize,
        raw: &[u16],
        mut eligible: bool,
        cmv: &mut [f32],
        hs: &mut HalfScratch,
        cm: &mut CmScratch,
    ) {
        let Some(p) = &self.cm else {
            return;
        };
        let cols = self.cols;
        let st = Strips::new(raw.len() / cols);
        let others = &mut hs.others;
        others.clear();
        for (j, &i) in hs.switched.iter().enumerate() {
            self.prefetch(base, raw, hs.switched.get(j + PREFETCH));
            let (i, r) = (i as usize, raw[i as usize]);
            let (p, g, k) = self.sparse_of(r).entry(base + i);
            let d = f32::from(r & self.adc) - p;
            cmv[st.index(i / cols, i % cols)] = if k { d } else { f32::NAN };
            eligible |= k;
            others.push((d, g));
        }
        let cms = &mut hs.cms;
        cms.clear();
        if eligible {
            let bw = cols / self.nbanks;
            for bank in cmv.chunks_exact_mut(bw / LANES * st.stride) {
                cms.extend_from_slice(common_mode::apply_bank_but_columns(bank, st, p, cm));
            }
        } else {
            cms.resize(cols, 0.0);
        }
        for (&i, o) in hs.switched.iter().zip(others.iter_mut()) {
            let i = i as usize;
            let c = cmv[st.index(i / cols, i % cols)] - cms[i % cols];
            o.0 = if c.is_nan() { o.0 } else { c } * o.1;
        }
    }

    /// The set-aside pixels of a half into its output, after its gain pass.
    fn fix_up(&self, base: usize, out: &mut [f32], hs: &HalfScratch) {
        let g0 = &self.primary.gfac[base..base + out.len()];
        for &(i, d) in &hs.kept {
            out[i as usize] = d * g0[i as usize];
        }
        for (&i, &(v, _)) in hs.switched.iter().zip(&hs.others) {
            out[i as usize] = v;
        }
    }

    /// Whole segments with common mode in two row blocks of different heights: each block's
    /// passes in turn (the fused passes need blocks of one shape).
    fn segments_with_cm_uneven(
        &self,
        base: usize,
        raw: &[u16],
        out: &mut [f32],
        sc: &mut SegScratch,
    ) {
        let cols = self.cols;
        let seg = 2 * self.hrows * cols;
        let SegScratch { cmv, cm, halves } = sc;
        let hs = &mut halves[0];
        for (s, (raw, out)) in raw
            .chunks_exact(seg)
            .zip(out.chunks_exact_mut(seg))
            .enumerate()
        {
            let (r0, r1) = raw.split_at(self.split * cols);
            let (o0, o1) = out.split_at_mut(self.split * cols);
            for (at, r, o) in [(0, r0, o0), (r0.len(), r1, o1)] {
                let (b, n) = (base + s * seg + at, r.len());
                let st = Strips::new(n / cols);
                let cmv = &mut cmv[..st.len(cols)];
                // The other block's layout left values in this one's padding.
                for strip in cmv.chunks_exact_mut(st.stride) {
                    strip[st.rows * LANES..].fill(f32::NAN);
                }
                let eligible = calib_passes::pedestal(self.pedestal_pass(b, r, hs), cmv);
                self.common_mode(b, r, eligible, cmv, hs, cm);
                let g = GainPass {
                    gain: &self.primary.gfac[b..b + n],
                    cms: &hs.cms,
                    out: &mut *o,
                };
                calib_passes::gain(st, g, cmv);
                self.fix_up(b, o, hs);
            }
        }
    }

    /// Whole segments with common mode, half by half: the pedestal pass of a half, its common
    /// mode, then its gain pass fused with the next half's pedestal pass.
    fn segments_with_cm(&self, base: usize, raw: &[u16], out: &mut [f32], sc: &mut SegScratch) {
        if self.split != self.hrows {
            return self.segments_with_cm_uneven(base, raw, out, sc);
        }
        let half = self.hrows * self.cols;
        let st = Strips::new(self.hrows);
        let SegScratch { cmv, cm, halves } = sc;
        let cmv = &mut cmv[..st.len(self.cols)];
        let gain_of = |b: usize| &self.primary.gfac[b..b + half];
        let mut outs = out.chunks_exact_mut(half);
        let mut prev: Option<&mut [f32]> = None;
        for (k, r) in raw.chunks_exact(half).enumerate() {
            let b = base + k * half;
            let [h0, h1] = &mut *halves;
            let (hk, hp) = if k % 2 == 0 { (h0, h1) } else { (h1, h0) };
            let eligible = match prev.take() {
                None => calib_passes::pedestal(self.pedestal_pass(b, r, hk), cmv),
                Some(o) => {
                    let g = GainPass {
                        gain: gain_of(b - half),
                        cms: &hp.cms,
                        out: &mut *o,
                    };
                    let e = calib_passes::gain_then_pedestal(g, self.pedestal_pass(b, r, hk), cmv);
                    self.fix_up(b - half, o, hp);
                    e
                }
            };
            self.common_mode(b, r, eligible, cmv, hk, cm);
            prev = outs.next();
        }
        if let Some(o) = prev {
            let b = base + raw.len() - half;
            let hp = &halves[(raw.len() / half - 1) % 2];
            let g = GainPass {
                gain: gain_of(b),
                cms: &hp.cms,
                out: &mut *o,
            };
            calib_passes::gain(st, g, cmv);
            self.fix_up(b, o, hp);
        }
    }
}
