"""Does "Paint here next" help? Strokes placed where the model is unsure against strokes
placed at random, in the fine-tuning loop a user goes through.

    python benchmarks/guided_strokes.py                      # README figures
    python benchmarks/guided_strokes.py --rounds 4 --steps 30 --seeds 0

A simulated user starts from two short strokes of each class on a crop of an EM slice
(``isbi2012/val``, a modality the base model never saw), fine-tunes with the plugin's own
code (``napari_unet.core.finetune``, as the widget does: from the base model, for
``--steps`` steps, validating every 10: a fixed number of steps rather than seconds, so the
curve does not depend on the machine's load; with a 15 s budget per round the noise of the
training itself, up to 0.15 IoU between identical runs, hid any effect of the strokes), looks
at the result and adds one stroke, ``--rounds`` times:

- **guided**: into the most uncertain region (``core.uncertainty.most_uncertain`` over the
  preview's uncertainty) among the pixels the model gets wrong (the user sees the error in
  the preview; the uncertainty says which error to fix first);
- **random**: at a random unpainted pixel.

A stroke is a disk of radius 4 px of the true class at that place (cell or membrane). The
curve is the pixel IoU of the cell class on the whole crop after each round (mean over
``--seeds``); a method is better when it reaches the same IoU with fewer strokes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune import load


def add_stroke(ann: np.ndarray, truth: np.ndarray, y: int, x: int, radius: int = 4) -> None:
    """Paint a disk of the true class around ``(y, x)`` (only pixels of that class)."""
    yy, xx = np.ogrid[: ann.shape[0], : ann.shape[1]]
    disk = (yy - y) ** 2 + (xx - x) ** 2 <= radius**2
    cell = truth[y, x] > 0
    same = (truth > 0) == cell
    ann[disk & same] = 1 if cell else 2


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    p, t = pred.astype(bool), truth > 0
    return float(np.count_nonzero(p & t) / max(np.count_nonzero(p | t), 1))


def run(image, truth, strategy: str, rounds: int, steps: int, seed: int, base: str, threads: int):
    from napari_unet.core.finetune import FinetuneSession, make_finetuner
    from napari_unet.core.uncertainty import most_uncertain
    from napari_unet.testing import simulate_strokes

    rng = np.random.default_rng(seed)
    ann = simulate_strokes(truth, n_cells=2, n_background=2, length=20, seed=seed)
    curve = []
    for r in range(rounds + 1):
        trainer, info = make_finetuner(image, ann, base, None, seed=seed, steps=steps, val_every=10, val_every_s=None)
        session = FinetuneSession(trainer, info, threads=threads)
        for _ in session.run():
            pass
        model = trainer.eval_model()
        model.eval()
        sem, _, probs = session.segment(image, None, None, with_probs=True)
        curve.append((int(np.count_nonzero(ann)), iou(sem, truth)))
        if r == rounds:
            break
        from napari_unet.core.uncertainty import uncertainty

        painted = ann > 0
        if strategy == "guided":
            wrong = (sem > 0) != (truth > 0)
            y, x, _ = most_uncertain(uncertainty(probs), size=24, exclude=painted, within=wrong & ~painted)
        else:
            free = np.argwhere(~painted)
            y, x = free[rng.integers(len(free))]
        add_stroke(ann, truth, int(y), int(x))
    return curve


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", default="slice17", help="isbi2012/val slice (default slice17: no strokes in benchmarks/finetune.py)")
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=40, help="fine-tuning steps per round")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--base", default=None)
    args = p.parse_args(argv)

    import torch

    from napari_unet.core.finetune import default_threads
    from napari_unet.core.models import FINETUNE_BASE

    threads = default_threads()
    torch.set_num_threads(threads)
    (_, img, lab), = load("val", (args.image,))
    c = args.crop
    image, truth = img[:c, :c], lab[:c, :c]
    base = args.base or FINETUNE_BASE
    print(f"isbi2012/val {args.image} [:{c}, :{c}], base {base}, {args.rounds} rounds of one stroke, "
          f"{args.steps} fine-tuning steps per round, seeds {args.seeds}, {threads} threads of {os.cpu_count()}")
    curves = {}
    for strategy in ("guided", "random"):
        runs = [run(image, truth, strategy, args.rounds, args.steps, s, base, threads) for s in args.seeds]
        curves[strategy] = runs
        for s, cur in zip(args.seeds, runs):
            print(f"  {strategy:6} seed {s}: " + "  ".join(f"{px}px:{v:.3f}" for px, v in cur), flush=True)
    print("\n| strokes added | " + " | ".join(str(r) for r in range(args.rounds + 1)) + " |")
    print("|---|" + "---|" * (args.rounds + 1))
    for strategy, runs in curves.items():
        mean = np.mean([[v for _, v in cur] for cur in runs], axis=0)
        spread = np.ptp([[v for _, v in cur] for cur in runs], axis=0) if len(runs) > 1 else np.zeros_like(mean)
        print(f"| {strategy} (pixel IoU, mean; range over seeds) | "
              + " | ".join(f"{m:.3f} ({d:.3f})" for m, d in zip(mean, spread)) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
