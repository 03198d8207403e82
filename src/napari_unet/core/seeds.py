"""Seeds for the instance watershed, in one pass over the image: the exact distance
transform of the confident interior, and its peaks (``min_distance`` apart, or standing
``depth`` above the saddle to a higher one, as ``skimage.morphology.h_maxima`` per region
would find them) numbered per connected region. The ``*_reference`` functions are the
region-by-region originals the fast ones equal bit for bit (tests) and fall back to.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def padded_boxes(labels: np.ndarray):
    """``(id, box)`` of each region of ``labels``: its bounding box grown by one pixel on
    every side (within the array), so a region's border is inside its box."""
    for i, box in enumerate(ndi.find_objects(labels), 1):
        if box is not None:
            yield i, tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in box)


def _edt(inner: np.ndarray, flat: np.ndarray | None = None) -> np.ndarray:
    """``ndi.distance_transform_edt(inner).astype(np.float32)``, bit for bit, for a 2D mask.

    The exact squared distance to the nearest background pixel, from the runs of
    foreground along the rows (distance to the background left or right in the row) and a
    scan up and down the columns that stops, pixel by pixel, once the rows further away
    cannot be nearer; its square root as scipy takes it. 3-4x faster than scipy where the
    foreground is thin (cells), as it only visits foreground pixels. ``flat``:
    ``np.flatnonzero(inner)``, if known.
    """
    if inner.ndim != 2:
        return ndi.distance_transform_edt(inner).astype(np.float32)
    H, W = inner.shape
    idx = np.flatnonzero(inner) if flat is None else flat
    out = np.zeros(inner.shape, np.float32)
    if idx.size == 0:
        return out
    if idx.size == inner.size or max(H, W) > 8192:  # no background; or int32 could overflow
        return ndi.distance_transform_edt(inner).astype(np.float32)
    it = np.int32
    inf = it(1 << 14)  # no background in the row (squares and sums stay in int32)
    F = idx.astype(it)
    # runs of foreground along the rows
    brk = np.flatnonzero((F[1:] != F[:-1] + 1) | (F[1:] % W == 0)) + 1
    first = F[np.concatenate(([0], brk))]
    last = F[np.concatenate((brk - 1, [F.size - 1]))]
    run = np.zeros(F.size, it)
    run[brk] = 1
    np.cumsum(run, out=run)
    g = F - first[run] + 1  # to the background pixel before the run
    g[(first % W == 0)[run]] = inf
    right = last[run] - F + 1  # to the background pixel after it
    right[(last % W == W - 1)[run]] = inf
    np.minimum(g, right, out=g)
    del right, run
    g2 = g * g
    # squared row distances of all pixels (0 on background), padded above and below
    pad = int(min(g.max(), H))
    G2 = np.zeros(H * W + 2 * pad * W, it)
    G2[: pad * W] = inf * inf
    G2[H * W + pad * W :] = inf * inf
    a = F + it(pad * W)
    G2[a] = g2
    del g, F
    # d2 = min over rows k away of k^2 + g2 there; pixels drop out once k^2 >= d2
    d2 = g2
    ids = np.flatnonzero(d2 > 1)
    a = a[ids]
    best = d2[ids]
    k = 1
    while ids.size and k < H:
        kk, kW = it(k * k), it(k * W)
        c = np.take(G2, a - kW)
        c += kk
        np.minimum(best, c, out=best)
        c = np.take(G2, a + kW)
        c += kk
        np.minimum(best, c, out=best)
        k += 1
        keep = best > k * k
        if not keep.all():
            done = ~keep
            d2[ids[done]] = best[done]
            ids, a, best = ids[keep], a[keep], best[keep]
    d2[ids] = best
    out.ravel()[idx] = np.sqrt(d2.astype(np.float64))  # rounded to float32 as astype does
    return out


def _skimage_sorts_peaks_stably() -> bool:
    """Whether ``peak_local_max`` orders equally high peaks in raster order (scikit-image
    0.22 on; before, its quicksort left their order, hence which one a spacing keeps, open)."""
    import skimage

    try:
        return tuple(int(p) for p in skimage.__version__.split(".")[:2]) >= (0, 22)
    except ValueError:
        return True


def _distance_peaks_reference(dist: np.ndarray, comp: np.ndarray, min_distance: int) -> np.ndarray:
    """:func:`_distance_peaks` with :func:`skimage.feature.peak_local_max`, label by label
    (the former implementation, kept to check the fast one)."""
    from skimage.feature import peak_local_max

    peaks = peak_local_max(dist, min_distance=int(min_distance), labels=comp, exclude_border=False)
    seeds = np.zeros(comp.shape, np.int32)
    seeds[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return seeds


def _distance_peaks(dist: np.ndarray, comp: np.ndarray, min_distance: int, flat: np.ndarray | None = None) -> np.ndarray:
    """Seeds at the peaks of ``dist`` at least ``min_distance`` apart in each region of
    ``comp``, numbered region by region from the highest peak down: the seeds of
    ``peak_local_max(dist, min_distance, labels=comp, exclude_border=False)``
    (:func:`_distance_peaks_reference`), bit for bit, without its loop over the labels.

    A peak is a pixel no lower than any pixel of its region in the square of side
    ``2 min_distance + 1`` around it (and above the image's minimum); only the local maxima
    of the region (3 x 3) are tested against their square. Peaks are kept highest first
    (ties in raster order) unless one kept is less than ``min_distance`` away (Chebyshev),
    as ``skimage``'s ``ensure_spacing`` does. A region whose every pixel would be a peak
    (flat) takes ``peak_local_max``'s own rule, region by region. ``flat``:
    ``np.flatnonzero(comp)``, if known.
    """
    r = int(min_distance)
    if (dist.ndim != 2 or dist.dtype != np.float32 or comp.shape != dist.shape or r < 2
            or not _skimage_sorts_peaks_stably()):
        return _distance_peaks_reference(dist, comp, min_distance)
    H, W = shape = comp.shape
    seeds = np.zeros(shape, np.int32)
    if flat is None:
        flat = np.flatnonzero(comp)
    if flat.size == 0:
        return seeds
    lab = comp.ravel()[flat].astype(np.intp)
    v = dist.ravel()[flat]
    if not v.min() > 0:  # the background (0) must lie below every region pixel
        return _distance_peaks_reference(dist, comp, min_distance)
    threshold = dist.min()  # peak_local_max's default threshold_abs
    m, n = flat.size, int(lab.max())
    # padded by r, so that every square lies inside
    Wp = W + 2 * r
    Q = ((flat // W + r) * Wp + flat % W + r).astype(np.int32 if (H + 2 * r) * Wp < 2**31 else np.intp)
    G = np.zeros((H + 2 * r) * Wp, np.float32)
    G[Q] = v
    L = np.zeros(G.size, np.int32 if n < 2**31 else np.intp)
    L[Q] = lab
    # local maxima of each region: no higher neighbour in the same region
    cand = np.arange(m)
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1)):
        st = dy * Wp + dx
        at = Q[cand] + st
        nv = G[at]
        if dy and dx:  # across a corner: possibly another region
            nv[L[at] != lab[cand]] = 0
        cand = cand[v[cand] >= nv]
    # ... and no higher pixel of the same region in their square: certainly so for the top
    # of a region, or where no pixel of any region is higher; else look at the square's
    # pixels of their region
    side = 2 * r + 1
    keep = np.ones(cand.size, bool)
    top = np.zeros(n + 1, np.float32)
    np.maximum.at(top, lab[cand], v[cand])
    unsure = np.flatnonzero(v[cand] < top[lab[cand]])
    if unsure.size * side * side > 2**23:
        top = ndi.maximum_filter(G.reshape(H + 2 * r, Wp), size=side, mode="constant").ravel()
        unsure = unsure[v[cand[unsure]] < top[Q[cand[unsure]]]]
    del top
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    square = (dy * Wp + dx).ravel().astype(Q.dtype)
    step = max(1, 2**21 // square.size)
    for i in range(0, unsure.size, step):
        j = unsure[i : i + step]
        c = cand[j]
        at = Q[c][:, None] + square
        nv = G[at]
        nv[L[at] != lab[c][:, None]] = 0
        keep[j] = v[c] >= nv.max(1)
    cand = cand[keep]
    # regions where every pixel is a peak: peak_local_max's rule for flat regions
    flat_region = np.flatnonzero(np.bincount(lab[cand], minlength=n + 1) == np.bincount(lab, minlength=n + 1))
    flat_region = flat_region[flat_region > 0]
    special = {}
    if flat_region.size:
        from skimage.feature import peak_local_max

        is_flat = np.zeros(n + 1, bool)
        is_flat[flat_region] = True
        sel = is_flat[lab]
        fl, ff = lab[sel], flat[sel]
        y0, x0 = np.full(n + 1, H), np.full(n + 1, W)
        y1, x1 = np.zeros(n + 1, np.intp), np.zeros(n + 1, np.intp)
        np.minimum.at(y0, fl, ff // W)
        np.minimum.at(x0, fl, ff % W)
        np.maximum.at(y1, fl, ff // W + 1)
        np.maximum.at(x1, fl, ff % W + 1)
        for i in flat_region.tolist():
            box = (slice(y0[i], y1[i]), slice(x0[i], x1[i]))
            pk = peak_local_max(dist[box], min_distance=r, threshold_abs=threshold,
                                labels=(comp[box] == i).astype(np.int32), exclude_border=False)
            special[i] = (pk[:, 0] + y0[i]) * W + pk[:, 1] + x0[i]
        cand = cand[~is_flat[lab[cand]]]
    cand = cand[v[cand] > threshold]
    # highest first within each region, ties in raster order; then keep those at least
    # r away (Chebyshev) from every peak kept before them
    cand = cand[np.lexsort((flat[cand], -v[cand], lab[cand]))]
    cl, cy, cx = lab[cand].tolist(), (flat[cand] // W).tolist(), (flat[cand] % W).tolist()
    kept = []
    group = []  # (y, x) kept in the current region
    prev = -1
    for j, (li, y, x) in enumerate(zip(cl, cy, cx)):
        if li != prev:
            group, prev = [], li
        if all(abs(y - gy) >= r or abs(x - gx) >= r for gy, gx in group):
            group.append((y, x))
            kept.append(j)
    peaks = flat[cand[kept]]
    if special:
        regions = np.concatenate([lab[cand[kept]], np.repeat(list(special), [len(p) for p in special.values()])])
        peaks = np.concatenate([peaks] + list(special.values()))
        peaks = peaks[np.argsort(regions, kind="stable")]
    seeds.ravel()[peaks] = np.arange(1, peaks.size + 1)
    return seeds


def _deep_peaks_reference(dist: np.ndarray, comp: np.ndarray, depth: float) -> np.ndarray:
    """:func:`_deep_peaks`, region by region with :func:`skimage.morphology.h_maxima` in
    each region's bounding box (the former implementation, kept to check the fast one)."""
    from skimage.morphology import h_maxima

    seeds = np.zeros(comp.shape, np.int32)
    n = 0
    for i, box in padded_boxes(comp):
        own = comp[box] == i
        peaks, k = ndi.label(h_maxima(np.where(own, dist[box], 0), depth).astype(bool) & own)
        if k == 0:
            peaks, k = own.astype(np.int32), 1
        seeds[box][peaks > 0] = peaks[peaks > 0] + n
        n += k
    return seeds


def _neighbour_offsets(ndim: int):
    """All offsets to the 3**ndim - 1 neighbours, the "forward" half first."""
    offs = [o for o in np.ndindex(*(3,) * ndim) if any(c != 1 for c in o)]
    offs = [tuple(c - 1 for c in o) for o in offs]
    forward = [o for o in offs if o > (0,) * ndim]
    return forward + [tuple(-c for c in o) for o in forward]


def _deep_peaks(dist: np.ndarray, comp: np.ndarray, depth: float, flat: np.ndarray | None = None) -> np.ndarray:
    """Seeds: in each region of ``comp``, the maxima of ``dist`` at least ``depth`` above
    the saddle to a higher one (h-maxima); the whole region where it has none.

    Numbered region by region, and within a region in raster order: the same seeds as
    :func:`skimage.morphology.h_maxima` gives region by region in its bounding box
    (:func:`_deep_peaks_reference`), bit for bit, including h_maxima's float tolerance
    (the marker is ``dist - depth - 2e-6 |dist|`` and the residue is taken in float32) and
    its rule that a region less than ``depth`` high has no maximum.

    How: the geodesic reconstruction ``R`` of that marker under ``dist`` in a region is,
    at a pixel ``p``, ``min(dist(p), V(B))`` where ``B`` is the basin of ``p`` (pixels are
    sent up their steepest ascent to a local maximum, through ``dist`` values never below
    their own) and ``V(B)`` the best of ``min(marker max of B', highest saddle between B'
    and B)`` over the region's basins ``B'``, found by merging basins highest saddle first
    (Kruskal). ``p`` is an h-maximum where ``dist(p) - R(p) >= depth``. One pass over the
    pixels of the regions instead of one reconstruction per region (4,294 of them on a
    2048 x 2048 phase-contrast frame). ``flat``: ``np.flatnonzero(comp)``, if known.
    """
    h = float(depth)
    if dist.dtype != np.float32 or comp.shape != dist.shape or not h > 0 or comp.ndim < 1:
        return _deep_peaks_reference(dist, comp, depth)
    shape = comp.shape
    seeds = np.zeros(shape, np.int32)
    if flat is None:
        flat = np.flatnonzero(comp)
    if flat.size == 0:
        return seeds
    if flat.size == comp.size:  # one region filling its box: h_maxima sees no background
        return _deep_peaks_reference(dist, comp, depth)
    lab = comp.ravel()[flat].astype(np.intp)
    val = dist.ravel()[flat]
    if not val.min() > 0:  # the background (0) must lie below every region pixel
        return _deep_peaks_reference(dist, comp, depth)
    n = int(lab.max())
    top = np.zeros(n + 1, np.float32)
    np.maximum.at(top, lab, val)
    # h_maxima finds nothing in a box whose peak-to-peak range (max - 0) is below h
    zero = np.float32(0)
    deep = np.array([False] + [not h > (t - zero) for t in top[1:]])
    sel = deep[lab]
    P, v, pl = flat[sel], val[sel], lab[sel]
    m = P.size

    # padded flat indices, so that every region pixel has all its neighbours
    pshape = tuple(d + 2 for d in shape)
    pstrides = np.cumprod((1,) + pshape[:0:-1])[::-1]
    it = np.int32 if np.prod(pshape) < 2**31 else np.intp
    coords = np.unravel_index(P, shape)
    Q = sum((c + 1).astype(it) * it(s) for c, s in zip(coords, pstrides))
    del coords
    G = np.zeros(int(np.prod(pshape)), np.float32)
    G[Q] = v
    index = np.full(G.size, -1, it)
    index[Q] = np.arange(m, dtype=it)
    offsets = _neighbour_offsets(len(shape))
    steps = [it(np.dot(o, pstrides)) for o in offsets]
    # Steepest ascent to a local maximum: through face neighbours (in the same region or
    # background), then, from pixels with no higher one, across edges and corners (where
    # the neighbour may be another region, which h_maxima in this region's box never sees).
    # Each local maximum pixel is the top of a basin. (Any partition into basins with a
    # path from each pixel to its top never below it gives the same result.)
    L = np.zeros(G.size, it)
    L[Q] = pl
    hi = np.zeros(m, np.float32)
    to = np.zeros(m, it)
    face = [sum(c != 0 for c in o) == 1 for o in offsets]
    for st in (st for st, f in zip(steps, face) if f):
        nv = G[Q + st]
        up = nv > hi
        hi[up] = nv[up]
        to[up] = st
    cand = np.flatnonzero(v >= hi)
    Qc, hc, tc = Q[cand], hi[cand], to[cand]
    for st in (st for st, f in zip(steps, face) if not f):
        nv = G[Qc + st]
        nv[L[Qc + st] != pl[cand]] = 0
        up = nv > hc
        hc[up] = nv[up]
        tc[up] = st
    to[cand] = tc
    is_top = np.zeros(m, bool)
    is_top[cand] = v[cand] >= hc
    del hi, hc, tc, Qc, cand
    parent = index[Q + to]
    tops = np.flatnonzero(is_top).astype(it)
    parent[tops] = tops
    del to, is_top, index
    while True:
        up = parent[parent]
        if np.array_equal(up, parent):
            break
        parent = up
    basin_of_top = np.full(m, -1, it)
    basin_of_top[tops] = np.arange(tops.size, dtype=it)
    basin = basin_of_top[parent]
    del parent, basin_of_top
    nb = tops.size
    # h_maxima's marker (shifted image), float32 as it computes it
    marker = v - h - 2 * np.finfo(np.float32).resolution * np.abs(v)
    best_marker = np.full(nb, -np.inf, np.float32)
    np.maximum.at(best_marker, basin, marker)
    V = best_marker
    region_of_basin = pl[tops]
    multi = np.bincount(region_of_basin, minlength=n + 1) > 1
    if multi.any():
        # highest saddle between adjacent basins of the regions with several basins
        sub = np.flatnonzero(multi[pl])
        Qs, ls, bs, vs = Q[sub], pl[sub], basin[sub], v[sub]
        B = np.full(G.size, -1, it)  # basin of each pixel of those regions
        B[Qs] = bs
        eu, ev, ew = [], [], []
        for o, st in zip(offsets[: len(offsets) // 2], steps):
            nbb = B[Qs + st]
            e = (nbb >= 0) & (nbb != bs)
            if sum(c != 0 for c in o) > 1:  # may be another region, unseen by h_maxima
                e &= L[Qs + st] == ls
            if e.any():
                eu.append(bs[e])
                ev.append(nbb[e])
                ew.append(np.minimum(vs[e], G[Qs[e] + st]))
        if eu:
            V = _merge_basins(best_marker, np.concatenate(eu), np.concatenate(ev), np.concatenate(ew))
    R = np.minimum(v, V[basin])
    peak = (v - R) >= h  # h_maxima's residue, in float32
    return _number_seeds(seeds, flat, lab, n, P[peak], pl[peak])


def _merge_basins(best_marker: np.ndarray, u: np.ndarray, w: np.ndarray, saddle: np.ndarray) -> np.ndarray:
    """For each basin ``B``: the max over basins ``B'`` of ``min(best_marker[B'], highest
    saddle between B' and B)`` (``B' = B`` counts with an infinite saddle), given the
    pixel-pair edges ``u``-``w`` of height ``saddle``."""
    nb = best_marker.size
    lo, hi = np.minimum(u, w), np.maximum(u, w)
    key = lo.astype(np.int64) * nb + hi
    order = np.lexsort((saddle, key))
    key, saddle, lo, hi = key[order], saddle[order], lo[order], hi[order]
    last = np.append(key[1:] != key[:-1], True)  # the highest saddle of each basin pair
    lo, hi, saddle = lo[last], hi[last], saddle[last]
    order = np.argsort(-saddle, kind="stable")
    # Kruskal: merge the basins, highest saddle first, into a tree whose nodes record what
    # each side gains from the other: min(saddle, best marker of the other side)
    parent = list(range(nb))
    node = list(range(nb))
    best = best_marker.astype(np.float64).tolist()
    gain = [-np.inf] * nb
    up = [-1] * nb

    def find(x):
        r = x
        while parent[r] != r:
            r = parent[r]
        while parent[x] != r:
            parent[x], x = r, parent[x]
        return r

    for a, b, s in zip(lo[order].tolist(), hi[order].tolist(), saddle[order].tolist()):
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        na, nb_ = node[ra], node[rb]
        k = len(best)
        best.append(max(best[na], best[nb_]))
        gain.append(-np.inf)
        up.append(-1)
        gain[na] = min(s, best[nb_])
        gain[nb_] = min(s, best[na])
        up[na] = up[nb_] = k
        parent[rb] = ra
        node[ra] = k
    for k in range(len(gain) - 1, -1, -1):  # parents come after their children
        p = up[k]
        if p >= 0 and gain[p] > gain[k]:
            gain[k] = gain[p]
    return np.maximum(best_marker, np.asarray(gain[:nb], np.float32))


def _number_seeds(seeds, flat, lab, n, peak_px, peak_region):
    """Write the seeds into ``seeds``: the face-connected components of the peak pixels
    (flat indices ``peak_px`` in regions ``peak_region``), numbered region by region and by
    their first pixel in raster order; a region without a peak pixel is one seed."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    shape = seeds.shape
    k = peak_px.size
    if k:
        strides = np.cumprod((1,) + shape[:0:-1])[::-1]
        coords = np.unravel_index(peak_px, shape)
        rows, cols = [], []
        for axis, st in enumerate(strides):  # face neighbours (ndi.label's default)
            nxt = peak_px + st
            j = np.minimum(np.searchsorted(peak_px, nxt), k - 1)
            e = (peak_px[j] == nxt) & (coords[axis] + 1 < shape[axis])
            rows.append(np.flatnonzero(e))
            cols.append(j[e])
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        graph = coo_matrix((np.ones(rows.size, np.int8), (rows, cols)), shape=(k, k))
        nc, cc = connected_components(graph, directed=False)
        first = np.full(nc, k, np.intp)
        np.minimum.at(first, cc, np.arange(k))  # peak_px is sorted: first pixel in raster order
        creg = peak_region[first]
        order = np.lexsort((first, creg))
        rank = np.empty(nc, np.intp)
        rank[order] = np.arange(nc) - np.searchsorted(creg[order], creg[order])
        count = np.bincount(creg, minlength=n + 1)
    else:
        count = np.zeros(n + 1, np.intp)
    whole = (count == 0) & (np.bincount(lab, minlength=n + 1) > 0)  # labels in use only
    whole[0] = False
    count[whole] = 1
    start = np.concatenate(([0], np.cumsum(count)[:-1]))  # seeds before region i
    out = seeds.ravel()
    if k:
        out[peak_px] = (start[creg] + rank + 1)[cc]
    wsel = whole[lab]
    out[flat[wsel]] = start[lab[wsel]] + 1
    return seeds
