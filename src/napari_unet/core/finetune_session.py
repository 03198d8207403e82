"""Fine-tuning with live previews: a region predicted with the current weights, and the
session that interleaves training steps with previews of what the user looks at (the
widget's training thread and the benchmarks run it)."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .data import predict_at_scale
from .normalize import normalize, to_gray
from .normalize import percentiles as compute_percentiles
from .postprocess import Postprocess, one_seed_per_region
from .training import Progress, Trainer, context_box, predict_probs, train_mode

if TYPE_CHECKING:
    from .finetune import FinetuneInfo


# ---- prediction of a region with the current weights ---------------------------------------
def predict_region(
    model,
    plane: np.ndarray,
    region: tuple[int, int, int, int] | None = None,
    limits: tuple[float, float] | None = None,
    percentiles: tuple[float, float] = (1.0, 99.8),
    post: Postprocess | None = None,
    precision: str = "auto",
    scale: float = 1.0,
    with_probs: bool = False,
) -> tuple[np.ndarray, ...]:
    """Semantic and instance labels of ``region`` of a raw 2D ``plane`` with ``model`` as it is now
    (and with ``with_probs`` the class probabilities of the region, at the image's scale).

    ``limits``: the plane's normalisation limits (computed from the whole plane when
    omitted, so a region is normalised like the whole image). ``scale``: model pixels per
    image pixel, as in training; ``post``: the post-processing, in image pixels as the
    Segmenter's (default settings when omitted).
    """
    plane = np.asarray(plane)
    H, W = plane.shape
    y0, y1, x0, x1 = region if region is not None else (0, H, 0, W)
    if limits is None:
        limits = compute_percentiles(plane, *percentiles)
    r = int(np.ceil(model.receptive_radius() / scale))
    # at the image's scale the crop starts on its pooling grid
    Y0, Y1, X0, X1 = context_box((y0, y1, x0, x1), r, (H, W), model.multiple if scale == 1.0 else 1)
    x = normalize(plane[Y0:Y1, X0:X1], limits=limits)
    if scale == 1.0:
        probs = predict_probs(model, x, (y0 - Y0, y1 - Y0, x0 - X0, x1 - X0), precision)
    else:  # the whole context at the model's scale, then the region at the image's
        probs = predict_at_scale(x, scale, lambda xs: predict_probs(model, xs, None, precision))
        probs = probs[:, y0 - Y0 : y1 - Y0, x0 - X0 : x1 - X0]
    sem, inst = (post or Postprocess())(probs)
    return (sem, inst, probs) if with_probs else (sem, inst)


# ---- a session: training interleaved with previews ------------------------------------------
@dataclass(frozen=True)
class PreviewRequest:
    """Which part of which image to preview.

    ``data``: the raw image array (any number of leading axes, then ``H, W``, then a colour
    axis if ``rgb``); ``index``: the leading indices that select the plane; ``region``:
    ``(y0, y1, x0, x1)`` or ``None`` for the whole plane; ``key``: anything, handed back.
    """

    data: object
    index: tuple = ()
    region: tuple | None = None
    rgb: bool = False
    key: object = None

    def plane(self) -> np.ndarray:
        p = np.asarray(self.data[self.index] if self.index else self.data)
        if self.rgb:
            p = to_gray(p)
        if p.ndim != 2:
            raise ValueError(f"the preview plane must be 2D, got shape {p.shape}")
        return p


@dataclass
class Preview:
    """The current weights' segmentation of a requested region."""

    semantic: np.ndarray
    instances: np.ndarray
    request: PreviewRequest
    step: int
    elapsed: float
    cell_fraction: float
    collapsed: str | None = None  # "nothing" / "everything" when the model predicts one class only
    uncertainty: np.ndarray | None = None  # where the model is unsure (see core.uncertainty), region-sized

    @property
    def key(self):
        return self.request.key


class FinetuneSession:
    """Runs a fine-tuning :class:`Trainer` and previews its current weights every few seconds.

    A preview whose view is all one class after ``collapse_after_s`` seconds of training
    is flagged ``collapsed`` (the guardrail the widget shows).

    ``request()`` is called from the training thread and returns a :class:`PreviewRequest`
    or ``None`` (no preview wanted now); keep it cheap and thread-safe (e.g. return an
    attribute the GUI thread updates). ``threads``: torch threads for the training thread
    (thread-local, so a GUI thread's own torch use is not affected; restored at the end).
    """

    def __init__(
        self,
        trainer: Trainer,
        info: FinetuneInfo,
        request: Callable[[], PreviewRequest | None] | None = None,
        preview_every_s: float = 3.0,
        first_preview_s: float = 1.0,
        threads: int | None = None,
        collapse_fraction: float = 0.001,
        collapse_after_s: float = 5.0,
    ):
        self.trainer = trainer
        self.info = info
        self.request = request
        self.preview_every_s = preview_every_s
        self.first_preview_s = first_preview_s
        self.threads = threads
        self.collapse_fraction = collapse_fraction
        self.collapse_after_s = collapse_after_s
        # post-processing in image pixels, as the Segmenter does it for this model
        # (the base model's threshold: the saved model's is calibrated, see calibrate_threshold)
        self.post = info.postprocess()
        self._limits: dict = {}

    @property
    def base_score(self) -> float | None:
        return self.trainer.base_score

    def _plane_limits(self, req: PreviewRequest, plane: np.ndarray):
        key = (id(req.data), tuple(req.index), req.rgb)
        hit = self._limits.get(key)
        if hit is None or hit[0] is not req.data:
            hit = (req.data, compute_percentiles(plane, *self.info.percentiles))
            self._limits[key] = hit
        return hit[1]

    def segment(self, plane: np.ndarray, region=None, limits=None, with_probs: bool = False) -> tuple[np.ndarray, ...]:
        """Semantic and instance labels of ``region`` of a raw ``plane`` with the current
        weights, post-processed as Segment would with this model (call with the model in
        eval mode); with ``with_probs`` also the probabilities."""
        return predict_region(self.trainer.eval_model(), plane, region, limits, self.info.percentiles, self.post,
                              scale=self.info.scale, with_probs=with_probs)

    def _as_saved(self, probs: np.ndarray, inst: np.ndarray) -> np.ndarray:
        """The preview's instances drawn as the saved model will draw them: one seed per
        connected interior region when the base's seeds find more than ``SPLIT_RATIO``
        times as many cells in the view (see :func:`.finetune_save.seed_settings`)."""
        from .finetune_save import SPLIT_RATIO

        single = one_seed_per_region(self.post)
        if single is None or not inst.any():
            return inst
        alt = single(probs)[1]
        return alt if alt.max() and inst.max() > SPLIT_RATIO * alt.max() else inst

    def preview_now(self) -> Preview | None:
        """A preview of the current weights (call between training steps, same thread)."""
        if self.request is None:
            return None
        req = self.request()
        if req is None:
            return None
        plane = req.plane()
        limits = self._plane_limits(req, plane)
        model = self.trainer.eval_model()
        was_training = model.training
        model.eval()
        try:
            sem, inst, probs = self.segment(plane, req.region, limits, with_probs=True)
        finally:
            if was_training:
                train_mode(model, self.trainer.cfg.freeze_norm)
        inst = self._as_saved(probs, inst)
        frac = float(sem.mean()) if sem.size else 0.0
        h = self.trainer.history
        step = h[-1].step if h else 0
        elapsed = h[-1].elapsed if h else 0.0
        collapsed = None
        # a collapse is a trained model that calls a whole view one class (not the base model's
        # state in the first seconds, which the user has seen already)
        if sem.size >= 1024 and elapsed >= self.collapse_after_s:
            if frac <= self.collapse_fraction:
                collapsed = "nothing"
            elif frac >= 1 - self.collapse_fraction:
                collapsed = "everything"
        from .uncertainty import uncertainty

        return Preview(sem, inst, req, step, elapsed, frac, collapsed, uncertainty(probs))

    def run(self) -> Generator[Progress | Preview, None, Trainer]:
        """Yield :class:`Progress` after every step and a :class:`Preview` every few seconds."""
        old_threads = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(int(self.threads))
        try:
            next_preview = None
            for p in self.trainer.run():
                yield p
                if p.step == 0:
                    continue
                now = time.perf_counter()
                if next_preview is None:
                    next_preview = now + self.first_preview_s
                if self.request is not None and now >= next_preview and not self.trainer.stopped:
                    prev = self.preview_now()
                    next_preview = time.perf_counter() + self.preview_every_s
                    if prev is not None:
                        yield prev
        finally:
            if self.threads:
                torch.set_num_threads(old_threads)
        return self.trainer
