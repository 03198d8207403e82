"""Accuracy of models and of the Otsu + watershed baseline on the annotated val splits.

    python benchmarks/accuracy.py                       # every shipped model, both sets
    python benchmarks/accuracy.py --models runs/nuclei.pt --sets bbbc039
    python benchmarks/accuracy.py --limit 5             # first 5 images per set (quick)

Prints a Markdown table (model, set, pixel IoU, F1 at IoU 0.5, mean AP over IoU
0.50:0.05:0.95, end-to-end megapixels per second) and the published reference figures.
Scores are pooled over the images of a set. Data: ``../shared/data/<set>/val`` relative
to the repository root (or ``$NAPARI_UNET_DATA``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NAPARI_UNET_DATA", ROOT.parent / "shared" / "data"))
SETS = ("bbbc039", "usiigaci")

REFERENCES = [
    "U-Net paper (Ronneberger et al. 2015): cell tracking challenge 2015 IoU PhC-U373 0.9203, DIC-HeLa 0.7756; "
    "ISBI 2012 warping error 0.000353, Rand error 0.0382, pixel error 0.0611.",
    "StarDist paper (Schmidt et al. 2018), DSB2018 fluorescence subset, AP@0.5: U-Net 2-class 0.674, "
    "U-Net 3-class 0.806, StarDist 0.864.",
    "Note: AP here is TP / (TP + FP + FN) (DSB2018 / StarDist definition); the reference figures are on other "
    "data sets and are context, not a like-for-like comparison.",
]


def val_pairs(name: str, limit: int | None = None):
    from napari_unet.core.data import find_pairs

    folder = DATA / name / "val"
    if not folder.is_dir():
        raise SystemExit(f"no data at {folder} (set NAPARI_UNET_DATA)")
    pairs = find_pairs([folder])
    return pairs[:limit] if limit else pairs


def default_models() -> list[str]:
    from napari_unet.core.models import list_models

    return [m.name for m in list_models() if m.source == "shipped"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=None, help="model names or .pt files (default: every shipped model)")
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images of each set")
    p.add_argument("--diameter", choices=["none", "auto"], default="none",
                   help="'auto': estimate the cell diameter per image and rescale; 'none': the model's own scale")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    p.add_argument("--no-baseline", action="store_true")
    args = p.parse_args(argv)

    import torch

    from napari_unet.core.evaluation import BASELINE_NAME, evaluate_baseline, evaluate_model
    from napari_unet.core.inference import Segmenter

    models = args.models if args.models is not None else default_models()
    if not models and args.no_baseline:
        raise SystemExit("no shipped models found; pass --models NAME_OR_FILE")
    if not models:
        print("(no shipped models found; only the baseline is evaluated; pass --models NAME_OR_FILE)", file=sys.stderr)
    diameter = "auto" if args.diameter == "auto" else None
    rows = []
    t_start = time.perf_counter()
    for model in models:
        seg = Segmenter(model, precision=args.precision)
        for s in args.sets:
            pairs = val_pairs(s, args.limit)
            print(f"{model} on {s}/val ({len(pairs)} images) ...", file=sys.stderr, flush=True)
            res = evaluate_model(model, pairs, diameter=diameter, segmenter=seg, warmup=True)
            rows.append((str(model), s, res, seg.precision))
    if not args.no_baseline:
        for s in args.sets:
            pairs = val_pairs(s, args.limit)
            print(f"{BASELINE_NAME} on {s}/val ({len(pairs)} images) ...", file=sys.stderr, flush=True)
            rows.append((BASELINE_NAME, s, evaluate_baseline(pairs), "-"))

    print()
    print(f"Accuracy on the val splits (diameter: {args.diameter}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; scores pooled over images)")
    print()
    print("| model | set | images | pixel IoU | precision | recall | F1@0.5 | mean AP | MP/s | arithmetic |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for model, s, r, prec in rows:
        print(f"| {model} | {s} | {r['n_images']} | {r['pixel_iou']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} "
              f"| {r['f1']:.3f} | {r['mean_ap']:.3f} | {r['mp_per_s']:.2f} | {prec} |")
    print()
    print("Published reference figures:")
    print()
    for line in REFERENCES:
        print(f"- {line}")
    print(f"\n(total {time.perf_counter() - t_start:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
