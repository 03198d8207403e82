"""The seeded watershed of the post-processing, in two halves on large planes.

scikit-image's watershed floods within the mask only, so each connected component of the
mask (4-connected, as its flooding) is flooded on its own. A large plane is flooded in two
calls: the components wholly above the middle row, and the rest; with two threads side by
side (scikit-image releases the GIL while it floods). The labels do not depend on the
threads. They are one call's except where two seeds reach a pixel at exactly the same
elevation: scikit-image queues all seed pixels at once, and which of two equal ones it takes
first depends on every seed queued, so a pixel between them may go to the other seed
(coarse, tied elevations in a test: 18-48 pixels of 1.1 M differ; none on the real frames
and folders of ``benchmarks/frames.py`` and ``benchmarks/lanes.py``). A 2048 px frame's
watershed 0.27-0.34 -> 0.17-0.23 s on 2 cores. ``threads=0``: one call, as a block of a
larger plane is flooded (:meth:`.inference.Segmenter.segment_blocks`: in halves, an 8192 px
frame took 30.1 s instead of 30.7 and 1.03 GB instead of 0.93).
"""

from __future__ import annotations

import numpy as np

__all__ = ["watershed", "SPLIT_MIN_PIXELS"]

#: Planes smaller than this are flooded in one call (the split costs a labelling pass).
SPLIT_MIN_PIXELS = 1 << 20


def watershed(elevation: np.ndarray, markers: np.ndarray, mask: np.ndarray, threads: int = 1) -> np.ndarray:
    """``skimage.segmentation.watershed(elevation, markers, mask=mask)`` of a 2D plane, in
    two halves when it has at least :data:`SPLIT_MIN_PIXELS` pixels and ``threads >= 1``
    (side by side from 2 threads on: the same labels either way)."""
    from skimage.segmentation import watershed as flood

    h = mask.shape[0]
    if threads < 1 or mask.ndim != 2 or mask.size < SPLIT_MIN_PIXELS or h < 2:
        return flood(elevation, markers=markers, mask=mask)
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
    halves = ((elevation[:r], markers[:r], top), (elevation[r0:], markers[r0:], low))
    if threads >= 2:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2, thread_name_prefix="napari-unet-watershed") as pool:
            a, b = pool.map(lambda part: flood(part[0], markers=part[1], mask=part[2]), halves)
    else:
        a, b = (flood(e, markers=m, mask=k) for e, m, k in halves)
    out = np.zeros(mask.shape, a.dtype)
    out[:r][top] = a[top]
    part = out[r0:]
    part[low] = b[low]
    return out
