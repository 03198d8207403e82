"""Segmentation metrics: pixel IoU / error of the cell class and instance matching scores.

Instance scores follow the Data Science Bowl 2018 and StarDist definitions: predicted and
true objects are matched one-to-one (Hungarian matching on IoU) and a pair counts as a true
positive when its IoU exceeds the threshold; ``AP = TP / (TP + FP + FN)``.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix

__all__ = ["pixel_scores", "iou_matrix", "match", "instance_scores", "THRESHOLDS"]

THRESHOLDS = tuple(np.round(np.arange(0.5, 0.96, 0.05), 2))


def pixel_scores(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """IoU and pixel error of the cell class (anything > 0), optionally within ``mask``."""
    p = np.asarray(pred) > 0
    t = np.asarray(truth) > 0
    if mask is not None:
        p, t = p[mask], t[mask]
    inter = np.count_nonzero(p & t)
    union = np.count_nonzero(p | t)
    n = p.size
    return {
        "iou": inter / union if union else 1.0,
        "pixel_error": np.count_nonzero(p != t) / n if n else 0.0,
    }


def iou_matrix(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU between every true (rows) and predicted (columns) object, ids renumbered 1..N."""
    # a 0 is prepended so that id 0 always maps to row/column 0, even with no background
    t = np.concatenate([[0], np.asarray(truth).ravel()])
    p = np.concatenate([[0], np.asarray(pred).ravel()])
    t = np.unique(t, return_inverse=True)[1].ravel()
    p = np.unique(p, return_inverse=True)[1].ravel()
    nt, np_ = int(t.max()) + 1, int(p.max()) + 1
    inter = coo_matrix((np.ones(t.size, np.int64), (t, p)), shape=(nt, np_)).toarray()
    area_t = inter.sum(1, keepdims=True)
    area_p = inter.sum(0, keepdims=True)
    union = area_t + area_p - inter
    iou = inter / np.maximum(union, 1)
    return iou[1:, 1:]


def match(iou: np.ndarray, threshold: float) -> int:
    """Number of one-to-one matches with IoU > ``threshold`` (optimal assignment)."""
    if iou.size == 0:
        return 0
    cost = -(iou * (iou > threshold))
    rows, cols = linear_sum_assignment(cost)
    return int(np.count_nonzero(iou[rows, cols] > threshold))


def instance_scores(pred: np.ndarray, truth: np.ndarray, thresholds=THRESHOLDS) -> dict:
    """Counts per threshold, plus precision/recall/F1 at 0.5 and mean AP over ``thresholds``."""
    iou = iou_matrix(truth, pred)
    nt, np_ = iou.shape
    out = {"n_true": nt, "n_pred": np_, "tp": {}}
    for th in thresholds:
        out["tp"][float(th)] = match(iou, th)
    return out


def summarize(counts: list[dict], thresholds=THRESHOLDS) -> dict:
    """Dataset-level scores from per-image :func:`instance_scores` (pooled counts)."""
    n_true = sum(c["n_true"] for c in counts)
    n_pred = sum(c["n_pred"] for c in counts)
    res = {}
    aps = []
    for th in thresholds:
        tp = sum(c["tp"][float(th)] for c in counts)
        fp, fn = n_pred - tp, n_true - tp
        aps.append(tp / max(tp + fp + fn, 1))
        if float(th) == 0.5:
            res["precision"] = tp / max(n_pred, 1)
            res["recall"] = tp / max(n_true, 1)
            res["f1"] = 2 * tp / max(n_pred + n_true, 1)
            res["ap50"] = aps[-1]
    res["mean_ap"] = float(np.mean(aps))
    return res
