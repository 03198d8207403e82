"""Which one channel should a colour (stained tissue) image give the network?

    python benchmarks/colour_input.py                 # the colour images of dsb2018/val
    python benchmarks/colour_input.py --split train --step 5

Segments the colour images of a ``dsb2018`` split with the default model, each converted
to one channel in several ways before the usual pipeline (which inverts bright
backgrounds), and prints pooled F1@0.5, mean AP and pixel IoU per conversion. The
pipeline's own (``core.normalize.to_gray``: the darkest channel on a bright background) is
``min``; the network was trained on it. Measured on the 8 colour val images: min F1 0.542,
red 0.403, mean 0.509, (red + green) / 2 0.450, min - (max - min) / 2 0.543.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NAPARI_UNET_DATA", ROOT.parent / "shared" / "data"))

VARIANTS = {
    "min": lambda c: c.min(-1),
    "red": lambda c: c[..., 0],
    "mean": lambda c: c.mean(-1),
    "(red + green) / 2": lambda c: 0.5 * (c[..., 0] + c[..., 1]),
    "min - (max - min) / 2": lambda c: c.min(-1) - 0.5 * (c.max(-1) - c.min(-1)),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="val")
    ap.add_argument("--step", type=int, default=1, help="every n-th colour image")
    ap.add_argument("--model", default=None)
    args = ap.parse_args(argv)
    from napari_unet.core.data import find_pairs, read_image
    from napari_unet.core.evaluation import evaluate_predictions
    from napari_unet.core.inference import Segmenter
    from napari_unet.core.normalize import to_float

    colour = []
    for ip, lp in find_pairs([DATA / "dsb2018" / args.split]):
        img = read_image(ip)
        if img.ndim == 3 and img.shape[-1] in (3, 4):
            rgb = to_float(img[..., :3])
            if not np.allclose(rgb[..., 0], rgb[..., 1]):  # (grayscale saved as RGB is not colour)
                colour.append((rgb, read_image(lp)))
    colour = colour[:: args.step]
    print(f"dsb2018/{args.split}: {len(colour)} colour images")
    seg = Segmenter(args.model)
    print("| conversion | F1@0.5 | mean AP | pixel IoU |\n|---|---:|---:|---:|")
    for name, f in VARIANTS.items():
        r = evaluate_predictions([seg.segment(f(c)).instances for c, _ in colour], [t for _, t in colour])
        print(f"| {name} | {r['f1']:.3f} | {r['mean_ap']:.3f} | {r['pixel_iou']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
