"""Ids across planes and frames: overlap matching with an optimal one-to-one assignment.

- :func:`match_overlaps`: which object of one plane/frame continues which of the previous
  (IoU above a floor, Hungarian assignment);
- :func:`split_merged`: a segment covering two previous objects at a neck is cut back in two;
- :func:`stitch_planes` (a volume from 2D planes, Cellpose's ``stitch_threshold``) and
  :func:`link_frames` (a time-lapse; new cells get new ids, never reused);
- :func:`tracks_from_labels`: centroid tracks ``(track_id, t, [z,] y, x)`` for napari's
  Tracks layer.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment

from .postprocess import labels_dtype

__all__ = ["STITCH_IOU", "link_frames", "match_overlaps", "split_merged", "stitch_planes", "tracks_from_labels"]

#: IoU above which a 2D object continues the object of the plane above (``stitch``).
STITCH_IOU = 0.25


# ---- overlap matching ----------------------------------------------------------------------
def match_overlaps(prev: np.ndarray, cur: np.ndarray, min_iou: float) -> dict[int, int]:
    """``{id in cur: id in prev}`` for the one-to-one pairing of objects that maximises the
    summed IoU (``scipy.optimize.linear_sum_assignment``), keeping pairs with IoU > ``min_iou``.

    ``prev`` and ``cur`` are label arrays of one shape (any dimensionality; 0 = background).
    """
    a = np.asarray(prev).ravel()
    b = np.asarray(cur).ravel()
    if a.shape != b.shape:
        raise ValueError(f"label arrays differ in size: {np.shape(prev)} vs {np.shape(cur)}")
    both = (a > 0) & (b > 0)
    if not both.any():
        return {}
    ida, area_a = np.unique(a[a > 0], return_counts=True)
    idb, area_b = np.unique(b[b > 0], return_counts=True)
    ia = np.searchsorted(ida, a[both])
    ib = np.searchsorted(idb, b[both])
    pair, inter = np.unique(ia.astype(np.int64) * len(idb) + ib, return_counts=True)
    ra, rb = pair // len(idb), pair % len(idb)
    iou = inter / (area_a[ra] + area_b[rb] - inter)
    keep = iou > min_iou
    if not keep.any():
        return {}
    ra, rb, iou = ra[keep], rb[keep], iou[keep]
    # a small dense matrix over the objects that take part in some candidate pair
    ua, ra = np.unique(ra, return_inverse=True)
    ub, rb = np.unique(rb, return_inverse=True)
    m = np.zeros((len(ua), len(ub)))
    m[ra, rb] = iou
    rows, cols = linear_sum_assignment(-m)
    return {int(idb[ub[c]]): int(ida[ua[r]]) for r, c in zip(rows, cols) if m[r, c] > min_iou}


def _at_necks(pieces: np.ndarray, sizes: np.ndarray, neck: float) -> bool:
    """Whether every cut between ``pieces`` (labels 1..k) is a neck: its length (2D; area
    in 3D: pixel faces between two pieces) is under ``neck`` x the cross-section (the
    equivalent diameter, or the equivalent disc's area in 3D) of the smaller piece."""
    nd = pieces.ndim
    k = len(sizes)
    contact = np.zeros((k + 1, k + 1), np.int64)
    for ax in range(nd):
        a = np.moveaxis(pieces, ax, 0)
        u, v = a[1:].ravel(), a[:-1].ravel()
        cut = (u != v) & (u > 0) & (v > 0)
        np.add.at(contact, (u[cut], v[cut]), 1)
    contact = contact + contact.T
    for i in range(1, k + 1):
        for j in range(i + 1, k + 1):
            if not contact[i, j]:
                continue
            small = float(min(sizes[i - 1], sizes[j - 1]))
            if nd == 2:
                cross = 2.0 * math.sqrt(small / math.pi)
            else:
                d = (6.0 * small / math.pi) ** (1.0 / 3.0)
                cross = math.pi * d * d / 4.0
            if contact[i, j] >= neck * cross:
                return False
    return True


def split_merged(prev: np.ndarray, cur: np.ndarray, cover: float = 0.5, neck: float = 0.7) -> np.ndarray:
    """``cur`` with every object that holds most (``cover``) of two or more objects of
    ``prev`` cut between them; the other objects unchanged (ids kept, new pieces get ids
    above ``cur.max()``).

    Two touching cells that the segmentation merged in one frame, after finding them
    apart in the frame before, are split again: a watershed over the merged object, on its
    distance transform, from the earlier cells (eroded by 2 px). The cut is kept only where
    it runs through a neck (shorter than ``neck`` x the smaller piece's equivalent
    diameter; in 3D, smaller than that share of its cross-section), so a round cell that
    the frame before had split in two is not split again. Cells that really fuse are
    rare; a dividing cell is the opposite case (one object becomes two) and is untouched.
    """
    a = np.asarray(prev)
    b = np.asarray(cur)
    both = (a > 0) & (b > 0)
    if not both.any():
        return b
    pa, pb = a[both].astype(np.int64), b[both].astype(np.int64)
    key, inter = np.unique(pa * (int(b.max()) + 1) + pb, return_counts=True)
    ka, kb = key // (int(b.max()) + 1), key % (int(b.max()) + 1)
    area_a = np.bincount(a.ravel().astype(np.int64)) if a.max() < 2**24 else None
    if area_a is None:
        return b
    held = inter >= cover * area_a[ka]
    if np.bincount(kb[held]).max(initial=0) < 2:
        return b
    from skimage.segmentation import watershed

    out = b.astype(np.int64, copy=True)
    next_id = int(b.max()) + 1
    boxes = ndi.find_objects(b)
    for c in np.unique(kb[held]):
        olds = ka[held & (kb == c)]
        if len(olds) < 2:
            continue
        box = boxes[c - 1]
        box = tuple(slice(max(sl.start - 1, 0), sl.stop + 1) for sl in box)
        obj = b[box] == c
        markers = np.zeros(obj.shape, np.int32)
        for k, o in enumerate(olds, 1):
            m = a[box] == o
            core = ndi.binary_erosion(m, iterations=2) & obj
            markers[core if core.any() else (m & obj)] = k
        pieces = watershed(-ndi.distance_transform_edt(obj), markers, mask=obj)
        sizes = np.bincount(pieces.ravel(), minlength=len(olds) + 1)[1:]
        if (sizes < 0.2 * area_a[olds]).any():
            continue  # a piece too small to be one of the earlier cells: leave it merged
        if not _at_necks(pieces, sizes, neck):
            continue  # cut straight through a round object: the earlier frame was over-split
        region = out[box]
        for k in range(2, len(olds) + 1):
            region[pieces == k] = next_id
            next_id += 1
    return out


class _Relabel:
    """Gives objects of consecutive planes/frames the ids of the objects they continue."""

    def __init__(self, min_iou: float, split: bool = False):
        self.min_iou = float(min_iou)
        self.split = split
        self.next_id = 1
        self.prev = None

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        labels = np.asarray(labels)
        if self.split and self.prev is not None:
            labels = split_merged(self.prev, labels)
        ids, inv = np.unique(labels, return_inverse=True)
        inv = inv.reshape(labels.shape)
        mapping = match_overlaps(self.prev, labels, self.min_iou) if self.prev is not None else {}
        lut = np.zeros(len(ids), np.int64)
        for k, i in enumerate(ids):
            if i == 0:
                continue
            j = mapping.get(int(i))
            if j is None:
                j = self.next_id
                self.next_id += 1
            lut[k] = j
        out = lut[inv]
        self.prev = out
        return out


def _finish(labels: np.ndarray, n: int) -> np.ndarray:
    return labels.astype(labels_dtype(n), copy=False)


def stitch_planes(planes_labels, min_iou: float = STITCH_IOU) -> np.ndarray:
    """3D labels from 2D labels per plane ``(Z, Y, X)``: each object takes the id of the
    object it overlaps best (IoU > ``min_iou``, one-to-one) in the plane before; the others
    get new ids. Same as :func:`link_frames` along z."""
    return link_frames(planes_labels, min_iou)


def link_frames(frames_labels, min_iou: float = 0.1, split_merges: bool = False) -> np.ndarray:
    """Labels ``(T, ...)`` with ids kept from frame to frame.

    Frame ``t``'s objects are matched one-to-one to frame ``t - 1``'s (already relabelled)
    by IoU with an optimal assignment (``linear_sum_assignment``); a pair with IoU >
    ``min_iou`` keeps the earlier id, any other object gets a new id, and an id is never
    given to a second cell, even after its cell is gone. Frames may be 2D or 3D (any
    shape after the first axis). With ``split_merges`` an object that holds most of two
    or more cells of the frame before is first cut between them (:func:`split_merged`), so
    a merge in one frame does not end two tracks; without it the objects are only
    renumbered. Returns uint16 (or uint32 for more than 65535 ids).
    """
    frames = np.asarray(frames_labels)
    if frames.ndim < 2:
        raise ValueError(f"expected (T, ...) labels, got shape {frames.shape}")
    if frames.dtype.kind not in "iub":
        raise ValueError(f"labels must be integers, got {frames.dtype}")
    out = np.zeros(frames.shape, np.uint32)
    relabel = _Relabel(min_iou, split_merges)
    for t in range(frames.shape[0]):
        out[t] = relabel(frames[t])
    return _finish(out, relabel.next_id - 1)


def tracks_from_labels(labels_t: np.ndarray) -> np.ndarray:
    """Centroid tracks of linked labels ``(T, Y, X)`` or ``(T, Z, Y, X)`` for a napari
    Tracks layer: float rows ``(track_id, t, y, x)`` (``(track_id, t, z, y, x)`` for 3D
    frames), one per object and frame, sorted by track id, then time."""
    labels_t = np.asarray(labels_t)
    if labels_t.ndim not in (3, 4):
        raise ValueError(f"expected (T, Y, X) or (T, Z, Y, X) labels, got shape {labels_t.shape}")
    rows = []
    for t, frame in enumerate(labels_t):
        ids = np.unique(frame)
        ids = ids[ids > 0]
        if ids.size == 0:
            continue
        cms = np.asarray(ndi.center_of_mass(np.ones(frame.shape, np.float32), frame, ids), float).reshape(len(ids), -1)
        rows.append(np.column_stack([ids.astype(float), np.full(len(ids), float(t)), cms]))
    if not rows:
        return np.zeros((0, labels_t.ndim + 1))
    out = np.concatenate(rows)
    return out[np.lexsort((out[:, 1], out[:, 0]))]


