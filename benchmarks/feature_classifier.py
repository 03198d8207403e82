"""An instant first answer for few-stroke training: a classifier on the base network's features.

    python benchmarks/feature_classifier.py                       # nuclei, seed 0, 15 strokes
    python benchmarks/feature_classifier.py --base generalist --seed 1 --strokes 5

Issue 13 asked whether a small classifier on the base network's own feature maps (as
Convpaint uses a pretrained network's features), trained on the strokes in a second,
beats the ilastik-style forest on filters as the first answer shown while the U-Net
fine-tunes. Same strokes and scoring as ``benchmarks/finetune.py`` (two ``isbi2012/val``
images painted, every ``isbi2012/train`` image scored: pooled pixel IoU of the cell class
and pixel error). Features: the filters (``multiscale_basic_features``, as the forest's),
the network's (the output of each decoder level, up-sampled bilinearly to the image, and
its class probabilities), and both; classifiers: a random forest (100 trees) and a
logistic regression, on standardised features. Not adopted: see docs/results.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="nuclei", help="the network whose features are used (default nuclei)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strokes", type=int, default=15, help="strokes per class per image (default 15)")
    p.add_argument("--eval-split", choices=["train", "val"], default="train")
    args = p.parse_args(argv)

    import torch
    from skimage.feature import multiscale_basic_features
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    from finetune import STROKE_IMAGES, load, score
    from napari_unet.core.models import load_model
    from napari_unet.core.normalize import normalize
    from napari_unet.testing import simulate_strokes

    strokes = load("val", STROKE_IMAGES)
    anns = [simulate_strokes(lab, n_cells=args.strokes, n_background=args.strokes, seed=args.seed * 100 + k)
            for k, (_, _, lab) in enumerate(strokes)]
    evalset = load("train") if args.eval_split == "train" else [e for e in load("val") if e[0] not in STROKE_IMAGES]
    loaded = load_model(args.base)
    model = loaded.model.eval()
    grab = {}
    for i, dec in enumerate(model.dec):  # the last layer of each decoder level
        dec[-1].register_forward_hook(lambda m, a, out, i=i: grab.__setitem__(i, out))

    def network(im):
        x = normalize(im, *loaded.normalization[:2])
        with torch.no_grad():
            logits = model(torch.from_numpy(np.ascontiguousarray(x, np.float32))[None, None])
        size = im.shape
        maps = [torch.softmax(logits, 1)]
        for i in range(len(model.dec)):
            f = grab[i]
            maps.append(f if f.shape[-2:] == size else torch.nn.functional.interpolate(f, size=size, mode="bilinear", align_corners=False))
        return torch.cat(maps, 1)[0].permute(1, 2, 0).numpy()

    def filters(im):
        return multiscale_basic_features(normalize(im), intensity=True, edges=True, texture=True, sigma_min=1, sigma_max=16).astype(np.float32)

    kinds = {"filters": filters, "network": network, "network + filters": lambda im: np.concatenate([network(im), filters(im)], -1)}
    print(f"base {args.base}, seed {args.seed}, {args.strokes} strokes per class per image, scored on isbi2012/{args.eval_split}")
    print("| features | classifier | features | feature time (s) | fit (s) | predict (s / image) | pixel IoU (cell) | pixel error |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for kind, fn in kinds.items():
        t0 = time.perf_counter()
        X, y = [], []
        for (_, im, _), a in zip(strokes, anns):
            f = fn(im)
            X.append(f[a > 0])
            y.append(a[a > 0] == 1)
        X, y = np.concatenate(X), np.concatenate(y)
        t_feat = time.perf_counter() - t0
        mu, sd = X.mean(0), X.std(0) + 1e-6
        for name, clf in (("random forest", RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=args.seed)),
                          ("logistic regression", LogisticRegression(max_iter=500))):
            t1 = time.perf_counter()
            clf.fit((X - mu) / sd, y)
            t_fit = time.perf_counter() - t1
            t2 = time.perf_counter()
            preds = []
            for _, im, _ in evalset:
                f = fn(im)
                preds.append(clf.predict(((f - mu) / sd).reshape(-1, f.shape[-1])).reshape(im.shape))
            t_pred = (time.perf_counter() - t2) / len(evalset)
            iou, err = score(preds, [e[2] for e in evalset])
            print(f"| {kind} | {name} | {X.shape[1]} | {t_feat:.1f} | {t_fit:.1f} | {t_pred:.2f} | {iou:.4f} | {err:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
