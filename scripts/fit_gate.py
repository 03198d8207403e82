"""Teach a model file which images to hand to a specialist: ``python scripts/fit_gate.py
MODEL.pt --positive DIR... --negative DIR... --delegate NAME``.

A linear classifier of the network's bottleneck features (core/size.py) learns to tell the
``--positive`` images (e.g. phase-contrast whole cells) from the ``--negative`` ones; when
it is sure (score above ``--margin``), Segment runs the ``--delegate`` model instead
(core/inference.py). Images are read as a user's (colour to one channel, the model's
normalisation, their own pixel size).
"""

import argparse

import numpy as np

from napari_unet.core.data import find_pairs, read_image
from napari_unet.core.models import load_model, save_model
from napari_unet.core.normalize import normalize, to_gray
from napari_unet.core.size import fit_style_classifier


def read(loaded, folders, rng, limit):
    pairs = find_pairs(folders)
    if len(pairs) > limit:
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), limit, replace=False))]
    low, high, invert = loaded.normalization
    out = []
    for img_p, _ in pairs:
        img = read_image(img_p)
        out.append(normalize(to_gray(img) if img.ndim == 3 else img, low, high, invert))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--positive", nargs="+", required=True)
    p.add_argument("--negative", nargs="+", required=True)
    p.add_argument("--delegate", required=True, help="the model to run on positive images")
    p.add_argument("--margin", type=float, default=0.5, help="route only above this score (the classes sit near +1 / -1)")
    p.add_argument("--max-images", type=int, default=150, help="at most this many images of each class (seeded subset)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    loaded = load_model(args.model)
    load_model(args.delegate)  # must exist
    rng = np.random.default_rng(args.seed)
    pos = read(loaded, args.positive, rng, args.max_images)
    neg = read(loaded, args.negative, rng, args.max_images)
    clf = fit_style_classifier(loaded.model, pos + neg, [True] * len(pos) + [False] * len(neg), seed=args.seed)
    clf.update(model=args.delegate, margin=args.margin)
    print(f"gate to {args.delegate!r} on {clf['n']} crops ({len(pos)} + {len(neg)} images): training accuracy {clf['train_accuracy']:.3f}")
    save_model(args.model, loaded.model, {**loaded.meta, "delegate": clf})


if __name__ == "__main__":
    main()
