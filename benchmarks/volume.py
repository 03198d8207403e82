"""3D instances from the 2D `nuclei` network: plane-by-plane stitching vs orthogonal views.

    OMP_NUM_THREADS=1 python -W ignore benchmarks/volume.py            # synthetic + StarDist volume
    python benchmarks/volume.py --seed 1 --shape 24 192 192 --anisotropy 3
    python benchmarks/volume.py --methods orthogonal --no-stardist --shape 16 2048 2048 --n-max 4000 --max-voxels 0
    python benchmarks/volume.py --methods orthogonal --no-stardist --shape 16 2048 2048 --n-max 4000   # in blocks

Scores three ways to turn the XY network into 3D cells, on the same volume, in the same
run (F1@0.5 and mean AP with 3D IoU; objects matched one-to-one, core.metrics):

- ``planes``: each 2D object of each plane its own cell (no stitching: the baseline);
- ``stitch``: 2D objects linked to the best-overlapping object of the plane above
  (IoU > 0.25, optimal assignment);
- ``orthogonal`` (Cellpose-style): the network on XY planes and, with z stretched by the
  anisotropy, on XZ and YZ slices; probabilities averaged; 3D seeds and watershed.

Data: a seeded synthetic volume of touching ellipsoidal nuclei (20-30 px across in XY,
z step 3x the XY pixel, so 7-10 planes across; blurred, Poisson and Gaussian noise), and
StarDist's small 3D example volume (``tests/data/img3d.tif`` / ``mask3d.tif``: synthetic
nuclei about 15 px across in XY and 7 planes deep; from the ``stardist`` package,
BSD-3-Clause, Schmidt/Weigert et al.).

Memory: each method's peak resident memory while it segments is printed (Linux: the
process's peak is reset before each, ``/proc/self/clear_refs``; it includes the volume
itself). ``orthogonal`` segments a volume of more than ``--max-voxels`` voxels (default:
the library's ``stack.MAX_VOXELS``; 0: never) in XY blocks at full depth; run the
benchmark twice, as above, to compare the whole-volume and the blockwise peak.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "tests" / "data"


def synthetic_volume(shape=(24, 192, 192), anisotropy: float = 3.0, diameters=(20.0, 30.0), seed: int = 0,
                     n_max: int = 150, photons: float = 60.0, read_noise: float = 3.0):
    """A noisy uint16 volume of touching ellipsoidal nuclei and its instance labels.

    Nuclei are ellipsoids ``diameters`` px across in XY (axes jittered +-15 %, turned at
    random in XY) and about as deep in physical units, i.e. ``d / anisotropy`` planes;
    centres at least 0.8 x the sum of the mean radii apart, so many touch. A voxel belongs
    to the nucleus whose surface it is deepest inside. Intensity: per-nucleus brightness
    0.5-1, brighter towards the centre, background 0.08; blurred (0.8 plane in z, 1.5 px
    in XY), Poisson noise at ``photons`` per unit brightness, Gaussian read noise, offset 100.
    """
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    a = float(anisotropy)
    depth = nz * a
    centres, radii = [], []
    for _ in range(n_max * 20):
        if len(centres) >= n_max:
            break
        d = rng.uniform(*diameters)
        r = d / 2
        c = np.array([rng.uniform(0.2 * r, depth - 0.2 * r), rng.uniform(0, ny), rng.uniform(0, nx)])
        if centres and np.any(np.linalg.norm(np.asarray(centres) - c, axis=1) < 0.8 * (r + np.asarray(radii))):
            continue
        centres.append(c)
        radii.append(r)
    best = np.full(shape, 1.0, np.float32)  # normalised squared radius of the deepest nucleus
    labels = np.zeros(shape, np.int32)
    bright = np.zeros(shape, np.float32)
    zz = np.arange(nz)[:, None, None] * a
    yy = np.arange(ny)[None, :, None]
    xx = np.arange(nx)[None, None, :]
    for i, (c, r) in enumerate(zip(centres, radii), 1):
        rz, ry, rx = r * rng.uniform(0.8, 1.1), r * rng.uniform(0.85, 1.15), r * rng.uniform(0.85, 1.15)
        th = rng.uniform(0, np.pi)
        z0, z1 = max(0, int((c[0] - rz) / a)), min(nz, int((c[0] + rz) / a) + 2)
        y0, y1 = max(0, int(c[1] - r * 1.2)), min(ny, int(c[1] + r * 1.2) + 2)
        x0, x1 = max(0, int(c[2] - r * 1.2)), min(nx, int(c[2] + r * 1.2) + 2)
        if z0 >= z1 or y0 >= y1 or x0 >= x1:
            continue
        dz = zz[z0:z1] - c[0]
        dy = yy[:, y0:y1] - c[1]
        dx = xx[..., x0:x1] - c[2]
        u = np.cos(th) * dy + np.sin(th) * dx
        v = -np.sin(th) * dy + np.cos(th) * dx
        q = (dz / rz) ** 2 + (u / ry) ** 2 + (v / rx) ** 2
        box = (slice(z0, z1), slice(y0, y1), slice(x0, x1))
        win = q < best[box]
        best[box][win] = q[win]
        labels[box][win] = i
        b = rng.uniform(0.5, 1.0)
        bright[box][win] = (b * (1.0 - 0.35 * q))[win]
    labels[best >= 1.0] = 0
    bright[labels == 0] = 0
    from skimage.segmentation import relabel_sequential

    labels = relabel_sequential(labels)[0]
    texture = ndi.gaussian_filter(rng.normal(0, 1, shape).astype(np.float32), (0.7, 2, 2))
    img = bright * (1 + 0.6 * texture) + 0.08
    img = ndi.gaussian_filter(np.clip(img, 0, None), (0.8, 1.5, 1.5))
    img = rng.poisson(img * photons).astype(np.float32) + rng.normal(100, read_noise, shape)
    return np.clip(img, 0, 65535).astype(np.uint16), labels.astype(np.uint16)


def stardist_volume():
    """StarDist's 3D example (image, labels) from tests/data, or None if absent."""
    import tifffile

    if not (DATA / "img3d.tif").exists():
        return None
    return tifffile.imread(DATA / "img3d.tif"), tifffile.imread(DATA / "mask3d.tif")


def score(pred, truth) -> dict:
    from napari_unet.core.metrics import instance_scores, summarize

    res = summarize([instance_scores(pred, truth)])
    res["n_pred"] = int(len(np.unique(pred)) - (pred.min() == 0))
    res["n_true"] = int(len(np.unique(truth)) - (truth.min() == 0))
    return res


def run(seg, image, truth, anisotropy, diameter, methods, max_voxels=None, side_gaps=(None,), side_steps=(None,)):
    from napari_unet.core import stack

    if max_voxels is None:
        max_voxels = stack.MAX_VOXELS
    rows = {}
    default_gap, default_direct, default_step = stack.SIDE_GAP, stack.SIDE_DIRECT_PIXELS, stack.SIDE_STEP
    runs = []
    for m in methods:
        ortho = m == "orthogonal"
        runs += [(m, g, st) for g in (side_gaps if ortho else (None,)) for st in (side_steps if ortho else (None,))]
    for m, gap, step in runs:
        stack.SIDE_GAP = default_gap if gap is None or gap < 0 else gap
        stack.SIDE_DIRECT_PIXELS = 0 if gap is not None and gap < 0 else default_direct
        stack.SIDE_STEP = default_step if step is None else step
        _reset_peak()
        t0 = time.perf_counter()
        _, inst = stack.segment_volume(seg, image, anisotropy=anisotropy, diameter=diameter, method=m,
                                       max_voxels=max_voxels or image.size + 1)
        dt = time.perf_counter() - t0
        peak = _peak_gb()  # the segmentation's, before the scoring's own arrays
        name = m if gap is None else f"{m[:5]} gap {gap}" if gap >= 0 else f"{m[:5]} previous"
        if step is not None:
            name += f" step {step:g}"
        rows[name] = score(inst, truth) | {"seconds": dt, "peak_gb": peak}
    stack.SIDE_GAP, stack.SIDE_DIRECT_PIXELS, stack.SIDE_STEP = default_gap, default_direct, default_step
    return rows


def _reset_peak() -> None:
    import gc

    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # peak resident memory := current (Linux)
    except OSError:
        pass


def _peak_gb() -> float:
    import re

    try:
        return int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1e6
    except (OSError, AttributeError):
        return float("nan")


def show(title, rows):
    print(f"\n{title}")
    print(f"{'method':<16} {'cells':>6} {'true':>5} {'precision':>9} {'recall':>7} {'F1@0.5':>7} {'mean AP':>8} {'s':>6} {'peak GB':>8}")
    for m, r in rows.items():
        print(f"{m:<16} {r['n_pred']:>6} {r['n_true']:>5} {r['precision']:>9.3f} {r['recall']:>7.3f} {r['f1']:>7.3f} "
              f"{r['mean_ap']:>8.3f} {r['seconds']:>6.1f} {r['peak_gb']:>8.2f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="nuclei")
    p.add_argument("--shape", type=int, nargs=3, default=(24, 192, 192))
    p.add_argument("--anisotropy", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="+", default=["planes", "stitch", "orthogonal"])
    p.add_argument("--diameter", type=float, default=None, help="cell diameter given to the network (default: the model's)")
    p.add_argument("--no-stardist", action="store_true")
    p.add_argument("--n-max", type=int, default=150, help="most nuclei drawn (about 4000 fill 16 x 2048 x 2048)")
    p.add_argument("--max-voxels", type=int, default=None,
                   help="blockwise above this many voxels (default: the library's; 0: never)")
    p.add_argument("--side-gaps", type=int, nargs="+", default=[None],
                   help="orthogonal: rows of mirrored context around each stacked side slice, one run each "
                        "(default: the library's stack.SIDE_GAP; -1: the previous path, each slice alone in "
                        "ordinary tiles with the full context margin)")
    p.add_argument("--side-steps", type=float, nargs="+", default=[None],
                   help="orthogonal: spacing of the side slices the network runs on, in the model's pixels "
                        "(the ones between interpolated; default: the library's stack.SIDE_STEP), one run each")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(HERE.parent / "src"))
    from napari_unet.core.inference import Segmenter

    seg = Segmenter(args.model)
    shape = tuple(args.shape)
    img, truth = synthetic_volume(shape, args.anisotropy, seed=args.seed, n_max=args.n_max)
    rows = run(seg, img, truth, args.anisotropy, args.diameter, args.methods, args.max_voxels, args.side_gaps, args.side_steps)
    show(f"synthetic nuclei {tuple(args.shape)}, anisotropy {args.anisotropy:g}, seed {args.seed}, model {args.model}, "
         f"diameter {args.diameter or 'model'}", rows)
    if not args.no_stardist:
        sd = stardist_volume()
        if sd is None:
            print("\nStarDist volume: tests/data/img3d.tif not found")
        else:
            # nuclei ~15 px across in XY and ~7 planes deep: diameter 15, z step ~2 px
            rows = run(seg, sd[0], sd[1], 2.0, 15.0, args.methods, side_gaps=args.side_gaps, side_steps=args.side_steps)
            show(f"StarDist img3d.tif {sd[0].shape} (anisotropy 2, diameter 15)", rows)


if __name__ == "__main__":
    main()
