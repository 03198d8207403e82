"""The network's "style": its bottleneck features averaged over an image (as Cellpose's
style vector), and a linear classifier of them.

The classifier is the gate a model file may carry (``meta["delegate"]``, fitted by
``scripts/fit_gate.py``): it recognises the images of a specialist model's modality, e.g.
phase-contrast whole cells for ``cells``, so that Segment hands them to it. (A ridge
regression of the cell diameter on the same features, as Cellpose's size model, was tried
for the size estimate and measured worse than segmenting at a few scales: 38-43 % median
error on dsb2018/val against 14 %.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .data import rescale_pair

__all__ = ["style_vectors", "fit_style_classifier", "style_score", "central"]

#: Side (network pixels) of the crop the estimate looks at.
CROP = 384


def central(x: np.ndarray, side: int = CROP) -> np.ndarray:
    """The central ``side`` x ``side`` window of a 2D array (all of it where smaller): the
    part of an image :func:`style_vectors` looks at, so that only it need be normalised."""
    h, w = x.shape[-2:]
    ch, cw = min(h, side), min(w, side)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return x[..., y0 : y0 + ch, x0 : x0 + cw]


def _center_crop(x: np.ndarray, side: int, multiple: int) -> np.ndarray:
    """The central ``side`` x ``side`` part of a 2D array (smaller if it is smaller),
    trimmed to a multiple of ``multiple`` (mirror-padded up to one when smaller)."""
    x = central(x, side)
    th, tw = (max(multiple, (n // multiple) * multiple) for n in x.shape)
    if x.shape[0] < th or x.shape[1] < tw:
        x = np.pad(x, ((0, max(0, th - x.shape[0])), (0, max(0, tw - x.shape[1]))), mode="symmetric")
    return np.ascontiguousarray(x[:th, :tw], dtype=np.float32)


@torch.inference_mode()
def style_vectors(model, crops: Sequence[np.ndarray], bf16: bool = False) -> np.ndarray:
    """``(N, C)`` bottleneck features of normalised 2D ``crops``, averaged over space and
    scaled to unit length (as Cellpose's style vector). Only the encoder runs. ``bf16``:
    under bfloat16 autocast (half the time on a CPU that has it; the shipped gate's scores
    move by at most 0.02 on the val images, against a margin 0.2 away from the nearest)."""
    feats = []
    model.eval()
    device = next(model.parameters()).device
    for c in crops:
        c = _center_crop(c, CROP, model.multiple)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            f = model.encode(torch.from_numpy(c)[None, None].to(device))
        feats.append(f.float().mean(dim=(2, 3)))
    s = torch.cat(feats).cpu().numpy().astype(np.float64)
    return s / np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-12)


def _linear(model: dict, styles: np.ndarray) -> np.ndarray:
    Z = (styles - np.asarray(model["mean"])) / np.asarray(model["std"])
    return Z @ np.asarray(model["coef"]) + float(model["intercept"])


def fit_style_classifier(model, images: Sequence[np.ndarray], positive: Sequence[bool], scales=(0.7, 1.4), per_image: int = 2, seed: int = 0, ridge: float = 1e-2) -> dict:
    """A linear classifier of :func:`style_vectors` (ridge regression on +1 / -1 targets,
    with the two classes weighted equally), as plain numbers for a model file's metadata.

    ``images``: normalised 2D arrays at their own pixel size, as a user's images come;
    each is seen at ``per_image`` random scales in ``scales`` so the answer does not hang
    on the magnification. Positive scores mean the positive class.
    """
    rng = np.random.default_rng(seed)
    crops, y = [], []
    for img, pos in zip(images, positive):
        for _ in range(per_image):
            f = float(np.exp(rng.uniform(np.log(scales[0]), np.log(scales[1]))))
            crops.append(rescale_pair(img, None, f)[0])
            y.append(1.0 if pos else -1.0)
    y = np.asarray(y)
    if not (y > 0).any() or not (y < 0).any():
        raise ValueError("the classifier needs images of both classes")
    X = style_vectors(model, crops)
    mean, std = X.mean(0), X.std(0) + 1e-6
    Z = (X - mean) / std
    w = np.where(y > 0, 0.5 / (y > 0).sum(), 0.5 / (y < 0).sum()) * len(y)  # balanced classes
    A = (Z * w[:, None]).T @ Z + ridge * len(Z) * np.eye(Z.shape[1])
    coef = np.linalg.solve(A, (Z * w[:, None]).T @ y)
    score = Z @ coef
    return {
        "mean": mean.tolist(), "std": std.tolist(), "coef": coef.tolist(), "intercept": 0.0,
        "train_accuracy": float(np.mean(np.sign(score) == y)), "n": len(y),
    }


def style_score(model, classifier: dict, image: np.ndarray, bf16: bool = False) -> float:
    """The classifier's score of a normalised 2D ``image`` (> 0: the positive class)."""
    return float(_linear(classifier, style_vectors(model, [image], bf16))[0])
