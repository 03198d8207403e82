"""What ``--diameter auto`` should do with a model trained on many object sizes: never
rescale, always rescale to the estimate, or rescale only when the cells found at the model's
own scale are more than a factor off (``AUTO_TOLERANCE``), against the oracle (each image's
true median diameter). Scores pooled per set on ``val``; the search runs once per image.

    python benchmarks/auto_diameter.py generalist --sets dsb2018 bbbc039
    python benchmarks/auto_diameter.py generalist --sets dsb2018 --tolerance 1.25 1.4 1.6
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import val_pairs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--sets", nargs="+", default=["dsb2018", "bbbc039"])
    ap.add_argument("--tolerance", type=float, nargs="+", default=[1.5])
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args(argv)

    from napari_unet.core.data import median_diameter, read_image
    from napari_unet.core.evaluation import evaluate_predictions
    from napari_unet.core.inference import Segmenter, as_planes

    seg = Segmenter(args.model)
    if seg.loaded.diameter is None:
        print("error: the model has no object size to compare with", file=sys.stderr)
        return 2
    own = seg.loaded.image_diameter or seg.loaded.diameter
    print(f"{'set':10} {'mode':16} {'F1@0.5':>7} {'mean AP':>8} {'pixel IoU':>9}")
    for name in args.sets:
        images, truths, found = [], [], []
        for img_path, lab_path in val_pairs(name, args.limit):
            img, truth = read_image(img_path), read_image(lab_path)
            plane = as_planes(img)[0][0]
            if seg.delegate_for(plane) is not None:
                continue  # handed to a specialist, which keeps its own size
            est, fits, _ = seg.size_search(plane, None, None)  # the full search, no early stop
            first, _, _ = seg.size_search(plane, None, 1e9)  # what the model's scale finds
            images.append(img)
            truths.append(truth)
            found.append((est, first, median_diameter(truth)))
        modes = {"never": [own] * len(images), "always": [e or own for e, _, _ in found],
                 "oracle": [t for _, _, t in found]}
        for tol in args.tolerance:
            modes[f"tolerance {tol:g}"] = [own if (f and abs(math.log(f / own)) < math.log(tol)) else (e or own)
                                           for e, f, _ in found]
        for mode, diameters in modes.items():
            preds = [seg.segment(img, diameter=d).instances for img, d in zip(images, diameters)]
            r = evaluate_predictions(preds, truths)
            print(f"{name:10} {mode:16} {r['f1']:7.3f} {r['mean_ap']:8.3f} {r['pixel_iou']:9.3f}", flush=True)
        err = np.array([abs(math.log(e / t)) for e, _, t in found if e])
        print(f"{name:10} size estimate: median error {100 * (math.exp(np.median(err)) - 1):.0f} %, "
              f">30 % off on {int((err > math.log(1.3)).sum())}/{len(found)} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
