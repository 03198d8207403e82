"""Throughput of ``napari-unet segment`` on a folder: in one process, and on a Dask
``LocalCluster`` of 1 and 2 worker processes (``--workers``), end to end (process start,
model loading, reading, segmenting, writing), with the outputs compared for identity.

    python benchmarks/workers.py                 # 8 frames of 1024 x 1024
    python benchmarks/workers.py --frames 16 --size 2048

The frames are tiles of a ``bbbc039/val`` image (real nuclei), written to a temporary
folder. On a cluster the work scales the same way: every image is an independent task, each
worker loads the model once, so throughput grows with the workers until the shared file
system or the scheduler (a few ms per task) limits it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import DATA


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--model", default=None, help="default: the default shipped model")
    args = p.parse_args(argv)

    import tifffile

    src = tifffile.imread(DATA / "bbbc039" / "val" / "IXMtest_A15_s5.tif")
    reps = (-(-args.size // src.shape[0]), -(-args.size // src.shape[1]))
    big = np.tile(src, reps)[: args.size, : args.size]
    exe = Path(sys.executable).with_name("napari-unet")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "in"
        folder.mkdir()
        for k in range(args.frames):
            tifffile.imwrite(folder / f"frame{k:03d}.tif", np.roll(big, 37 * k, axis=1))
        mp = args.frames * args.size**2 / 1e6
        print(f"{args.frames} frames of {args.size} x {args.size} ({mp:.1f} MP), model {args.model or 'default'}")
        runs = {"one process": [], "--workers 1": ["--workers", "1"], "--workers 2": ["--workers", "2"]}
        outputs = {}
        print(f"{'run':14} {'seconds':>8} {'MP/s':>6} {'speed-up':>8}")
        first = None
        for name, extra in runs.items():
            out = tmp / name.replace(" ", "_").strip("-")
            cmd = [str(exe), "segment", str(folder), "-o", str(out), "-q", *extra]
            if args.model:
                cmd += ["--model", args.model]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True)
            sec = time.perf_counter() - t0
            first = first or sec
            outputs[name] = [tifffile.imread(f) for f in sorted(out.glob("*_labels.tif"))]
            print(f"{name:14} {sec:8.1f} {mp / sec:6.2f} {first / sec:7.2f}x", flush=True)
        ref = outputs["one process"]
        same = all(len(o) == len(ref) and all(np.array_equal(a, b) for a, b in zip(o, ref)) for o in outputs.values())
        print(f"labels identical across runs: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
