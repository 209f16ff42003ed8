//! psana's geometry text (calibration type `geometry`) and its conversion to CrystFEL.
//!
//! Each data line is `PARENT PARENT_IND OBJECT OBJECT_IND X0 Y0 Z0 ROT-Z ROT-Y ROT-X TILT-Z
//! TILT-Y TILT-X` (µm, degrees): the object's placement in its parent's frame. Lines starting with
//! `#` are comments. Objects form a tree under one implicit root (usually `IP`); the leaves are
//! sensor segments whose pixel layout psana knows by name (`EPIX10KA:V1`, `JUNGFRAU:V2`, ...).
//!
//! psana's rules, followed here: an object's points `p` map to its parent as
//! `Rx(ax)·Ry(ay)·Rz(az)·p + origin` with each angle = rotation + tilt; a positive `Z0` of an object
//! whose parent name starts with `IP` is negated; segments are numbered depth first, children in
//! file order (the order of `get_pixel_coords`' first axis, which `det.raw` segment ids index);
//! the lab frame is psana's `cframe=1` (`x = -y_psana`, `y = -x_psana`, `z = -z_psana`), which is
//! CrystFEL's (+z along the beam, +y up). Wide pixels are placed as `GeometryAccess` does by
//! default (`use_wide_pix_center=False`; Jungfrau V2 always centres them).

use crate::detector::geometry::{Geometry, GeometryError, Panel};
use std::path::Path;

/// Pixel layout of one psana sensor type (psana's `SegGeometry*` classes).
#[derive(Debug, Clone, PartialEq)]
pub struct Sensor {
    /// psana's object name, e.g. `EPIX10KA:V1`.
    pub name: String,
    /// Rows (slow scan) of one segment.
    pub rows: usize,
    /// Columns (fast scan) of one segment.
    pub cols: usize,
    /// Rows of one ASIC.
    pub asic_rows: usize,
    /// Columns of one ASIC.
    pub asic_cols: usize,
    /// psana's pixel scale size in µm (CrystFEL `res` = 1e6 / this).
    pub pixel_um: f64,
    /// Segment-frame coordinate of each column, µm (x, or y when `transposed`).
    col_um: Vec<f64>,
    /// Segment-frame coordinate of each row, µm (y, or x when `transposed`).
    row_um: Vec<f64>,
    /// psana's `MTRX:V1` layout: rows run along x, columns along y.
    transposed: bool,
}

/// Names of the sensors [`Sensor::from_name`] knows.
pub const KNOWN_SENSORS: &str = "EPIX10KA:V1, EPIX100:V1, EPIXHR2X2:V1, JUNGFRAU:V1, JUNGFRAU:V2, \
     EPIXMASIC:V1, EPIXUHRASIC:V1, PNCCD:V1, MTRX:R:C:PR:PC, MTRX:V2:R:C:PR:PC";

impl Sensor {
    /// The sensor psana builds for an object name, `None` for container objects.
    /// `Err` for a `MTRX` name with bad numbers.
    pub fn from_name(name: &str) -> Result<Option<Sensor>, String> {
        Ok(Some(match name {
            // ePix 2x2-ASIC sensors: pixels regular up to the wide edge pixels, which psana
            // places as regular pixels sharing the wide pixel's outer edge.
            "EPIX10KA:V1" => Sensor::epix_2x2(name, 352, 384, 100.0, 225.0, true),
            "EPIXHR2X2:V1" => Sensor::epix_2x2(name, 288, 384, 100.0, 225.0, true),
            "EPIX100:V1" => Sensor::epix_2x2(name, 704, 768, 50.0, 175.0, false),
            "JUNGFRAU:V1" => Sensor::jungfrau(name, false),
            "JUNGFRAU:V2" => Sensor::jungfrau(name, true),
            "EPIXMASIC:V1" => Sensor::matrix_v2(name, 192, 384, 50.0, 50.0),
            "EPIXUHRASIC:V1" => Sensor::matrix_v2(name, 168, 192, 100.0, 100.0),
            "PNCCD:V1" => Sensor::matrix_v1(name, 512, 512, 75.0, 75.0),
            _ if name.starts_with("MTRXANY") => {
                return Err(format!(
                    "sensor `{name}` takes its shape from the data; not supported"
                ));
            }
            _ if name.starts_with("MTRX:") => {
                let f: Vec<&str> = name.split(':').collect();
                if f.len() < 5 {
                    return Err(format!(
                        "matrix sensor `{name}` needs MTRX[:V2]:ROWS:COLS:PR:PC"
                    ));
                }
                let v2 = name.starts_with("MTRX:V2");
                let nums = if v2 { &f[f.len() - 4..] } else { &f[1..5] };
                let bad = || format!("matrix sensor `{name}`: bad ROWS:COLS:PR:PC");
                let rows: usize = nums[0].parse().map_err(|_| bad())?;
                let cols: usize = nums[1].parse().map_err(|_| bad())?;
                let pr: f64 = nums[2].parse().map_err(|_| bad())?;
                let pc: f64 = nums[3].parse().map_err(|_| bad())?;
                if rows < 3 || cols < 3 || !(pr > 0.0 && pr.is_finite() && pc > 0.0) {
                    return Err(bad());
                }
                if v2 {
                    Sensor::matrix_v2(name, rows, cols, pr, pc)
                } else {
                    Sensor::matrix_v1(name, rows, cols, pr, pc)
                }
            }
            _ => return Ok(None),
        }))
    }

    /// 2x2 ASICs; `y_down`: y decreases with the row (ePix10ka) or increases (ePix100).
    fn epix_2x2(name: &str, rows: usize, cols: usize, pix: f64, wide: f64, y_down: bool) -> Sensor {
        // Distance of pixel i of a half from the sensor centre line.
        let half = |n: usize| -> Vec<f64> {
            (0..n / 2)
                .map(|i| i as f64 * pix + wide - pix / 2.0)
                .collect()
        };
        let xs = half(cols);
        let mut col_um: Vec<f64> = xs.iter().rev().map(|x| -x).collect();
        col_um.extend(&xs);
        let ys = half(rows);
        let s = if y_down { 1.0 } else { -1.0 };
        let mut row_um: Vec<f64> = ys.iter().rev().map(|y| s * y).collect();
        row_um.extend(ys.iter().map(|y| -s * y));
        Sensor {
            name: name.into(),
            rows,
            cols,
            asic_rows: rows / 2,
            asic_cols: cols / 2,
            pixel_um: pix,
            col_um,
            row_um,
            transposed: false,
        }
    }

    /// 2x4 ASICs of 256x256, 75 µm; V2: y grows with the row and the wide pixels at inner ASIC
    /// edges sit at their centres (±37.5 µm off the regular grid).
    fn jungfrau(name: &str, v2: bool) -> Sensor {
        const P: f64 = 75.0;
        let x0 = [-514.5, -256.5, 1.5, 259.5];
        let mut col_um: Vec<f64> = (0..1024)
            .map(|c| (x0[c / 256] + (c % 256) as f64) * P)
            .collect();
        let row_um: Vec<f64> = if v2 {
            let mut y: Vec<f64> = (0..512)
                .map(|r| ([-256.5, 1.5][r / 256] + (r % 256) as f64) * P)
                .collect();
            for i in [255, 511, 767] {
                col_um[i] += P / 2.0;
                col_um[i + 1] -= P / 2.0;
            }
            y[255] += P / 2.0;
            y[256] -= P / 2.0;
            y
        } else {
            (0..512)
                .map(|r| ([256.5, -1.5][r / 256] - (r % 256) as f64) * P)
                .collect()
        };
        Sensor {
            name: name.into(),
            rows: 512,
            cols: 1024,
            asic_rows: 256,
            asic_cols: 256,
            pixel_um: P,
            col_um,
            row_um,
            transposed: false,
        }
    }

    /// psana's `MTRX:V2`: centred, x along columns, y against rows; one ASIC.
    fn matrix_v2(name: &str, rows: usize, cols: usize, pr: f64, pc: f64) -> Sensor {
        let c0 = (cols - 1) as f64 / 2.0;
        let r0 = (rows - 1) as f64 / 2.0;
        Sensor {
            name: name.into(),
            rows,
            cols,
            asic_rows: rows,
            asic_cols: cols,
            pixel_um: pr.min(pc),
            col_um: (0..cols).map(|c| (c as f64 - c0) * pc).collect(),
            row_um: (0..rows).map(|r| (r as f64 - r0) * -pr).collect(),
            transposed: false,
        }
    }

    /// psana's `MTRX` (V1): origin at pixel (0, 0), x along rows, y along columns; one ASIC.
    fn matrix_v1(name: &str, rows: usize, cols: usize, pr: f64, pc: f64) -> Sensor {
        Sensor {
            name: name.into(),
            rows,
            cols,
            asic_rows: rows,
            asic_cols: cols,
            pixel_um: pr.min(pc),
            col_um: (0..cols).map(|c| c as f64 * pc).collect(),
            row_um: (0..rows).map(|r| r as f64 * pr).collect(),
            transposed: true,
        }
    }

    /// ASICs per segment along slow scan and fast scan.
    pub fn asic_grid(&self) -> (usize, usize) {
        (self.rows / self.asic_rows, self.cols / self.asic_cols)
    }

    /// psana's coordinate of pixel (row, col) in the segment frame, µm.
    pub fn pixel_position_um(&self, row: usize, col: usize) -> [f64; 3] {
        let (c, r) = (self.col_um[col], self.row_um[row]);
        if self.transposed {
            [r, c, 0.0]
        } else {
            [c, r, 0.0]
        }
    }

    /// The regular grid of one ASIC in the segment frame: centre of its first pixel and the
    /// steps per column and per row (µm). Anchored on the ASIC's second pixel, inside the wide
    /// edge pixels, so only those differ from psana.
    fn asic_grid_um(&self, r0: usize, c0: usize) -> ([f64; 3], [f64; 3], [f64; 3]) {
        let p = self.pixel_position_um(r0 + 1, c0 + 1);
        let fs = sub(self.pixel_position_um(r0 + 1, c0 + 2), p);
        let ss = sub(self.pixel_position_um(r0 + 2, c0 + 1), p);
        (sub(sub(p, fs), ss), fs, ss)
    }
}

/// One line of the geometry text.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoObject {
    pub parent: String,
    pub parent_index: i64,
    pub name: String,
    pub index: i64,
    /// Origin in the parent frame, µm.
    pub origin_um: [f64; 3],
    /// Design rotations about z, y, x, degrees.
    pub rot_deg: [f64; 3],
    /// Tilts about z, y, x, degrees.
    pub tilt_deg: [f64; 3],
    /// 1-based line number in the source.
    pub line: usize,
}

/// A sensor segment placed in the lab frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Segment id: position in psana's `get_pixel_coords` order.
    pub id: usize,
    /// The object's name and index as written, e.g. `JUNGFRAU:V2` 3.
    pub object: String,
    pub object_index: i64,
    /// Line defining the segment.
    pub line: usize,
    pub sensor: Sensor,
    /// Segment frame to lab frame: `lab = rotation · p + origin_um` (µm, CrystFEL axes).
    pub rotation: [[f64; 3]; 3],
    pub origin_um: [f64; 3],
}

impl Segment {
    /// Lab position of pixel (row, col) as psana computes it, µm.
    pub fn pixel_lab_um(&self, row: usize, col: usize) -> [f64; 3] {
        self.to_lab(self.sensor.pixel_position_um(row, col))
    }

    fn to_lab(&self, p: [f64; 3]) -> [f64; 3] {
        add(mat_vec(&self.rotation, p), self.origin_um)
    }
}

/// A parsed psana geometry: its objects in file order and its segments in id order.
#[derive(Debug, Clone, PartialEq)]
pub struct PsanaGeometry {
    pub source_name: String,
    pub objects: Vec<GeoObject>,
    pub segments: Vec<Segment>,
}

/// Options of [`PsanaGeometry::to_crystfel`].
#[derive(Debug, Clone, Default)]
pub struct CrystfelOptions {
    /// Segment ids present in the data (the slab holds these, in id order); `None`: all.
    pub segments: Option<Vec<usize>>,
    /// `clen` value (metres or an HDF5 path); default: the panels' mean z.
    pub clen: Option<String>,
    /// `photon_energy` value (eV or an HDF5 path); omitted when `None`.
    pub photon_energy: Option<String>,
    /// `adu_per_eV`; omitted when `None`.
    pub adu_per_ev: Option<String>,
}

/// True when `text` looks like psana geometry rather than CrystFEL `.geom` (first data line has
/// 13 fields and no `=`).
pub fn is_psana_text(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .is_some_and(|l| !l.contains('=') && l.split_whitespace().count() == 13)
}

impl PsanaGeometry {
    /// Reads and parses a psana geometry file.
    pub fn from_file(path: &Path) -> Result<PsanaGeometry, GeometryError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| GeometryError::Io {
            source_name: name.clone(),
            err,
        })?;
        PsanaGeometry::parse(&text, &name)
    }

    /// Parses psana geometry text; `source_name` names it in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<PsanaGeometry, GeometryError> {
        let syntax = |line: usize, msg: String| GeometryError::Syntax {
            source_name: source_name.to_string(),
            line,
            msg,
        };
        let mut objects = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            objects.push(parse_line(line, i + 1).map_err(|m| syntax(i + 1, m))?);
        }
        if objects.is_empty() {
            return Err(GeometryError::Layout {
                source_name: source_name.into(),
                msg: "no geometry lines".into(),
            });
        }
        // psana attaches a child to the first object with the parent's name and index.
        let key = |n: &str, i: i64| (n.to_string(), i);
        let find = |n: &str, i: i64| objects.iter().position(|o| o.name == n && o.index == i);
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); objects.len()];
        let mut roots: Vec<((String, i64), Vec<usize>, usize)> = Vec::new();
        for (k, o) in objects.iter().enumerate() {
            match find(&o.parent, o.parent_index) {
                Some(p) => children[p].push(k),
                None => match roots
                    .iter_mut()
                    .find(|r| r.0 == key(&o.parent, o.parent_index))
                {
                    Some(r) => r.1.push(k),
                    None => roots.push((key(&o.parent, o.parent_index), vec![k], o.line)),
                },
            }
        }
        let (root, top) = match roots.as_slice() {
            [r] => (r.0.clone(), r.1.clone()),
            [] => {
                return Err(GeometryError::Layout {
                    source_name: source_name.into(),
                    msg: "no top object: every parent is defined, so the objects form a cycle"
                        .into(),
                });
            }
            [a, b, ..] => {
                return Err(syntax(
                    b.2,
                    format!(
                        "second top object {}:{} (parent not defined by any line); the first is {}:{} (line {})",
                        b.0.0, b.0.1, a.0.0, a.0.1, a.2
                    ),
                ));
            }
        };
        let mut geo = PsanaGeometry {
            source_name: source_name.into(),
            objects: Vec::new(),
            segments: Vec::new(),
        };
        let mut visited = vec![false; objects.len()];
        let ident = (
            [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            [0.0; 3],
        );
        for &k in &top {
            geo.walk(&objects, &children, k, ident, &mut visited)?;
        }
        if let Some(k) = visited.iter().position(|v| !v) {
            return Err(syntax(
                objects[k].line,
                format!(
                    "{}:{} is not connected to the top object {}:{} (its parents form a cycle)",
                    objects[k].name, objects[k].index, root.0, root.1
                ),
            ));
        }
        geo.objects = objects;
        Ok(geo)
    }

    /// Depth-first placement of object `k` given its parent's transform to the psana frame.
    fn walk(
        &mut self,
        objects: &[GeoObject],
        children: &[Vec<usize>],
        k: usize,
        parent: ([[f64; 3]; 3], [f64; 3]),
        visited: &mut [bool],
    ) -> Result<(), GeometryError> {
        let o = &objects[k];
        let source_name = self.source_name.clone();
        let err = |msg: String| GeometryError::Syntax {
            source_name: source_name.clone(),
            line: o.line,
            msg,
        };
        visited[k] = true;
        let angle = |i: usize| (o.rot_deg[i] + o.tilt_deg[i]).to_radians();
        let r = mat_mul(
            &rot_x(angle(2)),
            &mat_mul(&rot_y(angle(1)), &rot_z(angle(0))),
        );
        let rotation = mat_mul(&parent.0, &r);
        let origin = add(mat_vec(&parent.0, o.origin_um), parent.1);
        let sensor = Sensor::from_name(&o.name).map_err(&err)?;
        match sensor {
            Some(sensor) => {
                if let Some(&c) = children[k].first() {
                    return Err(GeometryError::Syntax {
                        source_name,
                        line: objects[c].line,
                        msg: format!("sensor {}:{} cannot have children", o.name, o.index),
                    });
                }
                // psana frame to lab frame: (x, y, z) -> (-y, -x, -z).
                let flip = [[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]];
                self.segments.push(Segment {
                    id: self.segments.len(),
                    object: o.name.clone(),
                    object_index: o.index,
                    line: o.line,
                    sensor,
                    rotation: mat_mul(&flip, &rotation),
                    origin_um: mat_vec(&flip, origin),
                });
            }
            None => {
                if children[k].is_empty() {
                    return Err(err(format!(
                        "`{}` is not a known sensor and has no children (known sensors: {KNOWN_SENSORS})",
                        o.name
                    )));
                }
                for &c in &children[k] {
                    self.walk(objects, children, c, (rotation, origin), visited)?;
                }
            }
        }
        Ok(())
    }

    /// The CrystFEL geometry of the present segments: one panel `p{id}a{asic}` per ASIC, slab
    /// `(n*rows, cols)` with segments in id order, `corner_x/y` at the corner of the ASIC's first
    /// pixel (CrystFEL's convention; psana's own converter writes the pixel centre), `coffset` =
    /// panel z − clen. Pixel centres match psana's `get_pixel_coords` exactly (to rounding) except
    /// wide pixels that psana centres (Jungfrau V2 ASIC edges: 37.5 µm).
    pub fn to_crystfel(&self, opts: &CrystfelOptions) -> Result<Geometry, GeometryError> {
        let layout = |msg: String| GeometryError::Layout {
            source_name: self.source_name.clone(),
            msg,
        };
        let n = self.segments.len();
        let ids: Vec<usize> = match &opts.segments {
            None => (0..n).collect(),
            Some(ids) => {
                let mut ids = ids.clone();
                ids.sort_unstable();
                ids.dedup();
                if ids.is_empty() {
                    return Err(layout("no segments selected".into()));
                }
                if let Some(bad) = ids.iter().find(|&&i| i >= n) {
                    return Err(layout(format!(
                        "segment {bad} not in the geometry (it has {n} segments, ids 0-{})",
                        n - 1
                    )));
                }
                ids
            }
        };
        let first = &self.segments[ids[0]];
        let (rows, cols) = (first.sensor.rows, first.sensor.cols);
        if let Some(s) = ids
            .iter()
            .map(|&i| &self.segments[i])
            .find(|s| (s.sensor.rows, s.sensor.cols) != (rows, cols))
        {
            return Err(layout(format!(
                "segments differ in shape: {} {} is {}x{}, {} {} is {rows}x{cols}; a slab needs one shape",
                s.object,
                s.object_index,
                s.sensor.rows,
                s.sensor.cols,
                first.object,
                first.object_index
            )));
        }
        let one_res = ids
            .iter()
            .all(|&i| self.segments[i].sensor.pixel_um == first.sensor.pixel_um);
        let mut panels = Vec::new();
        let mut corner_z_um = Vec::new();
        for (slot, &id) in ids.iter().enumerate() {
            let seg = &self.segments[id];
            let s = &seg.sensor;
            let (nar, nac) = s.asic_grid();
            for a in 0..nar * nac {
                let (ar, ac) = (a / nac, a % nac);
                let (r0, c0) = (ar * s.asic_rows, ac * s.asic_cols);
                let (centre, fs, ss) = s.asic_grid_um(r0, c0);
                let corner = sub(centre, scale(add(fs, ss), 0.5));
                let lab = seg.to_lab(corner);
                let pix = s.pixel_um;
                let fs = scale(mat_vec(&seg.rotation, fs), 1.0 / pix);
                let ss = scale(mat_vec(&seg.rotation, ss), 1.0 / pix);
                corner_z_um.push(lab[2]);
                let mut extra = Vec::new();
                if !one_res {
                    extra.push(("res".to_string(), fmt_num(1e6 / pix)));
                }
                panels.push(Panel {
                    name: format!("p{id}a{a}"),
                    min_fs: c0,
                    max_fs: c0 + s.asic_cols - 1,
                    min_ss: slot * rows + r0,
                    max_ss: slot * rows + r0 + s.asic_rows - 1,
                    fs: clean(fs),
                    ss: clean(ss),
                    corner_x: lab[0] / pix,
                    corner_y: lab[1] / pix,
                    extra,
                });
            }
        }
        let mean_z_um = corner_z_um.iter().sum::<f64>() / corner_z_um.len() as f64;
        let mean_z_m = mean_z_um / 1e6;
        for (p, z) in panels.iter_mut().zip(&corner_z_um) {
            p.extra
                .insert(0, ("coffset".into(), fmt_num((z - mean_z_um) / 1e6)));
        }
        let mut globals = Vec::new();
        if let Some(e) = &opts.photon_energy {
            globals.push(("photon_energy".into(), e.clone()));
        }
        let clen = opts.clen.clone().unwrap_or_else(|| fmt_num(mean_z_m));
        globals.push(("clen".into(), clen));
        if one_res {
            globals.push(("res".into(), fmt_num(1e6 / first.sensor.pixel_um)));
        }
        if let Some(a) = &opts.adu_per_ev {
            globals.push(("adu_per_eV".into(), a.clone()));
        }
        for (k, v) in [
            ("data", "/entry_1/data_1/data"),
            ("dim0", "%"),
            ("dim1", "ss"),
            ("dim2", "fs"),
            ("peak_list", "/entry_1/result_1"),
            ("peak_list_type", "cxi"),
        ] {
            globals.push((k.into(), v.into()));
        }
        Ok(Geometry { globals, panels })
    }
}

fn parse_line(line: &str, lineno: usize) -> Result<GeoObject, String> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() != 13 {
        return Err(format!(
            "expected 13 fields `PARENT IND OBJECT IND X0 Y0 Z0 ROT-Z ROT-Y ROT-X TILT-Z TILT-Y TILT-X`, got {}",
            f.len()
        ));
    }
    let int = |i: usize, what: &str| {
        f[i].parse::<i64>()
            .map_err(|_| format!("{what} must be an integer, got `{}`", f[i]))
    };
    const NAMES: [&str; 9] = [
        "X0", "Y0", "Z0", "ROT-Z", "ROT-Y", "ROT-X", "TILT-Z", "TILT-Y", "TILT-X",
    ];
    let mut v = [0.0; 9];
    for (k, x) in v.iter_mut().enumerate() {
        let s = f[4 + k];
        *x = s
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("{} must be a finite number, got `{s}`", NAMES[k]))?;
    }
    // psana: detector z relative to the IP is negative in its frame.
    if f[0].starts_with("IP") && v[2] > 0.0 {
        v[2] = -v[2];
    }
    Ok(GeoObject {
        parent: f[0].into(),
        parent_index: int(1, "PARENT_IND")?,
        name: f[2].into(),
        index: int(3, "OBJECT_IND")?,
        origin_um: [v[0], v[1], v[2]],
        rot_deg: [v[3], v[4], v[5]],
        tilt_deg: [v[6], v[7], v[8]],
        line: lineno,
    })
}

/// Shortest text that reads back to the same f64.
fn fmt_num(x: f64) -> String {
    format!("{x}")
}

/// Drops rounding noise (|v| < 1e-12) from a direction vector, so 90° turns print as 0.
fn clean(v: [f64; 3]) -> [f64; 3] {
    v.map(|x| if x.abs() < 1e-12 { 0.0 } else { x })
}

type Mat = [[f64; 3]; 3];

fn rot_z(a: f64) -> Mat {
    let (s, c) = a.sin_cos();
    [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
}

fn rot_y(a: f64) -> Mat {
    let (s, c) = a.sin_cos();
    [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]
}

fn rot_x(a: f64) -> Mat {
    let (s, c) = a.sin_cos();
    [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]
}

fn mat_mul(a: &Mat, b: &Mat) -> Mat {
    let mut m = [[0.0; 3]; 3];
    for (i, row) in m.iter_mut().enumerate() {
        for (j, x) in row.iter_mut().enumerate() {
            *x = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    m
}

fn mat_vec(a: &Mat, v: [f64; 3]) -> [f64; 3] {
    [0, 1, 2].map(|i| a[i][0] * v[0] + a[i][1] * v[1] + a[i][2] * v[2])
}

fn add(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn scale(a: [f64; 3], k: f64) -> [f64; 3] {
    a.map(|x| x * k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epix10ka_columns_are_regular_per_asic() {
        let s = Sensor::from_name("EPIX10KA:V1").unwrap().unwrap();
        assert_eq!((s.rows, s.cols, s.asic_grid()), (352, 384, (2, 2)));
        assert_eq!(s.pixel_position_um(0, 191), [-175.0, 17675.0, 0.0]);
        assert_eq!(s.pixel_position_um(0, 192), [175.0, 17675.0, 0.0]);
        assert_eq!(s.pixel_position_um(351, 383)[1], -17675.0);
    }

    #[test]
    fn jungfrau_v2_wide_pixels_are_centred() {
        let s = Sensor::from_name("JUNGFRAU:V2").unwrap().unwrap();
        assert_eq!(s.pixel_position_um(0, 0)[0], -514.5 * 75.0);
        assert_eq!(
            s.pixel_position_um(0, 255)[0],
            (-514.5 + 255.0) * 75.0 + 37.5
        );
        assert_eq!(s.pixel_position_um(0, 256)[0], -256.5 * 75.0 - 37.5);
        assert_eq!(s.pixel_position_um(256, 0)[1], 1.5 * 75.0 - 37.5);
    }

    #[test]
    fn segment_lists() {}

    #[test]
    fn detects_format() {
        assert!(is_psana_text("# c\nIP 0 CAMERA 0 0 0 1 0 0 0 0 0 0\n"));
        assert!(!is_psana_text("; c\nres = 10000\n"));
    }
}
