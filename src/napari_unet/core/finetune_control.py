"""The Fine-tune widget's run state without Qt: what its status, warning and progress lines say.

The widget is a thin view over :class:`FinetuneRun`: it forwards the trainer's events and
shows the :class:`Update` it gets back, so the guardrails (validation below the base
model, a collapsed preview), the kept-weights note and the preview region are tested
without a viewer. Also the checks of an annotation before training (:func:`check_annotation`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "BELOW_BASE_MARGIN", "BELOW_BASE_POPUP_S", "BELOW_BASE_RUN", "PREVIEW_MAX",
    "FinetuneRun", "Update", "check_annotation", "preview_region",
]

#: Previews cover the whole plane up to this size, else the visible part (at most this size).
PREVIEW_MAX = 640
#: A validation score this far below the base model's counts as below it.
BELOW_BASE_MARGIN = 0.02
#: The guardrail needs a trend: this many validations in a row below the base model's score
#: (one dip is noise: validation on a few held-out strokes is noisy, and the moving
#: average of the weights often dips in the first seconds before it climbs).
BELOW_BASE_RUN = 3
#: ... and a popup also this much training time (the dock's warning line comes earlier).
BELOW_BASE_POPUP_S = 30.0


@dataclass
class Update:
    """What the widget shows after an event; ``None`` leaves a line as it is."""

    status: str | None = None
    progress: float | None = None  # share of the time budget used, 0..1
    warning: str | None = None  # "" clears the warning line
    popup: str | None = None  # a napari warning notification
    revert: bool | None = None  # enable 'Revert to base'
    save_tip: str | None = None


@dataclass
class FinetuneRun:
    """One training run as the user sees it: scores, warnings and the final summary."""

    budget: float | None = None
    trainer: object = None
    info: object = None
    vals: list[float] = field(default_factory=list)  # this run's validation scores
    warning_kind: str = ""  # what the warning line says: "below", "collapse" or ""
    warned: set[str] = field(default_factory=set)  # the popups already shown

    # ---- events ---------------------------------------------------------------------------
    def ready(self, trainer, info) -> Update:
        self.trainer, self.info = trainer, info
        held = "held-out strokes" if info.held_out else "the training strokes (too few to hold some out)"
        return Update(status=f"scoring the base model on {held}...")

    def progress(self, p) -> Update:
        """A :class:`~napari_unet.core.training.Progress` of the trainer."""
        if p.step == 0:
            return Update(status=f"base model score {p.val_score:.3f}; training...")
        up = Update(progress=min(p.elapsed / self.budget, 1.0) if self.budget else None)
        msg = f"step {p.step}, {p.elapsed:.0f} s: loss {p.loss:.3f}"
        kept = self.kept_note()
        up.status = f"{msg}; {kept}" if kept else msg
        if p.val_score is not None:
            self._check_score(p.val_score, p.elapsed, up)
        return up

    def preview(self, collapsed: str) -> Update:
        """A preview arrived; ``collapsed`` is ``"nothing"``, ``"everything"`` or ``""``."""
        if collapsed:
            what = "no cells" if collapsed == "nothing" else "cells everywhere"
            up = self._warn(f"The model now predicts {what} in the view (collapse): check the annotation "
                            "(1 = cell, 2 = not cell), or press 'Revert to base'.", "collapse")
            up.revert = True
            if "collapse" not in self.warned:
                self.warned.add("collapse")
                up.popup = f"U-Net fine-tuning: the model predicts {what} in the view"
            return up
        return self._warn("", "") if self.warning_kind == "collapse" else Update()

    def finished(self) -> Update:
        """The summary when training ends (Stop, budget or error after the first step)."""
        t = self.trainer
        h = t.history
        secs = h[-1].elapsed if h else 0.0
        base, best = self.base_score, t.best_score
        base_name = self.info.base_name if self.info is not None else "the base model"
        up = Update(revert=True)
        if self.no_improvement():
            up.status = (f"Stopped after {t.step} steps ({secs:.0f} s): no improvement over the base model "
                         f"(score {base:.3f}); its weights were kept")
            up.save_tip = (f"Training did not improve on the base model '{base_name}': saving writes a copy "
                           "of it (its weights) under this name")
        elif best is not None:
            note = ""
            if base is not None and best > base:
                if self.warning_kind == "below":
                    up = self._warn("", "", up)  # the kept weights beat the base model: the warning is moot
                if "below" in self.warned:
                    note = " The earlier warning no longer applies: the kept weights beat the base model."
            up.status = f"Stopped after {t.step} steps ({secs:.0f} s); {self.kept_note(final=True)}. Save them under a name." + note
        else:
            up.status = f"Stopped after {t.step} steps ({secs:.0f} s)"
        return up

    # ---- what the lines say -----------------------------------------------------------------
    @property
    def base_score(self) -> float | None:
        """The base model's score on the validation strokes (the trainer's step 0)."""
        return self.trainer.base_score if self.trainer is not None else None

    def no_improvement(self) -> bool:
        """The kept weights are the base model's: validation never beat its score."""
        t, base = self.trainer, self.base_score
        return t is not None and t.best_score is not None and base is not None and t.best_score <= base

    def kept_note(self, final: bool = False) -> str:
        """The score of the weights Stop keeps now (``trainer.best_score``, never a score
        seen earlier: a later validation within ``keep_within`` of the top score replaces
        the kept weights by longer-trained ones that score a little lower)."""
        t = self.trainer
        if t is None or t.best_score is None:
            return ""
        best, base = t.best_score, self.base_score
        note = f"{'kept' if final else 'Stop keeps'} weights scoring {best:.3f}"
        if base is not None:
            note += f" (base {base:.3f})"
        top = getattr(t, "top_score", None)
        if top is not None and best < top - 5e-4:
            note += f"; the top score {top:.3f} was earlier: later weights within {t.cfg.keep_within:g} of it are kept"
        return note

    def clear_warning(self) -> Update:
        return self._warn("", "")

    def _warn(self, text: str, kind: str, up: Update | None = None) -> Update:
        up = up or Update()
        up.warning = text
        self.warning_kind = kind if text else ""
        return up

    def _check_score(self, score: float, elapsed: float, up: Update) -> None:
        """The guardrail: warn when validation stays below the base model's score.

        One validation below it is noise (a few held-out strokes, and a moving average that
        dips before it climbs): the warning line needs :data:`BELOW_BASE_RUN` validations in
        a row below it, a popup also :data:`BELOW_BASE_POPUP_S` seconds of training. The
        line goes as soon as the trend no longer holds.
        """
        base = self.base_score
        self.vals.append(score)
        if base is None:
            return
        recent = self.vals[-BELOW_BASE_RUN:]
        if len(recent) == BELOW_BASE_RUN and all(v < base - BELOW_BASE_MARGIN for v in recent):
            scores = ", ".join(f"{v:.3f}" for v in recent)
            self._warn(
                f"The last {BELOW_BASE_RUN} validation scores ({scores}) are below the base model's {base:.3f}: "
                "the current weights do worse on your held-out strokes. Stop keeps the best weights (the base "
                "model's if none is better); 'Revert to base' discards the training.", "below", up)
            up.revert = True
            if elapsed >= BELOW_BASE_POPUP_S and "below" not in self.warned:
                self.warned.add("below")
                up.popup = (f"U-Net fine-tuning: after {elapsed:.0f} s the validation score ({score:.3f}) stays "
                            f"below the base model's ({base:.3f}); Stop keeps the best weights")
        elif self.warning_kind == "below":
            self._warn("", "", up)


def preview_region(shape: tuple[int, int], visible=None, limit: int = PREVIEW_MAX):
    """``(y0, y1, x0, x1)`` of a plane of ``shape`` to preview, ``None`` for the whole plane.

    Planes up to ``limit`` pixels are previewed whole; on larger ones the centre of the
    ``visible`` corners ``((y0, x0), (y1, x1))`` (inclusive; the whole plane when unknown or
    tiny), at most ``limit`` pixels a side.
    """
    H, W = (int(s) for s in shape)
    if H <= limit and W <= limit:
        return None
    y0, x0, y1, x1 = 0, 0, H, W
    if visible is not None:
        (a, b), (c, d) = np.asarray(visible, dtype=float)[:, -2:].astype(int)
        if c + 1 - a >= 8 and d + 1 - b >= 8:
            y0, x0, y1, x1 = a, b, c + 1, d + 1
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    hh, hw = min(y1 - y0, limit) // 2, min(x1 - x0, limit) // 2
    return int(max(0, cy - hh)), int(min(H, cy + hh)), int(max(0, cx - hw)), int(min(W, cx + hw))


def check_annotation(image: str, annotation: str, owner: str | None, image_shape, ann_shape,
                     annotations) -> str | None:
    """Why the annotation named ``annotation`` cannot train on ``image`` (one sentence), or
    ``None``. ``owner`` is the image it was made for; ``annotations`` are the arrays of every
    pair that would train (one class painted somewhere is not enough)."""
    if owner is not None and owner != image:
        return (f"Annotation '{annotation}' was made for image '{owner}', not '{image}': pick '{image}''s "
                f"annotation layer (or make one with 'New annotation layer'), or pick image '{owner}'")
    if tuple(ann_shape) != tuple(image_shape):
        return (f"Annotation '{annotation}' has shape {tuple(ann_shape)} but image '{image}' has shape "
                f"{tuple(image_shape)}: pick the image's own annotation layer or make one with 'New annotation layer'")
    if not np.any(annotations[0]):
        return f"Annotation '{annotation}' is empty: paint a few cells (label 1) and background (label 2) first"
    has_cell = any(bool(np.any(a == 1)) or int(a.max()) > 2 for a in annotations)
    has_bg = any(bool(np.any(a == 2)) or int(a.max()) > 2 for a in annotations)
    if not (has_cell and has_bg):
        missing = "not cell (label 2)" if has_cell else "cell (label 1)"
        return f"Only one class is painted in '{annotation}': add a few strokes of {missing} too"
    return None
