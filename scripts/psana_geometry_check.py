"""Compares `lclstreamer geometry` with psana's own pixel coordinates.

For each psana geometry file: lclstreamer writes a CrystFEL .geom; this script reads it back as
CrystFEL does (pixel centre at corner + (fs+0.5)·fs + (ss+0.5)·ss, z from clen + coffset) and
compares every slab pixel with psana's `GeometryAccess.get_pixel_coords(cframe=1)` (lab frame,
default `use_wide_pix_center=False`) of the same segment, row and column.

Pixels on ASIC edges may differ where psana centres wide pixels (Jungfrau V2: 37.5 µm, half a
pixel; 53 µm at ASIC corners); a per-ASIC CrystFEL panel has one pitch and cannot hold them. Interior pixels must agree
within 0.1 µm (the .geom prints fs/ss vectors to 6 decimals: up to ~0.05 µm across a 1024-pixel
module).

Standalone: .venv-psana/bin/python scripts/psana_geometry_check.py --bin target/release/lclstreamer
Also run by scripts/psana-crosscheck (all, or `geometry`).
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures", "psana_geometry")
INTERIOR_TOL_UM = 0.1
# A Jungfrau ASIC's corner pixel is wide both ways: 37.5 µm off in x and in y.
EDGE_TOL_UM = 37.5 * 2 ** 0.5 + INTERIOR_TOL_UM

# A sparse Jungfrau 16M: 19 of 32 modules, as MFX runs record.
SPARSE_16M = [0, 1, 2, 4, 5, 7, 9, 10, 12, 13, 15, 16, 19, 21, 22, 24, 27, 28, 31]


def psana_data_dir():
    import psana.pscalib.geometry as g
    return os.path.join(os.path.dirname(g.__file__), "data")


def cases():
    d = psana_data_dir()
    out = []
    for name in ("epix10kaquad", "jungfrau05M", "jungfrau1M", "jungfrau4M", "jungfrau16M",
                 "epix100a", "epixhr2x2", "epixm320", "pnccd"):
        out.append((name, os.path.join(d, f"geometry-def-{name}.data"), None))
    out.append(("jungfrau16M sparse 19/32", os.path.join(d, "geometry-def-jungfrau16M.data"),
                SPARSE_16M))
    out.append(("epix10k2m (invented, quads, tilts)",
                os.path.join(FIXTURES, "epix10k2m-invented.data"), None))
    out.append(("epix10k2m segments 3,8-11", os.path.join(FIXTURES, "epix10k2m-invented.data"),
                [3, 8, 9, 10, 11]))
    return out


def read_geom(path):
    """(globals, {panel: {key: value}}) from a .geom as lclstreamer writes it."""
    glob, panels = {}, {}
    for line in open(path):
        line = line.split(";")[0].strip()
        if not line:
            continue
        k, v = (s.strip() for s in line.split("=", 1))
        if "/" in k:
            p, key = k.split("/", 1)
            panels.setdefault(p, {})[key] = v
        else:
            glob[k] = v
    return glob, panels


def vec(s):
    v = np.zeros(3)
    for term in s.split():
        v["xyz".index(term[-1])] += float(term[:-1])
    return v


def crystfel_centres(geom_path):
    """Pixel centres in µm, shaped like the slab (3, ss, fs), and an ASIC-edge mask."""
    glob, panels = read_geom(geom_path)
    h = max(int(p["max_ss"]) for p in panels.values()) + 1
    w = max(int(p["max_fs"]) for p in panels.values()) + 1
    xyz = np.full((3, h, w), np.nan)
    covered = np.zeros((h, w), int)
    edge = np.zeros((h, w), bool)
    clen = float(glob["clen"])
    for p in panels.values():
        res = float(p.get("res", glob.get("res")))
        pix = 1e6 / res
        f0, f1, s0, s1 = (int(p[k]) for k in ("min_fs", "max_fs", "min_ss", "max_ss"))
        fs = np.arange(f1 - f0 + 1) + 0.5
        ss = np.arange(s1 - s0 + 1) + 0.5
        fv, sv = vec(p["fs"]), vec(p["ss"])
        corner = np.array([float(p["corner_x"]), float(p["corner_y"]),
                           (clen + float(p["coffset"])) * res])
        for a in range(3):
            xyz[a, s0:s1 + 1, f0:f1 + 1] = pix * (corner[a] + ss[:, None] * sv[a]
                                                  + fs[None, :] * fv[a])
        covered[s0:s1 + 1, f0:f1 + 1] += 1
        edge[s0:s1 + 1, [f0, f1]] = True
        edge[[s0, s1], f0:f1 + 1] = True
    return xyz, covered, edge


def check_one(bin_path, work, label, path, segments, report):
    from psana.pscalib.geometry.GeometryAccess import GeometryAccess

    out = os.path.join(work, "check.geom")
    cmd = [bin_path, "geometry", "--psana", path, "--out", out]
    if segments is not None:
        cmd += ["--segments", ",".join(map(str, segments))]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        report(False, f"geometry {label}", f"lclstreamer failed: {r.stderr.strip()}")
        return
    ours, covered, edge = crystfel_centres(out)

    geo = GeometryAccess(path)
    x, y, z = geo.get_pixel_coords(cframe=1)
    rows, cols = x.shape[-2:]
    psana = np.stack([np.asarray(a).reshape(-1, rows, cols) for a in (x, y, z)])
    if segments is not None:
        psana = psana[:, segments]
    psana = psana.reshape(3, -1, cols)

    if ours.shape != psana.shape or (covered != 1).any():
        report(False, f"geometry {label}",
               f"slab {ours.shape[1:]} (psana {psana.shape[1:]}), "
               f"{int((covered != 1).sum())} pixels not covered exactly once")
        return
    dev = np.sqrt(((ours - psana) ** 2).sum(axis=0))
    interior = dev[~edge].max()
    edge_max = dev[edge].max()
    n_off = int((dev > INTERIOR_TOL_UM).sum())
    ok = interior <= INTERIOR_TOL_UM and edge_max <= EDGE_TOL_UM
    report(ok, f"geometry {label}",
           f"slab {dev.shape[0]}x{dev.shape[1]}, max deviation {dev.max():.4f} um; "
           f"interior {interior:.2e} um, ASIC edges {edge_max:.4f} um "
           f"({n_off} pixels beyond {INTERIOR_TOL_UM} um, all on edges: wide pixels psana centres)")


def check_geometry(bin_path, work, report):
    for label, path, segments in cases():
        check_one(bin_path, work, label, path, segments, report)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "target", "release", "lclstreamer"))
    a = ap.parse_args()
    results = []

    def report(ok, name, detail):
        results.append(ok)
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)

    with tempfile.TemporaryDirectory(prefix="psana-geometry-") as work:
        check_geometry(a.bin, work, report)
    n_fail = results.count(False)
    print(f"{len(results) - n_fail} passed, {n_fail} failed")
    sys.exit(1 if n_fail else 0)


if __name__ == "__main__":
    main()
