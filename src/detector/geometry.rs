//! CrystFEL `.geom` geometry (parse, write), slab layouts and per-pixel radius maps.
//!
//! The slab stacks all panels of a detector along the slow-scan axis, as OM and Cheetah do:
//! ePix10k2M is (5632, 384) with 176×192 ASICs on a 32×2 grid, Jungfrau 4M is (4096, 1024) with
//! 256×256 ASICs on a 16×4 grid.

use super::model::{DetectorModel, Family};
use std::fmt::Write as _;
use std::path::Path;

/// Errors while reading or interpreting a geometry.
#[derive(Debug, thiserror::Error)]
pub enum GeometryError {
    #[error("{source_name}: cannot read geometry: {err}")]
    Io {
        source_name: String,
        err: std::io::Error,
    },
    #[error("{source_name}:{line}: {msg}")]
    Syntax {
        source_name: String,
        line: usize,
        msg: String,
    },
    #[error("{source_name}: panel {panel}: {msg}")]
    Panel {
        source_name: String,
        panel: String,
        msg: String,
    },
    #[error("{source_name}: {msg}")]
    Layout { source_name: String, msg: String },
}

/// A regular grid of equal ASICs covering a slab (OM's `asic_nx, asic_ny, nasics_x, nasics_y`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlabLayout {
    /// ASIC width along fast scan, pixels.
    pub asic_nx: usize,
    /// ASIC height along slow scan, pixels.
    pub asic_ny: usize,
    /// ASICs along fast scan.
    pub nasics_x: usize,
    /// ASICs along slow scan.
    pub nasics_y: usize,
}

impl SlabLayout {
    /// ePix10k2M: 16 panels of 352×384 stacked to (5632, 384), ASIC 176×192.
    pub const EPIX10K2M: SlabLayout = SlabLayout {
        asic_nx: 192,
        asic_ny: 176,
        nasics_x: 2,
        nasics_y: 32,
    };
    /// Jungfrau 4M: 8 modules of 512×1024 stacked to (4096, 1024), ASIC 256×256.
    pub const JUNGFRAU4M: SlabLayout = SlabLayout {
        asic_nx: 256,
        asic_ny: 256,
        nasics_x: 4,
        nasics_y: 16,
    };

    /// The ASIC grid of `model`'s slab: its present segments stacked, each the family's grid of
    /// ASICs.
    pub fn of_model(model: &DetectorModel) -> SlabLayout {
        let (ar, ac) = model.spec().asics;
        let (asic_ny, asic_nx) = model.asic_shape();
        SlabLayout {
            asic_nx,
            asic_ny,
            nasics_x: ac,
            nasics_y: ar * model.nsegs(),
        }
    }

    /// Slab width (fast-scan pixels).
    pub fn width(&self) -> usize {
        self.asic_nx * self.nasics_x
    }
    /// Slab height (slow-scan pixels).
    pub fn height(&self) -> usize {
        self.asic_ny * self.nasics_y
    }
    /// Number of pixels in the slab.
    pub fn len(&self) -> usize {
        self.width() * self.height()
    }
    /// True when the layout has no pixels.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One CrystFEL panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub name: String,
    pub min_fs: usize,
    pub max_fs: usize,
    pub min_ss: usize,
    pub max_ss: usize,
    /// Lab-frame fast-scan vector (x, y, z) in pixel units.
    pub fs: [f64; 3],
    /// Lab-frame slow-scan vector (x, y, z) in pixel units.
    pub ss: [f64; 3],
    /// Lab x of the first pixel's corner, pixels.
    pub corner_x: f64,
    /// Lab y of the first pixel's corner, pixels.
    pub corner_y: f64,
    /// Other per-panel keys (e.g. `coffset`, `res`, `data`, `dim1`), kept in order for writing.
    pub extra: Vec<(String, String)>,
}

/// A CrystFEL geometry: global keys and panels in file order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Geometry {
    /// Global `key = value` lines other than panel keys, in file order.
    pub globals: Vec<(String, String)>,
    pub panels: Vec<Panel>,
}

#[derive(Clone, Default)]
struct PanelDefaults {
    min_fs: Option<usize>,
    max_fs: Option<usize>,
    min_ss: Option<usize>,
    max_ss: Option<usize>,
    fs: Option<[f64; 3]>,
    ss: Option<[f64; 3]>,
    corner_x: Option<f64>,
    corner_y: Option<f64>,
    extra: Vec<(String, String)>,
}

const PANEL_KEYS: &[&str] = &[
    "min_fs",
    "max_fs",
    "min_ss",
    "max_ss",
    "fs",
    "ss",
    "corner_x",
    "corner_y",
    "coffset",
    "res",
    "data",
    "dim0",
    "dim1",
    "dim2",
    "dim3",
    "clen",
    "adu_per_eV",
    "adu_per_photon",
    "max_adu",
    "no_index",
    "mask_edge_pixels",
    "mask",
    "mask_file",
    "mask_good",
    "mask_bad",
    "saturation_map",
    "saturation_map_file",
    "flag_lessthan",
    "flag_morethan",
    "flag_equal",
    "photon_energy",
    "badrow_direction",
];

/// Parses a CrystFEL vector such as `-0.003266x -0.999993y +0.0z`.
pub fn parse_vector(s: &str) -> Option<[f64; 3]> {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() {
        return None;
    }
    let mut v = [0.0; 3];
    let mut term = String::new();
    let mut terms = Vec::new();
    for c in compact.chars() {
        if (c == '+' || c == '-') && !term.is_empty() && !term.ends_with(['e', 'E']) {
            terms.push(std::mem::take(&mut term));
        }
        term.push(c);
    }
    terms.push(term);
    for t in terms {
        let axis = t.chars().last()?;
        let idx = match axis {
            'x' => 0,
            'y' => 1,
            'z' => 2,
            _ => return None,
        };
        let num = &t[..t.len() - 1];
        let coef = match num {
            "" | "+" => 1.0,
            "-" => -1.0,
            n => n.parse::<f64>().ok()?,
        };
        v[idx] += coef;
    }
    Some(v)
}

fn fmt_vector(v: [f64; 3]) -> String {
    let mut s = format!("{:+.6}x {:+.6}y", v[0], v[1]);
    if v[2] != 0.0 {
        let _ = write!(s, " {:+.6}z", v[2]);
    }
    s
}

impl Geometry {
    /// Reads and parses a `.geom` file.
    pub fn from_file(path: &Path) -> Result<Geometry, GeometryError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| GeometryError::Io {
            source_name: name.clone(),
            err,
        })?;
        Geometry::parse(&text, &name)
    }

    /// Parses `.geom` text; `source_name` is used in error messages.
    pub fn parse(text: &str, source_name: &str) -> Result<Geometry, GeometryError> {
        let syntax = |line: usize, msg: String| GeometryError::Syntax {
            source_name: source_name.to_string(),
            line,
            msg,
        };
        let mut geom = Geometry::default();
        let mut defaults = PanelDefaults::default();
        let mut partial: Vec<(String, PanelDefaults)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let lineno = i + 1;
            let line = raw.split(';').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(syntax(
                    lineno,
                    format!("expected `key = value`, got `{line}`"),
                ));
            };
            let key = key.trim();
            let value = value.trim().to_string();
            let (panel, pkey) = match key.split_once('/') {
                Some((p, k)) => (Some(p.trim().to_string()), k.trim()),
                None => (None, key),
            };
            if panel.is_none() && !PANEL_KEYS.contains(&pkey) {
                geom.globals.push((pkey.to_string(), value));
                continue;
            }
            if let Some(p) = &panel
                && (p.starts_with("rigid_group")
                    || p.starts_with("group_")
                    || p.starts_with("bad")
                    || p.starts_with("rigid"))
            {
                geom.globals.push((key.to_string(), value));
                continue;
            }
            let target = match &panel {
                None => &mut defaults,
                Some(p) => {
                    let pos = match partial.iter().position(|(n, _)| n == p) {
                        Some(pos) => pos,
                        None => {
                            partial.push((p.clone(), defaults.clone()));
                            partial.len() - 1
                        }
                    };
                    &mut partial[pos].1
                }
            };
            let parse_usize = |v: &str| {
                v.parse::<usize>().map_err(|_| {
                    syntax(
                        lineno,
                        format!("`{pkey}` needs a non-negative integer, got `{v}`"),
                    )
                })
            };
            let parse_f64 = |v: &str| {
                v.parse::<f64>()
                    .map_err(|_| syntax(lineno, format!("`{pkey}` needs a number, got `{v}`")))
            };
            match pkey {
                "min_fs" => target.min_fs = Some(parse_usize(&value)?),
                "max_fs" => target.max_fs = Some(parse_usize(&value)?),
                "min_ss" => target.min_ss = Some(parse_usize(&value)?),
                "max_ss" => target.max_ss = Some(parse_usize(&value)?),
                "corner_x" => target.corner_x = Some(parse_f64(&value)?),
                "corner_y" => target.corner_y = Some(parse_f64(&value)?),
                "fs" | "ss" => {
                    let v = parse_vector(&value).ok_or_else(|| {
                        syntax(lineno, format!("bad vector `{value}` for `{pkey}`"))
                    })?;
                    if pkey == "fs" {
                        target.fs = Some(v);
                    } else {
                        target.ss = Some(v);
                    }
                }
                _ => {
                    if let Some(e) = target.extra.iter_mut().find(|(k, _)| k == pkey) {
                        e.1 = value;
                    } else {
                        target.extra.push((pkey.to_string(), value));
                    }
                }
            }
        }
        for (name, d) in partial {
            let missing = |what: &str| GeometryError::Panel {
                source_name: source_name.to_string(),
                panel: name.clone(),
                msg: format!("missing `{what}`"),
            };
            let panel = Panel {
                min_fs: d.min_fs.ok_or_else(|| missing("min_fs"))?,
                max_fs: d.max_fs.ok_or_else(|| missing("max_fs"))?,
                min_ss: d.min_ss.ok_or_else(|| missing("min_ss"))?,
                max_ss: d.max_ss.ok_or_else(|| missing("max_ss"))?,
                fs: d.fs.ok_or_else(|| missing("fs"))?,
                ss: d.ss.ok_or_else(|| missing("ss"))?,
                corner_x: d.corner_x.ok_or_else(|| missing("corner_x"))?,
                corner_y: d.corner_y.ok_or_else(|| missing("corner_y"))?,
                extra: d.extra,
                name,
            };
            if panel.max_fs < panel.min_fs || panel.max_ss < panel.min_ss {
                return Err(GeometryError::Panel {
                    source_name: source_name.to_string(),
                    panel: panel.name,
                    msg: "max_fs/max_ss below min_fs/min_ss".into(),
                });
            }
            geom.panels.push(panel);
        }
        if geom.panels.is_empty() {
            return Err(GeometryError::Layout {
                source_name: source_name.to_string(),
                msg: "no panels defined".into(),
            });
        }
        Ok(geom)
    }

    /// Renders the geometry as `.geom` text (globals first, then every panel fully spelled out).
    pub fn to_geom_string(&self) -> String {
        let mut s = String::from("; written by lclstreamer\n");
        for (k, v) in &self.globals {
            let _ = writeln!(s, "{k} = {v}");
        }
        for p in &self.panels {
            s.push('\n');
            let n = &p.name;
            let _ = writeln!(s, "{n}/min_fs = {}", p.min_fs);
            let _ = writeln!(s, "{n}/max_fs = {}", p.max_fs);
            let _ = writeln!(s, "{n}/min_ss = {}", p.min_ss);
            let _ = writeln!(s, "{n}/max_ss = {}", p.max_ss);
            let _ = writeln!(s, "{n}/fs = {}", fmt_vector(p.fs));
            let _ = writeln!(s, "{n}/ss = {}", fmt_vector(p.ss));
            let _ = writeln!(s, "{n}/corner_x = {}", p.corner_x);
            let _ = writeln!(s, "{n}/corner_y = {}", p.corner_y);
            for (k, v) in &p.extra {
                let _ = writeln!(s, "{n}/{k} = {v}");
            }
        }
        s
    }

    /// Writes the geometry atomically (temporary name, then rename).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        crate::atomic_file::write(path, self.to_geom_string().as_bytes())
    }

    /// Slab shape `(ss, fs)` covered by the panels.
    pub fn slab_shape(&self) -> (usize, usize) {
        let ss = self.panels.iter().map(|p| p.max_ss + 1).max().unwrap_or(0);
        let fs = self.panels.iter().map(|p| p.max_fs + 1).max().unwrap_or(0);
        (ss, fs)
    }

    /// The ASIC grid as OM derives it: ASIC size from the first panel, counts from the slab size.
    pub fn layout(&self, source_name: &str) -> Result<SlabLayout, GeometryError> {
        let p = &self.panels[0];
        let asic_nx = p.max_fs - p.min_fs + 1;
        let asic_ny = p.max_ss - p.min_ss + 1;
        let (h, w) = self.slab_shape();
        if w % asic_nx != 0 || h % asic_ny != 0 {
            return Err(GeometryError::Layout {
                source_name: source_name.to_string(),
                msg: format!(
                    "slab {h}x{w} is not a whole number of {asic_ny}x{asic_nx} ASICs (first panel {})",
                    p.name
                ),
            });
        }
        let layout = SlabLayout {
            asic_nx,
            asic_ny,
            nasics_x: w / asic_nx,
            nasics_y: h / asic_ny,
        };
        for q in &self.panels {
            if q.max_fs - q.min_fs + 1 != asic_nx
                || q.max_ss - q.min_ss + 1 != asic_ny
                || q.min_fs % asic_nx != 0
                || q.min_ss % asic_ny != 0
            {
                return Err(GeometryError::Panel {
                    source_name: source_name.to_string(),
                    panel: q.name.clone(),
                    msg: format!("panel is not one {asic_ny}x{asic_nx} cell of the ASIC grid"),
                });
            }
        }
        Ok(layout)
    }

    /// Per-pixel radius from the beam axis in pixels, slab order, as OM computes it:
    /// `x = corner_x + fs·fs_x + ss·ss_x` (likewise y), `r = sqrt(x² + y²)`, in f64 then cast.
    /// Pixels not covered by any panel get `f32::NAN`.
    pub fn radius_map(&self) -> Vec<f32> {
        let (h, w) = self.slab_shape();
        let mut r = vec![f32::NAN; h * w];
        for p in &self.panels {
            for ss in 0..=(p.max_ss - p.min_ss) {
                let row = (p.min_ss + ss) * w;
                for fs in 0..=(p.max_fs - p.min_fs) {
                    let x = ss as f64 * p.ss[0] + fs as f64 * p.fs[0] + p.corner_x;
                    let y = ss as f64 * p.ss[1] + fs as f64 * p.fs[1] + p.corner_y;
                    r[row + p.min_fs + fs] = (x * x + y * y).sqrt() as f32;
                }
            }
        }
        r
    }

    /// An idealised ePix10k2M geometry: 16 panels of 2×2 ASICs (176×192) arranged in four
    /// quadrants around the beam, 100 µm pixels, slab (5632, 384). Beam offset in pixels.
    pub fn synthetic_epix10k2m(beam_x: f64, beam_y: f64) -> Geometry {
        let m = DetectorModel::new(Family::Epix10ka, "epix10k2M", (0..16).collect());
        Geometry::synthetic(&m, 16, beam_x, beam_y)
    }

    /// An idealised Jungfrau 4M geometry: 8 modules of 2×4 ASICs (256×256), 75 µm pixels.
    pub fn synthetic_jungfrau4m(beam_x: f64, beam_y: f64) -> Geometry {
        let m = DetectorModel::new(Family::Jungfrau, "jungfrau4M", (0..8).collect());
        Geometry::synthetic(&m, 8, beam_x, beam_y)
    }

    /// An idealised geometry of `model`'s present segments, placed where they sit in a detector
    /// of `full` segments: the modules fill four quadrants around the beam (`ceil(full/4)` per
    /// quadrant, two columns from four up), quadrants rotated in 90° steps. The slab stacks the
    /// present segments in id order; each ASIC is one panel `p{segment}a{asic}`. Beam offset in
    /// pixels; `res` from [`synthetic_res`].
    pub fn synthetic(model: &DetectorModel, full: usize, bx: f64, by: f64) -> Geometry {
        let layout = SlabLayout::of_model(model);
        let asic_rows = model.spec().asics.0;
        let module_ss = model.segment_shape.0;
        let module_fs = model.segment_shape.1;
        let per_quad = full.div_ceil(4).max(1);
        let cols = if per_quad >= 4 { 2 } else { 1 };
        let gap = 6.0;
        let mut panels = Vec::new();
        for (slab, &seg) in model.segments.iter().enumerate() {
            let m = seg as usize;
            let quad = m / per_quad;
            let k = m % per_quad;
            let (kx, ky) = ((k % cols) as f64, (k / cols) as f64);
            // Modules on a grid inside each quadrant; quadrants rotated by 90° steps.
            let local_x0 = gap + kx * (module_fs as f64 + gap);
            let local_y0 = gap + ky * (module_ss as f64 + gap);
            let rot = quad as f64 * std::f64::consts::FRAC_PI_2;
            let (c, s) = (rot.cos().round(), rot.sin().round());
            let rotate = |x: f64, y: f64| (x * c - y * s, x * s + y * c);
            let fsv = rotate(1.0, 0.0);
            let ssv = rotate(0.0, 1.0);
            for a in 0..layout.nasics_x * asic_rows {
                let (ay, ax) = (a / layout.nasics_x, a % layout.nasics_x);
                let (cx, cy) = rotate(
                    local_x0 + (ax * layout.asic_nx) as f64,
                    local_y0 + (ay * layout.asic_ny) as f64,
                );
                let min_ss = slab * module_ss + ay * layout.asic_ny;
                let min_fs = ax * layout.asic_nx;
                panels.push(Panel {
                    name: format!("p{m}a{a}"),
                    min_fs,
                    max_fs: min_fs + layout.asic_nx - 1,
                    min_ss,
                    max_ss: min_ss + layout.asic_ny - 1,
                    fs: [fsv.0, fsv.1, 0.0],
                    ss: [ssv.0, ssv.1, 0.0],
                    corner_x: cx - bx,
                    corner_y: cy - by,
                    extra: vec![("coffset".into(), "0.0".into())],
                });
            }
        }
        Geometry {
            globals: vec![
                ("res".into(), format!("{}", synthetic_res(model.family))),
                ("clen".into(), "0.1".into()),
                ("photon_energy".into(), "9500".into()),
                ("adu_per_eV".into(), "0.00105".into()),
                ("data".into(), "/entry_1/data_1/data".into()),
                ("dim0".into(), "%".into()),
                ("dim1".into(), "ss".into()),
                ("dim2".into(), "fs".into()),
            ],
            panels,
        }
    }
}

/// Pixels per metre of the idealised panels of `family` (ePix10ka, ePixHR2x2 100 µm, Jungfrau
/// 75 µm, ePix100 50 µm; 100 µm otherwise).
pub fn synthetic_res(family: Family) -> f64 {
    match family {
        Family::Jungfrau => 13333.333,
        Family::Epix100 => 20000.0,
        Family::Epix10ka | Family::EpixHr2x2 | Family::EpixM320 | Family::Raw => 10000.0,
    }
}
