"""The generalist's size check with its two settings changed in-process.

``inference.FIT_STATISTIC`` (which size of the objects found at the model's scale the fit
check reads), ``inference.FRAGMENT_RATIO`` and ``inference.BLOB_RATIO`` (when a fit is
confirmed at half the scale, and how much larger than the cells the bright blobs must be
for that check to run), ``inference.CONSISTENCY`` (whether the full search confirms its pick at
the size it found) and ``inference.SMALL_FIT`` (cells found smaller than the model by more
than this factor are enlarged to its size). Prints pooled F1 / mean AP and the mean of the
images' F1 per folder; ``FOLDER:N`` takes every N-th image (e.g. a development subset of a
train split), ``FOLDER:N:K`` every N-th from the K-th.

    python -W ignore benchmarks/size_check.py --statistic area-weighted --consistency 0 \\
        ../shared/data/dsb2018/train:10 ../shared/data/dsb2018/val
"""

import argparse
import json

import numpy as np

from napari_unet.core import inference
from napari_unet.core.data import find_pairs
from napari_unet.core.evaluation import evaluate_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", help="FOLDER or FOLDER:N (every N-th image)")
    ap.add_argument("--model", default="generalist")
    ap.add_argument("--statistic", default=inference.FIT_STATISTIC, choices=["area-weighted", "median"])
    ap.add_argument("--consistency", type=float, default=inference.CONSISTENCY, help="0: off")
    ap.add_argument("--tolerance", type=float, default=inference.AUTO_TOLERANCE)
    ap.add_argument("--small-fit", type=float, default=inference.SMALL_FIT, help="0: off")
    ap.add_argument("--fragment-ratio", type=float, default=inference.FRAGMENT_RATIO, help="0: off")
    ap.add_argument("--blob-ratio", type=float, default=inference.BLOB_RATIO, help="0: always confirm")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", help="write every result here")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    inference.FIT_STATISTIC, inference.CONSISTENCY = args.statistic, args.consistency
    inference.AUTO_TOLERANCE, inference.SMALL_FIT = args.tolerance, args.small_fit
    inference.FRAGMENT_RATIO, inference.BLOB_RATIO = args.fragment_ratio, args.blob_ratio
    results = {}
    for spec in args.folders:
        folder, _, rest = spec.partition(":")
        step, _, first = rest.partition(":")
        pairs = find_pairs([folder], None)[int(first or 0) :: int(step or 1)]
        r = evaluate_model(args.model, pairs, diameter=None)
        results[spec] = r
        per = np.mean([x["f1"] for x in r["per_image"]])
        print(f"{args.statistic}, consistency {args.consistency:g}, small fit {args.small_fit:g}, fragment ratio {args.fragment_ratio:g}, blob ratio {args.blob_ratio:g}: {spec}: F1 {r['f1']:.4f} mean AP {r['mean_ap']:.4f} "
              f"precision {r['precision']:.3f} recall {r['recall']:.3f} mean of images' F1 {per:.4f} ({r['mp_per_s']:.2f} MP/s)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main()
