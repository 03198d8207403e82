"""Training and fine-tuning as a generator that yields progress.

``Trainer.run()`` is a generator: each ``next()`` does some optimisation steps and yields a
:class:`Progress`; the caller (CLI loop, Qt worker, test) decides when to stop, and
``Trainer.stop()`` ends it early from another thread. The best weights by validation score
are kept and restored at the end (``Trainer.best_state``).

The same code trains the shipped models on dense instance labels and fine-tunes them on a
user's sparse strokes: every sample becomes per-pixel target codes (see :mod:`.losses`).
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .augment import AugmentConfig, augment_intensity, sample_patch
from .data import rescale_pair
from .inference import resolve_precision
from .losses import (
    BACKGROUND,
    BOUNDARY,
    CELL,
    INTERIOR,
    annotation_kind,
    border_weight_map,
    distance_loss,
    distance_targets,
    masked_cross_entropy,
    targets_from_annotation,
    targets_from_instances,
)
from .model import UNet
from .normalize import normalize
from .tiling import valid_patch

__all__ = ["Sample", "TrainConfig", "Progress", "Trainer", "samples_from_annotations", "split_strokes"]


@dataclass
class Sample:
    """One training image: normalised ``(C, H, W)`` float32 and either instance labels or codes."""

    image: np.ndarray
    instances: np.ndarray | None = None  # int32, 0 = background
    codes: np.ndarray | None = None  # uint8 target codes (losses module)
    name: str = ""
    group: str = ""  # the data set it comes from (``TrainConfig.balance``)

    def __post_init__(self):
        if self.image.ndim == 2:
            self.image = self.image[None]
        ref = self.instances if self.instances is not None else self.codes
        if ref is None:
            raise ValueError("a sample needs instance labels or target codes")
        if ref.shape != self.image.shape[-2:]:
            raise ValueError(
                f"annotation shape {ref.shape} does not match image shape {self.image.shape[-2:]}"
            )
        self._labeled = None

    def labeled_indices(self) -> np.ndarray | None:
        """Flat indices of labeled pixels, for sparse codes only (patch centres go there)."""
        if self.codes is None:
            return None
        if self._labeled is None:
            self._labeled = np.flatnonzero(self.codes)
        return self._labeled

    def full_codes(self) -> np.ndarray:
        return self.codes if self.codes is not None else targets_from_instances(self.instances)


#: With ``val_every_s``, validation takes at most about this share of a run's time: on a
#: slow CPU the held-out score is computed less often than asked (fine-tuning ``nuclei`` on
#: two 512 px EM images, a 2-core AVX2 CPU: a validation took 0.8-1.0 s, every 3 s).
MAX_VAL_SHARE = 0.15


@dataclass
class TrainConfig:
    patch: int = 256
    batch: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    steps: int = 2000  # upper bound; time_budget may end sooner
    time_budget: float | None = None  # seconds
    warmup: int = 50
    val_every: int = 100  # steps between validations
    val_every_s: float | None = None  # or seconds between validations (whichever first)
    seed: int = 0
    loss: str = "boundary"  # "boundary" (3-class), "weightmap" (+ paper's border weights) or "distance" (+ a distance head)
    precision: str = "auto"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    freeze_norm: bool = False
    ema: float = 0.0  # > 0: validate, preview and keep an exponential moving average of the weights (decay per step)
    keep_within: float = 0.0  # later weights replace the kept ones when their score is within this of the top score
    balance: bool = False  # every group of samples (data set) drawn equally often, whatever its size
    channels_last: bool = False  # on a CPU, train in channels-last memory (oneDNN's fast path; fine-tuning sets it)


@dataclass
class Progress:
    step: int
    total: int
    loss: float
    elapsed: float
    val_score: float | None = None
    best_score: float | None = None
    improved: bool = False
    message: str = ""


class Trainer:
    """Optimise ``model`` on ``train`` samples, keep the best weights by score on ``val``.

    ``score_fn(model, samples) -> float`` evaluates; by default the pixel IoU of the cell
    class on labeled pixels (works for sparse strokes and dense labels alike).
    """

    def __init__(self, model: UNet, train: Sequence[Sample], val: Sequence[Sample] = (), config: TrainConfig | None = None, score_fn=None, device: str | None = None):
        if not train:
            raise ValueError("nothing to train on: no annotated images")
        self.model = model
        self.train = list(train)
        self.val = list(val)
        self.cfg = config or TrainConfig()
        self.score_fn = score_fn or labeled_iou
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.cfg.precision == "int8":
            raise ValueError("int8 is for segmentation only: train in 'auto', 'bf16' or 'fp32'")
        self.precision = resolve_precision(self.cfg.precision, self.device)
        self._stop = threading.Event()
        self.best_state: dict | None = None
        self.best_score: float | None = None  # the kept weights' score
        self.top_score: float | None = None  # the highest score seen
        self.history: list[Progress] = []
        # the starting weights' score when the caller already knows it (fine-tuning computes
        # it from the whole-image predictions it makes anyway); else the first thing run() does
        self.known_base_score: float | None = None
        self.step = 0
        self._opt = None
        self._opt_state = None
        self._weights = None
        self._ema = None
        self._ema_resume: dict | None = None  # a resumed run's average (see checkpoint)
        if not 0.0 <= self.cfg.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.cfg.ema}")
        if self.cfg.loss not in ("boundary", "weightmap", "distance"):
            raise ValueError(f"loss must be 'boundary', 'weightmap' or 'distance', got {self.cfg.loss!r}")
        if (self.cfg.loss == "distance") != (model.config.regression == 1):
            raise ValueError("the 'distance' loss needs a model with one regression output (a distance head), and only it")

    def eval_model(self) -> UNet:
        """The weights to validate, preview and keep: the moving average with ``ema`` > 0
        (Polyak averaging: steadier than the last step's weights when batches are small and
        noisy, as in fine-tuning on a few strokes), else the model being trained."""
        return self._ema.module if self._ema is not None else self.model

    @property
    def base_score(self) -> float | None:
        """The starting weights' validation score (recorded as step 0), if any."""
        h = self.history
        return h[0].val_score if h and h[0].step == 0 else None

    def stop(self) -> None:
        """Ask the training loop to finish after the current step (thread-safe)."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    # ---- data ------------------------------------------------------------------------
    def _batch(self, rng: np.random.Generator):
        cfg = self.cfg
        if getattr(self, "_p", None) is None:  # images are drawn in proportion to their area
            area = np.array([s.image.shape[-1] * s.image.shape[-2] for s in self.train], float)
            if cfg.balance:  # ... within their group; each group equally often
                groups = [s.group for s in self.train]
                for g in set(groups):
                    idx = [i for i, h in enumerate(groups) if h == g]
                    area[idx] /= area[idx].sum()
            self._p = area / area.sum()
        # an unpadded network's output is the centre of its input: targets are cropped to it
        size, out = valid_patch(self.model, cfg.patch)
        c = slice((size - out) // 2, (size - out) // 2 + out)
        imgs, tgts, wts, dists = [], [], [], []
        for _ in range(cfg.batch):
            s = self.train[rng.choice(len(self.train), p=self._p)]
            if s.instances is not None:
                img, inst = sample_patch(s.image, s.instances, size, rng, cfg.augment)
                tgt = targets_from_instances(inst)
                if cfg.loss == "weightmap":
                    wts.append(border_weight_map(inst)[c, c])
                elif cfg.loss == "distance":
                    dists.append(distance_targets(inst)[c, c])
            else:
                img, tgt = sample_patch(s.image, s.codes, size, rng, cfg.augment, s.labeled_indices())
                if cfg.loss == "weightmap":
                    wts.append(np.ones((out, out), np.float32))
                elif cfg.loss == "distance":  # strokes: 0 on "not cell", unknown elsewhere
                    d = np.where(tgt == BACKGROUND, 0.0, np.nan).astype(np.float32)
                    dists.append(d[c, c])
            imgs.append(augment_intensity(img, rng, cfg.augment))
            tgts.append(tgt[c, c])
        x = torch.from_numpy(np.stack(imgs))
        y = torch.from_numpy(np.stack(tgts).astype(np.int64))
        w = torch.from_numpy(np.stack(wts)) if wts else None
        if dists:  # the distance head's targets
            return x, y, w, torch.from_numpy(np.stack(dists))
        return x, y, w

    # ---- loop ------------------------------------------------------------------------
    def run(self) -> Generator[Progress, None, list[Progress]]:
        cfg = self.cfg
        # a resumed run continues with a fresh but deterministic stream
        torch.manual_seed(cfg.seed + self.step)
        rng = np.random.default_rng(cfg.seed + self.step)
        model = self.model.to(self.device)
        channels_last = cfg.channels_last and self.device.type == "cpu"
        if channels_last:
            model.to(memory_format=torch.channels_last)
        train_mode(model, cfg.freeze_norm)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        if self._opt_state is not None:
            opt.load_state_dict(self._opt_state)
        self._opt = opt
        if cfg.ema > 0 and self._ema is None:
            from torch.optim.swa_utils import AveragedModel

            self._ema = AveragedModel(model, multi_avg_fn=_warm_ema(cfg.ema), use_buffers=True)
            self._ema.requires_grad_(False)
            self._ema.module.eval()
            self._ema.update_parameters(model)  # the average starts at the starting weights
            if self._ema_resume:  # ... or where a resumed run's average was
                self._ema.module.load_state_dict(self._ema_resume["state"])
                self._ema.n_averaged.fill_(int(self._ema_resume["n"]))
        total = cfg.steps

        def lr_at(step: int, frac_time: float) -> float:
            frac = max(step / max(total, 1), frac_time)
            warm = min(1.0, (step + 1) / max(cfg.warmup, 1))
            return cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))

        if self.val and self.best_score is None:
            known = self.known_base_score
            self.best_score = self.top_score = known if known is not None else self._score()
            self.best_state = copy.deepcopy(self.eval_model().state_dict())
            yield self._record(Progress(0, total, float("nan"), 0.0, self.best_score, self.best_score, True, "base model"))
        t0 = time.perf_counter()
        last_val = t0
        val_gap = 0.0  # timed validations: at least this long between two (MAX_VAL_SHARE)
        losses = []
        while self.step < total and not self.stopped:
            elapsed = time.perf_counter() - t0
            if cfg.time_budget is not None and elapsed >= cfg.time_budget:
                break
            frac_time = elapsed / cfg.time_budget if cfg.time_budget else 0.0
            for g in opt.param_groups:
                g["lr"] = lr_at(self.step, frac_time)
            batch = self._batch(rng)
            x, y, w = batch[:3]
            x, y = x.to(self.device), y.to(self.device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                logits = model(x)
            k = model.config.classes
            loss = masked_cross_entropy(logits[:, :k], y, None if w is None else w.to(self.device))
            if len(batch) > 3:  # a distance head beside the classes
                loss = loss + distance_loss(logits[:, k], batch[3].to(self.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if self._ema is not None:
                self._ema.update_parameters(model)
            self.step += 1
            losses.append(float(loss.detach()))
            now = time.perf_counter()
            due = self.step % cfg.val_every == 0 or (cfg.val_every_s is not None and now - last_val >= max(cfg.val_every_s, val_gap))
            end = self.step >= total or (cfg.time_budget is not None and now - t0 >= cfg.time_budget)
            p = Progress(self.step, total, float(np.mean(losses[-10:])), now - t0)
            if (due or end or self.stopped) and self.val:
                p.val_score = self._score()
                last_val = time.perf_counter()
                val_gap = (last_val - now) * (1 - MAX_VAL_SHARE) / MAX_VAL_SHARE
                train_mode(model, cfg.freeze_norm)
                # a small held-out set scores noisily: with keep_within, later (longer
                # trained) weights win unless their score is clearly below the top one
                top = self.top_score
                better = top is None or p.val_score > top
                base = self.base_score
                close = (cfg.keep_within > 0 and top is not None and p.val_score >= top - cfg.keep_within
                         and (base is None or p.val_score >= base))  # never below the starting weights
                if better or close:
                    self.top_score = p.val_score if better else top
                    self.best_score = p.val_score
                    self.best_state = copy.deepcopy(self.eval_model().state_dict())
                    p.improved = True
                p.best_score = self.best_score
            elif not self.val:
                self.best_state = None
            yield self._record(p)
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
        elif self._ema is not None:
            model.load_state_dict(self._ema.module.state_dict())
        model.eval()
        return self.history

    def checkpoint(self) -> dict:
        """Everything needed to resume: weights, optimiser, step, best weights and score."""
        return {
            "format": "napari-unet-checkpoint/1",
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self._opt.state_dict() if self._opt is not None else None,
            "best_state": self.best_state,
            "best_score": self.best_score,
            "top_score": self.top_score,
            "ema": None if self._ema is None else {"state": self._ema.module.state_dict(), "n": int(self._ema.n_averaged)},
        }

    def resume(self, ckpt: dict) -> None:
        """Continue from :meth:`checkpoint` output (e.g. read with ``weights_only=True``)."""
        if ckpt.get("format") != "napari-unet-checkpoint/1":
            raise ValueError("not a napari-unet training checkpoint")
        self.model.load_state_dict(ckpt["model"])
        self._opt_state = ckpt.get("optimizer")
        self.step = int(ckpt["step"])
        self.best_state = ckpt.get("best_state")
        self.best_score = ckpt.get("best_score")
        self.top_score = ckpt.get("top_score", self.best_score)
        self._ema_resume = ckpt.get("ema")

    def _record(self, p: Progress) -> Progress:
        self.history.append(p)
        return p

    def _score(self) -> float:
        model = self.eval_model()
        model.eval()
        with torch.inference_mode():
            return float(self.score_fn(model, self.val))


def _warm_ema(decay: float):
    """An exponential moving average whose decay grows to ``decay`` as ``(1 + n) / (10 + n)``
    after ``n`` updates (as TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``):
    the average follows the first steps closely, so short runs still move, and smooths later."""

    @torch.no_grad()
    def update(averaged, current, n) -> None:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        for a, c in zip(averaged, current):
            if a.is_floating_point():
                a.lerp_(c, 1.0 - d)
            else:  # integer buffers (batch-norm step counters): the current value
                a.copy_(c)

    return update


def train_mode(model: UNet, freeze_norm: bool = False) -> None:
    """Training mode; with ``freeze_norm`` batch-norm layers keep their running statistics."""
    model.train()
    if freeze_norm:
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()


def inference_copy(model: UNet) -> UNet:
    """``model`` for fast inference on the CPU: a copy with its batch norms folded, in
    channels_last (marked, so that :func:`predict_probs` uses it as it is; pass one to
    predict many regions with the same weights). Elsewhere ``model`` itself."""
    if getattr(model, "is_inference_copy", False) or next(model.parameters()).device.type != "cpu":
        return model
    from .model import fold_batchnorm

    net = fold_batchnorm(model).to(memory_format=torch.channels_last)
    net.is_inference_copy = True
    return net


def context_box(region: tuple[int, int, int, int], radius: int, shape: tuple[int, int], multiple: int = 1) -> tuple[int, int, int, int]:
    """``region = (y0, y1, x0, x1)`` grown by ``radius`` px of context on each side, clipped
    to ``shape``; its start rounded down to a multiple of ``multiple`` (the pooling grid of
    the whole image, where a crop's answer equals the whole image's)."""
    y0, y1, x0, x1 = region
    H, W = shape
    m = max(int(multiple), 1)
    return max(0, y0 - radius) // m * m, min(H, y1 + radius), max(0, x0 - radius) // m * m, min(W, x1 + radius)


def predict_probs(model: UNet, image: np.ndarray, region: tuple[int, int, int, int] | None = None, precision: str = "auto", tile: int = 512) -> np.ndarray:
    """Probabilities ``(C, h, w)`` of ``region = (y0, y1, x0, x1)`` of a normalised ``(C, H, W)`` image.

    The region is predicted with its real surroundings (the receptive radius) as context,
    from a crop that starts on the image's pooling grid, so the result equals that region
    of a whole-image prediction (an unaligned crop pools other windows: up to 0.22 apart
    in probability with ``nuclei`` on EM). ``model`` must be in eval mode. On the CPU a
    copy with its batch norms folded runs in channels_last (:func:`inference_copy`, as the
    Segmenter's; ``nuclei`` on a 512 px image, one thread: 0.46 -> 0.26 s): the
    fine-tuner's validation and live previews use this.
    """
    from .tiling import predict_image

    if image.ndim == 2:
        image = image[None]
    H, W = image.shape[-2:]
    y0, y1, x0, x1 = region if region is not None else (0, H, 0, W)
    r = max(model.receptive_radius(), model.shrink())
    Y0, Y1, X0, X1 = context_box((y0, y1, x0, x1), r, (H, W), model.multiple)  # on the pooling grid: the same answer
    crop = np.ascontiguousarray(image[:, Y0:Y1, X0:X1], dtype=np.float32)
    device = next(model.parameters()).device
    bf16 = resolve_precision(precision, device) == "bf16"
    cpu = device.type == "cpu"
    net = inference_copy(model)
    probs = predict_image(net, crop, tile=tile, margin=r, bf16=bf16, channels_last=cpu)
    return probs[:, y0 - Y0 : y1 - Y0, x0 - X0 : x1 - X0]


def labeled_iou(model: UNet, samples: Sequence[Sample]) -> float:
    """Pixel IoU of the cell class over labeled pixels of ``samples`` (pooled)."""
    inter = union = 0
    for s in samples:
        codes = s.full_codes()
        lab = codes > 0
        probs = predict_probs(model, s.image, precision="fp32", tile=1024)
        pred = probs[0] < 0.5
        truth = np.isin(codes, (INTERIOR, BOUNDARY, CELL))
        inter += np.count_nonzero(pred & truth & lab)
        union += np.count_nonzero((pred | truth) & lab)
    return inter / union if union else 0.0


def instance_f1(model: UNet, samples: Sequence[Sample]) -> float:
    """Mean of instance F1@0.5 and mean AP (pooled) on samples with instance labels."""
    from .metrics import instance_scores, summarize
    from .postprocess import instances_from_probs

    counts = []
    for s in samples:
        _, inst = instances_from_probs(predict_probs(model, s.image, precision="fp32", tile=1024))
        counts.append(instance_scores(inst, s.instances))
    r = summarize(counts)
    return 0.5 * (r["f1"] + r["mean_ap"])


def split_strokes(codes: np.ndarray, fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split sparse codes into train/val by whole strokes (connected components per class).

    Keeps at least one stroke of each class for training; if there are too few strokes
    the validation codes are empty.
    """
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    train = codes.copy()
    val = np.zeros_like(codes)
    for c in np.unique(codes[codes > 0]):
        comp, n = ndi.label(codes == c)
        if n < 3:
            continue
        k = max(1, int(round(n * fraction)))
        for i in rng.choice(np.arange(1, n + 1), size=k, replace=False):
            m = comp == i
            val[m] = c
            train[m] = 0
    return train, val


def _sequential_ids(labels: np.ndarray) -> np.ndarray:
    """Instance ids renumbered 1..N as int32, 0 kept as background: painted ids may be any
    non-negative integer (a layer's ids can reach 2**40; a plain cast would wrap them)."""
    if labels.size and labels.min() < 0:
        raise ValueError("annotation ids must be 0 (background) or positive")
    ids, inverse = np.unique(labels, return_inverse=True)
    if ids[0] != 0:
        inverse += 1
    return inverse.reshape(labels.shape).astype(np.int32)


def samples_from_annotations(images, annotations, percentiles=(1.0, 99.8), val_fraction: float = 0.2, seed: int = 0, scale: float = 1.0):
    """Training and validation samples from user images and annotation arrays.

    Accepts 2D pairs and stacks (annotated planes only). ``scale`` resizes every plane
    (images linearly, annotations by nearest neighbour) to the size the model works at,
    for models trained on rescaled objects. Returns ``(train, val, kinds)``
    where ``kinds`` says how each annotation was read. Raises ``ValueError`` with a clear
    message for empty annotations, shape mismatches or a single painted class.
    """
    train, val, kinds = [], [], []
    for k, (img, ann) in enumerate(zip(images, annotations)):
        img = np.asarray(img)
        ann = np.asarray(ann)
        if img.shape != ann.shape:
            raise ValueError(f"annotation shape {ann.shape} differs from image shape {img.shape}")
        planes_i = img.reshape((-1,) + img.shape[-2:])
        planes_a = ann.reshape((-1,) + ann.shape[-2:])
        for i, (pi, pa) in enumerate(zip(planes_i, planes_a)):
            kind = annotation_kind(pa)
            if kind == "empty":
                continue
            kinds.append(kind)
            x, pa = rescale_pair(normalize(pi, *percentiles), pa, scale)
            if kind == "instances":
                inst = _sequential_ids(pa)
                # hold out nothing from dense instances: validate on them whole
                train.append(Sample(x, instances=inst, name=f"{k}:{i}"))
                continue
            codes = targets_from_annotation(pa)
            tr, va = split_strokes(codes, val_fraction, seed)
            train.append(Sample(x, codes=tr, name=f"{k}:{i}"))
            if va.any():
                val.append(Sample(x, codes=va, name=f"{k}:{i}"))
    if not train:
        raise ValueError("the annotation layer is empty: paint some cells (1) and background (2) first")
    classes = set()
    for s in train:
        c = s.full_codes()
        if np.isin(c, (CELL, INTERIOR, BOUNDARY)).any():
            classes.add("cell")
        if (c == BACKGROUND).any():
            classes.add("background")
    if len(classes) < 2:
        missing = "not cell (2)" if "cell" in classes else "cell (1)"
        raise ValueError(f"only one class is painted: add a few strokes of {missing} too")
    if not val:
        val = list(train)
    return train, val, kinds
