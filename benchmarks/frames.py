"""End-to-end ``napari-unet segment`` on 2048 x 2048 frames made of real images, for one or
more source trees side by side (the way a user meets it: process start, read, segment, write).

    python benchmarks/frames.py                                # this checkout, default model
    python benchmarks/frames.py --src /tmp/old/src src         # an older checkout against this one
    python benchmarks/frames.py --repeats 3 --size 8192        # larger frames
    python benchmarks/frames.py --tiles 512 1024               # the command line's --tile, side by side

Frames: ``usiigaci`` val images tiled 2 x 2 (dense phase contrast) and ``bbbc039`` val images
tiled 3 x 3 and cropped (sparse nuclei), written as uint16 TIFFs. Each source tree runs the
command line in a child process with ``PYTHONPATH`` pointing at it; the trees alternate, and
the best of ``--repeats`` wall times is reported with megapixels per second. The label files
of the trees are compared: the number of cells and whether they are identical.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def frames(size: int) -> dict[str, np.ndarray]:
    import tifffile

    def first(name):
        return sorted(p for p in (DATA / name / "val").glob("*.tif") if not p.stem.endswith("_labels"))[0]

    out = {}
    for name, path in (("usiigaci", first("usiigaci")), ("bbbc039", first("bbbc039"))):
        img = tifffile.imread(path)
        reps = (-(-size // img.shape[0]), -(-size // img.shape[1]))
        out[f"{name} tiled"] = np.tile(img, reps)[:size, :size].astype(np.uint16)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", nargs="+", default=[str(Path(__file__).resolve().parents[1] / "src")],
                   help="source trees (folders holding napari_unet) to compare; default: this checkout's")
    p.add_argument("--model", default=None, help="model name (default: the default model)")
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--tiles", type=int, nargs="+", default=[0], help="--tile values to compare (0: the default)")
    args = p.parse_args(argv)
    import tifffile

    tmp = Path(tempfile.mkdtemp(prefix="napari-unet-frames-"))
    paths = {}
    for name, img in frames(args.size).items():
        paths[name] = tmp / f"{name.split()[0]}.tif"
        tifffile.imwrite(paths[name], img)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; best of {args.repeats}")
    mp = args.size**2 / 1e6
    runs = [(src, tile) for src in args.src for tile in args.tiles]
    names = [src + (f" --tile {tile}" if tile else "") for src, tile in runs]
    best: dict = {}
    labels: dict = {}
    for name, path in paths.items():
        for r in range(args.repeats):
            for k, (src, tile) in enumerate(runs):
                out = tmp / f"out{k}_{r}"
                cmd = [sys.executable, "-m", "napari_unet.cli", "segment", str(path), "--output", str(out), "--quiet"]
                if args.model:
                    cmd += ["--model", args.model]
                if tile:
                    cmd += ["--tile", str(tile)]
                env = dict(os.environ, PYTHONPATH=str(Path(src).resolve()))
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                wall = time.perf_counter() - t0
                if proc.returncode:
                    print(proc.stderr, file=sys.stderr)
                    return 1
                best[name, k] = min(best.get((name, k), wall), wall)
                labels[name, k] = tifffile.imread(out / f"{path.stem}_labels.tif")
    print()
    print("| frame | " + " | ".join(f"{s} s (MP/s)" for s in names) + " | cells | identical labels |")
    print("|---|" + "---:|" * len(runs) + "---|---|")
    for name in paths:
        times = " | ".join(f"{best[name, k]:.1f} ({mp / best[name, k]:.2f})" for k in range(len(runs)))
        cells = " / ".join(str(int(labels[name, k].max())) for k in range(len(runs)))
        same = all(np.array_equal(labels[name, 0], labels[name, k]) for k in range(len(runs)))
        print(f"| {name} {args.size} x {args.size} | {times} | {cells} | {'yes' if same else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
