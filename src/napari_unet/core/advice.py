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
        areas = np.bincount(instances.ravel().astype(np.int64))[1:]
        areas = areas[areas > 0]
        expected = np.pi * (diameter / 2) ** 2
        if np.median(areas) < 0.1 * expected:
            hints.append(f"{n} objects, most far smaller than cells of {diameter:.0f} px: probably noise or texture; "
                         "type the cell diameter or try another model")
    return hints
