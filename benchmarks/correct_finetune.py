"""Correct a prediction, then fine-tune: does fixing the worst cells of two images help the others?

    python benchmarks/correct_finetune.py                        # usiigaci/val, base `cells`, 60 s
    python benchmarks/correct_finetune.py --budget 120 --worst 10 --pairs 3

What a user does with *Start from prediction*: segment an image, fix the cells that are
wrong, train. Simulated on ``usiigaci/val`` through the command line: for two images, the
base model's instances become the annotation (each id one cell, 0 background), and its
``--worst`` worst cells (the ground-truth cells whose best-matching predicted cell has the
lowest IoU: missed, split or merged) are corrected from the ground truth (the predicted
objects over them removed, the true cells pasted in). Then ``napari-unet finetune --images
A B --annotations A_ann B_ann --base BASE --time-budget S`` and ``napari-unet evaluate`` of
the base and the fine-tuned model on the *other* ``val`` images. ``--pairs`` repeats it
with other pairs of images (each scored on the rest). Prints F1@0.5, mean AP and pixel IoU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import val_pairs


def corrected(pred: np.ndarray, truth: np.ndarray, worst: int) -> tuple[np.ndarray, int]:
    """The prediction as an instance annotation with the ``worst`` worst true cells fixed."""
    from napari_unet.core.metrics import iou_matrix

    iou = iou_matrix(truth, pred)  # (true cells, predicted cells), ids 1..n in order
    true_ids = np.unique(truth[truth > 0])
    best = iou.max(axis=1) if iou.size else np.zeros(len(true_ids))
    fix = true_ids[np.argsort(best)[:worst]]
    region = np.isin(truth, fix)
    over = np.unique(pred[region & (pred > 0)])
    ann = np.where(pred > 0, pred.astype(np.int64) + 2, 0)
    ann[np.isin(pred, over)] = 0  # the wrong objects there go...
    top = int(ann.max()) + 1
    for k, t in enumerate(fix):
        ann[truth == t] = top + k  # ...and the true cells come in
    return ann.astype(np.uint32 if ann.max() >= 2**16 else np.uint16), len(fix)


def evaluate(model: str, folder: Path) -> dict:
    """``napari-unet evaluate MODEL --labels FOLDER``: the model's pooled scores."""
    js = folder.parent / f"{Path(model).stem}.json"
    subprocess.run([sys.executable, "-m", "napari_unet.cli", "evaluate", model, "--labels", str(folder),
                    "--no-baseline", "--quiet", "--json", str(js)], capture_output=True, text=True, check=True)
    return json.loads(js.read_text())["results"][0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", default="usiigaci")
    ap.add_argument("--base", default="cells")
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--worst", type=int, default=10)
    ap.add_argument("--pairs", type=int, default=1)
    args = ap.parse_args(argv)
    import tifffile

    from napari_unet.core.data import read_image
    from napari_unet.core.inference import Segmenter

    pairs = val_pairs(args.set)
    seg = Segmenter(args.base)
    print(f"| corrected images | cells fixed | base F1 / mean AP / IoU on the others | fine-tuned ({args.budget:g} s) |")
    print("|---|---:|---|---|")
    for r in range(args.pairs):
        chosen = [pairs[(2 * r) % len(pairs)], pairs[(2 * r + 1) % len(pairs)]]
        with tempfile.TemporaryDirectory(prefix="napari-unet-correct-") as tmp:
            tmp = Path(tmp)
            others = tmp / "others"
            others.mkdir()
            for ip, lp in pairs:
                if (ip, lp) not in chosen:
                    for p in (ip, lp):
                        (others / p.name).symlink_to(p.resolve())
            anns, fixed = [], 0
            for ip, lp in chosen:
                ann, n = corrected(seg.segment(read_image(ip)).instances, read_image(lp), args.worst)
                anns.append(tmp / f"{ip.stem}_ann.tif")
                tifffile.imwrite(anns[-1], ann)
                fixed += n
            model = tmp / "corrected.pt"
            subprocess.run([sys.executable, "-m", "napari_unet.cli", "finetune", "--images", *[str(ip) for ip, _ in chosen],
                            "--annotations", *map(str, anns), "--base", args.base, "--time-budget", str(args.budget),
                            "--output", str(model), "--quiet"], check=True, capture_output=True)
            before, after = evaluate(args.base, others), evaluate(str(model), others)
        b, a = before, after
        fmt = "{f1:.3f} / {mean_ap:.3f} / {pixel_iou:.3f}"
        print(f"| {' + '.join(ip.stem for ip, _ in chosen)} | {fixed} | {fmt.format(**b)} | {fmt.format(**a)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
