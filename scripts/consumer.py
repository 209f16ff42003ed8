#!/usr/bin/env python3
"""Example lclstreamer consumer: receives HDF5 batch images over NNG (pynng Pull0), opens each
with h5py.File(io.BytesIO(msg)) after `import hdf5plugin`, and stops once every producer's
end-of-stream message (b"LCLSTREAMER-EOS\\n" + JSON) has arrived, checking the announced counts.
Copies resent after a reconnect are recognised by the root attributes (writer_rank, seq) and skipped.

    .venv/bin/python scripts/consumer.py tcp://127.0.0.1:12321 --producers 2

Exit status 0 when complete, 1 otherwise. Prints one JSON summary line on stdout.
"""
import argparse
import io
import json
import os
import sys
import time

import hdf5plugin  # noqa: F401  (registers bitshuffle 32008, zstd 32015, ... with h5py's HDF5)
import h5py
import numpy as np
import pynng

EOS_MAGIC = b"LCLSTREAMER-EOS\n"


def frames_of(f):
    """The (B, ss, fs) frame dataset of either layout, or None."""
    if "entry_1" in f:
        return f.get("entry_1/data_1/data")
    for name, obj in f.items():
        if isinstance(obj, h5py.Dataset) and obj.ndim == 3:
            return obj
    return None


def plain_copy(f, path):
    """Writes every dataset and root attribute of f, decoded, into an uncompressed HDF5 file."""
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as out:
        for k, v in f.attrs.items():
            out.attrs[k] = v

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                data = obj[()]
                if data.dtype.kind == "O":
                    data = np.array([x.decode() if isinstance(x, bytes) else x for x in data], dtype=h5py.string_dtype())
                out.create_dataset(name, data=data)

        f.visititems(visit)
    os.replace(tmp, path)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url")
    p.add_argument("--dial", action="store_true", help="dial the URL instead of listening")
    p.add_argument("--producers", type=int, default=1, help="end-of-stream messages to wait for")
    p.add_argument("--timeout", type=float, default=60.0, help="give up after this many idle seconds")
    p.add_argument("--recv-max-size", type=int, default=1 << 30)
    p.add_argument("--dump", help="write a decoded, uncompressed copy of every batch here")
    args = p.parse_args()

    sock = pynng.Pull0(recv_timeout=200, recv_max_size=args.recv_max_size)
    if args.dial:
        sock.dial(args.url, block=False)
    else:
        sock.listen(args.url)
    if args.dump:
        os.makedirs(args.dump, exist_ok=True)

    batches = events = nbytes = pixels = duplicates = 0
    seen = set()
    eos = []
    start = None
    last = time.monotonic()
    while len(eos) < args.producers:
        try:
            msg = sock.recv()
        except pynng.Timeout:
            if time.monotonic() - last > args.timeout:
                break
            continue
        last = time.monotonic()
        start = start or last
        if msg.startswith(EOS_MAGIC):
            eos.append(json.loads(msg[len(EOS_MAGIC):]))
            continue
        with h5py.File(io.BytesIO(msg), "r") as f:
            key = (int(f.attrs["writer_rank"]), int(f.attrs["seq"]))
            if key in seen:  # a copy resent after a reconnect
                duplicates += 1
                continue
            seen.add(key)
            n = int(f.attrs["n_events"])
            data = frames_of(f)
            if data is not None:
                assert data.shape[0] == n, (data.shape, n)
                pixels += data[()].size  # decodes every chunk through hdf5plugin
            if args.dump:
                name = "w%03d_s%06d.h5" % key
                plain_copy(f, os.path.join(args.dump, name))
        batches += 1
        events += n
        nbytes += len(msg)
    sock.close()

    want = (sum(e["batches"] for e in eos), sum(e["events"] for e in eos))
    complete = len(eos) == args.producers and want == (batches, events)
    secs = (time.monotonic() - start) if start else 0.0
    print(json.dumps({"batches": batches, "events": events, "bytes": nbytes, "pixels": pixels, "duplicates": duplicates,
                      "seconds": secs, "eos": eos, "complete": complete}))
    sys.exit(0 if complete else 1)


if __name__ == "__main__":
    main()
