"""Post-processing speed alone (megapixels per second): reference path against fast path.

    python benchmarks/postprocess_speed.py
    python benchmarks/postprocess_speed.py --repeat 5 --cache /tmp/pp_probs

Builds two 2048 x 2048 probability maps with the shipped networks: bbbc039/val images
tiled 4 x 3 (``nuclei``) and usiigaci/val images tiled 3 x 2 (``cells``; 2 x 2 of them
are 2044 px high), each cropped to 2048 x 2048 before the network runs (``--cache DIR``
keeps the maps as .npy for later runs).
Then times post-processing alone on each map in the three seed modes -- h-maxima
(``seed_depth``; 0.07 x diameter as ``nuclei`` ships), one seed per connected interior
region (``seed_spacing 0``, as ``cells`` ships) and distance peaks 0.4 x diameter apart
(the default) -- with the shipped model's ``Postprocess`` settings otherwise (from
``Segmenter(model).settings()``), with the former implementation
(``_instances_from_probs_reference``) and with ``instances_from_probs``, checks that the
semantic and instance labels are identical, and prints the best of ``--repeat`` runs (the
two paths taking turns) as megapixels per second of wall-clock time and of the process's
CPU time. On a busy machine (another job on the cores) wall-clock figures drop for both;
CPU time and the ratio are steadier. The network is not timed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from accuracy import val_pairs  # noqa: E402

SIDE = 2048
MAPS = {"bbbc039": ("bbbc039", "nuclei"), "usiigaci": ("usiigaci", "cells")}  # map: (data set, model)


def tiled_image(set_name: str) -> np.ndarray:
    """The first val images of a set side by side, as many as cover SIDE x SIDE, cropped to
    it: 4 x 3 bbbc039 images (520 x 696), 3 x 2 usiigaci images (1022 x 1024; 2 x 2 leave
    2044 rows)."""
    from napari_unet.core.data import read_image

    imgs = [read_image(p).astype(np.float32) for p, _ in val_pairs(set_name)]
    imgs = [im if im.ndim == 2 else im.mean(-1) for im in imgs]
    h = min(im.shape[0] for im in imgs)
    w = min(im.shape[1] for im in imgs)
    rows, cols = -(-SIDE // h), -(-SIDE // w)
    if len(imgs) < rows * cols:
        raise SystemExit(f"{set_name}/val has {len(imgs)} images, {rows * cols} needed")
    grid = np.block([[imgs[r * cols + c][:h, :w] for c in range(cols)] for r in range(rows)])
    return grid[:SIDE, :SIDE]


def probability_map(name: str, cache: Path | None):
    from napari_unet.core.inference import Segmenter

    set_name, model = MAPS[name]
    seg = Segmenter(model)
    file = cache / f"{name}_{SIDE}.npy" if cache else None
    if file is not None and file.is_file():
        probs = np.load(file)
    else:
        probs = seg.probabilities(tiled_image(set_name)).astype(np.float32)
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            np.save(file, probs)
    return seg, probs


def best_times(fns, repeat: int):
    """Each ``fn()``'s result with its best wall-clock and best CPU time (s) over ``repeat``
    runs, the functions taking turns (so that a change in the machine's load hits all)."""
    out = [[None, float("inf"), float("inf")] for _ in fns]
    for r in range(repeat):
        for i in (range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))):
            t0, c0 = time.perf_counter(), time.process_time()
            res = fns[i]()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            out[i] = [res, min(out[i][1], wall), min(out[i][2], cpu)]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per path, taking turns; the best is kept")
    ap.add_argument("--cache", type=Path, default=None, help="folder to keep the probability maps in (.npy)")
    ap.add_argument("--maps", nargs="+", default=list(MAPS), choices=list(MAPS))
    args = ap.parse_args(argv)

    from napari_unet.core.postprocess import _instances_from_probs_reference, instances_from_probs, seed_spacing

    load = os.getloadavg()[0]
    print(f"post-processing of {SIDE} x {SIDE} probability maps, best of {args.repeat}; load average "
          f"{load:.2f} before (other jobs slow both paths: compare the ratio)\n")
    print("| map | model settings | seeds | cells | reference MP/s (CPU) | fast MP/s (CPU) | speed-up wall (CPU) | identical |")
    print("|---|---|---|---:|---:|---:|---:|---|")
    ok = True
    for name in args.maps:
        seg, probs = probability_map(name, args.cache)
        shipped = seg.settings()
        diameter = seg.loaded.image_diameter
        modes = {
            "h-maxima seeds": dataclasses.replace(shipped, min_distance=None, depth=shipped.depth or 0.07 * diameter),
            "one seed per region": dataclasses.replace(shipped, min_distance=None, depth=None),
            "distance peaks": dataclasses.replace(shipped, min_distance=seed_spacing(diameter), depth=None),
        }
        for mode, post in modes.items():
            kw = dict(threshold=post.threshold, seed_threshold=post.seed_threshold, min_size=post.min_size,
                      min_distance=post.min_distance, max_hole=post.max_hole, depth=post.depth)
            ((sem_r, inst_r), t_ref, c_ref), ((sem_f, inst_f), t_fast, c_fast) = best_times(
                [lambda probs=probs, kw=kw: _instances_from_probs_reference(probs, **kw), lambda probs=probs, kw=kw: instances_from_probs(probs, **kw)], args.repeat)
            same = (np.array_equal(sem_r, sem_f) and np.array_equal(inst_r, inst_f) and inst_r.dtype == inst_f.dtype)
            ok &= same
            shipped_mode = mode == ("h-maxima seeds" if shipped.depth else "distance peaks" if shipped.min_distance
                                    else "one seed per region")
            mp = probs.shape[1] * probs.shape[2] / 1e6
            print(f"| {name} | {seg.loaded.name} | {mode}{' (shipped)' if shipped_mode else ''} | {int(inst_f.max())} "
                  f"| {mp / t_ref:.2f} ({mp / c_ref:.2f}) | {mp / t_fast:.2f} ({mp / c_fast:.2f}) "
                  f"| {t_ref / t_fast:.2f} ({c_ref / c_fast:.2f}) | {'yes' if same else 'NO'} |", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.2f} after")
    if not ok:
        print("the fast path's labels differ from the reference")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
