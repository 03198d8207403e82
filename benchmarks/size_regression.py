"""A learned size estimate, as Cellpose's size model: ridge regression of the log cell
diameter from the network's style vector (its bottleneck features averaged over the
central crop, the gate's features), fitted on the train splits, scored on val.

    python -W ignore benchmarks/size_regression.py                  # the default model
    python -W ignore benchmarks/size_regression.py --ridge 1e-3 1e-2 --show c901794d1a42 5d21acedb301

Each image is read at its own scale (as the size check first sees it) and normalised as
the model reads it; the target is ``log(true median diameter / model diameter)``. Prints
the median error and the images more than 30 % off per split, for comparison with the
size search (``benchmarks/auto_diameter.py`` prints the same two figures for it).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def features(seg, pairs):
    from napari_unet.core.data import median_diameter, read_image
    from napari_unet.core.inference import as_planes
    from napari_unet.core.size import central, style_vectors

    X, y, names = [], [], []
    own = seg.loaded.diameter
    for img_path, lab_path in pairs:
        d = median_diameter(read_image(lab_path))
        if not d:
            continue
        plane = as_planes(read_image(img_path))[0][0]
        x = seg.normalized(central(plane), seg.limits(plane))
        X.append(style_vectors(seg.model, [x])[0])
        y.append(math.log(d / own))
        names.append(img_path.stem)
    return np.array(X), np.array(y), names


def pairs_of(folder: Path):
    return [(p.with_name(p.name.replace("_labels", "")), p) for p in sorted(folder.glob("*_labels.tif"))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="generalist")
    ap.add_argument("--train", nargs="+", default=["dsb2018/train", "bbbc039/train"])
    ap.add_argument("--val", nargs="+", default=["dsb2018/val", "bbbc039/val"])
    ap.add_argument("--ridge", type=float, nargs="+", default=[1e-3, 1e-2, 1e-1])
    ap.add_argument("--show", nargs="*", default=[], help="val image stems to print the estimate for")
    args = ap.parse_args(argv)

    from napari_unet.core.inference import Segmenter

    seg = Segmenter(args.model)
    X, y, _ = features(seg, [p for f in args.train for p in pairs_of(DATA / f)])
    vals = {f: features(seg, pairs_of(DATA / f)) for f in args.val}
    print(f"{len(y)} train images ({', '.join(args.train)}), {X.shape[1]} features")
    mu = X.mean(0)
    A = np.c_[X - mu, np.ones(len(X))]
    for lam in args.ridge:
        w = np.linalg.solve(A.T @ A + lam * np.eye(A.shape[1]), A.T @ y)

        def predict(Z, w=w):
            return np.c_[Z - mu, np.ones(len(Z))] @ w

        cells = []
        for f, (Z, t, names) in vals.items():
            err = np.abs(predict(Z) - t)
            cells.append(f"{f}: median error {100 * (math.exp(np.median(err)) - 1):.0f} %, "
                         f">30 % off on {int((err > math.log(1.3)).sum())}/{len(err)}")
            for n, p, tt in zip(names, predict(Z), t):
                if n in args.show:
                    own = seg.loaded.diameter
                    cells.append(f"{n}: true {own * math.exp(tt):.1f} px, learned {own * math.exp(p):.1f} px")
        print(f"ridge {lam:g}: " + "; ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
