"""Large planes block by block: halos predicted again by every block (previous) against
halos shared between blocks (``core.bands``, now), in the same process, alternating.

    python -W ignore benchmarks/blocks.py                 # 8192 x 8192 synthetic nuclei, default model
    python -W ignore benchmarks/blocks.py --size 4096 --rounds 2

Prints, per path and round, the wall time of ``Segmenter.segment`` (normalising, network,
post-processing, stitching; the image is already in memory), the pixels that went through
the network (as a multiple of the image's) and the cells found, then whether both paths
gave the same labels. Peak memory through the command line: ``benchmarks/memory.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model name or .pt file (default: the default model)")
    p.add_argument("--size", type=int, default=8192, help="image side in pixels (default 8192)")
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args(argv)

    import napari_unet.core.inference as inference
    from memory import synthetic_nuclei

    image, drawn = synthetic_nuclei((args.size, args.size))
    seg = inference.Segmenter(args.model)
    pixels = [0]  # network input pixels: the new path calls Segmenter.predict_batch, the previous tiling's
    predict = seg.predict_batch

    def counting(batch):
        pixels[0] += batch.shape[0] * batch.shape[-2] * batch.shape[-1]
        return predict(batch)

    seg.predict_batch = counting
    import napari_unet.core.tiling as tiling

    batch_fn = tiling.predict_batch

    def counting_batch(net, batch, *a, **k):
        pixels[0] += batch.shape[0] * batch.shape[-2] * batch.shape[-1]
        return batch_fn(net, batch, *a, **k)

    tiling.predict_batch = counting_batch
    labels = {}
    print(f"{args.size} x {args.size} uint16, {drawn} nuclei drawn, model {seg.loaded.name}")
    print("| path | round | wall s | MP/s | network pixels | cells |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in range(args.rounds):
        for name, rolling in (("previous (each block predicts its halo)", False), ("now (halos shared)", True)):
            inference.ROLLING = rolling
            pixels[0] = 0
            t0 = time.perf_counter()
            res = seg.segment(image)
            wall = time.perf_counter() - t0
            labels[rolling] = res.instances
            print(f"| {name} | {r + 1} | {wall:.1f} | {image.size / wall / 1e6:.2f} | "
                  f"{pixels[0] / image.size:.2f}x | {int(res.instances.max())} |", flush=True)
            del res
    same = np.array_equal(labels[False], labels[True])
    print(f"labels identical on both paths: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
