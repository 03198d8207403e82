"""Where the model is unsure: a map from its class probabilities, and the region where a
new stroke would teach it most ("paint here next", after ilastik's uncertainty display).

The map is the margin between the two answers a pixel can get, cell or not cell:
``1 - |p(cell) - p(not cell)|``, 1 where the network is torn, 0 where it is sure. It costs
nothing beyond the preview's own prediction.
"""

from __future__ import annotations

import numpy as np

__all__ = ["uncertainty", "most_uncertain"]


def uncertainty(probs: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32 in [0, 1] from class probabilities ``(C, H, W)`` whose channel 0 is
    background (not cell) and the others parts of cells."""
    bg = np.asarray(probs[0], np.float32)
    return (1.0 - np.abs(1.0 - 2.0 * bg)).astype(np.float32)


def most_uncertain(u: np.ndarray, size: int = 32, exclude: np.ndarray | None = None,
                   within: np.ndarray | None = None) -> tuple[int, int, float]:
    """``(y, x, mean uncertainty)`` of the centre of the ``size`` x ``size`` window with the
    highest mean uncertainty; ``exclude`` (e.g. already painted pixels) counts as certain,
    and only centres where ``within`` is true are considered (all when ``None``)."""
    from scipy import ndimage as ndi

    u = np.asarray(u, np.float32)
    if exclude is not None:
        u = np.where(exclude, 0.0, u)
    smooth = ndi.uniform_filter(u, size=max(1, min(size, *u.shape)), mode="constant")
    if within is not None:
        smooth = np.where(within, smooth, -1.0)
    if exclude is not None:  # never a centre on a painted pixel
        smooth = np.where(exclude, -1.0, smooth)
    y, x = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    return int(y), int(x), float(smooth[y, x])
