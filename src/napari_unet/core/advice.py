"""Plain-language hints when a segmentation looks implausible, with what to try instead."""

from __future__ import annotations

import numpy as np

__all__ = ["result_hints"]


def result_hints(semantic: np.ndarray, instances: np.ndarray, diameter: float | None = None) -> list[str]:
    """Hints for results that are probably wrong: nothing found, cells covering most of
    the image (the background taken for cells), or thousands of specks far smaller than
    the expected cells (``diameter``: the cell diameter assumed, in pixels)."""
    hints = []
    n = int(np.unique(instances[instances > 0]).size) if instances.ndim > 2 else int(instances.max())
    if n == 0:
        return ["no cells found: try another model (the Model list says what each is for), "
                "type the cell diameter, or paint a few strokes and Fine-tune"]
    cover = float(np.count_nonzero(semantic)) / max(semantic.size, 1)
    if cover > 0.7:
        hints.append(f"cells cover {100 * cover:.0f} % of the image: the background may have been taken for cells; "
                     "try another model or type the cell diameter")
    if diameter and n > 500:
        areas = _areas(instances, n)
        areas = areas[areas > 0]
        expected = np.pi * (diameter / 2) ** 2
        if np.median(areas) < 0.1 * expected:
            hints.append(f"{n} objects, most far smaller than cells of {diameter:.0f} px: probably noise or texture; "
                         "type the cell diameter or try another model")
    return hints


def _areas(instances: np.ndarray, n: int, rows: int = 512) -> np.ndarray:
    """Pixel counts of labels 1..(at least) ``n``, counted a slab of ``rows`` rows at a
    time: ``np.bincount`` copies its input as int64, 8 bytes a pixel (0.5 GB for an 8192 px
    frame's labels at once)."""
    flat = instances.reshape(-1, instances.shape[-1])
    counts = np.zeros(int(n) + 1, np.int64)
    for y in range(0, flat.shape[0], rows):
        c = np.bincount(flat[y : y + rows].ravel())
        if c.size > counts.size:
            counts = np.concatenate([counts, np.zeros(c.size - counts.size, np.int64)])
        counts[: c.size] += c
    return counts[1:]
