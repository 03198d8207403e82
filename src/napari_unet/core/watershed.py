"""The seeded watershed of the post-processing, in two threads on large planes.

scikit-image's watershed floods within the mask only, so each connected component of the
mask (4-connected, as its flooding) is flooded on its own: the labels of one do not depend
on any other. The components wholly above the middle row and the rest can therefore be
flooded side by side, and scikit-image releases the GIL while it floods. The labels are
those of one call, bit for bit (each component keeps its pixels' order, which breaks ties).
A 2048 px frame's watershed 0.27-0.34 -> 0.17-0.23 s on 2 cores (its command line 0.1-0.2 s
faster, ``benchmarks/frames.py``). The blocks of larger planes are flooded in one call
(:meth:`.inference.Segmenter.segment_blocks`): split, an 8192 px frame took as long and
70 MB more memory.
"""

from __future__ import annotations

import numpy as np

__all__ = ["watershed", "SPLIT_MIN_PIXELS"]

#: Planes smaller than this are flooded in one call (the split costs a labelling pass).
SPLIT_MIN_PIXELS = 1 << 20


def watershed(elevation: np.ndarray, markers: np.ndarray, mask: np.ndarray, threads: int = 1) -> np.ndarray:
    """``skimage.segmentation.watershed(elevation, markers, mask=mask)`` of a 2D plane,
    in two threads when ``threads >= 2`` and the plane has at least
    :data:`SPLIT_MIN_PIXELS` pixels."""
    from skimage.segmentation import watershed as flood

    h = mask.shape[0]
    if threads < 2 or mask.ndim != 2 or mask.size < SPLIT_MIN_PIXELS or h < 2:
        return flood(elevation, markers=markers, mask=mask)
    from concurrent.futures import ThreadPoolExecutor

    from scipy import ndimage as ndi

    r = h // 2
    comp, n = ndi.label(mask)
    crossing = np.zeros(n + 1, bool)  # the components with pixels on both sides of row r
    crossing[comp[r - 1][mask[r - 1] & mask[r]]] = True
    ids = np.flatnonzero(crossing)
    objects = ndi.find_objects(comp) if ids.size else []
    r0 = min((objects[i - 1][0].start for i in ids), default=r)  # the top row of the lower part
    top = mask[:r] & ~crossing[comp[:r]]
    low = mask[r0:].copy()
    low[: r - r0] &= crossing[comp[r0:r]]
    del comp
    with ThreadPoolExecutor(2, thread_name_prefix="napari-unet-watershed") as pool:
        upper = pool.submit(flood, elevation[:r], markers=markers[:r], mask=top)
        lower = pool.submit(flood, elevation[r0:], markers=markers[r0:], mask=low)
        a, b = upper.result(), lower.result()
    out = np.zeros(mask.shape, a.dtype)
    out[:r][top] = a[top]
    part = out[r0:]
    part[low] = b[low]
    return out
