"""Helpers shared by scripts/make-pf8-fixtures and scripts/bench-kernels.

Runs OM's compiled peakfinder8 (PyPI `ondamonitor`, v23.8.3) and OM's CrystFEL geometry reader.
Needs the venv made by those scripts (.venv-om: ondamonitor, numpy<2, scipy).
"""

import json
import time

import numpy as np
from om.algorithms._crystallography import peakfinder_8
from om.lib.geometry import GeometryInformation

FIELDS = ("fs", "ss", "intensity", "index", "npix", "max_pixel", "sigma", "snr")


def om_geometry(path):
    """OM's radius map (f32, slab shape) and layout dict for a .geom file."""
    with open(path) as f:
        gi = GeometryInformation(geometry_description=f.readlines(), geometry_format="crystfel")
    return gi.get_pixel_maps()["radius"].astype(np.float32), gi.get_layout_info()


def om_mask(pix_r, bad_pixel_map, min_res, max_res):
    """The mask OM's Peakfinder8PeakDetection builds: bad-pixel map, then the radius window."""
    mask = np.ones(pix_r.shape, dtype=np.int8) if bad_pixel_map is None else bad_pixel_map.astype(np.int8)
    mask[np.where(pix_r < min_res)] = 0
    mask[np.where(pix_r > max_res)] = 0
    return mask


def run_om(frame, mask, pix_r, layout, p):
    """OM's peakfinder_8 (normal mode, as OM calls it without fast_mode) on one frame; returns a
    list of peak dicts with all eight outputs."""
    out = peakfinder_8(
        p["max_num_peaks"],
        frame.astype(np.float32),
        mask,
        pix_r,
        0,
        None,
        None,
        0,
        layout["asic_nx"],
        layout["asic_ny"],
        layout["nasics_x"],
        layout["nasics_y"],
        p["adc_threshold"],
        p["minimum_snr"],
        p["min_pixel_count"],
        p["max_pixel_count"],
        p["local_bg_radius"],
    )
    return [
        dict(zip(FIELDS, (float(out[0][i]), float(out[1][i]), float(out[2][i]), int(out[3][i]),
                          int(out[4][i]), float(out[5][i]), float(out[6][i]), float(out[7][i]))))
        for i in range(len(out[0]))
    ]


def time_om(frames, mask, pix_r, layout, p, reps):
    """Median ms/frame of OM's peakfinder_8 over `reps` passes (after one warm-up pass)."""
    times = []
    for rep in range(reps + 1):
        for f in frames:
            t = time.perf_counter()
            run_om(f, mask, pix_r, layout, p)
            if rep > 0:
                times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def compare(rust, om, pos_tol=0.01, rel_tol=1e-3):
    """Matches peaks one-to-one by position; returns (matched, n_rust, n_om, details)."""
    used = set()
    matched = 0
    bad = []
    for r in om:
        best = None
        for j, q in enumerate(rust):
            if j in used:
                continue
            d = max(abs(q["fs"] - r["fs"]), abs(q["ss"] - r["ss"]))
            if d <= pos_tol and (best is None or d < best[0]):
                best = (d, j)
        if best is None:
            bad.append(("om-only", r))
            continue
        q = rust[best[1]]
        ok = abs(q["intensity"] - r["intensity"]) <= rel_tol * max(abs(r["intensity"]), 1e-6)
        if ok:
            used.add(best[1])
            matched += 1
        else:
            bad.append(("intensity", r, q))
    return matched, len(rust), len(om), bad


def dump_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
