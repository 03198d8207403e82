"""``napari-unet finetune``: fine-tune a model on painted annotations, as the widget does.

    napari-unet finetune --images a.tif b.tif --annotations a_ann.tif b_ann.tif \\
        --output my_model.pt [--base NAME_OR_FILE] [--time-budget SECONDS]

Annotations follow the widget's convention (``0`` unlabeled, ``1`` cell, ``2`` not cell;
ids above 2 are read as instance annotation). The same code as the widget's Train button
(:mod:`napari_unet.core.finetune`); the written file works with ``segment --model FILE``.
User errors raise ``ValueError`` with a one-line message.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

DEFAULT_BUDGET = 120.0


def add_parser(subparsers):
    """Add the ``finetune`` subcommand to an ``argparse`` subparsers object."""
    f = subparsers.add_parser(
        "finetune",
        help="fine-tune a model on painted annotations (0 unlabeled, 1 cell, 2 not cell)",
        description=(
            "Fine-tune a model on image / annotation pairs painted in the widget's convention "
            "(0 = unlabeled, 1 = cell, 2 = not cell; ids above 2 = one id per cell) and write a "
            "model file that 'napari-unet segment --model FILE' accepts."
        ),
    )
    f.add_argument("--images", nargs="+", required=True, help="image files (TIFF, PNG, JPEG)")
    f.add_argument("--annotations", nargs="+", required=True, help="annotation files, one per image, same shape")
    f.add_argument("--output", "-o", required=True, help="model file to write (.pt)")
    f.add_argument("--base", default=None, help="model to start from: name or .pt file (default: nuclei, the best base measured on a new modality)")
    f.add_argument("--time-budget", type=float, default=DEFAULT_BUDGET,
                   help=f"seconds of training (default {DEFAULT_BUDGET:g})")
    f.add_argument("--name", default=None, help="model name stored in the file (default: the output file's stem)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    f.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    f.add_argument("--quiet", "-q", action="store_true", help="print only the result")
    return f


def run(args) -> int:
    from .core.data import read_image
    from .core.finetune import FinetuneSession, describe_calibration, describe_seeds, make_finetuner, save_finetuned
    from .core.models import load_model

    images, anns = [Path(p) for p in args.images], [Path(p) for p in args.annotations]
    if len(images) != len(anns):
        raise ValueError(f"{len(images)} images but {len(anns)} annotations: give one annotation per image")
    for p in images + anns:
        if not p.is_file():
            raise ValueError(f"no such file: {p}")
    out = Path(args.output)
    if out.suffix != ".pt":
        raise ValueError(f"--output must be a .pt file, got {out}")
    if out.exists() and not args.overwrite:
        raise ValueError(f"{out} exists; pass --overwrite to replace it")
    if out.is_dir():
        raise ValueError(f"--output {out} is a folder")
    _check_writable(out)  # before training, not after: the trained weights must have a home
    if args.time_budget is not None and not args.time_budget > 0:
        raise ValueError("--time-budget must be a positive number of seconds")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError("--threads must be at least 1")
        import torch

        torch.set_num_threads(args.threads)

    arrays = [read_image(p) for p in images]
    annots = [read_image(p) for p in anns]
    for p, q, a, b in zip(images, anns, arrays, annots):
        shape_ok = a.shape == b.shape or (a.ndim == b.ndim + 1 and a.shape[:-1] == b.shape and a.shape[-1] in (3, 4))
        if not shape_ok:
            raise ValueError(f"{q.name} has shape {b.shape} but {p.name} has shape {a.shape}")
    trainer, info = make_finetuner(arrays, annots, args.base, args.time_budget, seed=args.seed)
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    say(f"fine-tuning {info.base_name} on {len(images)} image(s): {info.reading}; "
        f"{info.labeled['cell']} cell and {info.labeled['not cell']} not-cell pixels; "
        f"validating on {'held-out strokes' if info.held_out else 'the training annotation'}; "
        f"{args.time_budget:g} s, precision {trainer.precision}")
    bar = None
    if not args.quiet:
        try:
            from tqdm import tqdm

            bar = tqdm(total=int(args.time_budget), unit="s", file=sys.stdout, mininterval=2, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} s {postfix}")
        except ImportError:  # pragma: no cover
            bar = None
    shown = 0
    t0 = time.perf_counter()
    for p in FinetuneSession(trainer, info).run():
        if p.step == 0:
            say(f"base model score {p.val_score:.4f}")
            continue
        if bar is not None:
            now = min(int(p.elapsed), bar.total)
            if now > shown:
                bar.update(now - shown)
                shown = now
            bar.set_postfix_str(f"step {p.step} loss {p.loss:.3f} best {trainer.best_score or 0:.3f}", refresh=False)
        if p.val_score is not None and bar is None:
            say(f"{p.elapsed:6.1f} s  step {p.step}: loss {p.loss:.4f}  score {p.val_score:.4f}  best {p.best_score:.4f}")
    if bar is not None:
        bar.close()
    name = args.name or out.stem
    extra = {"training_command": "napari-unet " + " ".join(sys.argv[1:])} if sys.argv and "napari-unet" in os.path.basename(sys.argv[0]) else None
    try:
        path = save_finetuned(trainer, out, info, name=name, overwrite=args.overwrite, extra=extra)
    except OSError as exc:  # the folder went away or filled up while training: keep the weights
        import tempfile

        rescue = Path(tempfile.gettempdir()) / f"{out.stem}-{os.getpid()}.pt"
        path = save_finetuned(trainer, rescue, info, name=name, overwrite=True, extra=extra)
        raise ValueError(f"cannot write {out} ({exc.strerror or exc}); the fine-tuned model was saved to {path}") from None
    base = trainer.base_score
    note = ""
    if base is not None and trainer.best_score is not None and trainer.best_score <= base:
        note = " (no improvement over the base model: its weights were kept)"
    print(f"saved {path}: {trainer.step} steps in {time.perf_counter() - t0:.0f} s, "
          f"score {trainer.best_score:.4f} (base {base:.4f}){note}" if base is not None else f"saved {path}")
    meta = load_model(path).meta
    for line in (describe_calibration(meta), describe_seeds(meta)):
        if line:
            print(line)
    return 0


def _check_writable(out: Path) -> None:
    """Create the output's folder and try a file in it, so an unwritable destination fails
    in one line now rather than after the whole time budget."""
    import tempfile

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".napari-unet-check."):
            pass
    except OSError as exc:
        raise ValueError(f"cannot write to {out.parent}: {exc.strerror or exc}") from None
