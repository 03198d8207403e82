"""The gate's score of every grayscale image of a few folders, per model file.

``python -W ignore benchmarks/gate_scores.py generalist [OTHER.pt ...]``: for each folder
(default: usiigaci train and val, dsb2018 val, bbbc039 val) the lowest, median and highest
score and how many images score above the gate's margin (those Segment hands to the
specialist), from ``Segmenter.gate_score`` as Segment computes them. Colour images are
skipped (they go to the colour specialist before the gate).
"""

import argparse

import numpy as np

from napari_unet.core.data import find_pairs, read_image
from napari_unet.core.inference import Segmenter

FOLDERS = ["usiigaci/train", "usiigaci/val", "dsb2018/val", "bbbc039/val"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--folders", nargs="+", default=FOLDERS)
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
                scores.append(seg.gate_score(img))
            s = np.asarray(scores)
            print(f"{name} {folder}: {s.size} images, score min {s.min():.2f} median {np.median(s):.2f} "
                  f"max {s.max():.2f}, above the margin {gate['margin']}: {(s > gate['margin']).sum()}")


if __name__ == "__main__":
    main()
