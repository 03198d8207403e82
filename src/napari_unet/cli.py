"""``napari-unet`` command line: segment, train, finetune, evaluate, models.

User errors (unreadable files, bad options) print one line to stderr and exit non-zero;
there is never a traceback for them.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np

EXIT_USAGE = 2
EXIT_ERROR = 1


class UserError(Exception):
    """An error caused by the user's input: reported in one line."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="napari-unet", description="U-Net cell segmentation from the command line.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("segment", help="segment images into instance and semantic label TIFFs")
    s.add_argument("inputs", nargs="+", help="image files (TIFF, PNG, JPEG)")
    s.add_argument("--output", "-o", required=True, help="output folder")
    s.add_argument("--model", "-m", default=None, help="shipped/user model name or .pt file (default: the default model)")
    s.add_argument("--diameter", default=None, help="typical cell diameter in pixels, or 'auto' to estimate (default: the model's)")
    s.add_argument("--threshold", type=float, default=None, metavar="P",
                   help="cell probability above which a pixel is cell, between 0 and 1 (default: the model's; lower finds more and larger cells)")
    s.add_argument("--min-size", type=int, default=None, metavar="PX", help="drop objects smaller than this many pixels (default: the model's)")
    s.add_argument("--tile", type=int, default=1024, help="largest tile side in pixels (default 1024; smaller uses less memory)")
    s.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    s.add_argument("--rgb", action="store_true", help="treat a last axis of 3/4 as colour (auto-detected otherwise)")
    s.add_argument("--quiet", "-q", action="store_true")

    t = sub.add_parser("train", help="train a model on image / instance-label pairs")
    t.add_argument("--images", nargs="+", required=True, help="image files or folders (X.tif pairs with X_labels.tif)")
    t.add_argument("--labels", nargs="*", default=None, help="label files (default: X_labels.tif beside each image)")
    t.add_argument("--output", "-o", required=True, help="model file to write (.pt)")
    t.add_argument("--name", default=None, help="model name (default: output file stem)")
    t.add_argument("--description", default="")
    t.add_argument("--preset", default="default", help="architecture preset: default, small, medium, large, ronneberger2015")
    t.add_argument("--base", default=None, help="start from this model instead of random weights")
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--time-budget", type=float, default=None, help="stop after this many seconds")
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--patch", type=int, default=256)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--val-fraction", type=float, default=0.1, help="fraction of the images held out to pick the best checkpoint")
    t.add_argument("--val-every", type=int, default=200)
    t.add_argument("--diameter", type=float, default=None, help="rescale every set so its median object diameter is this many px")
    t.add_argument("--loss", choices=["boundary", "weightmap"], default="boundary")
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="validate and keep a moving average of the weights with this decay per step (e.g. 0.995; default off)")
    t.add_argument("--resume", action="store_true", help="continue from OUTPUT.ckpt, written at every validation")
    t.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="stop after this step (the learning-rate schedule still spans --steps); --resume goes on")
    from . import _cli_evaluate, _cli_finetune

    _cli_evaluate.add_parser(sub)
    _cli_finetune.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "segment":
            return cmd_segment(args)
        if args.command == "train":
            return cmd_train(args)
        if args.command == "evaluate":
            from . import _cli_evaluate

            return _cli_evaluate.run(args)
        if args.command == "finetune":
            from . import _cli_finetune

            return _cli_finetune.run(args)
    except UserError as exc:
        print(f"napari-unet {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (ValueError, FileNotFoundError, FileExistsError, MemoryError) as exc:
        print(f"napari-unet {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def parse_diameter(value):
    """``--diameter`` as a positive number of pixels, ``"auto"`` or ``None``."""
    if value is None:
        return None
    if str(value).lower() == "auto":
        return "auto"
    try:
        d = float(value)
    except ValueError:
        raise ValueError(f"--diameter must be a number of pixels or 'auto', got {value!r}") from None
    if not (d > 0 and math.isfinite(d)):
        raise ValueError("--diameter must be a positive number of pixels")
    return d


def cmd_segment(args) -> int:
    import tifffile

    from .core.data import read_image
    from .core.inference import Segmenter

    if args.tile < 32:
        raise UserError("--tile must be at least 32")
    diameter = parse_diameter(args.diameter)
    inputs = [Path(p) for p in args.inputs]
    for p in inputs:
        if not p.is_file():
            raise UserError(f"no such file: {p}")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UserError(f"--output {out} is a file, not a folder")
    if args.threshold is not None and not 0 < args.threshold < 1:
        raise UserError(f"--threshold must lie between 0 and 1, got {args.threshold}")
    if args.min_size is not None and args.min_size < 0:
        raise UserError(f"--min-size must be >= 0, got {args.min_size}")
    seg = Segmenter(args.model, precision=args.precision, tile=args.tile, threshold=args.threshold, min_size=args.min_size)
    out.mkdir(parents=True, exist_ok=True)
    stems = [p.stem for p in inputs]
    if len(set(stems)) != len(stems):
        raise UserError("two inputs have the same file name; their outputs would collide")
    for p in inputs:
        t0 = time.perf_counter()
        image = read_image(p)
        res = seg.segment(image, diameter=diameter, rgb=True if args.rgb else None)
        lab_path = out / f"{p.stem}_labels.tif"
        sem_path = out / f"{p.stem}_cells.tif"
        for path, arr in ((lab_path, res.instances), (sem_path, res.semantic)):
            if path.resolve() == p.resolve():
                raise UserError(f"refusing to overwrite the input {p}")
            tifffile.imwrite(path, arr, compression="zlib")
        if not args.quiet:
            n = int(res.instances.max())
            extra = f" ({'; '.join(res.notes)})" if res.notes else ""
            print(f"{p.name}: {n} cells -> {lab_path} ({time.perf_counter() - t0:.1f} s){extra}")
    return 0


def cmd_train(args) -> int:
    import torch

    from .core.data import find_pairs, median_diameter, read_image, rescale_pair
    from .core.model import build_model
    from .core.models import atomic_save, load_model, save_model
    from .core.normalize import normalize
    from .core.training import Sample, TrainConfig, Trainer, instance_f1

    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = find_pairs(args.images, args.labels)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(pairs))
    n_val = int(round(len(pairs) * args.val_fraction)) if len(pairs) > 1 else 0
    val_idx = set(order[:n_val].tolist())
    # group images by folder so each set can be rescaled to the target diameter
    loaded = []
    for img_p, lab_p in pairs:
        img, lab = read_image(img_p), read_image(lab_p)
        if img.shape[-2:] != lab.shape[-2:] or img.ndim != 2:
            raise UserError(f"{img_p.name}: need a 2D image with labels of the same shape")
        loaded.append((img_p, img, lab.astype(np.int32)))
    by_dir: dict[Path, list[int]] = {}
    for i, (p, _, _) in enumerate(loaded):
        by_dir.setdefault(p.parent, []).append(i)
    scales, natives = {}, {}
    for d, idx in by_dir.items():
        diam = natives[d] = median_diameter([loaded[i][2] for i in idx])
        scales[d] = (args.diameter / diam) if (args.diameter and diam) else 1.0
        print(f"{d}: {len(idx)} images, median object diameter {diam:.1f} px, scale x{scales[d]:.2f}")
    train, val, labels_all = [], [], []
    for i, (p, img, lab) in enumerate(loaded):
        x = normalize(img)
        x, lab = rescale_pair(x, lab, scales[p.parent])
        s = Sample(x, instances=lab, name=p.name)
        (val if i in val_idx else train).append(s)
        labels_all.append(lab)
    diameter = median_diameter(labels_all)
    if args.base:
        model = load_model(args.base).model
    else:
        model = build_model(args.preset)
    cfg = TrainConfig(
        patch=args.patch, batch=args.batch, lr=args.lr, steps=args.steps,
        time_budget=args.time_budget, val_every=args.val_every, seed=args.seed, loss=args.loss, ema=args.ema,
    )
    trainer = Trainer(model, train, val, cfg, score_fn=instance_f1)
    ckpt_path = Path(str(args.output) + ".ckpt")
    if args.resume:
        if not ckpt_path.is_file():
            raise UserError(f"--resume: no checkpoint {ckpt_path}")
        trainer.resume(torch.load(ckpt_path, map_location="cpu", weights_only=True))
        print(f"resuming from step {trainer.step}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    print(f"training on {len(train)} images, validating on {len(val)}; {cfg.steps} steps, precision {trainer.precision}")
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    bar = tqdm(total=cfg.steps, initial=trainer.step, unit="step", file=sys.stdout, mininterval=5) if tqdm else None
    t0 = time.perf_counter()
    last = trainer.step
    for p in trainer.run():
        if bar is not None:
            bar.update(p.step - last)
            last = p.step
            bar.set_postfix(loss=f"{p.loss:.3f}", best=f"{trainer.best_score or 0:.3f}")
        if p.val_score is not None:
            msg = f"step {p.step}: loss {p.loss:.4f} val score {p.val_score:.4f} best {p.best_score:.4f}"
            (bar.write if bar else print)(msg)
            atomic_save(trainer.checkpoint(), ckpt_path)
        if args.stop_at is not None and p.step >= args.stop_at:
            trainer.stop()
    if bar is not None:
        bar.close()
    name = args.name or Path(args.output).stem
    meta = {
        "name": name,
        "description": args.description,
        "diameter": round(diameter, 2),
        # a single rescaled set: user images are assumed to have that set's native size
        **({"image_diameter": round(next(iter(natives.values())), 2)} if len(natives) == 1 else {}),
        # sets of different object sizes rescaled to one: no single size to assume, so
        # segmentation estimates each image's cell diameter unless the user gives one
        **({"default_diameter": "auto"} if args.diameter and len(natives) > 1 else {}),
        "normalization": [1.0, 99.8],
        "classes": ["background", "interior", "boundary"],
        "training": {
            "command": "napari-unet " + shlex.join(sys.argv[1:]) if sys.argv and "napari-unet" in sys.argv[0] else "",
            "images": [str(p) for p, _ in pairs],
            "steps": trainer.step,
            "seconds": round(time.perf_counter() - t0, 1),
            "seed": args.seed,
            "loss": args.loss,
            "val_score": trainer.best_score,
        },
    }
    path = save_model(args.output, trainer.model, meta)
    print(f"saved {path} (best validation score {trainer.best_score:.4f}, {trainer.step} steps)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
