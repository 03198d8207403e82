"""Score segmentations against ground truth: models, prediction files and the baseline.

All dataset-level scores are pooled over images (not averaged per image): pixel IoU is
the summed intersection over the summed union of the cell class, and instance scores
come from summed true-positive / object counts (:func:`metrics.summarize`), as in the
StarDist and DSB2018 evaluations.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from . import metrics

__all__ = ["evaluate_predictions", "evaluate_model", "evaluate_baseline", "BASELINE_NAME"]

BASELINE_NAME = "otsu+watershed"


def _pixel_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int, int]:
    """Intersection, union, wrong pixels and pixel count of the cell class (label > 0)."""
    p = np.asarray(pred) > 0
    t = np.asarray(truth) > 0
    inter = int(np.count_nonzero(p & t))
    union = int(np.count_nonzero(p | t))
    return inter, union, union - inter, int(p.size)


def _check_shapes(pred: np.ndarray, truth: np.ndarray, name: str | None = None) -> None:
    if np.shape(pred) != np.shape(truth):
        what = f"{name}: " if name else ""
        raise ValueError(f"{what}prediction shape {np.shape(pred)} differs from the labels' {np.shape(truth)}")


class _Accumulator:
    """Pooled pixel counts and instance counts over a sequence of images."""

    def __init__(self):
        self.inter = self.union = self.wrong = self.pixels = 0
        self.counts: list[dict] = []
        self.per_image: list[dict] = []

    def add(self, pred: np.ndarray, truth: np.ndarray, name: str | None = None) -> dict:
        _check_shapes(pred, truth, name)
        pred = np.asarray(pred)
        truth = np.asarray(truth)
        inter, union, wrong, n = _pixel_counts(pred, truth)
        self.inter += inter
        self.union += union
        self.wrong += wrong
        self.pixels += n
        c = metrics.instance_scores(pred, truth)
        self.counts.append(c)
        one = metrics.summarize([c])
        row = {
            "name": name or f"image {len(self.per_image)}",
            "pixel_iou": inter / union if union else 1.0,
            "f1": one["f1"],
            "mean_ap": one["mean_ap"],
            "n_true": c["n_true"],
            "n_pred": c["n_pred"],
        }
        self.per_image.append(row)
        return row

    def result(self) -> dict:
        if not self.counts:
            raise ValueError("nothing to evaluate: no images")
        inst = metrics.summarize(self.counts)
        return {
            "pixel_iou": self.inter / self.union if self.union else 1.0,
            "pixel_error": self.wrong / self.pixels if self.pixels else 0.0,
            "precision": inst["precision"],
            "recall": inst["recall"],
            "f1": inst["f1"],
            "ap50": inst["ap50"],
            "mean_ap": inst["mean_ap"],
            "n_images": len(self.counts),
            "n_true": sum(c["n_true"] for c in self.counts),
            "n_pred": sum(c["n_pred"] for c in self.counts),
            "per_image": self.per_image,
        }


def evaluate_predictions(preds: Sequence[np.ndarray], truths: Sequence[np.ndarray], names: Sequence[str] | None = None) -> dict:
    """Pooled scores of instance label images ``preds`` against ``truths``.

    Returns ``pixel_iou`` and ``pixel_error`` of the cell class, ``precision``, ``recall``,
    ``f1`` and ``ap50`` at IoU 0.5, ``mean_ap`` over IoU 0.50:0.05:0.95, ``n_images``,
    ``n_true``, ``n_pred`` and ``per_image`` rows. Each distinct id is one object, so pass
    instance labels: a semantic (0/1) image counts as a single object.
    """
    preds, truths = list(preds), list(truths)
    if len(preds) != len(truths):
        raise ValueError(f"{len(preds)} predictions but {len(truths)} ground-truth images")
    acc = _Accumulator()
    for i, (p, t) in enumerate(zip(preds, truths)):
        acc.add(p, t, names[i] if names else None)
    return acc.result()


def _evaluate_with(
    segment: Callable[[np.ndarray], np.ndarray],
    pairs: Sequence[tuple[Path, Path]],
    warmup: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict:
    """Run ``segment(image) -> instances`` on every pair, timing read + segment per image."""
    from .data import read_image

    pairs = [(Path(a), Path(b)) for a, b in pairs]
    if not pairs:
        raise ValueError("nothing to evaluate: no image/label pairs")
    if warmup:  # first-call costs (thread pools, oneDNN kernels) are not throughput
        segment(read_image(pairs[0][0]))
    acc = _Accumulator()
    seconds = 0.0
    megapixels = 0.0
    for k, (img_p, lab_p) in enumerate(pairs):
        t0 = time.perf_counter()
        image = read_image(img_p)
        instances = segment(image)
        seconds += time.perf_counter() - t0
        truth = read_image(lab_p)
        megapixels += truth.size / 1e6
        acc.add(instances, truth, img_p.name)
        if progress is not None:
            progress(k + 1, len(pairs), img_p.name)
    res = acc.result()
    res["seconds"] = seconds
    res["megapixels"] = megapixels
    res["mp_per_s"] = megapixels / seconds if seconds > 0 else float("inf")
    return res


def evaluate_model(
    model_name_or_path,
    pairs: Sequence[tuple[Path, Path]],
    diameter: float | str | None = None,
    precision: str = "auto",
    warmup: bool = False,
    segmenter=None,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict:
    """Segment each image of ``pairs`` with a model and score it against its labels.

    ``diameter``: object diameter in pixels, ``"auto"`` to estimate per image, or ``None``
    for the model's own scale. Throughput (``mp_per_s``) is end to end: reading the image,
    normalisation, the network and post-processing, excluding model loading (and one
    untimed warm-up image when ``warmup``). A ready ``segmenter`` may be passed instead of
    loading the model again.
    """
    from .inference import Segmenter

    seg = segmenter if segmenter is not None else Segmenter(model_name_or_path, precision=precision)

    def run(image):
        return seg.segment(image, diameter=diameter).instances

    res = _evaluate_with(run, pairs, warmup, progress)
    res["model"] = str(model_name_or_path)
    res["precision_mode"] = seg.precision
    res["diameter"] = diameter
    return res


def evaluate_baseline(pairs: Sequence[tuple[Path, Path]], progress: Callable[[int, int, str], None] | None = None, **kwargs) -> dict:
    """Like :func:`evaluate_model` for the Otsu + watershed baseline (``kwargs`` go to it)."""
    from .baseline import otsu_watershed

    def run(image):
        image = np.asarray(image)
        if image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4)):
            return otsu_watershed(image, **kwargs)[1]
        planes = image.reshape((-1,) + image.shape[-2:])
        return np.stack([otsu_watershed(p, **kwargs)[1] for p in planes]).reshape(image.shape)

    res = _evaluate_with(run, pairs, progress=progress)
    res["model"] = BASELINE_NAME
    return res
