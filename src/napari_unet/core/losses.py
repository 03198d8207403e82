"""Targets and losses: 3-class targets from instance labels, sparse strokes, weight maps.

Target codes (one per pixel, ``uint8``):

====  ===========================================================
0     unlabeled: ignored by the loss (sparse annotation)
1     background ("not cell")
2     cell interior
3     cell boundary (the pixels that separate a cell from others)
4     cell, interior or boundary unknown (a "cell" stroke)
====  ===========================================================

The loss is a masked cross-entropy over *sets* of allowed classes: for code 4 the network
is asked for ``p_interior + p_boundary``, so sparse "cell" strokes and dense instance
annotations train the same 3-class network.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

__all__ = [
    "IGNORE", "BACKGROUND", "INTERIOR", "BOUNDARY", "CELL",
    "targets_from_instances", "targets_from_annotation", "annotation_kind",
    "border_weight_map", "masked_cross_entropy", "distance_targets", "distance_loss",
]

IGNORE, BACKGROUND, INTERIOR, BOUNDARY, CELL = 0, 1, 2, 3, 4

# allowed[code] = which of (background, interior, boundary) a code accepts
_ALLOWED = torch.tensor(
    [[1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1]], dtype=torch.bool
)


def targets_from_instances(labels: np.ndarray, region: np.ndarray | None = None) -> np.ndarray:
    """Target codes from instance labels (0 = background, 1..N = cells).

    Boundary = the cell's own pixels that touch background or another cell
    (``find_boundaries(mode="inner")``). ``region``: a mask of where the labels are
    valid; outside it pixels are ignored.
    """
    labels = np.asarray(labels)
    t = np.full(labels.shape, BACKGROUND, np.uint8)
    cells = labels > 0
    t[cells] = INTERIOR
    t[find_boundaries(labels, mode="inner") & cells] = BOUNDARY
    if region is not None:
        t[~region] = IGNORE
    return t


def annotation_kind(annotation: np.ndarray) -> str:
    """How a user's annotation is read: ``"empty"``, ``"sparse"``, ``"dense"`` or ``"instances"``.

    Ids ``1`` (cell) and ``2`` (not cell) are strokes; ids above 2 mean instance
    annotation (each id one cell). ``"dense"`` is a stroke annotation with no unlabeled
    pixel left.
    """
    a = np.asarray(annotation)
    mx = int(a.max()) if a.size else 0
    if mx == 0:
        return "empty"
    if mx > 2:
        return "instances"
    return "dense" if (a > 0).all() else "sparse"


def targets_from_annotation(annotation: np.ndarray) -> np.ndarray:
    """Target codes from an annotation layer in the plugin's convention.

    ``0`` unlabeled, ``1`` cell, ``2`` not cell. If any id is above 2 the layer is read
    as dense instance annotation: each id > 0 is one cell and ``0`` is background
    everywhere, so touching cells teach the boundary class.
    """
    a = np.asarray(annotation)
    if annotation_kind(a) == "instances":
        return targets_from_instances(a)
    t = np.zeros(a.shape, np.uint8)
    t[a == 1] = CELL
    t[a == 2] = BACKGROUND
    return t


def border_weight_map(labels: np.ndarray, w0: float = 10.0, sigma: float = 5.0, class_balance: bool = True) -> np.ndarray:
    """The U-Net paper's weight map ``w_c(x) + w0 exp(-(d1 + d2)^2 / (2 sigma^2))``.

    ``d1``, ``d2``: distances to the nearest and second-nearest cell; applied to background
    pixels (the gaps between touching cells). ``w_c`` balances class frequencies.
    """
    labels = np.asarray(labels)
    h, w = labels.shape
    ids = np.unique(labels)
    ids = ids[ids > 0]
    weight = np.zeros(labels.shape, np.float32)
    if ids.size >= 2:
        big = np.float32(1e6)
        d1 = np.full(labels.shape, big, np.float32)
        d2 = np.full(labels.shape, big, np.float32)
        reach = int(3 * sigma + 1)
        for sl, i in zip(ndi.find_objects(labels), range(1, int(labels.max()) + 1)):
            if sl is None:
                continue
            y0, y1 = max(0, sl[0].start - reach), min(h, sl[0].stop + reach)
            x0, x1 = max(0, sl[1].start - reach), min(w, sl[1].stop + reach)
            d = ndi.distance_transform_edt(labels[y0:y1, x0:x1] != i).astype(np.float32)
            a, b = d1[y0:y1, x0:x1], d2[y0:y1, x0:x1]
            b[...] = np.minimum(b, np.maximum(a, d))
            a[...] = np.minimum(a, d)
        weight = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
        weight[labels > 0] = 0
    wc = np.ones(labels.shape, np.float32)
    if class_balance:
        fg = labels > 0
        f = fg.mean()
        if 0 < f < 1:
            wc[fg] = 0.5 / f
            wc[~fg] = 0.5 / (1 - f)
    return (wc + weight).astype(np.float32)


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy over labeled pixels (code > 0), allowing sets of classes.

    ``logits``: ``(B, 3, H, W)``; ``target``: ``(B, H, W)`` codes; ``weight``: optional
    ``(B, H, W)`` per-pixel weights. Returns 0 (with a gradient) if nothing is labeled.
    """
    logits = logits.float()
    allowed = _ALLOWED.to(logits.device)[target.long()].permute(0, 3, 1, 2)
    lse_all = torch.logsumexp(logits, dim=1)
    lse_ok = torch.logsumexp(logits.masked_fill(~allowed, float("-inf")), dim=1)
    loss = lse_all - lse_ok
    w = (target > 0).float()
    if weight is not None:
        w = w * weight
    return (loss * w).sum() / w.sum().clamp_min(1.0)


def distance_targets(labels: np.ndarray) -> np.ndarray:
    """Each cell's distance to its own edge, divided by its largest (``float32``, 1 at a
    cell's centre, falling to 0 at its edge and on the background): the target of a
    distance head, as StarDist's object probability. Touching cells are kept apart by
    their boundary pixels (:func:`targets_from_instances`)."""
    labels = np.asarray(labels)
    cells = labels > 0
    if not cells.any():
        return np.zeros(labels.shape, np.float32)
    inner = cells & ~find_boundaries(labels, mode="inner")
    dist = ndi.distance_transform_edt(inner).astype(np.float32) + cells  # boundary pixels: 1
    top = ndi.maximum(dist, labels, np.arange(int(labels.max()) + 1)).astype(np.float32)
    top[top == 0] = 1.0
    out = dist / top[labels]
    out[~cells] = 0.0
    return out


def distance_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of a distance head's logits ``(B, H, W)`` against the soft
    targets of :func:`distance_targets` ``(B, H, W)`` (as StarDist's object probability),
    over the pixels where the target is known (not NaN)."""
    known = torch.isfinite(target)
    if not bool(known.any()):
        return pred.sum() * 0.0
    bce = torch.nn.functional.binary_cross_entropy_with_logits(pred.float(), torch.nan_to_num(target), reduction="none")
    return (bce * known).sum() / known.sum()
