"""Record how far a model's size estimate lies from the truth on its training images:
``python scripts/size_bias.py MODEL.pt DIR... [--output OUT.pt]``.

The size search (``Segmenter.size_search``) reads the area-weighted diameter of the cells
it finds. For cells of one size that is their diameter; for a set of cells of many sizes
and shapes (phase-contrast whole cells) it lies above the median equivalent diameter that
the model's ``image_diameter`` is measured in. The median ratio over the training images
(``size_bias``) is written into the model file, whose estimates are then divided by it
and whose ``diameter="auto"`` enlarges only cells found well below its size
(``Segmenter._enlarge_only``).
"""

import argparse

import numpy as np

from napari_unet.core.data import find_pairs, median_diameter, read_image
from napari_unet.core.inference import Segmenter, as_planes
from napari_unet.core.models import load_model, save_model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--output", help="write the model with size_bias here (default: only print it)")
    args = ap.parse_args(argv)

    loaded = load_model(args.model)
    loaded.meta.pop("size_bias", None)  # the raw estimate
    seg = Segmenter(loaded)
    ratios = []
    for img_p, lab_p in find_pairs(args.folders):
        plane = as_planes(read_image(img_p))[0][0]
        found = seg.estimate_diameter(plane)
        true = median_diameter(read_image(lab_p))
        if found and true:
            ratios.append(found / true)
            print(f"{img_p.name}: true {true:.1f} px, estimate {found:.1f} px ({found / true:.2f}x)")
    if not ratios:
        raise SystemExit("no training image gave 3 or more cells to measure: no size_bias written")
    bias = float(np.median(ratios))
    print(f"size_bias = {bias:.3f} (median of {len(ratios)} images; quartiles "
          f"{np.percentile(ratios, 25):.2f}-{np.percentile(ratios, 75):.2f})")
    if args.output:
        save_model(args.output, loaded.model, {**loaded.meta, "size_bias": round(bias, 3)}, half=True)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
