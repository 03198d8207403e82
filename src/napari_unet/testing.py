"""Synthetic images and a simulated user, shared by the tests, the benchmarks and the
screenshot script (Qt-free; nothing here is used by the plugin itself)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["blobs", "data_dir", "discs", "odd_arrays", "simulate_strokes"]


def data_dir() -> Path:
    """The project's annotated data (``../shared/data`` beside the checkout, or
    ``$NAPARI_UNET_DATA``); the path may not exist."""
    if "NAPARI_UNET_DATA" in os.environ:
        return Path(os.environ["NAPARI_UNET_DATA"])
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def discs(shape=(96, 128), centers=((40, 40), (40, 62), (70, 100)), radius=12):
    """Instance labels of discs; the first two touch."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lab = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centers, 1):
        d = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        lab[d & (lab == 0)] = i
    return lab


def blobs(shape=(16, 96, 96), centers=((8, 25, 25), (8, 25, 70), (8, 70, 40), (6, 72, 80)), r=11, rz=5.5):
    """A volume of bright blurred ellipsoids (planes ``rz`` apart in z for ``r`` in y, x)."""
    from scipy import ndimage as ndi

    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    v = np.zeros(shape, np.float32)
    for cz, cy, cx in centers:
        v[((zz - cz) / rz) ** 2 + ((yy - cy) / r) ** 2 + ((xx - cx) / r) ** 2 <= 1] = 1
    v = ndi.gaussian_filter(v, (0.7, 1.5, 1.5))
    return (v * 800 + 100 + np.random.default_rng(0).normal(0, 10, shape)).astype(np.uint16)


def simulate_strokes(
    labels: np.ndarray,
    n_cells: int = 15,
    n_background: int = 15,
    length: int = 30,
    seed: int = 0,
    cell_width: int = 5,
) -> np.ndarray:
    """Strokes a person might paint, from instance ground truth: an annotation layer.

    One straight stroke (``cell_width`` px wide, a small brush, up to ``length`` px long)
    through the inside of each of ``n_cells`` random cells (label ``1``), staying clear of
    their border, and ``n_background`` short strokes along the background between cells
    (label ``2``), each following the background's centre line for about ``length`` px,
    3 px wide. Everything else is ``0`` (unlabeled).
    """
    from scipy import ndimage as ndi
    from skimage.draw import line
    from skimage.morphology import skeletonize

    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    H, W = labels.shape
    ann = np.zeros(labels.shape, np.uint8)
    ids, areas = np.unique(labels[labels > 0], return_counts=True)
    ids = ids[areas >= 200]
    objects = ndi.find_objects(labels)
    for i in rng.permutation(ids)[:n_cells]:
        sl = objects[i - 1]
        sl = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in sl)
        m = labels[sl] == i
        dist = ndi.distance_transform_edt(m)
        inside = dist > 3
        if not inside.any():
            continue
        cy, cx = np.unravel_index(np.argmax(dist), m.shape)
        a = rng.uniform(0, np.pi)
        dy, dx = np.sin(a) * length / 2, np.cos(a) * length / 2
        rr, cc = line(int(round(cy - dy)), int(round(cx - dx)), int(round(cy + dy)), int(round(cx + dx)))
        ok = (rr >= 0) & (rr < m.shape[0]) & (cc >= 0) & (cc < m.shape[1])
        rr, cc = rr[ok], cc[ok]
        stroke = np.zeros(m.shape, bool)
        stroke[rr, cc] = True
        stroke &= inside
        comp, _ = ndi.label(stroke, np.ones((3, 3)))
        stroke = comp == comp[cy, cx] if comp[cy, cx] else stroke
        stroke = ndi.binary_dilation(stroke, iterations=max(0, (cell_width - 1) // 2)) & (dist > 1)
        ann[sl][stroke] = 1
    bg = labels == 0
    skel = skeletonize(bg)
    skel[:length, :] = skel[-length:, :] = False
    skel[:, :length] = skel[:, -length:] = False
    pts = np.argwhere(skel)
    placed = 0
    for k in rng.permutation(len(pts)):
        if placed >= n_background:
            break
        y, x = pts[k]
        r = length // 2 + 2
        y0, y1, x0, x1 = max(0, y - r), min(H, y + r + 1), max(0, x - r), min(W, x + r + 1)
        if ann[y0:y1, x0:x1].any():  # keep strokes apart
            continue
        sk = skel[y0:y1, x0:x1]
        reach = np.zeros(sk.shape, bool)
        reach[y - y0, x - x0] = True
        for _ in range(length // 2):
            reach = ndi.binary_dilation(reach, np.ones((3, 3))) & sk
        stroke = ndi.binary_dilation(reach) & bg[y0:y1, x0:x1]
        ann[y0:y1, x0:x1][stroke] = 2
        placed += 1
    return ann


def odd_arrays() -> dict[str, np.ndarray]:
    """The images a user may open that a segmenter must either segment or refuse in one
    clear line: every dtype, NaN and inf, constant, tiny and one-row, 1D, empty, complex,
    RGB(A), stacks (the bad-input matrix of the CLI and widget tests)."""
    rng = np.random.default_rng(0)
    return {
    "uint8 2D": rng.integers(0, 255, (40, 52)).astype(np.uint8),
    "int8 2D": rng.integers(-100, 100, (40, 52)).astype(np.int8),
    "uint16 2D": rng.integers(0, 60000, (40, 52)).astype(np.uint16),
    "int32 2D": rng.integers(-5, 5, (40, 52)).astype(np.int32),
    "float32 NaN": np.where(rng.random((40, 52)) < 0.1, np.nan, rng.random((40, 52))).astype(np.float32),
    "float64 inf": np.where(rng.random((40, 52)) < 0.1, np.inf, rng.random((40, 52))),
    "all NaN": np.full((40, 52), np.nan, np.float32),
    "constant": np.full((40, 52), 7, np.uint16),
    "bool": rng.random((40, 52)) < 0.3,
    "tiny 3x3": rng.random((3, 3)).astype(np.float32),
    "one row": rng.random((1, 64)).astype(np.float32),
    "RGB": rng.integers(0, 255, (40, 52, 3)).astype(np.uint8),
    "RGBA": rng.integers(0, 255, (40, 52, 4)).astype(np.uint8),
    "stack ZYX": rng.random((5, 40, 52)).astype(np.float32),  # (3 planes: tifffile stores them as RGB)
    "TZYX": rng.random((2, 3, 24, 28)).astype(np.float32),
    "1D": rng.random(100).astype(np.float32),
    "empty": np.zeros((0, 40), np.float32),
    "complex": (rng.random((16, 16)) + 1j).astype(np.complex64),
}
