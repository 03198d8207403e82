"""Peak memory of ``napari-unet segment`` on a very large image (default 8192 x 8192).

    python benchmarks/memory.py                     # default model, 8192 x 8192, 2 GB limit
    python benchmarks/memory.py --model runs/nuclei.pt --size 4096
    python benchmarks/memory.py --zarr --size 20480 --limit-gb 1.5   # a zarr array, block by block
    python benchmarks/memory.py --tile 512 --limit-gb 1    # smaller network tiles
    python benchmarks/memory.py --compress               # a zlib-compressed TIFF (read strip by strip)

Writes a synthetic uint16 image of nuclei-like blobs (Gaussian blobs on a jittered grid,
on noise; fixed seed) to a temporary folder, segments it with the command line in a child
process (with ``--zarr`` a chunked zarr array, written tile by tile: 4096 px tiles of the
synthetic image, so the benchmark itself never holds the whole image) and reports the child's
peak resident memory (``getrusage(RUSAGE_CHILDREN)``),
the wall time and the number of cells found against the number of blobs drawn.
Prints PASS or FAIL against the limit and exits non-zero on FAIL.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def default_model() -> str:
    """The default shipped model, else the development model in ``runs/``."""
    from napari_unet.core.models import resolve_model

    try:
        return str(resolve_model(None))
    except ValueError:
        for cand in (ROOT / "runs" / "nuclei.pt",):
            if cand.is_file():
                print(f"(no shipped default model; using {cand})", file=sys.stderr)
                return str(cand)
        raise SystemExit("no default model: ship one or pass --model NAME_OR_FILE") from None


def synthetic_nuclei(shape=(2048, 2048), diameter: float = 28.0, seed: int = 0, fill: float = 0.7):
    """A uint16 image of nuclei-like blobs and the number of blobs drawn.

    Blobs sit on a jittered grid of spacing ``2 * diameter`` (so they do not merge), a
    fraction ``fill`` of the grid points is used; amplitudes vary by a factor of 2 and the
    background carries Gaussian noise, roughly like a Hoechst widefield image.
    """
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    h, w = shape
    step = 2.0 * diameter
    ys = np.arange(step / 2, h - step / 4, step)
    xs = np.arange(step / 2, w - step / 4, step)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    keep = rng.random(gy.shape) < fill
    jitter = diameter / 2
    py = np.clip(gy[keep] + rng.uniform(-jitter, jitter, keep.sum()), 0, h - 1).astype(np.int64)
    px = np.clip(gx[keep] + rng.uniform(-jitter, jitter, keep.sum()), 0, w - 1).astype(np.int64)
    img = np.zeros(shape, np.float32)
    sigma = diameter / 4
    img[py, px] = rng.uniform(0.5, 1.0, py.size).astype(np.float32) * np.float32(2 * np.pi * sigma**2)
    ndi.gaussian_filter(img, sigma, output=img, truncate=3.0)
    np.tanh(img * np.float32(2.5), out=img)  # flatter tops, sharper edges, like nuclei
    img *= np.float32(3000)
    img += np.float32(300)
    noise_rows = 1024  # add noise in bands to keep the peak memory of this script low
    for y0 in range(0, h, noise_rows):
        band = img[y0 : y0 + noise_rows]
        band += rng.normal(0, 40, band.shape).astype(np.float32)
    np.clip(img, 0, 65535, out=img)
    return img.astype(np.uint16), int(py.size)


def _write_zarr(path: Path, size: int, tile: int = 4096) -> int:
    """A ``size`` x ``size`` uint16 zarr array of synthetic nuclei, tile by tile (each tile
    its own seed); returns the number of blobs drawn."""
    import zarr

    z = zarr.open_array(str(path), mode="w", shape=(size, size), chunks=(1024, 1024), dtype=np.uint16, zarr_format=2)
    n = 0
    for k, (y, x) in enumerate((y, x) for y in range(0, size, tile) for x in range(0, size, tile)):
        h, w = min(tile, size - y), min(tile, size - x)
        img, nb = synthetic_nuclei((h, w), seed=k)
        z[y : y + h, x : x + w] = img
        n += nb
    return n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model name or .pt file (default: the default model)")
    p.add_argument("--size", type=int, default=8192, help="image side in pixels (default 8192)")
    p.add_argument("--limit-gb", type=float, default=2.0, help="peak RSS limit in GB (1e9 bytes; default 2)")
    p.add_argument("--tile", type=int, default=None, help="the command line's --tile (default: its own, 1024)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--zarr", action="store_true", help="a zarr input (X.zarr -> X_labels.zarr), segmented block by block")
    p.add_argument("--compress", action="store_true", help="a zlib-compressed TIFF input (default: uncompressed)")
    args = p.parse_args(argv)
    model = args.model or default_model()

    tmp = Path(tempfile.mkdtemp(prefix="napari-unet-memory-"))
    img_path = tmp / ("big.zarr" if args.zarr else "big.tif")
    out_dir = tmp / "out"
    t0 = time.perf_counter()
    import tifffile

    if args.zarr:
        n_blobs = _write_zarr(img_path, args.size)
    else:
        image, n_blobs = synthetic_nuclei((args.size, args.size))
        tifffile.imwrite(img_path, image, compression="zlib" if args.compress else None)
        del image
    print(f"wrote {img_path} ({args.size} x {args.size} uint16, {n_blobs} blobs) in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)

    cmd = [sys.executable, "-m", "napari_unet.cli", "segment", str(img_path), "--output", str(out_dir),
           "--model", model, "--quiet"] + (["--tile", str(args.tile)] if args.tile else [])
    print("running:", " ".join(cmd), file=sys.stderr, flush=True)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    peak_gb = peak_kib * 1024 / 1e9
    if proc.returncode != 0:
        print(proc.stdout + proc.stderr, file=sys.stderr)
        print(f"FAIL: napari-unet segment exited with {proc.returncode}")
        return 1
    if args.zarr:
        import zarr

        labels = zarr.open_array(str(out_dir / "big_labels.zarr"), mode="r")
        n_found = max(int(labels[y : y + 4096].max()) for y in range(0, args.size, 4096))  # ids are 1..n
    else:
        labels = tifffile.imread(out_dir / "big_labels.tif")
        n_found = len(np.unique(labels)) - (1 if labels.min() == 0 else 0)
    mp = args.size**2 / 1e6
    ok = peak_gb <= args.limit_gb
    print()
    print("| image | model | peak RSS (child) | wall time | MP/s | cells found / blobs drawn |")
    print("|---|---|---:|---:|---:|---:|")
    print(f"| {args.size} x {args.size} uint16{' zarr' if args.zarr else ' zlib TIFF' if args.compress else ''} ({mp:.0f} MP) | {model}{f' --tile {args.tile}' if args.tile else ''} | {peak_gb:.2f} GB ({peak_kib / 1024**2:.2f} GiB) "
          f"| {wall:.1f} s | {mp / wall:.2f} | {n_found} / {n_blobs} |")
    print()
    print(f"labels dtype {labels.dtype}; load average before the run {load:.2f} on {os.cpu_count()} CPUs")
    print(f"{'PASS' if ok else 'FAIL'}: peak RSS {peak_gb:.2f} GB {'<=' if ok else '>'} {args.limit_gb:.2f} GB")
    if args.keep:
        print(f"kept {tmp}", file=sys.stderr)
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
