"""Phase-contrast cells at other magnifications, through the default model's hand-over to
``cells``: ``python -W ignore benchmarks/handover_size.py [--factors 0.5 0.7 1 1.5 2]``.

``usiigaci/val`` (cells about 43 px across) is rescaled by each factor (images linearly,
labels by nearest neighbour), as if taken with another objective, and segmented by
``generalist`` with nothing chosen, as a user would. ``cells`` was trained at one scale
for the whole set; it is compared with and without its ``size_bias`` (then it segments
every image at its own scale, as before ``Segmenter._enlarge_only``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import val_pairs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--factors", type=float, nargs="+", default=[0.5, 0.7, 1.0, 1.5, 2.0])
    args = ap.parse_args(argv)

    from skimage.transform import rescale

    from napari_unet.core.data import median_diameter, read_image
    from napari_unet.core.evaluation import evaluate_predictions
    from napari_unet.core.inference import Segmenter, as_planes

    seg = Segmenter("generalist")
    pairs = [(read_image(i), read_image(lb)) for i, lb in val_pairs("usiigaci", None)]
    print("| scale | cells px | handed to cells | before: F1 / mean AP / pixel IoU | now | rescaled by cells |")
    print("|---|---:|---:|---|---|---:|")
    for f in args.factors:
        data = [(img, lab) if f == 1 else
                (rescale(img.astype(np.float32), f, order=1, preserve_range=True, anti_aliasing=f < 1).astype(img.dtype),
                 rescale(lab, f, order=0, preserve_range=True, anti_aliasing=False).astype(lab.dtype))
                for img, lab in pairs]
        truths = [lab for _, lab in data]
        handed = [seg.delegate_for(as_planes(img)[0][0]) for img, _ in data]
        cells = seg._specialist("cells")
        bias = cells.loaded.meta["size_bias"]
        row = []
        try:
            for on in (False, True):
                if on:
                    cells.loaded.meta["size_bias"] = bias
                else:
                    cells.loaded.meta.pop("size_bias")
                results = [seg.segment(img) for img, _ in data]
                r = evaluate_predictions([res.instances for res in results], truths)
                row.append(f"{r['f1']:.3f} / {r['mean_ap']:.3f} / {r['pixel_iou']:.3f}")
        finally:
            cells.loaded.meta["size_bias"] = bias
        enlarged = sum("enlarged" in " ".join(res.notes) for res in results)
        d = np.median([median_diameter(t) for t in truths])
        print(f"| x{f:g} | {d:.0f} | {sum(h is not None for h in handed)} / {len(data)} | {row[0]} | {row[1]} | {enlarged} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
