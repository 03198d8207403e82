"""A learned estimate of the cell diameter, from the network's own bottleneck features.

Cellpose's size model regresses the object diameter from the network's "style" vector
(the bottleneck features averaged over the image). The same works here: the bottleneck of
a U-Net trained on objects of one size responds to how large the objects in view are.
:func:`fit_size_model` fits a ridge regression of ``log(diameter)`` on the averaged
bottleneck features of training crops shown at random scales, and stores it in the model
file; :func:`estimate_diameter` needs two small forward passes instead of segmenting an
image at several scales.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .data import median_diameter, rescale_pair

__all__ = ["style_vectors", "fit_size_model", "predict_log_diameter", "estimate_diameter"]

#: Side (network pixels) of the crop the estimate looks at.
CROP = 384


def _center_crop(x: np.ndarray, side: int, multiple: int) -> np.ndarray:
    """The central ``side`` x ``side`` part of a 2D array (smaller if it is smaller),
    trimmed to a multiple of ``multiple`` (mirror-padded up to one when smaller)."""
    h, w = x.shape
    ch, cw = min(h, side), min(w, side)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    x = x[y0 : y0 + ch, x0 : x0 + cw]
    th, tw = (max(multiple, (n // multiple) * multiple) for n in x.shape)
    if x.shape[0] < th or x.shape[1] < tw:
        x = np.pad(x, ((0, max(0, th - x.shape[0])), (0, max(0, tw - x.shape[1]))), mode="symmetric")
    return np.ascontiguousarray(x[:th, :tw], dtype=np.float32)


@torch.inference_mode()
def style_vectors(model, crops: Sequence[np.ndarray]) -> np.ndarray:
    """``(N, C)`` bottleneck features of normalised 2D ``crops``, averaged over space and
    scaled to unit length (as Cellpose's style vector)."""
    feats = []
    hook = model.bottom.register_forward_hook(lambda _m, _i, out: feats.append(out.float().mean(dim=(2, 3))))
    try:
        model.eval()
        device = next(model.parameters()).device
        for c in crops:
            c = _center_crop(c, CROP, model.multiple)
            model(torch.from_numpy(c)[None, None].to(device))
    finally:
        hook.remove()
    s = torch.cat(feats).cpu().numpy().astype(np.float64)
    return s / np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-12)


def fit_size_model(model, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], scales=(0.33, 3.0), per_image: int = 3, seed: int = 0, ridge: float = 1e-2) -> dict:
    """A ridge regression of ``log(diameter)`` on :func:`style_vectors`, as plain numbers
    for a model file's metadata (key ``size_model``).

    ``images`` are normalised 2D arrays with instance ``labels``; each is shown at
    ``per_image`` random scales (log-uniform in ``scales``) around the network's own size,
    so the regression covers objects from a third to three times that size.
    """
    rng = np.random.default_rng(seed)
    crops, targets = [], []
    for img, lab in zip(images, labels):
        d = median_diameter(lab)
        if not d:
            continue
        for _ in range(per_image):
            f = float(np.exp(rng.uniform(np.log(scales[0]), np.log(scales[1]))))
            x, _ = rescale_pair(img, None, f)
            crops.append(x)
            targets.append(np.log(d * f))
    if len(crops) < 10:
        raise ValueError("too few labelled images to fit a size model")
    X = style_vectors(model, crops)
    y = np.asarray(targets)
    mean, std = X.mean(0), X.std(0) + 1e-6
    Z = (X - mean) / std
    A = Z.T @ Z + ridge * len(Z) * np.eye(Z.shape[1])
    coef = np.linalg.solve(A, Z.T @ (y - y.mean()))
    pred = Z @ coef + y.mean()
    err = np.exp(np.abs(pred - y)) - 1
    return {
        "mean": mean.tolist(), "std": std.tolist(), "coef": coef.tolist(), "intercept": float(y.mean()),
        "fit_median_error": float(np.median(err)), "n": len(y),
    }


def predict_log_diameter(size_model: dict, styles: np.ndarray) -> np.ndarray:
    Z = (styles - np.asarray(size_model["mean"])) / np.asarray(size_model["std"])
    return Z @ np.asarray(size_model["coef"]) + float(size_model["intercept"])


def estimate_diameter(model, size_model: dict, image: np.ndarray, own: float, passes: int = 2) -> float:
    """Typical object diameter (px) in a normalised 2D ``image``.

    The first pass looks at the image as it is; the next ones at the image rescaled so the
    objects found have the network's own size ``own``, where the regression is most
    accurate (Cellpose refines its first guess in the same spirit).
    """
    scale = 1.0
    d = own
    for _ in range(passes):
        side = int(np.ceil(CROP / scale))
        crop = _center_crop(image, side, 1)
        x, _ = rescale_pair(crop, None, scale)
        d_net = float(np.exp(predict_log_diameter(size_model, style_vectors(model, [x]))[0]))
        d = d_net / scale
        new = float(np.clip(own / d, 1 / 8, 8))
        if abs(np.log(new / scale)) < 0.1:
            break
        scale = new
    return d


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


def style_score(model, classifier: dict, image: np.ndarray) -> float:
    """The classifier's score of a normalised 2D ``image`` (> 0: the positive class)."""
    return float(predict_log_diameter(classifier, style_vectors(model, [image]))[0])
