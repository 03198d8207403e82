"""Keeping the result of fine-tuning: the cell threshold calibrated on the annotated images,
the saved model file (atomically, named, with its settings and history) and revert to base."""

from __future__ import annotations

import copy
import datetime
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .losses import BACKGROUND
from .models import check_name, list_models, save_model, user_dir
from .postprocess import POSTPROCESS_KEYS, prior_shift_threshold
from .training import Trainer, inference_copy, predict_probs, train_mode

if TYPE_CHECKING:
    from .finetune import FinetuneInfo


# ---- saving --------------------------------------------------------------------------------
def _destination(path_or_name: str | os.PathLike, overwrite: bool) -> tuple[Path, str]:
    s = str(path_or_name)
    p = Path(s)
    is_path = isinstance(path_or_name, Path) or s.endswith(".pt") or os.sep in s or (os.altsep and os.altsep in s)
    if is_path:
        if p.suffix != ".pt":
            p = p.with_suffix(".pt")
        if p.is_dir():
            raise ValueError(f"{p} is a folder; give a model file name ending in .pt")
        dest, name = p, p.stem
    else:
        name = check_name(s)
        if name in {m.name for m in list_models() if m.source == "shipped"}:
            raise ValueError(f"{name!r} is the name of a shipped model; choose another")
        dest = user_dir(create=True) / f"{name}.pt"
    if dest.exists() and not overwrite:
        raise FileExistsError(f"a model named {name!r} exists already ({dest}); choose another name")
    return dest, name


def _kept_model(trainer: Trainer, state: dict | None = None):
    """The model with ``state`` (default: the kept weights, else the current ones) loaded."""
    model = trainer.eval_model()
    state = state if state is not None else trainer.best_state
    if state is not None:
        model = copy.deepcopy(model)
        model.load_state_dict(state)
    return model


#: Seeds split touching cells: the shipped models' own seed settings find 5-27 % more cells
#: on their val images than one seed per connected interior region does (pooled; at most
#: 33 % on one image: `nuclei` on bbbc039, `generalist` on bbbc039 and dsb2018, `tissue` on
#: dsb2018's colour images). A fine-tuned model whose base's settings find more than this many
#: times as many on the annotated planes splits cells at their texture, not at their contacts
#: (EM after 60 s of fine-tuning from `nuclei`: 1.75 and more), and is saved with one seed per
#: connected interior region instead (see :func:`seed_settings`).
SPLIT_RATIO = 1.5
#: The seed metadata of one seed per connected interior region (see :func:`.postprocess.one_seed_per_region`).
ONE_SEED_PER_REGION = {"seed_threshold": 0.5, "seed_spacing": 0, "seed_depth": 0}


def annotated_probs(trainer: Trainer, state: dict | None = None, max_side: int = 1024) -> list[tuple[np.ndarray, list]]:
    """``[(probs, painted)]`` for every annotated plane: the kept model's class probabilities
    ``(K, h, w)`` of its central crop of at most ``max_side`` (in the pixels the network sees)
    and ``painted``, a list of ``(codes, base answer or None)`` of the samples painted on it
    (a held-out sample shares its plane, and name, with a training one: predicted once)."""
    model = _kept_model(trainer, state)
    was_training = model.training
    model.eval()
    base_aux = getattr(trainer, "base_aux", None) or {}
    planes: dict = {}
    net = inference_copy(model)  # folded once for every plane
    try:
        for smp in list(trainer.train) + list(trainer.val):
            h, w = smp.image.shape[-2:]
            y0, x0 = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
            region = (y0, min(h, y0 + max_side), x0, min(w, x0 + max_side))
            key = (smp.name, smp.image.shape)
            if key not in planes:
                planes[key] = (predict_probs(net, smp.image, region, trainer.precision), [])
            crop = (slice(region[0], region[1]), slice(region[2], region[3]))
            aux = base_aux.get(id(smp))
            planes[key][1].append((smp.full_codes()[crop], None if aux is None else aux[crop]))
    finally:
        if was_training:
            train_mode(model, trainer.cfg.freeze_norm)
    return list(planes.values())


def calibrate_threshold(trainer: Trainer, state: dict | None = None, max_side: int = 1024, planes=None) -> tuple[float, float, bool] | None:
    """``(threshold, cell fraction, applied)`` for the fine-tuned model on the user's
    annotated planes, or ``None`` when calibration is off. ``applied`` is false (and the
    threshold 0.5) when the calibrated threshold would misclassify the painted pixels: clearly
    more than at 0.5, or more than the base model did before training (a model stopped after
    a few steps must not disagree with the user's strokes more than the one it started from).

    Balanced strokes teach the model that half of all pixels are cells (the painted share
    says nothing about the image's); EM (:func:`.postprocess.prior_shift_threshold`) on
    every pixel of the annotated planes (central crops of at most ``max_side``) estimates
    the real share, and the cell threshold moves ``trainer.calibrate_strength`` of the way
    (in log-odds) to the one that matches it: the fine-tuned network is over-confident
    on pixels nobody painted, which makes EM overshoot (see the module docstring).
    ``state``: weights to use (default the best so far, else the current ones); ``planes``:
    :func:`annotated_probs` of them, when already computed.
    """
    if not getattr(trainer, "calibrate", False):
        return None
    if planes is None:
        planes = annotated_probs(trainer, state, max_side)
    painted, base = [], []  # base: (model's probability, base model's answer, truth) where the base answered
    for probs, samples in planes:
        p_cell = 1.0 - probs[0]
        for codes, aux in samples:
            here = codes > 0
            painted.append((p_cell[here], codes[here] != BACKGROUND))
            if aux is not None:
                base.append((painted[-1][0], aux[here] != BACKGROUND, painted[-1][1]))
    th, frac = prior_shift_threshold(np.concatenate([(1.0 - probs[0]).ravel() for probs, _ in planes]), trainer.train_prior,
                                     strength=float(getattr(trainer, "calibrate_strength", 1.0)))
    # A model stopped after a few steps can be far from calibrated, and the estimate with
    # it: keep the new threshold unless it gets the painted pixels clearly wrong (moving the
    # threshold to the image's prior costs some stroke pixels near the decision boundary).
    p_cell = np.concatenate([p for p, _ in painted])
    is_cell = np.concatenate([c for _, c in painted])
    if _balanced_accuracy(p_cell > th, is_cell) < _balanced_accuracy(p_cell > 0.5, is_cell) - 0.1:
        return 0.5, frac, False
    if base:
        p, was, truth = (np.concatenate(x) for x in zip(*base))
        if _balanced_accuracy(p > th, truth) < _balanced_accuracy(was, truth):
            return 0.5, frac, False
    return th, frac, True


def split_ratio(planes, meta: dict) -> float | None:
    """How many times as many cells the seeds of ``meta`` (a model's metadata) find on
    ``planes`` (see :func:`annotated_probs`) as one seed per connected interior region
    (``p_interior > 0.5``, no split) does; ``None`` when ``meta`` does not split seed regions
    or nothing is found. Measured in the model's own pixels."""
    from .postprocess import Postprocess, one_seed_per_region

    post = Postprocess.for_model(meta, meta.get("diameter"), 1.0, fill_holes=True)
    single = one_seed_per_region(post)
    if single is None:
        return None
    split = whole = 0
    for probs, _ in planes:
        split += int(post(probs)[1].max())
        whole += int(single(probs)[1].max())
    return split / whole if whole else None


def seed_settings(planes, meta: dict) -> dict:
    """Seed metadata for a fine-tuned model whose base's settings (``meta``, the base model's
    metadata updated by the calibration) split the cells of the annotated ``planes`` at
    their texture: :func:`split_ratio` above :data:`SPLIT_RATIO`. Then one seed per
    connected interior region, as for a 3-class U-Net without a shape prior; else ``{}``
    (the base's seeds are kept)."""
    ratio = split_ratio(planes, meta)
    if ratio is None or ratio <= SPLIT_RATIO:
        return {}
    return {**ONE_SEED_PER_REGION,
            "seeds": {"split_ratio": round(ratio, 2), "limit": SPLIT_RATIO, "kept": "one per interior region"}}


def finetuned_settings(trainer: Trainer, state: dict | None = None, max_side: int = 1024, base_meta: dict | None = None) -> dict:
    """The post-processing metadata a fine-tuned model is saved with: ``threshold`` (when
    the calibration is applied) and ``calibration`` (see :func:`calibrate_threshold`), for
    ``state`` (default the kept weights); with ``base_meta`` (the base model's metadata) also
    the seeds of :func:`seed_settings`. Empty when calibration is off and no seeds change."""
    planes = annotated_probs(trainer, state, max_side)
    out: dict = {}
    cal = calibrate_threshold(trainer, state, max_side, planes)
    if cal is not None:
        th, frac, applied = cal
        if applied:
            out["threshold"] = round(th, 4)
        out["calibration"] = {"cell_fraction": round(frac, 4), "train_prior": round(float(trainer.train_prior), 4), "applied": applied,
                              "strength": float(getattr(trainer, "calibrate_strength", 1.0))}
    if base_meta is not None:
        out.update(seed_settings(planes, {**base_meta, **out}))
    return out


def _balanced_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean of the recalls of the two classes (a class that is not painted counts as 1)."""
    rec = [float(np.mean(pred[truth == c] == c)) if np.any(truth == c) else 1.0 for c in (True, False)]
    return float(np.mean(rec))


def describe_calibration(meta: dict) -> str:
    """One phrase on a saved model's calibrated cell threshold ("" when there is none)."""
    cal = meta.get("calibration")
    if not cal:
        return ""
    th = float(meta.get("threshold", 0.5))
    if not cal.get("applied", True):
        return (f"cell threshold kept at {th:.2f}: the one for the {100 * float(cal['cell_fraction']):.0f} % "
                "cells estimated in your images misclassified your strokes (train longer)")
    towards = "for" if float(cal.get("strength", 1.0)) >= 1.0 else "moved towards the one for"
    return f"cell threshold {th:.2f} ({towards} the {100 * float(cal['cell_fraction']):.0f} % cells estimated in your images)"


def describe_seeds(meta: dict) -> str:
    """One phrase on a saved model's seeds when :func:`seed_settings` changed them ("" otherwise)."""
    seeds = meta.get("seeds")
    if not seeds:
        return ""
    return (f"one seed per connected interior region: the base model's seeds found {float(seeds['split_ratio']):.1f}x "
            f"as many cells in your images (more than {float(seeds['limit']):g}x: cells cut at their texture)")


def save_finetuned(
    trainer: Trainer,
    path_or_name: str | os.PathLike,
    info: FinetuneInfo,
    *,
    name: str | None = None,
    description: str | None = None,
    overwrite: bool = False,
    extra: dict | None = None,
) -> Path:
    """Write the fine-tuned model (best weights) as a model file; return its path.

    ``path_or_name``: a file path (``.pt`` added if missing) or a model name, saved into
    the user's model folder (:func:`~.models.user_dir`) where the Segment widget lists it.
    The metadata records the base model, its object diameter, normalisation and
    post-processing settings, how the annotations were read, the training time and the
    validation scores. The file is written atomically.
    """
    dest, default_name = _destination(path_or_name, overwrite)
    name = name or default_name
    model = _kept_model(trainer)
    base = info.base_meta
    h = trainer.history
    seconds = h[-1].elapsed if h else 0.0
    meta = {
        "name": name,
        "description": description
        if description is not None
        else f"Fine-tuned from {info.base_name} on {info.reading}",
        "diameter": base.get("diameter"),
        "normalization": list(info.percentiles),
        "classes": base.get("classes", ["background", "interior", "boundary"]),
        "base": {"name": info.base_name, "description": base.get("description", "")},
        "finetune": {
            "annotation_kinds": list(info.kinds),
            "reading": info.reading,
            "labeled_pixels": dict(info.labeled),
            "held_out_validation": info.held_out,
            "steps": trainer.step,
            "seconds": round(float(seconds), 1),
            "val_score": trainer.best_score,
            "base_val_score": trainer.base_score,
            "score": "mean IoU of cell / not cell on held-out annotated pixels",
            "created": datetime.datetime.now().isoformat(timespec="seconds"),
            "config": {
                **{k: getattr(trainer.cfg, k) for k in ("patch", "batch", "lr", "weight_decay", "warmup", "freeze_norm", "loss", "seed", "ema", "keep_within")},
                "class_balance": getattr(trainer, "class_weights", None) is not None,
                "prior_weight": float(getattr(trainer, "aux_weight", 0.0) if getattr(trainer, "base_aux", None) else 0.0),
                "fill_holes": float(getattr(trainer, "fill_holes", 0.0)),
            },
        },
    }
    for k in (*POSTPROCESS_KEYS, "image_diameter"):
        if k in base:
            meta[k] = base[k]
    kept_base = trainer.best_score is not None and trainer.base_score is not None and trainer.best_score <= trainer.base_score
    if kept_base:
        # training did not beat the base model: its weights are saved, and its settings stay too
        # (the kept weights may be later ones that merely tied it on the held-out strokes)
        model = copy.deepcopy(model)
        model.load_state_dict(info.base_state)
    else:
        meta.update(finetuned_settings(trainer, base_meta=base))
    if extra:
        meta.update(extra)
    return save_model(dest, model, meta)


def revert_to_base(trainer: Trainer, info: FinetuneInfo) -> None:
    """Put the base weights back into ``trainer`` (revert): the model and the best state."""
    trainer.model.load_state_dict(info.base_state)
    trainer.eval_model().load_state_dict(info.base_state)  # the moving average too, if any
    trainer.best_state = {k: v.clone() for k, v in info.base_state.items()}
    trainer.best_score = trainer.top_score = trainer.base_score
