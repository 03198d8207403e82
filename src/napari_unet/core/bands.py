"""Probabilities of a large plane's blocks, each pixel through the network once.

:meth:`.inference.Segmenter.segment_blocks` cuts a plane too large to segment at once into
blocks read with a halo of context (:mod:`.blocks`). Predicting each block's read region on
its own runs the network twice or four times over every halo: on an 8192 px frame, 2048 px
blocks with 208 px halos cost 2.08x the frame's pixels in network input. Here the blocks
are visited in rows, left to right, and only the pixels no earlier block computed go
through the network (1.60x): the columns a block shares with its left neighbour are kept
from it, and the rows a band of blocks shares with the band above are kept from that band
(one strip of ``2 * halo`` rows across the plane).

Each new region is predicted in tiles that start on the pooling grid of the whole plane's
padded image and carry the network's aligned receptive radius as real context, as
:func:`.tiling.predict_tiled` does for a whole plane: every probability equals that of a
single whole-plane pass (:func:`.tiling.predict_image`), so stitched blocks need no
blending, and a block's halo holds exact probabilities up to its edge.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from .blocks import Block, block_grid
from .tiling import _round_up, balanced_core, window_start

__all__ = ["rolling_probabilities"]


def _reflect(idx: np.ndarray, n: int) -> np.ndarray:
    """Indices of numpy's ``reflect`` padding (edge pixel not repeated) into ``[0, n)``."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.abs(idx) % period
    return np.where(idx > n - 1, period - idx, idx)


def _cores(a: int, b: int, tile: int, m: int) -> list[tuple[int, int]]:
    """``[a, b)`` cut into as few pieces of at most ``tile`` px as possible, of equal size on
    the pooling grid (``a`` is on it), the last one cut at ``b``."""
    size = balanced_core(b - a, tile, m)
    return [(s, min(s + size, b)) for s in range(a, b, size)]


class _Padded:
    """Windows of the whole plane as :func:`.tiling.predict_image` pads it (mirrored by
    ``border`` px, the bottom and right also up to the pooling grid), read and normalised
    on demand, so the plane itself may be a lazy array (zarr, dask, a TIFF on disk)."""

    def __init__(self, plane, normalise: Callable[[np.ndarray], np.ndarray], border: int, multiple: int):
        self.plane, self.normalise, self.border = plane, normalise, border
        self.h, self.w = plane.shape[-2:]
        # the padded image's extent: the plane rounded up to the pooling grid, plus borders
        self.size = (_round_up(self.h, multiple) + 2 * border, _round_up(self.w, multiple) + 2 * border)

    def window(self, y: int, x: int, th: int, tw: int) -> np.ndarray:
        """The ``(C, th, tw)`` normalised window at ``(y, x)`` of the padded image."""
        ys = _reflect(np.arange(y, y + th) - self.border, self.h)
        xs = _reflect(np.arange(x, x + tw) - self.border, self.w)
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        raw = np.asarray(self.plane[..., y0:y1, x0:x1])
        if raw.ndim == 2:
            raw = raw[None]
        win = raw[:, ys - y0][:, :, xs - x0]
        return self.normalise(win)


def _predict_region(padded: _Padded, y0: int, y1: int, x0: int, x1: int, predict, tile: int, margin: int,
                    multiple: int, out: np.ndarray) -> None:
    """Write the probabilities of the plane's ``[y0:y1, x0:x1]`` (plane coordinates on the
    pooling grid) into ``out`` (``(K, y1 - y0, x1 - x0)``), tile by tile with ``margin`` px
    of real context. A tile's input holds at most ``tile * tile`` pixels (a core of
    ``tile`` rows and fewer columns), so the network's peak memory stays that of the
    smaller tiles a block of its own would get, beside a large plane's arrays."""
    b = padded.border
    for ya, yb in _cores(y0, y1, tile, multiple):
        th = min(_round_up(yb - ya, multiple) + 2 * margin, padded.size[0])
        wide = max(tile * tile // th - 2 * margin, tile // 2, multiple)
        for xa, xb in _cores(x0, x1, wide, multiple):
            tw = min(_round_up(xb - xa, multiple) + 2 * margin, padded.size[1])
            wy = window_start(ya, b, margin, th, padded.size[0])
            wx = window_start(xa, b, margin, tw, padded.size[1])
            probs = predict(padded.window(wy, wx, th, tw)[None])[0]
            oy, ox = ya + b - wy, xa + b - wx
            out[:, ya - y0 : yb - y0, xa - x0 : xb - x0] = probs[:, oy : oy + yb - ya, ox : ox + xb - xa]


def rolling_probabilities(plane, size: int, halo: int, normalise: Callable[[np.ndarray], np.ndarray],
                          predict: Callable[[np.ndarray], np.ndarray], tile: int, margin: int, border: int,
                          multiple: int, channels: int) -> Iterator[tuple[Block, np.ndarray]]:
    """``(block, probabilities of its read region)`` for the blocks of
    :func:`.blocks.block_grid` (``size``, ``halo``: multiples of ``multiple``, ``halo <=
    size / 2``), in its order.

    ``plane``: ``(H, W)`` or ``(C, H, W)``, any array that can be sliced; ``normalise``
    maps a raw ``(C, h, w)`` window to the network's input; ``predict`` a ``(1, C, h, w)``
    batch to ``(1, K, h, w)`` probabilities (``K = channels``). ``tile``, ``margin`` and
    ``border`` are those of :func:`.tiling.predict_image`, whose whole-plane answer each
    block's probabilities equal. The arrays yielded are the caller's to keep.
    """
    if size % multiple or halo % multiple or 2 * halo > size:
        raise ValueError(f"need a block size and halo on the pooling grid ({multiple} px), halo <= size / 2; "
                         f"got {size} and {halo}")
    margin = _round_up(max(int(margin), 0), multiple)  # as TileGeometry rounds them
    border = min(_round_up(max(int(border), 0), multiple), margin)
    padded = _Padded(plane, normalise, border, multiple)
    h, w = padded.h, padded.w
    blocks = block_grid(h, w, size, halo)
    strip = None  # the rows this band shares with the band above, all columns: (K, rows, W)
    left = None  # the columns this block shares with its left neighbour
    for b in blocks:
        last_in_row = b.x1 == w
        top = min(b.y0 + halo, b.Y1) if b.y0 > 0 else 0  # rows above it come from the band above
        lft = min(b.x0 + halo, b.X1) if b.x0 > 0 else 0  # columns left of it from the left neighbour
        probs = np.empty((channels, b.Y1 - b.Y0, b.X1 - b.X0), np.float32)
        if top > b.Y0:
            probs[:, : top - b.Y0] = strip[:, :, b.X0 : b.X1]
        if lft > b.X0:
            probs[:, top - b.Y0 :, : lft - b.X0] = left
        if b.Y1 > top and b.X1 > lft:
            _predict_region(padded, top, b.Y1, lft, b.X1, predict, tile, margin, multiple,
                            out=probs[:, top - b.Y0 :, lft - b.X0 :])
        # keep what the next block and the next band share with this one
        left = None if last_in_row else probs[:, top - b.Y0 :, b.x1 - halo - b.X0 :].copy()
        if b.y1 < h:
            rows = b.Y1 - (b.y1 - halo)
            if b.x0 == 0:  # the strip is refilled in place: later blocks of this band read right of it
                below = strip if strip is not None and strip.shape[1] == rows else np.empty((channels, rows, w), np.float32)
            stop = b.X1 if last_in_row else b.x1 - halo  # the next block writes on from there
            below[:, :, b.X0 : stop] = probs[:, b.y1 - halo - b.Y0 :, : stop - b.X0]
        if last_in_row:
            strip = below if b.y1 < h else None
        yield b, probs
        del probs
