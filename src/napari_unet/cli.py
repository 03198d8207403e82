"""``napari-unet`` command line: segment, train, finetune, evaluate, models.

User errors (unreadable files, bad options) print one line to stderr and exit non-zero;
there is never a traceback for them.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from ._cli_common import UserError, is_user_error, parse_diameter  # noqa: F401 - parse_diameter: part of the CLI's API

EXIT_USAGE = 2
EXIT_ERROR = 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="napari-unet", description="U-Net cell segmentation from the command line.")
    sub = p.add_subparsers(dest="command", required=True)

    from . import _cli_segment

    _cli_segment.add_parser(sub)

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
    t.add_argument("--rescale", choices=["set", "image"], default="set",
                   help="with --diameter: rescale by each folder's median object diameter (set) or each image's own (image)")
    t.add_argument("--balance", action="store_true", help="draw every folder (data set) equally often, whatever its size")
    t.add_argument("--invert-bright", action="store_true",
                   help="invert images with a bright background (brightfield, stained tissue) so objects are bright; recorded in the model")
    t.add_argument("--scale-range", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="scale augmentation range (default 0.8 1.25)")
    t.add_argument("--loss", choices=["boundary", "weightmap", "distance"], default="boundary",
                   help="boundary: 3 classes; weightmap: + the U-Net paper's border weights; "
                        "distance: + a distance-to-edge head (seeds from its peaks)")
    t.add_argument("--channels", type=int, nargs="+", default=None, metavar="C",
                   help="a model that reads these channels of each image, in this order (e.g. 0 1: cytoplasm, nuclei; "
                        "the channel axis first or last; a one-channel --base reads the first of them, the others start at zero); "
                        "default: one channel (colour images: one made from their colours)")
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="validate and keep a moving average of the weights with this decay per step (e.g. 0.995; default off)")
    t.add_argument("--resume", action="store_true", help="continue from OUTPUT.ckpt, written at every validation")
    t.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="stop after this step (the learning-rate schedule still spans --steps); --resume goes on")
    from . import _cli_evaluate, _cli_export, _cli_finetune

    _cli_evaluate.add_parser(sub)
    _cli_finetune.add_parser(sub)
    _cli_export.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "segment":
            from . import _cli_segment

            return _cli_segment.run(args)
        if args.command == "train":
            return cmd_train(args)
        if args.command == "evaluate":
            from . import _cli_evaluate

            return _cli_evaluate.run(args)
        if args.command == "finetune":
            from . import _cli_finetune

            return _cli_finetune.run(args)
        if args.command in ("export", "import"):
            from . import _cli_export

            return _cli_export.run(args)
    except UserError as exc:
        print(f"napari-unet {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (ValueError, MemoryError) as exc:
        if not is_user_error(exc):
            raise  # a ValueError from inside numpy / torch is a bug: its traceback shows
        print(f"napari-unet {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # not writable, no space, a folder where a file should be, ...
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"napari-unet {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def cmd_train(args) -> int:
    import torch

    from .core.augment import AugmentConfig
    from .core.data import find_pairs, median_diameter, read_image, rescale_pair
    from .core.model import build_model
    from .core.models import atomic_save, load_model, safe_load, save_model
    from .core.normalize import normalize, to_gray
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
        if args.channels:
            img = _pick_training_channels(img, lab, args.channels, img_p.name)
        elif img.ndim == 3 and img.shape[-1] in (3, 4) and img.shape[:2] == lab.shape:
            img = to_gray(img)  # colour: one channel, as segmentation reads it
        if img.shape[-2:] != lab.shape[-2:] or img.ndim != 2 + bool(args.channels):
            raise UserError(f"{img_p.name}: need a 2D image with labels of the same shape"
                            + (" (several channels: give --channels)" if img.ndim == 3 else ""))
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
        if img.ndim == 3:  # channels, each normalised on its own as segmentation does
            x = np.stack([normalize(c, invert_bright=args.invert_bright) for c in img])
        else:
            x = normalize(img, invert_bright=args.invert_bright)
        scale = scales[p.parent]
        if args.diameter and args.rescale == "image":
            own = median_diameter(lab)
            scale = args.diameter / own if own else 1.0
        x, lab = rescale_pair(x, lab, scale)
        s = Sample(x, instances=lab, name=p.name, group=str(p.parent))
        (val if i in val_idx else train).append(s)
        labels_all.append(lab)
    diameter = median_diameter(labels_all)
    n_in = len(args.channels) if args.channels else 1
    if args.base:
        model = load_model(args.base).model
        if model.config.in_channels == 1 and n_in > 1:  # its weights read the first of --channels
            from .core.model import with_input_channels

            model = with_input_channels(model, n_in, 0)
        elif model.config.in_channels != n_in:
            raise UserError(f"--base reads {model.config.in_channels} channel(s), the training images give {n_in}")
    else:
        from .core.model import PRESETS

        if args.preset not in PRESETS:
            raise UserError(f"unknown preset {args.preset!r}; choose one of {sorted(PRESETS)}")
        model = build_model({**PRESETS[args.preset].to_dict(), "in_channels": n_in})
    if args.loss == "distance" and model.config.regression == 0:
        from .core.model import with_distance_head

        model = with_distance_head(model)
    cfg = TrainConfig(
        patch=args.patch, batch=args.batch, lr=args.lr, steps=args.steps,
        time_budget=args.time_budget, val_every=args.val_every, seed=args.seed, loss=args.loss, ema=args.ema,
        balance=args.balance,
    )
    if args.scale_range:
        cfg.augment = AugmentConfig(scale=tuple(args.scale_range))
    trainer = Trainer(model, train, val, cfg, score_fn=instance_f1)
    ckpt_path = Path(str(args.output) + ".ckpt")
    if args.resume:
        if not ckpt_path.is_file():
            raise UserError(f"--resume: no checkpoint {ckpt_path}")
        try:
            ckpt = safe_load(ckpt_path)
        except Exception:  # noqa: BLE001 - a pickle with code in it, or a damaged file: never retried unsafely
            raise UserError(f"--resume: {ckpt_path} is not a napari-unet checkpoint (or is damaged)") from None
        trainer.resume(ckpt)
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
        **({"default_diameter": "auto"} if args.diameter and (len(natives) > 1 or args.rescale == "image") else {}),
        "normalization": [1.0, 99.8] + ([True] if args.invert_bright else []),
        "classes": ["background", "interior", "boundary"],
        **({"channels": list(args.channels)} if args.channels else {}),
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
    score = "no images held out to validate" if trainer.best_score is None else f"best validation score {trainer.best_score:.4f}"
    print(f"saved {path} ({score}, {trainer.step} steps)")
    return 0


def _pick_training_channels(img: np.ndarray, lab: np.ndarray, channels, name: str) -> np.ndarray:
    """``channels`` of a ``(C, H, W)`` or ``(H, W, C)`` training image, channel-first."""
    if img.ndim == 3 and img.shape[:2] == lab.shape and img.shape[1:] != lab.shape:
        img = np.moveaxis(img, -1, 0)  # channel-last
    elif not (img.ndim == 3 and img.shape[1:] == lab.shape):
        raise UserError(f"{name}: --channels needs images of shape (C, H, W) or (H, W, C) with (H, W) labels, "
                        f"got {img.shape} and {lab.shape}")
    bad = [c for c in channels if not 0 <= c < img.shape[0]]
    if bad:
        raise UserError(f"{name}: has {img.shape[0]} channels (0..{img.shape[0] - 1}), --channels asks for {bad}")
    return np.ascontiguousarray(img[list(channels)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
