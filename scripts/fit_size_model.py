"""Fit a model's learned diameter estimate (core/size.py) on training images and store it
in the model file: ``python scripts/fit_size_model.py MODEL.pt --images DIR... [--seed 0]``.

Images are read as `napari-unet train --rescale image` reads them (colour to one channel,
the model's normalisation, each image rescaled so its objects have the model's diameter).
"""

import argparse

import numpy as np

from napari_unet.core.data import find_pairs, median_diameter, read_image, rescale_pair
from napari_unet.core.models import load_model, save_model
from napari_unet.core.normalize import normalize, to_gray
from napari_unet.core.size import fit_size_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--images", nargs="+", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-image", type=int, default=2)
    p.add_argument("--max-images", type=int, default=400, help="a seeded random subset of the images, at most this many")
    p.add_argument("--half", action="store_true", help="store the weights as float16")
    args = p.parse_args()
    loaded = load_model(args.model)
    low, high, invert = loaded.normalization
    images, labels = [], []
    pairs = find_pairs(args.images)
    rng = np.random.default_rng(args.seed)
    if len(pairs) > args.max_images:
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), args.max_images, replace=False))]
    for img_p, lab_p in pairs:
        img, lab = read_image(img_p), read_image(lab_p).astype(np.int32)
        if img.ndim == 3:
            img = to_gray(img)
        d = median_diameter(lab)
        if not d:
            continue
        x, lab = rescale_pair(normalize(img, low, high, invert), lab, loaded.diameter / d)
        images.append(x)
        labels.append(lab)
    sm = fit_size_model(loaded.model, images, labels, per_image=args.per_image, seed=args.seed)
    print(f"size model on {sm['n']} crops: median error of the fit {100 * sm['fit_median_error']:.1f} %")
    save_model(args.model, loaded.model, {**loaded.meta, "size_model": sm}, half=args.half)


if __name__ == "__main__":
    main()
