"""Choose a model's post-processing on a val split: one network pass, many settings.

    python benchmarks/postprocess.py cells usiigaci
    python benchmarks/postprocess.py nuclei bbbc039 --seed-spacing 0 0.3 0.4 0.5

The probabilities of every val image are computed once with the model's default object
size; then each combination of seed threshold, seed spacing (x the cell diameter; 0 = one
seed per connected interior region), seed depth (x the cell diameter; h-maxima seeds
instead of the spacing when above 0) and smallest object (in the pixels the network sees)
is scored: pixel IoU, precision, recall and F1 at IoU 0.5, mean AP over 0.50:0.95.
The chosen values go into the model file's metadata (``seed_threshold``, ``seed_spacing``,
``seed_depth``, ``min_size``; see ``napari_unet.core.postprocess.Postprocess``), so Segment, the CLI and
fine-tuning use them. Choose on ``val`` only; held-out images judge the choice.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import val_pairs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="model name or file")
    ap.add_argument("set", help="data set under ../shared/data (its val split is used)")
    ap.add_argument("--seed-threshold", type=float, nargs="+", default=[0.5, 0.7, 0.8, 0.9])
    ap.add_argument("--seed-spacing", type=float, nargs="+", default=[0.4, 0.6, 0.8, 0])
    ap.add_argument("--seed-depth", type=float, nargs="+", default=[0], help="x diameter; 0 = use the spacing")
    ap.add_argument("--min-size", type=int, nargs="+", default=[15, 30, 60, 120], help="model px")
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args(argv)

    import numpy as np

    from napari_unet.core.data import read_image
    from napari_unet.core.evaluation import evaluate_predictions
    from napari_unet.core.inference import Segmenter
    from napari_unet.core.normalize import percentiles
    from napari_unet.core.postprocess import Postprocess

    seg = Segmenter(args.model)
    pairs = val_pairs(args.set, args.limit)
    probs, truths = [], []
    for img_path, lab_path in pairs:
        img = read_image(img_path).astype(np.float32)
        probs.append(seg.probabilities(img, None, percentiles(img, *seg.percentiles)))
        truths.append(read_image(lab_path))
    meta = dict(seg.loaded.meta)
    d, scale = seg.loaded.image_diameter, seg.loaded.scale()
    print(f"{seg.loaded.name} on {args.set}/val ({len(pairs)} images), cell diameter {d:.1f} px, scale {scale:.3f}")
    print(f"model's own settings: seed_threshold {meta.get('seed_threshold', 0.5)}, "
          f"seed_spacing {meta.get('seed_spacing', 0.4)}, seed_depth {meta.get('seed_depth')}, min_size {meta.get('min_size', 15)}\n")
    print("| seed threshold | seed spacing (x diameter) | seed depth (x diameter) | min size (model px) | pixel IoU | precision | recall | F1@0.5 | mean AP |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for st, sp, sd, ms in itertools.product(args.seed_threshold, args.seed_spacing, args.seed_depth, args.min_size):
        post = Postprocess.for_model(dict(meta, seed_threshold=st, seed_spacing=sp, seed_depth=sd, min_size=ms), d, scale)
        r = evaluate_predictions([post(p)[1] for p in probs], truths)
        print(f"| {st} | {sp} | {sd} | {ms} | {r['pixel_iou']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['mean_ap']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
