"""The 3-class output against a distance head for splitting touching nuclei (issue 12).

    bash benchmarks/distance_head.sh          # trains both, then runs this
    python benchmarks/distance_head.py runs/dh_boundary.pt runs/dh_distance.pt --sets dsb2018 bbbc039

Two models trained by the same command with the same seed and steps, one with the
3-class loss (background, interior, boundary), one with a fourth output regressed to each
cell's distance to its edge over its largest (``--loss distance``: StarDist's object
probability; Cellpose's flows answer the same question). Each val image is segmented once
per model as Segment does (automatic size); the distance model's probabilities are then
post-processed again with seeds from its distance head at several h-maxima depths
(``distance_seed_depth``). F1@0.5 and mean AP pooled per set.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import val_pairs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+")
    p.add_argument("--sets", nargs="+", default=["dsb2018", "bbbc039"])
    p.add_argument("--depths", nargs="+", type=float, default=[0.1, 0.2, 0.3])
    p.add_argument("--limit", type=int, default=None, help="first N images of each set")
    args = p.parse_args(argv)

    import torch

    from napari_unet.core.data import read_image
    from napari_unet.core.inference import Segmenter
    from napari_unet.core.metrics import instance_scores, summarize

    torch.set_num_threads(2)
    rows = []
    for model in args.models:
        seg = Segmenter(model, precision="fp32", keep_probs=True)
        head = seg.loaded.model.config.regression > 0
        for name in args.sets:
            counts: dict[str, list] = {}
            for img_path, lab_path in val_pairs(name, args.limit):
                truth = read_image(lab_path)
                res = seg.segment(read_image(img_path))
                counts.setdefault("3-class seeds", []).append(instance_scores(res.instances, truth))
                if head and res.probs is not None:
                    post = seg.settings(res.diameter)
                    for depth in args.depths:
                        _, inst = dataclasses.replace(post, distance_depth=depth)(res.probs)
                        counts.setdefault(f"distance-head seeds, depth {depth:g}", []).append(instance_scores(inst, truth))
            for how, c in counts.items():
                r = summarize(c)
                rows.append((Path(model).stem, name, how, r["f1"], r["mean_ap"]))
                print(f"{rows[-1][0]:<16} {name:<9} {how:<32} F1@0.5 {r['f1']:.3f}  mean AP {r['mean_ap']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
