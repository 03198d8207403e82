"""Ids kept over time: a synthetic time-lapse of drifting, touching nuclei.

    OMP_NUM_THREADS=1 python -W ignore benchmarks/timelapse.py
    python benchmarks/timelapse.py --frames 30 --seed 1

Each frame is segmented with the `nuclei` model and the frames are linked with
``core.stack.link_frames`` (optimal one-to-one IoU matching, IoU > 0.1). Printed:

- the fraction of true frame-to-frame links (a cell present in frames t and t + 1) whose
  cell carries the same predicted id in both frames (a cell missed or mis-segmented in
  either frame counts as a broken link): the figure to watch;
- the same among links whose two ends were both segmented (IoU > 0.5 with the truth), which
  isolates the linking from the segmentation;
- the pooled per-frame segmentation F1@0.5, and the number of tracks made for the cells drawn.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def synthetic_timelapse(frames: int = 20, shape=(256, 256), radii=(10.0, 14.0), seed: int = 0, fill: float = 0.45,
                        drift=(0.8, 1.2), wobble: float = 1.5, photons: float = 80.0, read_noise: float = 3.0):
    """A noisy uint16 movie ``(T, Y, X)`` of drifting, touching discs and its labels (ids
    constant over time; 0 = background).

    Discs (radii in ``radii`` px) are placed at random, centres at least 0.9 x the sum of
    their radii apart (so many touch, in pairs and clusters), until they would cover about
    ``fill`` of the field; they drift together by ``drift`` px per frame (the field moves
    over them: cells leave and enter through the borders) and each wobbles on its own
    (``wobble`` px, random period and phase). A pixel belongs to the disc it is deepest
    inside (relative to its radius). Intensity per cell 0.5-1, darker towards the rim,
    textured; blur 1.5 px; Poisson and Gaussian noise, offset 100.
    """
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    ny, nx = shape
    margin = frames * max(abs(drift[0]), abs(drift[1])) + 2 * radii[1] + wobble
    H, W = ny + 2 * margin, nx + 2 * margin
    target = int(fill * H * W / (np.pi * np.mean(radii) ** 2))
    pts, r = [], []
    for _ in range(target * 50):
        if len(pts) >= target:
            break
        ri = rng.uniform(*radii)
        c = np.array([rng.uniform(-margin, ny + margin), rng.uniform(-margin, nx + margin)])
        if pts and (np.hypot(*(np.array(pts) - c).T) < 0.9 * (np.array(r) + ri)).any():
            continue
        pts.append(c)
        r.append(ri)
    pts, r = np.array(pts), np.array(r)
    n = len(pts)
    b = rng.uniform(0.5, 1.0, n)
    period = rng.uniform(8, 20, (n, 2))
    phase = rng.uniform(0, 2 * np.pi, (n, 2))
    yy, xx = np.mgrid[:ny, :nx]
    movie = np.zeros((frames, ny, nx), np.float32)
    labels = np.zeros((frames, ny, nx), np.int32)
    for t in range(frames):
        pos = pts - np.array(drift) * t + wobble * np.sin(2 * np.pi * t / period + phase)
        best = np.full(shape, 1.0, np.float32)
        bright = np.zeros(shape, np.float32)
        lab = np.zeros(shape, np.int32)
        for i in range(n):
            cy, cx = pos[i]
            y0, y1 = max(0, int(cy - r[i]) - 1), min(ny, int(cy + r[i]) + 2)
            x0, x1 = max(0, int(cx - r[i]) - 1), min(nx, int(cx + r[i]) + 2)
            if y0 >= y1 or x0 >= x1:
                continue
            q = ((yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2) / r[i] ** 2
            box = (slice(y0, y1), slice(x0, x1))
            win = q < best[box]
            best[box][win] = q[win]
            lab[box][win] = i + 1
            bright[box][win] = (b[i] * (1 - 0.3 * q))[win]
        texture = ndi.gaussian_filter(rng.normal(0, 1, shape).astype(np.float32), 2)
        img = np.where(lab > 0, bright * (1 + 0.5 * texture), 0) + 0.08
        img = ndi.gaussian_filter(img.astype(np.float32), 1.5)
        movie[t] = rng.poisson(np.clip(img, 0, None) * photons) + rng.normal(100, read_noise, shape)
        labels[t] = lab
    return np.clip(movie, 0, 65535).astype(np.uint16), labels


def link_scores(pred: np.ndarray, truth: np.ndarray, min_area: int = 30) -> dict:
    """Frame-to-frame link scores of linked predictions against true tracks (see module doc)."""
    from scipy.optimize import linear_sum_assignment

    from napari_unet.core.metrics import instance_scores, iou_matrix, summarize

    maps = []
    counts = []
    for p, t in zip(pred, truth):
        counts.append(instance_scores(p, t))
        tid = np.unique(t[t > 0])
        pid = np.unique(p[p > 0])
        iou = iou_matrix(t, p)  # rows/cols follow the sorted ids
        m = {}
        if iou.size:
            rows, cols = linear_sum_assignment(-iou)
            for i, j in zip(rows, cols):
                if iou[i, j] > 0.5:
                    m[int(tid[i])] = int(pid[j])
        areas = dict(zip(*np.unique(t[t > 0], return_counts=True)))
        maps.append((m, {int(k): int(v) for k, v in areas.items()}))
    links = kept = both = kept_both = 0
    for (m0, a0), (m1, a1) in zip(maps[:-1], maps[1:]):
        for cell, area in a0.items():
            if area < min_area or a1.get(cell, 0) < min_area:
                continue  # a sliver at the border: not a cell in that frame
            links += 1
            p0, p1 = m0.get(cell), m1.get(cell)
            if p0 is not None and p1 is not None:
                both += 1
                if p0 == p1:
                    kept += 1
                    kept_both += 1
    seg = summarize(counts)
    return {"links": links, "kept": kept, "fraction": kept / max(links, 1), "both": both,
            "fraction_segmented": kept_both / max(both, 1), "f1": seg["f1"],
            "tracks": int(len(np.unique(pred[pred > 0]))), "cells": int(len(np.unique(truth[truth > 0])))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="nuclei")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-iou", type=float, default=0.1)
    p.add_argument("--no-split", action="store_true", help="link without splitting merged cells (split_merges=False)")
    p.add_argument("--diameter", default="24", help="cell diameter in px, 'auto' or 'model' (default 24: the discs' mean)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(HERE.parent / "src"))
    from napari_unet.core.inference import Segmenter
    from napari_unet.core.stack import segment_timelapse

    movie, truth = synthetic_timelapse(args.frames, (args.size, args.size), seed=args.seed)
    seg = Segmenter(args.model)
    t0 = time.perf_counter()
    diameter = None if args.diameter == "model" else (args.diameter if args.diameter == "auto" else float(args.diameter))
    _, linked = segment_timelapse(seg, movie, diameter=diameter, min_iou=args.min_iou, split_merges=not args.no_split)
    dt = time.perf_counter() - t0
    r = link_scores(linked, truth)
    print(f"synthetic time-lapse {movie.shape} (seed {args.seed}), model {args.model}, diameter {args.diameter}, "
          f"link IoU > {args.min_iou}, split merges {not args.no_split}: {dt:.1f} s")
    print(f"true links kept:                 {r['kept']}/{r['links']} = {100 * r['fraction']:.1f} %")
    print(f"  among links segmented at both ends: {r['fraction_segmented'] * 100:.1f} % ({r['both']} links)")
    print(f"segmentation F1@0.5 (per frame, pooled): {r['f1']:.3f}")
    print(f"tracks: {r['tracks']} for {r['cells']} cells drawn")


if __name__ == "__main__":
    main()
