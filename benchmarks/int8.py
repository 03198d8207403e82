"""int8 against bfloat16 inference: same answers, and how much faster.

    python -W ignore benchmarks/int8.py                    # default model, every val set
    python -W ignore benchmarks/int8.py --model nuclei --sets bbbc039

For each ``val`` set: F1@0.5, mean AP, pixel IoU and MP/s of ``napari-unet evaluate``'s
path with ``precision="int8"`` and ``"bf16"``, side by side (the specialists an image is
handed to run in the same precision). Then the network alone on one tile of the command
line's size (1024 px plus its margins) in int8, bf16 and fp32, the best of 5, with its
FLOPs counted once and the GFLOP/s each precision achieves, beside a bf16 matmul (the
CPU's measured bf16 peak) timed in the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from accuracy import val_pairs  # noqa: E402
from speed import cli_tile, matmul_gflops, tile_gflop  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model name or file (default: the default model)")
    ap.add_argument("--sets", nargs="+", default=["bbbc039", "dsb2018", "usiigaci"])
    ap.add_argument("--no-accuracy", action="store_true", help="only time the network")
    args = ap.parse_args(argv)

    import torch

    from napari_unet.core import quantized
    from napari_unet.core.evaluation import evaluate_model
    from napari_unet.core.inference import Segmenter

    if not quantized.available():
        print("int8 does not run here: PyTorch's x86 quantized engine on a CPU with AVX-512 VNNI is needed")
        return 1
    segs = {p: Segmenter(args.model, precision=p) for p in ("int8", "bf16", "fp32")}
    if segs["int8"].precision != "int8":
        print(f"{segs['int8'].loaded.name}: the model file has no int8 calibration (scripts/calibrate_int8.py)")
        return 1
    name = segs["int8"].loaded.name
    if not args.no_accuracy:
        print(f"{'set':<10} {'precision':<9} {'F1@0.5':>7} {'mean AP':>8} {'pixel IoU':>9} {'MP/s':>6}")
        for s in args.sets:
            pairs = val_pairs(s)
            for p in ("int8", "bf16"):
                r = evaluate_model(name, pairs, segmenter=segs[p], warmup=True)
                print(f"{s:<10} {p:<9} {r['f1']:>7.4f} {r['mean_ap']:>8.4f} {r['pixel_iou']:>9.4f} {r['mp_per_s']:>6.2f}", flush=True)

    size = cli_tile(segs["int8"])
    gflop = tile_gflop(segs["fp32"], size)
    x = np.random.default_rng(0).random((1, 1, size, size), dtype=np.float32)
    peak = matmul_gflops(torch.bfloat16)
    print(f"\nnetwork alone, one {size} x {size} tile ({gflop:.1f} GFLOP); bf16 matmul peak {peak:.0f} GFLOP/s")
    for p, seg in segs.items():
        seg.predict_batch(x)
        best = min(_timed(lambda s=seg: s.predict_batch(x)) for _ in range(5))
        print(f"  {p:<5} {best * 1000:6.0f} ms  {gflop / best:6.0f} GFLOP/s ({gflop / best / peak:.0%} of the bf16 peak)")
    return 0


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    raise SystemExit(main())
