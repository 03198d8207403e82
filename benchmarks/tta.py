"""Does averaging over flips (test-time augmentation) help a model? Prints the evaluate table.

    python benchmarks/tta.py generalist ../shared/data/dsb2018/val --flips 4   # or 2, or 0 (none)

Every network call (tiles, the size check, the gate's specialist) averages the softmax
probabilities of the tile as it is and flipped (2: left-right; 4: also up-down and both),
then the usual ``napari-unet evaluate MODEL --labels DIR`` runs. Measured for the
``generalist`` (docs/results.md, *Segmentation quality*): dsb2018 F1 0.782 -> 0.797, bbbc039 0.949 ->
0.950, usiigaci 0.871 -> 0.855 with 4 flips: not a gain across sets, so not adopted.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("labels", help="a folder of images with *_labels.tif (a val split)")
    ap.add_argument("--flips", type=int, choices=(0, 2, 4), default=4)
    args = ap.parse_args(argv)

    import napari_unet.core.inference as inference
    from napari_unet.cli import main as cli
    from napari_unet.core import tiling

    plain = tiling.predict_batch
    flips = {0: [()], 2: [(), (-1,)], 4: [(), (-1,), (-2,), (-2, -1)]}[args.flips]

    def averaged(net, batch, bf16=False, channels_last=False):
        out = 0.0
        for f in flips:
            b = np.ascontiguousarray(np.flip(batch, f)) if f else batch
            p = plain(net, b, bf16, channels_last)
            out = out + (np.flip(p, f) if f else p)
        return out / len(flips)

    tiling.predict_batch = inference.predict_batch = averaged
    return cli(["evaluate", args.model, "--labels", args.labels])


if __name__ == "__main__":
    sys.exit(main())
