"""Fine-tuning a model on a user's painted annotations: the code the widget and the CLI share.

:func:`make_finetuner` turns image / annotation pairs (the widget's convention: ``0``
unlabeled, ``1`` cell, ``2`` not cell; ids above 2 mean instance annotation) into a
:class:`~.training.Trainer` started from a base model, with settings chosen for an
interactive loop on a laptop CPU. :class:`FinetuneSession` runs it as a generator that
yields :class:`~.training.Progress` and, every few seconds, a :class:`Preview` (the current
weights' segmentation of a region the caller asks for). :func:`save_finetuned` writes the
result as an ordinary model file (``segment --model FILE`` reads it).

The settings (:data:`FINETUNE_DEFAULTS`) were chosen on ``isbi2012/val`` with
``benchmarks/finetune.py`` (simulated strokes on a modality the shipped model never saw):

- small patches (128 px, batch 4) drawn around the strokes, so a step takes ~0.1 s on one
  core and the first preview comes within seconds; lr 1e-3 (3e-4 was clearly worse, 2e-3
  worse with the final settings); batch-norm statistics stay the base model's
  (``freeze_norm``): batches of four stroke-centred patches moved them so far in the first
  steps that the whole image turned membrane (seed 0: pixel IoU 0.46-0.50 after 10 s, below
  the base model), while frozen they give 0.82-0.84 after 10 s on three stroke draws and
  both ``isbi2012`` splits, and within 0.01 of the adapted statistics after 60 s
  (0.842-0.862 against 0.849-0.864; one training thread on a 2-core AVX-512 BF16 CPU);
- the loss weighs cell and not-cell strokes equally, however much of each is painted;
- unlabeled pixels are pulled, weakly, towards the base model's answer (without it the
  model drifted to calling most of the EM cytoplasm background), and every few seconds
  background "holes" that the current model leaves inside cells (organelles, texture)
  become cell targets (self-training with the no-holes shape prior); with both, the pixel
  error on the three ``isbi2012/val`` images without strokes went from ~0.19 to ~0.165
  after 600 steps (without the prior, to ~0.3);
- balanced strokes teach the model that half the pixels are cells, whatever the image
  holds; the cell threshold is then re-estimated for the image's own cell fraction (EM
  prior shift, :func:`calibrate_threshold`) when the model is saved, unless that
  threshold would misclassify the painted pixels: membranes in EM came out too thick
  before (pixel IoU after 60 s 0.836 -> 0.863 on ``isbi2012/val``). The fine-tuned
  network is over-confident on unpainted pixels, so EM overshoots the cell fraction
  (80-89 % against 78.6 % in EM); half of the shift (in log-odds, ``calibrate_strength``)
  beat the full shift on ``isbi2012/val`` (60 s, stroke seeds 0-2: pixel IoU 0.862,
  0.861, 0.862 against 0.853, 0.860, 0.852, where the stroke check rejected the full
  shift for seed 0 and kept 0.5). Previews use the base model's threshold;
- batches of four small patches make the weights jump from step to step (pixel IoU on
  ``isbi2012/val`` swung between 0.51 and 0.84 within the first 15 s), and a held-out score
  on a few strokes then picked an unlucky moment (one 60 s run kept 0.77, below the base
  model). Previews, validation and the kept weights are therefore a moving average of the
  weights (``ema``: decay 0.98, about 50 steps or 6 s, reached after a warm-up so short runs
  still move), and later averages replace the kept ones unless their held-out score is
  clearly (``keep_within``) below the top score: differences smaller than that are noise
  on a few strokes. 60 s runs with stroke seeds 0, 1, 2 then kept 0.861, 0.854, 0.857
  (before: 0.772, 0.859, 0.849).

Strokes on a few pixels say little about the pixels nobody painted; the validation score
(mean IoU of cell / not cell on held-out strokes) picks the checkpoint and is optimistic.
Runs are noisy (the same settings varied by ~0.02 in pixel error between runs).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from .augment import AugmentConfig
from .losses import BACKGROUND, BOUNDARY, CELL, INTERIOR
from .models import FINETUNE_BASE, LoadedModel, load_model
from .normalize import to_gray
from .postprocess import Postprocess
from .training import Sample, TrainConfig, Trainer, inference_copy, predict_probs, samples_from_annotations, train_mode

__all__ = [
    "FINETUNE_DEFAULTS",
    "FinetuneSettings",
    "FinetuneInfo",
    "Preview",
    "PreviewRequest",
    "FinetuneSession",
    "calibrate_threshold",
    "finetuned_settings",
    "describe_calibration",
    "describe_seeds",
    "finetune_config",
    "make_finetuner",
    "save_finetuned",
    "describe_reading",
    "predict_region",
    "labeled_miou",
    "default_threads",
    "revert_to_base",
]

@dataclass(frozen=True)
class FinetuneSettings:
    """Fine-tuning settings (see the module docstring for how they were chosen): the
    trainer's (:class:`~.training.TrainConfig` fields) and the recipe's own (from
    ``class_balance`` on)."""

    patch: int = 128
    batch: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 10
    val_every: int = 10**9  # validate by time, not by steps
    val_every_s: float = 3.0
    freeze_norm: bool = True  # batch norm keeps the base model's statistics (see the module docstring)
    ema: float = 0.98  # previews, validation and the kept weights: a moving average of the weights (~6 s)
    keep_within: float = 0.05  # later weights are kept unless their held-out score is 0.05 below the top one
    loss: str = "boundary"
    # channels-last memory on a CPU: a step (batch 4 x 128 px, one thread, bfloat16) 140 -> 110 ms
    channels_last: bool = True
    # ---- the recipe's own --------------------------------------------------------------------
    class_balance: bool = True  # weight cell and not-cell strokes equally, however much of each is painted
    prior_weight: float = 0.5  # unlabeled pixels keep the base model's answer, with this weight relative to the strokes
    fill_holes: float = 0.02  # self-training: background holes inside cells up to this fraction of the plane become cell
    refresh_s: float = 3.0  # seconds between self-training updates
    calibrate: bool = True  # cell threshold from the images' own cell fraction (EM prior shift), not the strokes'
    calibrate_strength: float = 0.5  # the share of that shift applied, in log-odds (1: all of it)

    def train_options(self) -> dict:
        """The :class:`~.training.TrainConfig` fields among the settings."""
        return {k: v for k, v in asdict(self).items() if k not in _EXTRA_KEYS}


#: The settings' fields that are the recipe's own, not the trainer's.
_EXTRA_KEYS = ("class_balance", "prior_weight", "fill_holes", "refresh_s", "calibrate", "calibrate_strength")
#: The fine-tuning defaults.
FINETUNE_DEFAULTS = FinetuneSettings()

#: Steps cap when no time budget is given (training then runs until stopped).
_OPEN_ENDED_STEPS = 10**9

_READINGS = {
    "sparse": "sparse strokes (0 = unlabeled, ignored)",
    "dense": "dense labels (every pixel 1 = cell or 2 = not cell)",
    "instances": "instance annotation (ids > 2: one id per cell, 0 = background)",
}


def default_threads() -> int:
    """Torch threads for training next to a GUI: all cores but one (at least one)."""
    return max(1, (os.cpu_count() or 2) - 1)


def describe_reading(kinds: Sequence[str]) -> str:
    """A sentence on how the annotation was read, from the per-plane kinds."""
    uniq = [k for k in ("sparse", "dense", "instances") if k in kinds]
    if not uniq:
        return "empty"
    parts = [_READINGS[k] for k in uniq]
    n = len(kinds)
    planes = f" on {n} annotated plane{'s' if n != 1 else ''}"
    if len(uniq) == 1:
        return parts[0] + planes
    return "mixed: " + "; ".join(parts) + planes


def finetune_config(time_budget: float | None = None, seed: int = 0, **overrides) -> TrainConfig:
    """The :class:`TrainConfig` used for fine-tuning, with ``overrides`` applied."""
    opts = FINETUNE_DEFAULTS.train_options()
    opts.update({k: v for k, v in overrides.items() if k not in _EXTRA_KEYS})
    if time_budget is not None:
        if not time_budget > 0:
            raise ValueError(f"the time budget must be positive, got {time_budget}")
    opts.setdefault("steps", _OPEN_ENDED_STEPS)
    if "augment" not in opts:
        opts["augment"] = AugmentConfig()
    return TrainConfig(time_budget=time_budget, seed=seed, **opts)


@dataclass
class FinetuneInfo:
    """What a fine-tuning run started from and how the annotations were read."""

    base_name: str
    base_meta: dict
    base_state: dict  # the base weights, for "revert to base"
    kinds: list[str]
    reading: str
    n_train: int
    n_val: int
    held_out: bool  # validation strokes held out (False: validated on the training strokes)
    labeled: dict  # {"cell": pixels, "not cell": pixels}
    percentiles: tuple[float, float]
    base_path: str | None = None
    scale: float = 1.0  # model pixels per image pixel (the base model's object-size rescaling)
    started: float = field(default_factory=time.time)

    def postprocess(self, **meta) -> Postprocess:
        """The post-processing Segment runs (in image pixels) for a model with the base
        model's metadata, updated by ``meta`` (e.g. :func:`finetuned_settings`)."""
        meta = {**self.base_meta, **meta}
        return Postprocess.for_model(meta, meta.get("image_diameter") or meta.get("diameter"), self.scale)


class FinetuneTrainer(Trainer):
    """A :class:`Trainer` for sparse annotation: class-balanced strokes, a prior and self-training.

    ``class_weights``: a weight per target code (see :mod:`.losses`), so that the few
    painted pixels of one class count as much as the many of the other.

    ``aux`` (``{id(sample): codes}``) and ``aux_weight``: extra targets (background or
    cell) for the unlabeled pixels of sparsely annotated images, trained with a total
    weight of ``aux_weight`` times the strokes' weight in each batch; the strokes always
    win where they are. They start as the base model's own answer (as in "learning
    without forgetting": fine-tuning changes the model where the strokes demand it), and
    with ``fill_holes`` > 0 are refreshed every ``refresh_s`` seconds from the model being
    trained: background regions enclosed by cell and smaller than ``fill_holes`` times the
    plane's area (organelles, texture) become cell, as cells have no holes, unless a
    not-cell stroke lies in them.
    """

    class_weights: np.ndarray | None = None
    aux: dict | None = None
    aux_weight: float = 0.0
    base_aux: dict | None = None
    fill_holes: float = 0.0
    refresh_s: float = 3.0
    calibrate: bool = False  # the saved model's cell threshold from the images' cell fraction
    calibrate_strength: float = 1.0  # the share of the prior shift applied (log-odds)
    train_prior: float = 0.5  # the cell prior the loss teaches (see calibrate_threshold)
    _last_refresh: float | None = None

    def _batch(self, rng):
        cfg = self.cfg
        self._maybe_refresh()
        if not (self.aux and self.aux_weight > 0) or cfg.loss != "boundary":
            x, y, w = super()._batch(rng)
            if self.class_weights is not None:
                cw = torch.from_numpy(self.class_weights)[y]
                w = cw if w is None else w * cw
            return x, y, w
        from .augment import augment_intensity, sample_patch
        from .losses import targets_from_instances
        from .tiling import valid_patch

        size, out = valid_patch(self.model, cfg.patch)  # (an unpadded network: centre targets)
        c = slice((size - out) // 2, (size - out) // 2 + out)

        imgs, tgts, wts = [], [], []
        cw = self.class_weights if self.class_weights is not None else np.array([0, 1, 1, 1, 1], np.float32)
        if getattr(self, "_p", None) is None:  # images are drawn in proportion to their area, as Trainer does
            area = np.array([s.image.shape[-1] * s.image.shape[-2] for s in self.train], float)
            self._p = area / area.sum()
        for _ in range(cfg.batch):
            s = self.train[rng.choice(len(self.train), p=self._p)]
            aux = self.aux.get(id(s))
            if s.instances is not None:
                img, inst = sample_patch(s.image, s.instances, size, rng, cfg.augment)
                tgt = targets_from_instances(inst)
                w = cw[tgt]
            elif aux is None:
                img, tgt = sample_patch(s.image, s.codes, size, rng, cfg.augment, s.labeled_indices())
                w = cw[tgt]
            else:
                # one geometric transform for strokes and extra targets: codes < 8, extra codes x 8
                both = (s.codes + 8 * aux).astype(np.uint8)
                img, comb = sample_patch(s.image, both, size, rng, cfg.augment, s.labeled_indices())
                tgt, extra = comb % 8, comb // 8
                w = cw[tgt]
                free = (tgt == 0) & (extra > 0)
                n_free = int(np.count_nonzero(free))
                if n_free:
                    tgt = np.where(free, extra, tgt)
                    w[free] = self.aux_weight * max(float(w.sum()), 1.0) / n_free
            imgs.append(augment_intensity(img, rng, cfg.augment))
            tgts.append(tgt[c, c])
            wts.append(w[c, c].astype(np.float32))
        x = torch.from_numpy(np.stack(imgs))
        y = torch.from_numpy(np.stack(tgts).astype(np.int64))
        return x, y, torch.from_numpy(np.stack(wts))

    def _maybe_refresh(self):
        if self.fill_holes <= 0:
            return
        now = time.perf_counter()
        if self._last_refresh is None:
            self._last_refresh = now  # the first update after refresh_s of training
            return
        if now - self._last_refresh < self.refresh_s:
            return
        model = self.eval_model()
        was_training = model.training
        model.eval()
        try:
            new = {}
            net = inference_copy(model)  # folded once for every sample
            for s in self.train:
                if s.codes is None or s.instances is not None or not (s.codes == 0).any() or not s.codes.any():
                    continue
                # only around the strokes (cost bounded by what was painted, not the image size)
                H, W = s.codes.shape
                y0, y1, x0, x1 = _labeled_box(s.codes)
                y0, y1, x0, x1 = max(0, y0 - 64), min(H, y1 + 64), max(0, x0 - 64), min(W, x1 + 64)
                with torch.inference_mode():
                    cell = predict_probs(net, s.image, (y0, y1, x0, x1))[0] < 0.5
                holes = _holes(cell, s.codes[y0:y1, x0:x1], self.fill_holes * H * W)
                base = self.base_aux.get(id(s)) if self.base_aux else None
                aux = base.copy() if base is not None else np.zeros(s.codes.shape, np.uint8)
                aux[y0:y1, x0:x1][holes] = CELL
                new[id(s)] = aux
            self.aux = new
            if self.aux_weight <= 0:
                self.aux_weight = 0.5
        finally:
            if was_training:
                train_mode(model, self.cfg.freeze_norm)
        self._last_refresh = time.perf_counter()


def _holes(cell: np.ndarray, codes: np.ndarray, max_area: float) -> np.ndarray:
    """Background regions enclosed by cell (not touching the border), small, without a not-cell stroke."""
    from scipy import ndimage as ndi

    bg, n = ndi.label(~cell)
    if n == 0:
        return np.zeros(cell.shape, bool)
    sizes = np.bincount(bg.ravel(), minlength=n + 1)
    keep = sizes <= max_area
    keep[0] = False
    border = np.unique(np.concatenate([bg[0], bg[-1], bg[:, 0], bg[:, -1]]))
    keep[border] = False
    keep[np.unique(bg[codes == BACKGROUND])] = False
    return keep[bg]


def _base_priors(model, samples, precision: str = "auto") -> dict:
    """The base model's background / cell codes for every pixel of each sparse sample."""
    out = {}
    model.eval()
    net = inference_copy(model)  # folded once for every sample
    for s in samples:
        if s.codes is None or s.instances is not None or not (s.codes == 0).any():
            continue
        probs = predict_probs(net, s.image, precision=precision)
        out[id(s)] = np.where(probs[0] >= 0.5, BACKGROUND, CELL).astype(np.uint8)
    return out


def _balance_weights(cell: int, bg: int) -> np.ndarray:
    """Per-code weights that give the cell and the not-cell pixels equal total weight."""
    total = cell + bg
    wc, wb = total / (2.0 * cell), total / (2.0 * bg)
    # codes: 0 ignore, 1 background, 2 interior, 3 boundary, 4 cell
    return np.array([0.0, wb, wc, wc, wc], np.float32)


def _to_list(x) -> list:
    if isinstance(x, np.ndarray) or not isinstance(x, (list, tuple)):
        return [x]
    return list(x)


def _gray(img: np.ndarray, ann: np.ndarray, rgb: bool | None) -> np.ndarray:
    """``img`` without a colour axis when it has one that ``ann`` lacks."""
    if rgb is None:
        rgb = img.ndim == ann.ndim + 1 and img.shape[:-1] == ann.shape and img.shape[-1] in (3, 4)
    if rgb:
        if img.shape[-1] not in (3, 4):
            raise ValueError(f"an RGB image needs 3 or 4 colour channels last, got shape {img.shape}")
        return to_gray(img)
    return img


def make_finetuner(
    images,
    annotations,
    base: str | os.PathLike | LoadedModel | None = None,
    time_budget: float | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.2,
    rgb: bool | Sequence[bool | None] | None = None,
    device: str | None = None,
    score_fn=None,
    **overrides,
) -> tuple[Trainer, FinetuneInfo]:
    """A :class:`Trainer` that fine-tunes ``base`` on image / annotation pairs.

    ``images`` and ``annotations``: an array each or equal-length lists of arrays (2D,
    or stacks of which the annotated planes are used; RGB images are averaged to gray).
    ``base``: a model name, a ``.pt`` file or a :class:`LoadedModel` (copied, never
    modified); default the default shipped model. ``time_budget``: seconds of training
    (``None``: until :meth:`Trainer.stop`). ``overrides``: :class:`TrainConfig` fields.

    Raises ``ValueError`` with a one-line message for unusable input (no annotation, a
    single painted class, shapes that differ, mismatched list lengths).
    """
    images = _to_list(images)
    annotations = _to_list(annotations)
    if len(images) != len(annotations):
        raise ValueError(f"{len(images)} images but {len(annotations)} annotations: give one annotation per image")
    if not images:
        raise ValueError("no images to fine-tune on")
    rgbs = list(rgb) if isinstance(rgb, (list, tuple)) else [rgb] * len(images)
    imgs, anns = [], []
    for i, (img, ann, r) in enumerate(zip(images, annotations, rgbs)):
        img, ann = np.asarray(img), np.asarray(ann)
        if ann.dtype.kind not in "biu":
            if ann.dtype.kind == "f" and np.all(np.mod(ann, 1) == 0):
                ann = ann.astype(np.int64)
            else:
                raise ValueError(f"annotation {i + 1} must hold integer labels, got dtype {ann.dtype}")
        if ann.size and ann.min() < 0:
            raise ValueError(f"annotation {i + 1} has negative labels; use 0 = unlabeled, 1 = cell, 2 = not cell")
        img = _gray(img, ann, r)
        if img.shape != ann.shape:
            raise ValueError(f"annotation {i + 1} has shape {ann.shape} but its image has shape {img.shape}")
        if img.ndim < 2:
            raise ValueError(f"image {i + 1} needs at least 2 dimensions, got shape {img.shape}")
        imgs.append(img)
        anns.append(ann)

    if isinstance(base, LoadedModel):
        loaded = LoadedModel(copy.deepcopy(base.model), dict(base.meta), base.path)
    else:
        loaded = load_model(FINETUNE_BASE if base is None else base)
    meta = dict(loaded.meta)
    pct = loaded.normalization
    scale = loaded.scale()  # a model trained on rescaled objects is fine-tuned at its scale
    train, val, kinds = samples_from_annotations(imgs, anns, pct, val_fraction, seed, scale=scale)
    held_out = not any(v is t for v in val for t in train)
    cell = bg = 0
    for s in train + (val if held_out else []):
        c = s.full_codes()
        cell += int(np.count_nonzero(np.isin(c, (CELL, INTERIOR, BOUNDARY))))
        bg += int(np.count_nonzero(c == BACKGROUND))
    cfg = finetune_config(time_budget, seed=seed, **overrides)
    model = loaded.model
    base_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trainer = FinetuneTrainer(model, train, val, cfg, score_fn=score_fn or labeled_miou, device=device)
    opt = replace(FINETUNE_DEFAULTS, **{k: v for k, v in overrides.items() if k in _EXTRA_KEYS})
    if opt.class_balance and cell and bg:
        trainer.class_weights = _balance_weights(cell, bg)
    if float(opt.prior_weight) > 0:
        with torch.inference_mode():
            trainer.base_aux = _base_priors(model.to(trainer.device), train)
        trainer.aux = dict(trainer.base_aux)
        trainer.known_base_score = _base_score_from_priors(trainer.base_aux, train, val) if score_fn is None else None
        trainer.aux_weight = float(opt.prior_weight)
    trainer.fill_holes = float(opt.fill_holes)
    trainer.refresh_s = float(opt.refresh_s)
    trainer.calibrate = bool(opt.calibrate)
    trainer.calibrate_strength = float(opt.calibrate_strength)
    if not 0.0 <= trainer.calibrate_strength <= 1.0:
        raise ValueError(f"calibrate_strength must lie between 0 and 1, got {trainer.calibrate_strength}")
    # the cell prior the loss teaches: even with balanced classes, else the strokes' own
    trainer.train_prior = 0.5 if trainer.class_weights is not None else cell / max(cell + bg, 1)
    info = FinetuneInfo(
        base_name=loaded.name,
        base_meta=meta,
        base_state=base_state,
        kinds=list(kinds),
        reading=describe_reading(kinds),
        n_train=len(train),
        n_val=len(val),
        held_out=held_out,
        labeled={"cell": cell, "not cell": bg},
        percentiles=pct,  # type: ignore[arg-type]
        base_path=str(loaded.path) if loaded.path else None,
        scale=scale,
    )
    return trainer, info


def _labeled_box(codes: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(codes)
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def _stroke_boxes(codes: np.ndarray, context: int) -> list[tuple[tuple[int, int, int, int], np.ndarray]]:
    """Boxes covering the labeled pixels of ``codes``, each with the mask of the labeled
    pixels it scores (box-shaped; together they count every labeled pixel once): one per
    stroke (connected labels) when they and their ``context`` cost fewer network pixels
    than the one box around all labels, else that box."""
    from scipy import ndimage as ndi

    whole = _labeled_box(codes)
    comp, _ = ndi.label(codes > 0, np.ones((3, 3), bool))
    boxes = [(a.start, a.stop, b.start, b.stop) for a, b in ndi.find_objects(comp)]

    def cost(box):
        return (box[1] - box[0] + 2 * context) * (box[3] - box[2] + 2 * context)

    if sum(map(cost, boxes)) < cost(whole):  # a box may reach into a neighbour's: its own stroke only
        return [(b, comp[b[0] : b[1], b[2] : b[3]] == i) for i, b in enumerate(boxes, start=1)]
    return [(whole, codes[whole[0] : whole[1], whole[2] : whole[3]] > 0)]


def labeled_miou(model, samples: Sequence[Sample]) -> float:
    """Mean of the cell and the not-cell pixel IoU over the labeled pixels of ``samples``.

    Only the strokes are predicted, each with its full context (or the bounding box of
    all the labels, when that is cheaper), so validating on a few strokes in an image
    stays cheap: the held-out strokes of two 512 px EM images cost about a third of the
    pixels of their bounding boxes. Unlike the cell IoU alone, this score drops when a
    model calls everything a cell.
    """
    inter = np.zeros(2)
    union = np.zeros(2)
    context = max(model.receptive_radius(), model.shrink())
    model = inference_copy(model)  # once for every stroke
    for s in samples:
        codes = s.full_codes()
        if not codes.any():
            continue
        for (y0, y1, x0, x1), lab in _stroke_boxes(codes, context):
            probs = predict_probs(model, s.image, (y0, y1, x0, x1))
            _count_iou(inter, union, probs[0] < 0.5, codes[y0:y1, x0:x1], lab)
    return _mean_iou(inter, union)


def _count_iou(inter: np.ndarray, union: np.ndarray, pred: np.ndarray, codes: np.ndarray, lab: np.ndarray) -> None:
    """Add the cell and the not-cell intersections and unions of ``pred`` (cell) against
    the target ``codes``, over the pixels ``lab``, to ``inter`` and ``union``."""
    truth = np.isin(codes, (INTERIOR, BOUNDARY, CELL))
    for k, (p, t) in enumerate(((pred, truth), (~pred, ~truth))):
        inter[k] += np.count_nonzero(p & t & lab)
        union[k] += np.count_nonzero((p | t) & lab)


def _mean_iou(inter: np.ndarray, union: np.ndarray) -> float:
    ious = [i / u for i, u in zip(inter, union) if u > 0]
    return float(np.mean(ious)) if ious else 0.0


def _base_score_from_priors(priors: dict, train: Sequence[Sample], val: Sequence[Sample]) -> float | None:
    """:func:`labeled_miou` of the base model on ``val``, read from its whole-image answers
    ``priors`` (:func:`_base_priors`, keyed by training sample; a held-out sample shares
    its plane with the training sample of the same name), or ``None`` when a plane has
    none. Whole-image and region predictions agree (regions start on the pooling grid),
    so this saves the first validation's network passes before training starts."""
    answer = {s.name: priors.get(id(s)) for s in train}
    inter = np.zeros(2)
    union = np.zeros(2)
    for s in val:
        pred = answer.get(s.name)
        if pred is None:
            return None
        codes = s.full_codes()
        _count_iou(inter, union, pred == CELL, codes, codes > 0)
    return _mean_iou(inter, union)


# the session and saving live in their own modules; their names stay importable from here
from .finetune_save import (  # noqa: E402
    calibrate_threshold,
    describe_calibration,
    describe_seeds,
    finetuned_settings,
    revert_to_base,
    save_finetuned,
)
from .finetune_session import FinetuneSession, Preview, PreviewRequest, predict_region  # noqa: E402
