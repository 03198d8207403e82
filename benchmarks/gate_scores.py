"""The gate's score of every grayscale image of a few folders, per model file.

``python -W ignore benchmarks/gate_scores.py generalist [OTHER.pt ...]``: for each folder
(default: usiigaci train and val, dsb2018 val, bbbc039 val) the lowest, median and highest
score and how many images score above the gate's margin (those Segment hands to the
specialist), from ``Segmenter.gate_score`` as Segment computes them. Colour images are
skipped (they go to the colour specialist before the gate).

``--int8``: the scores of the int8 encoder against the float one (bfloat16 where the CPU
has it) on the same crops, the largest difference per folder and how many images fall
within ``inference.GATE_INT8_GUARD`` of the margin (those the float encoder decides), with
the time of each encoder per image.
"""

import argparse
import time

import numpy as np

from napari_unet.core.data import find_pairs, read_image
from napari_unet.core.inference import Segmenter

FOLDERS = ["usiigaci/train", "usiigaci/val", "dsb2018/val", "bbbc039/val"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--folders", nargs="+", default=FOLDERS)
    ap.add_argument("--int8", action="store_true", help="compare the int8 encoder's scores with the float one's")
    args = ap.parse_args()
    for name in args.models:
        seg = Segmenter(name)
        gate = seg.loaded.meta.get("delegate")
        if not gate:
            print(f"{name}: no gate")
            continue
        for folder in args.folders:
            scores = []
            for img_p, _ in find_pairs([f"{args.data}/{folder}"]):
                img = read_image(img_p)
                if img.ndim == 3:
                    continue
                scores.append(_both(seg, gate, img) if args.int8 else seg.gate_score(img))
            if args.int8:
                _report_int8(name, folder, gate, np.asarray(scores))
                continue
            s = np.asarray(scores)
            print(f"{name} {folder}: {s.size} images, score min {s.min():.2f} median {np.median(s):.2f} "
                  f"max {s.max():.2f}, above the margin {gate['margin']}: {(s > gate['margin']).sum()}")


def _both(seg, gate, img) -> tuple[float, float, float, float]:
    """(float score, int8 score, float seconds, int8 seconds) of the gate's crop of ``img``."""
    from napari_unet.core.inference import bf16_supported
    from napari_unet.core.size import central, style_score

    if seg.precision != "int8":
        raise SystemExit(f"the model does not run in int8 here ({seg.precision})")
    x = seg.normalized(central(img), seg.limits(img))
    t0 = time.perf_counter()
    f = style_score(seg.model, gate, x, bf16_supported())
    t1 = time.perf_counter()
    q = style_score(seg.net, gate, x)
    return f, q, t1 - t0, time.perf_counter() - t1


def _report_int8(name, folder, gate, s: np.ndarray) -> None:
    from napari_unet.core.inference import GATE_INT8_GUARD

    m = float(gate["margin"])
    near = np.abs(s[:, 1] - m) <= GATE_INT8_GUARD
    print(f"{name} {folder}: {len(s)} images, float {s[:, 0].min():.2f}..{s[:, 0].max():.2f}, "
          f"int8 {s[:, 1].min():.2f}..{s[:, 1].max():.2f}, largest difference {np.abs(s[:, 0] - s[:, 1]).max():.3f}, "
          f"sides of the margin {m} that differ: {((s[:, 0] > m) != (s[:, 1] > m)).sum()}, "
          f"within {GATE_INT8_GUARD} of it (float decides): {near.sum()}; "
          f"{1e3 * s[:, 2].mean():.1f} ms float, {1e3 * s[:, 3].mean():.1f} ms int8 per image")


if __name__ == "__main__":
    main()
