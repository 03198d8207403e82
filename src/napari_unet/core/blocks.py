"""Overlapping blocks over the last two axes, and objects stitched back from them.

A plane (or a volume, at full depth) too large to segment at once is cut in the XY plane
into blocks of ``size`` pixels, each read with ``halo`` pixels of context on every side.
Each block is segmented on its own; an object is kept from the block that holds the centre
of its bounding box (in Y and X), so every object is written once, whole, as long as
objects are smaller than the halo. Used by :meth:`.inference.Segmenter.segment_blocks`
(2D) and :func:`.stack.segment_volume` (3D).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["Block", "block_grid", "paste_objects", "release_memory"]


@dataclass(frozen=True)
class Block:
    """The core ``[y0:y1, x0:x1]`` a block writes and the region ``[Y0:Y1, X0:X1]`` it reads."""

    y0: int
    y1: int
    x0: int
    x1: int
    Y0: int
    Y1: int
    X0: int
    X1: int

    @property
    def read(self) -> tuple[slice, slice]:
        return slice(self.Y0, self.Y1), slice(self.X0, self.X1)

    @property
    def core(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def core_in_read(self) -> tuple[slice, slice]:
        """The core in the coordinates of the region read."""
        return slice(self.y0 - self.Y0, self.y1 - self.Y0), slice(self.x0 - self.X0, self.x1 - self.X0)


def block_grid(h: int, w: int, size: int, halo: int) -> list[Block]:
    """Blocks of ``size`` px covering an ``h`` x ``w`` plane, row by row, each with ``halo``
    px of context (clipped at the plane's edges)."""
    if size < 1 or halo < 0:
        raise ValueError(f"need a block size >= 1 and a halo >= 0, got {size} and {halo}")
    blocks = []
    for y0 in range(0, h, size):
        for x0 in range(0, w, size):
            y1, x1 = min(y0 + size, h), min(x0 + size, w)
            blocks.append(Block(y0, y1, x0, x1, max(0, y0 - halo), min(h, y1 + halo), max(0, x0 - halo), min(w, x1 + halo)))
    return blocks


def _owned(inst: np.ndarray, block: Block) -> Iterator[tuple[int, bool]]:
    from scipy import ndimage as ndi

    for i, sl in enumerate(ndi.find_objects(inst), start=1):
        if sl is None:
            continue
        cy = block.Y0 + (sl[-2].start + sl[-2].stop - 1) / 2
        cx = block.X0 + (sl[-1].start + sl[-1].stop - 1) / 2
        yield i, bool(block.y0 <= cy < block.y1 and block.x0 <= cx < block.x1)


def paste_objects(inst: np.ndarray, block: Block, target, next_id: int) -> int:
    """Write the objects of ``inst`` (the labels of ``block``'s read region, last two axes
    Y, X) whose bounding-box centre lies in the block's core into ``target`` (numpy or
    zarr, the whole image's shape) with new ids from ``next_id``, where ``target`` is still
    0 (a neighbour's object is never overwritten). Returns the next free id."""
    n = int(inst.max())
    if not n:
        return next_id
    lut = np.zeros(n + 1, np.uint32)
    for i, mine in _owned(inst, block):
        if mine:
            lut[i] = next_id
            next_id += 1
    new = lut[inst]
    region = (Ellipsis, *block.read)
    out = np.asarray(target[region])
    write = (new > 0) & (out == 0)
    out[write] = new[write]
    target[region] = out  # a no-op for numpy (a view), the write for zarr
    return next_id


def release_memory() -> None:
    """Hand memory freed by the last block back to the system (glibc's ``malloc_trim``, as
    Dask's workers do; a no-op elsewhere). Without it the allocator keeps the blocks'
    freed arrays of under 32 MB as a growing reserve: on an 8192 px frame the peak memory
    was about 0.1 GB higher (``benchmarks/memory.py``)."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        pass
