"""The default model on nuclei far larger than any it was trained on (high magnification).

DSB 2018 has few nuclei over 50 px across. This builds larger ones from the grayscale
images of a split whose nuclei are at least ``--min-diameter`` px (median), enlarged
``--factor`` times (linear interpolation; labels by nearest neighbour), and scores
``napari-unet``'s default path on them with no diameter given, once per size-check setting
(``inference.FRAGMENT_RATIO``, 0: off). Enlarged images are smoother than real
high-magnification ones; the textured kind is in dsb2018/val (``c901794d1a42``, 95 px).

    python -W ignore benchmarks/large_nuclei.py --split val --fragment-ratio 0 2.5
    python -W ignore benchmarks/large_nuclei.py --split train --every 3 --min-diameter 45
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def build(split: str, min_diameter: float, factor: float, every: int, out: Path) -> list[str]:
    import tifffile
    from skimage.transform import rescale

    names = []
    labels = sorted((DATA / "dsb2018" / split).glob("*_labels.tif"))
    for p in labels:
        truth = tifffile.imread(p)
        areas = np.bincount(truth.ravel())[1:]
        areas = areas[areas > 0]
        image = tifffile.imread(p.with_name(p.name.replace("_labels", "")))
        if image.ndim != 2 or not areas.size or np.sqrt(np.median(areas) * 4 / np.pi) < min_diameter:
            continue
        names.append(p.name.replace("_labels.tif", ""))
    names = names[::every]
    for name in names:
        image = tifffile.imread(DATA / "dsb2018" / split / f"{name}.tif")
        truth = tifffile.imread(DATA / "dsb2018" / split / f"{name}_labels.tif")
        big = rescale(image.astype(np.float32), factor, order=1, preserve_range=True)
        tifffile.imwrite(out / f"{name}.tif", np.clip(big, 0, np.iinfo(image.dtype).max if image.dtype.kind in "ui" else None).astype(image.dtype))
        tifffile.imwrite(out / f"{name}_labels.tif", rescale(truth, factor, order=0, preserve_range=True, anti_aliasing=False).astype(truth.dtype))
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="val")
    ap.add_argument("--min-diameter", type=float, default=40.0, help="median nucleus diameter (px) of the images used")
    ap.add_argument("--factor", type=float, default=2.0)
    ap.add_argument("--every", type=int, default=1, help="every N-th such image")
    ap.add_argument("--model", default="generalist")
    ap.add_argument("--fragment-ratio", type=float, nargs="+", default=None)
    args = ap.parse_args()

    from napari_unet.core import inference
    from napari_unet.core.data import find_pairs
    from napari_unet.core.evaluation import evaluate_model

    with tempfile.TemporaryDirectory() as tmp:
        names = build(args.split, args.min_diameter, args.factor, args.every, Path(tmp))
        print(f"dsb2018/{args.split}: {len(names)} grayscale images with nuclei >= {args.min_diameter:g} px, enlarged {args.factor:g}x")
        for ratio in args.fragment_ratio or [inference.FRAGMENT_RATIO]:
            inference.FRAGMENT_RATIO = ratio
            r = evaluate_model(args.model, find_pairs([tmp], None), diameter=None)
            per = np.mean([x["f1"] for x in r["per_image"]])
            print(f"fragment ratio {ratio:g}: F1 {r['f1']:.4f} mean AP {r['mean_ap']:.4f} pixel IoU {r['pixel_iou']:.3f} "
                  f"mean of images' F1 {per:.4f} ({r['mp_per_s']:.2f} MP/s)", flush=True)


if __name__ == "__main__":
    main()
