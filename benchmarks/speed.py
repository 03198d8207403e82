"""End-to-end segmentation speed (megapixels per second), bf16 against fp32.

    python benchmarks/speed.py                           # default model
    python benchmarks/speed.py --model runs/nuclei.pt --limit 10

Times what ``napari-unet segment`` does per image (read the TIFF, normalise, run the
network over tiles, post-process into instances; writing the output is not included) for
the real val images of bbbc039 and usiigaci and for a synthetic 2048 x 2048 image, with
bf16 autocast and with plain fp32. Model loading and one warm-up image are not timed.
Also prints F1@0.5 on bbbc039/val for both precisions: bf16 must not cost accuracy.
Network-only lines time one 512 x 512 tile (the figure quoted in the design notes) and
one tile of the command line's size (1024 px plus its context margins), with the
network's FLOPs (``torch.utils.flop_counter``) and the GFLOP/s achieved, beside a bf16 and
an fp32 matmul timed in the same run (the CPU's measured peaks).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from accuracy import val_pairs  # noqa: E402
from memory import default_model, synthetic_nuclei  # noqa: E402

SETS = ("bbbc039", "usiigaci")


def _previous_post(probs, threshold=0.5, seed_threshold=0.5, min_size=15, min_distance=None, max_hole=0,
                   depth=None, distance_depth=None, threads=1):
    """The post-processing before the fast path (no distance-head seeds: none of the timed
    models has one; one thread)."""
    from napari_unet.core import postprocess

    return postprocess._instances_from_probs_reference(probs, threshold, seed_threshold, min_size, min_distance,
                                                       max_hole, depth)


def matmul_gflops(dtype, n: int = 4096, repeats: int = 5) -> float:
    """GFLOP/s of the best of ``repeats`` ``n`` x ``n`` matmuls in ``dtype`` (the CPU's peak)."""
    import torch

    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def tile_gflop(seg, size: int) -> float:
    """The network's GFLOP on one ``size`` x ``size`` tile."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros((1, seg.in_channels, size, size))
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        seg.model(x)
    return counter.get_total_flops() / 1e9


def cli_tile(seg, core: int = 1024) -> int:
    """The side of a tile the command line runs: its 1024 px plus the context margin that
    the tiling adds on each side (:func:`~napari_unet.core.tiling.plan_tiles`)."""
    from napari_unet.core.tiling import plan_tiles

    return core + 2 * plan_tiles((core, core), seg.model, tile=core).margin


def tile_ms(seg, size: int = 512, repeats: int = 5) -> float:
    """Median milliseconds of the network alone on one ``size`` x ``size`` tile."""
    x = np.random.default_rng(0).random((1, seg.in_channels, size, size), dtype=np.float32)
    seg.predict_batch(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        seg.predict_batch(x)
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model name or .pt file (default: the default model)")
    p.add_argument("--sets", nargs="*", default=list(SETS), choices=SETS)
    p.add_argument("--limit", type=int, default=None, help="first N images of each set")
    p.add_argument("--synthetic", type=int, default=2048, help="side of the synthetic image (0: skip)")
    p.add_argument("--precisions", nargs="+", default=["bf16", "fp32"], choices=["int8", "bf16", "fp32", "previous"],
                   help="paths to time; 'previous' is the path before the fast-path work: fp32, batch norm not "
                        "folded, contiguous memory, per-region post-processing")
    args = p.parse_args(argv)

    import tifffile
    import torch

    from napari_unet.core.data import read_image
    from napari_unet.core.evaluation import evaluate_model
    from napari_unet.core.inference import Segmenter, bf16_supported

    model = args.model or default_model()
    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="napari-unet-speed-"))
    synth_path = None
    if args.synthetic:
        image, n_blobs = synthetic_nuclei((args.synthetic, args.synthetic))
        synth_path = tmp / f"synthetic_{args.synthetic}.tif"
        tifffile.imwrite(synth_path, image)
        del image

    results: dict[tuple[str, str], dict] = {}
    tiles = {}
    from napari_unet.core import postprocess

    fast_post = postprocess.instances_from_probs
    for prec in args.precisions:
        seg = Segmenter(model, precision="fp32" if prec == "previous" else prec)
        postprocess.instances_from_probs = fast_post
        if prec == "previous":
            seg.model = seg.net = seg.loaded.model.eval().to(memory_format=torch.contiguous_format)
            seg.channels_last = False
            postprocess.instances_from_probs = _previous_post
        tiles[prec] = {size: tile_ms(seg, size, 5 if size <= 512 else 3) for size in (512, cli_tile(seg))}
        for s in args.sets:
            pairs = val_pairs(s, args.limit)
            print(f"{prec}: {s}/val ({len(pairs)} images) ...", file=sys.stderr, flush=True)
            res = evaluate_model(model, pairs, segmenter=seg, warmup=True)
            results[(s, prec)] = res
        if synth_path is not None:
            print(f"{prec}: synthetic {args.synthetic} x {args.synthetic} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            img = read_image(synth_path)
            out = seg.segment(img)
            dt = time.perf_counter() - t0
            results[("synthetic", prec)] = {
                "n_images": 1, "megapixels": img.size / 1e6, "seconds": dt, "mp_per_s": img.size / 1e6 / dt,
                "f1": None, "cells": int(out.instances.max()),
            }
    postprocess.instances_from_probs = fast_post
    load_after = os.getloadavg()[0]
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"End-to-end speed of {model} (read + normalise + network + post-processing); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, native bf16: {bf16_supported()}; "
          f"load average {load_before:.2f} before, {load_after:.2f} after")
    print()
    head = "| input | images | MP | " + " | ".join(f"{p} MP/s" for p in args.precisions)
    if len(args.precisions) == 2:
        head += f" | {args.precisions[0]} speed-up"
    print(head + " |")
    print("|---|---:|---:|" + "---:|" * (len(args.precisions) + (len(args.precisions) == 2)))
    inputs = [s for s in args.sets] + (["synthetic"] if synth_path is not None else [])
    for inp in inputs:
        r0 = results[(inp, args.precisions[0])]
        label = f"{inp}/val" if inp != "synthetic" else f"synthetic {args.synthetic} x {args.synthetic}"
        row = f"| {label} | {r0['n_images']} | {r0['megapixels']:.1f} | "
        row += " | ".join(f"{results[(inp, p)]['mp_per_s']:.2f}" for p in args.precisions)
        if len(args.precisions) == 2:
            a, b = (results[(inp, p)]["mp_per_s"] for p in args.precisions)
            row += f" | x{a / b:.2f}"
        print(row + " |")
    print()
    peaks = {"bf16": matmul_gflops(torch.bfloat16), "fp32": matmul_gflops(torch.float32)}
    print(f"Matmul peaks measured in this run (4096 x 4096): bf16 {peaks['bf16']:.0f} GFLOP/s, fp32 {peaks['fp32']:.0f} GFLOP/s")
    for size in tiles[args.precisions[0]]:
        gflop = tile_gflop(seg, size)
        cells = []
        for p in args.precisions:
            ms = tiles[p][size]
            rate = gflop / (ms / 1000)
            peak = peaks["bf16" if p == "bf16" else "fp32"]
            cells.append(f"{p} {ms:.0f} ms ({rate:.0f} GFLOP/s, {100 * rate / peak:.0f} % of the {'bf16' if p == 'bf16' else 'fp32'} peak)")
        print(f"Network only, one {size} x {size} tile ({gflop:.1f} GFLOP): " + ", ".join(cells))
    if "bbbc039" in args.sets:
        f1 = {p: results[("bbbc039", p)]["f1"] for p in args.precisions}
        ap = {p: results[("bbbc039", p)]["mean_ap"] for p in args.precisions}
        print("F1@0.5 on bbbc039/val: " + ", ".join(f"{p} {f1[p]:.4f}" for p in args.precisions)
              + "; mean AP: " + ", ".join(f"{p} {ap[p]:.4f}" for p in args.precisions))
        if len(f1) == 2:
            a, b = f1
            diff = abs(f1[a] - f1[b])
            print(f"{'OK' if diff <= 0.01 else 'CHECK'}: |F1 {a} - F1 {b}| = {diff:.4f} (tolerance 0.01)")
    for inp in ("usiigaci",):
        if inp in args.sets:
            print(f"F1@0.5 on {inp}/val: " + ", ".join(f"{p} {results[(inp, p)]['f1']:.4f}" for p in args.precisions))
    if synth_path is not None:
        print("cells found in the synthetic image: " + ", ".join(f"{p} {results[('synthetic', p)]['cells']}" for p in args.precisions)
              + f" (blobs drawn: {n_blobs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
