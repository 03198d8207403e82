"""The shipped ``tissue`` model (one channel made from the colours) against a model that
reads the colours as channels, on the colour images of dsb2018.

    python -W ignore benchmarks/colour_channels.py runs/tissue_rgb.pt --channels 1 0 2

The other model (trained with ``napari-unet train --channels ...``, see the ``tissue``
model card) gets ``tissue``'s post-processing (h-maxima seeds 0.05 x diameter deep, seed
threshold 0.5, smallest object 40 px) and each RGB image's channels in the order it was
trained on; both size each image themselves (``--diameter auto``). Prints F1@0.5 and mean
AP pooled over the 8 colour val images and over the first ``--train`` colour train images
(which both models trained on), then F1 per val image.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018"
POST = {"seed_threshold": 0.5, "seed_spacing": 0, "seed_depth": 0.05, "min_size": 40, "image_diameter": None}


def score(seg, files, channels=None) -> tuple[float, float, list[float]]:
    from napari_unet.core.data import read_image
    from napari_unet.core.metrics import THRESHOLDS, iou_matrix, match

    counts = np.zeros((len(THRESHOLDS), 3))
    per = []
    for p in files:
        img = read_image(p)
        x = img if channels is None else np.moveaxis(img[..., channels], -1, 0)
        inst = seg.segment(x).instances
        iou = iou_matrix(read_image(p.with_name(p.stem + "_labels.tif")), inst)
        nt, npr = iou.shape
        for i, t in enumerate(THRESHOLDS):
            tp = match(iou, t)
            counts[i] += (tp, npr - tp, nt - tp)
        per.append(2 * match(iou, 0.5) / max(1, nt + npr))
    f1 = 2 * counts[0, 0] / max(1, 2 * counts[0, 0] + counts[0, 1] + counts[0, 2])
    return f1, float((counts[:, 0] / counts.sum(1)).mean()), per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a model file that reads the colours as channels")
    ap.add_argument("--channels", type=int, nargs="+", default=[0, 1, 2], help="the channels it was trained on, in order")
    ap.add_argument("--train", type=int, default=30, help="colour train images to score too")
    args = ap.parse_args()
    from napari_unet.core.data import read_image
    from napari_unet.core.inference import Segmenter
    from napari_unet.core.models import load_model, save_model

    with tempfile.TemporaryDirectory() as tmp:
        m = load_model(args.model)
        other = Path(tmp) / "colour.pt"
        save_model(other, m.model, {**m.meta, **POST}, half=True)
        models = {"tissue": (Segmenter("tissue"), None), Path(args.model).name: (Segmenter(str(other)), args.channels)}
        for split, limit in (("val", None), ("train", args.train)):
            files = [p for p in sorted((DATA / split).glob("*.tif")) if "_labels" not in p.name and read_image(p).ndim == 3]
            files = files[:limit]
            per_model = {}
            for name, (seg, chans) in models.items():
                f1, ap_, per = score(seg, files, chans)
                per_model[name] = per
                print(f"{split} ({len(files)} colour images) {name}: F1@0.5 {f1:.3f}, mean AP {ap_:.3f}", flush=True)
            if split == "val":
                a, b = per_model.values()
                print("  F1 per image:", ", ".join(f"{x:.2f} -> {y:.2f}" for x, y in zip(a, b)))


if __name__ == "__main__":
    main()
