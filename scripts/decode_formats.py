#!/usr/bin/env python3
"""Independent decoder of lclstreamer's event formats, used by tests/serialize_python.rs.

Receives over ZeroMQ (pyzmq) until the end message: hdf5 (h5py + hdf5plugin), stream2 and
simplon from a PUSH sink (PULL, connect), msgpack from a REP sink as CrystFEL's indexamajig does (REQ sending "next",
reading exactly the keys libcrystfel/src/image-msgpack.c reads: data{type,shape,data},
peak_list{fs,ss,intensity}). Stream V2 is decoded with cbor2 tag hooks (40, 69/84/85, 56500) and
dectris-compression's bslz4; Simplon with cbor2 and bitshuffle.decompress_lz4 (block 4096).
Prints one JSON line per image (writer, seq, shape, dtype, pixel sum, first pixels, peaks,
photon energy) and a final summary line.
"""
import json
import sys

import cbor2
import msgpack
import numpy as np
import zmq


TYPED = {69: "<u2", 84: "<f2", 85: "<f4"}  # RFC 8746 little-endian typed arrays


def cbor_hook(a, b):
    tag = a if isinstance(a, cbor2.CBORTag) else b  # cbor2 6 passes (tag, immutable)
    if tag.tag == 56500:
        algo, elem, data = tag.value
        assert algo == "bslz4", algo
        from dectris.compression import decompress
        return decompress(data, "bslz4", elem_size=elem)
    if tag.tag in TYPED:
        return np.frombuffer(tag.value, dtype=TYPED[tag.tag])
    if tag.tag == 40:
        dims, arr = tag.value
        return arr.reshape(dims)
    return tag


def out(writer, seq, img, peaks, energy):
    print(json.dumps({
        "writer": writer, "seq": seq, "shape": list(img.shape), "dtype": str(img.dtype),
        "sum": float(img.astype(np.float64).sum()), "first": [float(x) for x in img.ravel()[:5]],
        "fs": [float(x) for x in peaks["fs"]], "ss": [float(x) for x in peaks["ss"]],
        "intensity": [float(x) for x in peaks["intensity"]], "photon_energy": energy,
    }), flush=True)


def main():
    fmt, url = sys.argv[1], sys.argv[2]
    ctx = zmq.Context()
    s = ctx.socket(zmq.REQ if fmt == "msgpack" else zmq.PULL)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 20000)
    s.connect(url)
    start, images = None, 0
    while True:
        if fmt == "msgpack":
            s.send(b"next")
        raw = s.recv()
        if fmt == "hdf5":
            if raw.startswith(b"LCLSTREAMER-EOS\n"):
                eos = json.loads(raw[len(b"LCLSTREAMER-EOS\n"):])
                break
            import io
            import h5py
            import hdf5plugin  # noqa: F401  (registers the bitshuffle filter)
            with h5py.File(io.BytesIO(raw), "r") as f:
                frames = f["entry_1/data_1/data"][:]
                r = f["entry_1/result_1"]
                n = r["nPeaks"][:]
                energy = f["LCLS/photon_energy_eV"][:]
                for i, img in enumerate(frames):
                    peaks = {"fs": r["peakXPosRaw"][i, :n[i]], "ss": r["peakYPosRaw"][i, :n[i]],
                             "intensity": r["peakTotalIntensity"][i, :n[i]]}
                    out(int(f.attrs["writer_rank"]), int(f.attrs["seq"]), img, peaks, float(energy[i]))
                    images += 1
            continue
        if fmt == "msgpack":
            m = msgpack.unpackb(raw, raw=False)
            if m.get("type") == "end":
                eos = m["lclstreamer_eos"]
                break
            d = m["data"]
            assert d["type"] in ("<f4", "<i4"), d["type"]
            img = np.frombuffer(d["data"], dtype=d["type"]).reshape(d["shape"])
            out(m["writer_rank"], m["seq"], img, m["peak_list"], m.get("photon_energy_eV"))
        elif fmt == "stream2":
            m = cbor2.loads(raw, tag_hook=cbor_hook)
            if m["type"] == "start":
                start = m
                continue
            if m["type"] == "end":
                eos = m["lclstreamer_eos"]
                break
            img = m["data"]["threshold_1"]
            assert list(img.shape) == [start["image_size_y"], start["image_size_x"]]
            u = m["user_data"]
            out(u["writer_rank"], m["image_id"], img, u["peak_list"], u.get("photon_energy_eV"))
        else:
            import bitshuffle
            m = cbor2.loads(raw)
            if m["type"] == "start":
                start = m
                continue
            if m["type"] == "end":
                eos = m["lclstreamer_eos"]
                break
            h, w = (int(x) for x in m["shape"].split("x"))
            dt = np.dtype({"float32": "<f4", "uint16": "<u2", "float16": "<f2"}[m["image_dtype"]])
            img = bitshuffle.decompress_lz4(
                np.frombuffer(m["compressed_data"], dtype=np.uint8), (h, w), dt, 4096)
            assert abs(float(img.astype(np.float64).sum()) - m["sum"]) <= 1e-6 * max(1.0, abs(m["sum"]))
            out(m["writer_rank"], m["message_id"], img, m["peak_list"], m.get("photon_energy"))
        images += 1
    print(json.dumps({"images": images, "eos_events": eos["events"], "eos_batches": eos["batches"]}))


if __name__ == "__main__":
    main()
