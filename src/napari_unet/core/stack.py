"""Volumes and time-lapses with a 2D U-Net: 3D instances and ids kept over time.

- :func:`segment_volume`: one id per cell through a ``(Z, Y, X)`` volume. The default,
  ``method="orthogonal"`` (Cellpose's 3D mode, Stringer et al. 2021), runs the 2D network on
  the XY planes and, made isotropic with the anisotropy, on the XZ and YZ slices; the
  three probability estimates are averaged and cut into cells by a 3D watershed from seeds
  in the confident interior. ``method="stitch"`` segments each XY plane and links each
  object to the object of the plane above it with the best overlap (as Cellpose's
  ``stitch_threshold``); ``method="planes"`` keeps every 2D object as its own (a baseline).
- :func:`~.linking.link_frames` (in :mod:`.linking`, re-exported here): ids kept from frame
  to frame (2D or 3D frames) by overlap matching with an optimal one-to-one assignment; new
  cells get new ids, never reused.
- :func:`segment_stack`: any ``(T, Z, Y, X)`` array (from :func:`.axes.to_tzcyx` and
  :func:`.axes.pick_channel`), volumes in 3D, frames linked over time.
- :func:`~.linking.tracks_from_labels`: centroid tracks ``(track_id, t, [z,] y, x)`` for
  napari's Tracks layer.

All of it works plane by plane (or slice by slice): the network never sees more than one
2D plane at a time, and a volume costs two float32 probability volumes plus its labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import ndimage as ndi

from .linking import STITCH_IOU, _finish, _Relabel, link_frames, match_overlaps, split_merged, stitch_planes, tracks_from_labels
from .normalize import percentiles, to_float
from .postprocess import _deep_peaks, fill_small_holes, remove_small

__all__ = [
    "METHODS",
    "DEFAULT_METHOD",
    "segment_volume",
    "segment_stack",
    "segment_timelapse",
    "stitch_planes",
    "link_frames",
    "match_overlaps",
    "split_merged",
    "tracks_from_labels",
]

Progress = Callable[[float, str], None]

#: Ways :func:`segment_volume` makes 3D cells (see the module docstring).
METHODS = ("orthogonal", "stitch", "planes")
DEFAULT_METHOD = "orthogonal"
#: Fewer planes than this are stitched plane to plane instead (``orthogonal`` needs depth).
MIN_PLANES_3D = 8
#: ``orthogonal`` segments a volume with more voxels than this in XY blocks at full depth
#: (:func:`_orthogonal_blocks`): its working memory, about 20-50 bytes per voxel, stays
#: under about 1 GB whatever the volume's size.
MAX_VOXELS = 2**24


# ---- volumes -------------------------------------------------------------------------------
def _resolve_diameter(segmenter, volume, diameter, limits):
    """A number (or ``None`` = the model's scale) and a note, estimating ``"auto"``/0 on
    the middle plane."""
    diameter = segmenter.resolve_diameter(diameter)
    if diameter == "auto" or (diameter is not None and not isinstance(diameter, str) and float(diameter) == 0):
        d, note, _ = segmenter.auto_diameter(volume[volume.shape[0] // 2], limits)
        return d, note
    if isinstance(diameter, str):
        raise ValueError(f"diameter must be a number of pixels or 'auto', got {diameter!r}")
    return diameter, None


#: Pixels of mirrored context (in the network's pixels) around each XZ/YZ slice
#: (:func:`_side_views`). The network's receptive radius (122 px for the shipped models)
#: is the exact margin, but a slice of 20 planes then costs 14x its own pixels; the
#: synthetic benchmark scores the same with 32 (`benchmarks/volume.py --side-gaps`).
SIDE_GAP = 32
#: Padded side slices larger than this (pixels) are predicted alone in ordinary tiles.
SIDE_DIRECT_PIXELS = 2**20
#: Pixels of one batch of padded side slices.
SIDE_BATCH_PIXELS = 2**18
#: Spacing (in the model's pixels) of the XZ / YZ slices the network runs on, the ones
#: between interpolated linearly; 1 = all. Synthetic volumes (benchmarks/volume.py
#: --side-steps 1 2 3; seeds 0, 1 and 2 at anisotropy 2): 3D F1 0.927 / 0.941 / 0.927 with
#: every slice, 0.938 / 0.945 / 0.938 with every second one, in 0.55x the time.
SIDE_STEP = 2.0


def _side_geometry(segmenter, h: int, w: int, diameter, anisotropy: float) -> tuple[tuple[int, int], float]:
    """How the network sees an XZ or YZ slice ``(h, w)`` (planes, pixels): the slice's
    isotropic shape and the model scale then applied to it.

    The slice is made isotropic by shrinking its in-plane axis to the z step (``w /
    anisotropy`` columns, anti-aliased, so the in-plane axis is as blurred as z) rather
    than stretching z: stretching turns pixel noise into vertical streaks the network
    mistakes for structure (synthetic benchmark: 3D F1@0.5 0.887 stretched, 0.920 shrunk;
    without the shrink's blur, at the same size: 0.866). Cells are then ``diameter /
    anisotropy`` pixels across, rescaled to the model's size as in XY. A model without an
    object size is never rescaled: z is stretched instead.
    """
    from .inference import MAX_UPSCALE

    a = float(anisotropy)
    d = float(diameter) if diameter else segmenter.loaded.image_diameter
    if not d:
        return (max(1, int(round(h * a))), w), 1.0
    s = segmenter.loaded.scale(d / a)
    if s > MAX_UPSCALE:
        raise ValueError(
            f"cells {d:g} px across at anisotropy {a:g} are {d / a:.1f} planes deep: the side views would be "
            f"enlarged {s:.0f}x (at most {MAX_UPSCALE:g}x); give a smaller anisotropy or use method 'stitch'"
        )
    return (h, max(1, int(round(w / a)))), s


def _side_views(segmenter, slices: np.ndarray, diameter, limits, anisotropy: float,
                gap: int | None = None) -> np.ndarray:
    """Background and interior probabilities ``(N, 2, Z, W)`` of ``N`` XZ or YZ slices
    ``(N, Z, W)``, each resized as :func:`_side_geometry` says.

    Each resized slice is mirrored by ``gap`` pixels (default :data:`SIDE_GAP`) on every
    side and the slices go through the network in batches, as they are: a thin slice in
    ordinary tiles would pay the tiles' whole context margin (about 14x its pixels for 20
    planes), and thin inputs also run faster per pixel on a CPU than large tiles (2x on
    the 2-core test machine). Slices larger than :data:`SIDE_DIRECT_PIXELS` are tiled as
    any image.
    """
    from skimage.transform import resize

    from .data import rescale_pair, scaled_shape
    from .tiling import pad_image

    gap = SIDE_GAP if gap is None else int(gap)
    n, h, w = slices.shape
    iso, scale = _side_geometry(segmenter, h, w, diameter, anisotropy)
    hh, ww = scaled_shape(iso, scale)
    m = segmenter.model.multiple
    ph, pw = -(-(hh + 2 * gap) // m) * m, -(-(ww + 2 * gap) // m) * m
    direct = ph * pw <= SIDE_DIRECT_PIXELS
    per = max(1, SIDE_BATCH_PIXELS // (ph * pw)) if direct else 1
    out = np.empty((n, 2, h, w), np.float32)
    for i in range(0, n, per):
        chunk = []
        for sl in slices[i : i + per]:
            x = to_float(sl)
            if iso != (h, w):
                x = resize(x, iso, order=1, anti_aliasing=iso[1] < w, preserve_range=True).astype(np.float32)
            chunk.append(rescale_pair(segmenter.normalized(x, limits), None, scale)[0])
        if direct:
            batch = np.stack([pad_image(x, (gap, gap), (ph - hh - gap, pw - ww - gap)) for x in chunk])[:, None]
            probs = segmenter.predict_batch(batch)[:, :2, gap : gap + hh, gap : gap + ww]
        else:
            probs = [segmenter.predict_normalized(x)[:2] for x in chunk]
        for k, q in enumerate(probs):
            if (hh, ww) != iso:
                q = resize(q, (2, *iso), order=1, preserve_range=True).astype(np.float32)
            if iso != (h, w):
                q = resize(q, (2, h, w), order=1, preserve_range=True)
            out[i + k] = q
    return out


def side_stride(segmenter, diameter) -> int:
    """Every how many XZ / YZ slices the network runs (the ones between are interpolated
    linearly): about every :data:`SIDE_STEP` pixels at the model's scale, so that cells
    enlarged to the model's size are sampled as densely as cells shrunk to it."""
    if not SIDE_STEP:
        return 1
    return max(1, int(SIDE_STEP / segmenter.loaded.scale(diameter) + 1e-6))


def _volume_probs(segmenter, volume, diameter, limits, anisotropy, progress, axes3=True):
    """Averaged background and interior probabilities ``(Z, Y, X)`` float32 (two volumes).

    XY planes as they are; with ``axes3`` (and more than one plane), also the XZ and YZ
    slices, made isotropic and batched by :func:`_side_views`: every :func:`side_stride`-th
    one and the last, the ones between interpolated linearly.
    """
    nz, ny, nx = volume.shape
    bg = np.zeros(volume.shape, np.float32)
    inner = np.zeros(volume.shape, np.float32)
    three = axes3 and nz > 1
    work = nz + (ny + nx if three else 0)
    done = 0

    def tick(what):
        nonlocal done
        done += 1
        if progress is not None:
            progress(min(done / work, 1.0), what)

    for z in range(nz):
        p = segmenter.probabilities(volume[z], diameter, limits)
        bg[z] += p[0]
        inner[z] += p[1]
        tick(f"XY plane {z + 1}/{nz}")
    if three:
        stride = side_stride(segmenter, diameter)
        for axis, n, name in ((1, ny, "XZ"), (2, nx, "YZ")):
            def add(j, p2, axis=axis):  # p2: (2, Z, W) probabilities of slice j
                if axis == 1:
                    bg[:, j, :] += p2[0]
                    inner[:, j, :] += p2[1]
                else:
                    bg[:, :, j] += p2[0]
                    inner[:, :, j] += p2[1]

            sampled = list(range(0, n, stride))
            if sampled[-1] != n - 1:
                sampled.append(n - 1)
            per = max(1, SIDE_BATCH_PIXELS // (nz * max(nx if axis == 1 else ny, 1)))
            prev = None
            for i in range(0, len(sampled), per):
                idx = sampled[i : i + per]
                sl = volume[:, idx, :] if axis == 1 else volume[:, :, idx]
                p = _side_views(segmenter, np.moveaxis(sl, axis, 0), diameter, limits, anisotropy)
                for j, pj in zip(idx, p):
                    if prev is not None:  # the slices between two computed ones: linear in between
                        jp, pp = prev
                        for y in range(jp + 1, j):
                            t = (y - jp) / (j - jp)
                            add(y, (1 - t) * pp + t * pj)
                    add(j, pj)
                    prev = (j, pj)
                done = nz + (0 if axis == 1 else ny) + idx[-1]  # tick() counts the last one
                tick(f"{name} slices {idx[-1] + 1}/{n}")
        bg /= 3
        inner /= 3
    return bg, inner


def _orthogonal_blocks(segmenter, volume, a, diameter, limits, progress, max_voxels):
    """``orthogonal`` on a large volume, in XY blocks at full depth with bounded memory.

    Each block holds about ``max_voxels`` voxels with its halo of ``max(64, 3 x diameter)``
    px (context for the network's XY, XZ and YZ views, and more than a cell, so every cell
    lies whole in the block that holds its centre: :mod:`.blocks`).
    """
    from .blocks import block_grid, paste_objects

    nz, h, w = volume.shape
    d = float(diameter) if diameter else segmenter.loaded.image_diameter
    m = segmenter.model.multiple
    halo = -(-int(math.ceil(max(64.0, 3.0 * (d or 30.0)))) // m) * m
    side = int(math.sqrt(max_voxels / nz))
    size = -(-max(side - 2 * halo, 2 * halo) // m) * m
    blocks = block_grid(h, w, size, halo)
    post = segmenter.settings(diameter)
    semantic = np.zeros(volume.shape, np.uint8)
    instances = np.zeros(volume.shape, np.uint32)
    next_id = 1
    for k, b in enumerate(blocks):
        def sub(f, msg, k=k):
            if progress is not None:
                progress((k + f) / len(blocks), f"block {k + 1}/{len(blocks)}: {msg}")

        bg, inner = _volume_probs(segmenter, np.asarray(volume[(slice(None), *b.read)]), diameter, limits, a, sub)
        sem, inst = instances_3d(bg, inner, post, a, d)
        del bg, inner
        semantic[(slice(None), *b.core)] = sem[(slice(None), *b.core_in_read)]
        next_id = paste_objects(inst, b, instances, next_id)
    return semantic, _finish(instances, next_id - 1)


def min_volume(min_size: int, diameter: float | None, anisotropy: float) -> int:
    """Smallest 3D object (voxels) for a 2D smallest object of ``min_size`` px and cells
    ``diameter`` px across: the same share of a cell's volume as ``min_size`` is of its
    area, i.e. ``min_size`` extruded over two thirds of the cell's depth (``2 d / 3``,
    in planes: over the anisotropy). Without a diameter, the ball of cross-section ``min_size``."""
    a = max(float(anisotropy), 1e-6)
    if diameter:
        return max(1, int(round(max(int(min_size), 1) * 2.0 * float(diameter) / 3.0 / a)))
    r = math.sqrt(max(int(min_size), 1) / math.pi)
    return max(1, int(round(4.0 / 3.0 * math.pi * r**3 / a)))


def instances_3d(bg: np.ndarray, inner: np.ndarray, post, anisotropy: float = 1.0,
                 diameter: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Semantic (uint8) and instance labels of a volume from its background and interior
    probabilities ``(Z, Y, X)``, with a model's 2D post-processing settings ``post``
    (:class:`.postprocess.Postprocess`) carried to 3D.

    Cell mask ``bg < 1 - threshold`` (holes filled plane by plane); seeds in the confident
    interior (``inner > seed_threshold``): with ``post.depth`` the maxima of its distance
    transform (in XY pixels, z steps counting ``anisotropy``) that stand ``depth`` above the
    saddle to a higher one, with ``post.min_distance`` peaks that far apart (in XY pixels),
    else one seed per connected region; a 3D watershed through ``bg - inner`` over the
    mask; mask regions without a seed become cells of their own; cells below
    :func:`min_volume` (for cells ``diameter`` XY px across) dropped.

    Each connected region of the mask is processed in its bounding box, so beyond the two
    probability volumes the peak memory is about 10 bytes per voxel plus a few times the
    largest region's box (the whole volume when all cells touch: about 50 bytes per voxel).
    """
    a = float(anisotropy)
    mask = bg < 1.0 - post.threshold
    if post.max_hole:
        for z in range(mask.shape[0]):
            mask[z] = fill_small_holes(mask[z], post.max_hole)
    semantic = mask.astype(np.uint8)
    regions, n_regions = ndi.label(mask)
    del mask
    labels = np.zeros(bg.shape, np.int32)
    if n_regions == 0:
        return semantic, np.zeros(bg.shape, np.uint16)
    from skimage.segmentation import watershed

    from .seeds import padded_boxes

    min_vol = min_volume(post.min_size, diameter, a)
    offset = 0
    for i, box in padded_boxes(regions):
        own = regions[box] == i
        b, inn = bg[box], inner[box]
        seeds_mask = (inn > post.seed_threshold) & own
        if post.depth or post.min_distance:
            comp, _ = ndi.label(seeds_mask)
            dist = ndi.distance_transform_edt(seeds_mask, sampling=(a, 1.0, 1.0)).astype(np.float32)
            dist = ndi.gaussian_filter(dist, (1.0 / a, 1.0, 1.0))
            if post.depth:
                seeds = _deep_peaks(dist, comp, float(post.depth))
            else:
                from skimage.feature import peak_local_max

                r = int(post.min_distance)
                fp = _ellipsoid(max(1, int(round(r / a))), r)
                peaks = np.asarray(peak_local_max(dist, footprint=fp, labels=comp, exclude_border=False)).reshape(-1, 3)
                seeds = np.zeros(own.shape, np.int32)
                seeds[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        else:
            seeds, _ = ndi.label(seeds_mask)
            seeds = remove_small(seeds, max(min_vol // 4, 1)).astype(np.int32)
        lab = watershed(b - inn, markers=seeds, mask=own) if seeds.any() else np.zeros(own.shape, np.int32)
        rest, n_rest = ndi.label(own & (lab == 0))  # no seed reached it: a cell of its own
        if n_rest:
            lab = np.where(rest > 0, rest + lab.max(), lab)
        out = labels[box]
        out[own] = np.where(lab[own] > 0, lab[own] + offset, 0)
        offset += int(lab.max())
    del regions
    return semantic, remove_small(labels, min_vol)


def _ellipsoid(rz: int, r: int) -> np.ndarray:
    z, y, x = np.ogrid[-rz : rz + 1, -r : r + 1, -r : r + 1]
    return (z / max(rz, 1)) ** 2 + (y / r) ** 2 + (x / r) ** 2 <= 1.0


def segment_volume(
    segmenter,
    volume_zyx: np.ndarray,
    anisotropy: float = 1.0,
    diameter: float | str | None = None,
    progress: Progress | None = None,
    method: str = DEFAULT_METHOD,
    stitch_iou: float = STITCH_IOU,
    limits: tuple[float, float] | None = None,
    max_voxels: int = MAX_VOXELS,
) -> tuple[np.ndarray, np.ndarray]:
    """Semantic (uint8, 1 = cell) and instance labels (uint16/uint32, one id per cell
    through the volume) of a ``(Z, Y, X)`` volume, both ``(Z, Y, X)``.

    ``segmenter``: a :class:`.inference.Segmenter` (its ``threshold``/``min_size``
    overrides apply). ``anisotropy``: z step over the XY pixel size (3 = planes 3 pixels
    apart; :func:`.axes.anisotropy_from_tiff`). ``diameter``: cell diameter in XY pixels
    (``None``: the model's; ``"auto"``/0: estimated on the middle plane). ``progress``:
    called with ``(fraction done, message)``. ``method``: ``"orthogonal"`` (default; XY,
    XZ and YZ probabilities averaged, 3D watershed, :func:`instances_3d`), ``"stitch"``
    (2D labels per plane linked to the plane above by IoU > ``stitch_iou``,
    :func:`stitch_planes`) or ``"planes"`` (2D labels per plane, each object its own id).
    ``limits``: the normalisation limits (default: the volume's percentiles, once for
    all planes, so all are normalised alike).

    ``orthogonal`` runs the network on about ``1 + 2 x anisotropy`` times as many pixels
    as ``stitch`` and holds two float32 volumes; both hold the labels. A volume of more
    than ``max_voxels`` voxels is segmented in XY blocks at full depth, each with a halo
    of context, and its cells stitched (:func:`_orthogonal_blocks`).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    volume = np.asarray(volume_zyx)
    if volume.ndim != 3:
        raise ValueError(f"expected a (Z, Y, X) volume, got shape {volume.shape}")
    if volume.dtype.kind not in "biuf":
        raise ValueError(f"cannot segment an image of dtype {volume.dtype}")
    if min(volume.shape) < 1:
        raise ValueError(f"volume is empty: shape {volume.shape}")
    a = float(anisotropy)
    if not (a > 0 and math.isfinite(a)):
        raise ValueError(f"anisotropy must be a positive number, got {anisotropy}")
    if limits is None:
        limits = percentiles(volume, *segmenter.percentiles)
    diameter, _note = _resolve_diameter(segmenter, volume, diameter, limits)
    if method == "orthogonal":
        if volume.size > max_voxels:
            return _orthogonal_blocks(segmenter, volume, a, diameter, limits, progress, max_voxels)
        bg, inner = _volume_probs(segmenter, volume, diameter, limits, a, progress)
        d = float(diameter) if diameter else segmenter.loaded.image_diameter
        return instances_3d(bg, inner, segmenter.settings(diameter), a, d)
    nz = volume.shape[0]
    semantic = np.zeros(volume.shape, np.uint8)
    instances = np.zeros(volume.shape, np.uint32)
    relabel = _Relabel(stitch_iou)
    offset = 0
    for z in range(nz):
        seg = segmenter.segment_plane(volume[z], diameter, limits)
        semantic[z] = seg.semantic
        if method == "stitch":
            instances[z] = relabel(seg.instances)
        else:
            inst = seg.instances.astype(np.uint32)
            instances[z] = np.where(inst > 0, inst + offset, 0)
            offset += int(inst.max())
        if progress is not None:
            progress((z + 1) / nz, f"plane {z + 1}/{nz}")
    n = relabel.next_id - 1 if method == "stitch" else offset
    return semantic, _finish(instances, n)


def segment_stack(
    segmenter,
    tzyx: np.ndarray,
    anisotropy: float = 1.0,
    diameter: float | str | None = None,
    method: str = DEFAULT_METHOD,
    link: bool = True,
    min_iou: float = 0.1,
    progress: Progress | None = None,
    split_merges: bool = True,
    colour: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Semantic and instance labels ``(T, Z, Y, X)`` of a ``(T, Z, Y, X)`` array, and notes.

    Each frame is normalised on its own (percentiles of the frame). ``Z > 1``: each frame
    is a volume, segmented in 3D by :func:`segment_volume` (``anisotropy``, ``method``);
    ``Z == 1``: each frame is one 2D plane (:meth:`.inference.Segmenter.segment_plane`).
    ``T > 1`` and ``link``: ids are kept over time by :func:`link_frames` (``min_iou``,
    ``split_merges``: objects holding two cells of the frame before are cut between them);
    without ``link`` each frame numbers its cells from 1. ``diameter`` ``"auto"``/0 is
    estimated once, on the first frame. A model that hands some images to a specialist
    (:meth:`.inference.Segmenter.delegate_for`: phase contrast to ``cells``, stained tissue
    to ``tissue``) decides on the first frame, for the whole stack; ``colour``: the planes
    were made from an RGB image's colours. Typical use::

        data, info = to_tzcyx(image, axes)
        sem, inst, notes = segment_stack(seg, pick_channel(data, channel), anisotropy)
        labels = labels_from_tzyx(inst, info.axes)
    """
    movie = np.asarray(tzyx)
    multi = getattr(segmenter, "in_channels", 1) > 1  # then (T, Z, C, Y, X): the model reads C channels
    if movie.ndim != 4 + multi:
        raise ValueError(f"expected a (T, Z, {'C, ' if multi else ''}Y, X) array, got shape {movie.shape}")
    nt, nz = movie.shape[:2]
    if multi and nz > 1:
        raise ValueError(f"volumes (Z) are segmented by one-channel models; the model {segmenter.loaded.name!r} "
                         f"reads {segmenter.in_channels} channels: segment its planes one by one (--axes with T instead of Z)")
    notes = []
    other = None if multi or not hasattr(segmenter, "delegate_for") else segmenter.delegate_for(movie[0, nz // 2], colour)
    if other is not None:  # a specialist does better on such images, as for one plane
        from .inference import gave_back_note, handed_note

        name = other.loaded.name
        handed = segment_stack(other, movie, anisotropy, segmenter.handover_diameter(other, diameter), method, link,
                               min_iou, progress, split_merges, colour)
        if handed[1].any():
            said = handed_note(name, tissue=colour and name == segmenter.loaded.meta.get("colour_model"))
            return handed[0], handed[1], [said, *handed[2]]
        notes.append(gave_back_note(name))
    if nz > 1 and nz < MIN_PLANES_3D and method == "orthogonal":
        method = "stitch"  # side views of a few planes show no whole cell
    if nz > 1:
        notes.append(f"3D: segmented {'each of the ' + str(nt) + ' volumes' if nt > 1 else 'the volume'} of {nz} planes in 3D ({method}, anisotropy {anisotropy:g})")
    if nt > 1:
        notes.append(f"time-lapse of {nt} frames" + ("; ids kept over time" if link else ""))
    shape = movie.shape[:2] + movie.shape[-2:]
    semantic = np.zeros(shape, np.uint8)
    per_frame = np.zeros(shape, np.uint32)
    diameter = segmenter.resolve_diameter(diameter)
    for t in range(nt):
        frame = movie[t]
        limits = segmenter.limits(frame[0]) if multi else percentiles(frame, *segmenter.percentiles)
        if t == 0:
            diameter, note = _resolve_diameter(segmenter, frame, diameter, limits)
            if note:
                notes.append(note)

        def sub(f, msg, t=t):
            if progress is not None:
                progress((t + f) / nt, msg if nt == 1 else f"frame {t + 1}/{nt}: {msg}")

        if nz > 1:
            semantic[t], per_frame[t] = segment_volume(segmenter, frame, anisotropy, diameter, sub, method, limits=limits)
        else:
            seg = segmenter.segment_plane(frame[0], diameter, limits)
            semantic[t, 0], per_frame[t, 0] = seg.semantic, seg.instances
            sub(1.0, "done")
    if nt > 1 and link:
        instances = link_frames(per_frame, min_iou, split_merges)
    else:
        instances = _finish(per_frame, int(per_frame.max()))
    return semantic, instances, notes


def segment_timelapse(segmenter, movie: np.ndarray, diameter=None, min_iou: float = 0.1, anisotropy: float = 1.0,
                      method: str = DEFAULT_METHOD, progress: Progress | None = None,
                      split_merges: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Semantic and linked instance labels of a time-lapse ``(T, Y, X)`` (or of volumes
    ``(T, Z, Y, X)``), with the input's shape: :func:`segment_stack` with ``link=True``."""
    movie = np.asarray(movie)
    if movie.ndim not in (3, 4):
        raise ValueError(f"expected (T, Y, X) or (T, Z, Y, X), got shape {movie.shape}")
    data = movie[:, None] if movie.ndim == 3 else movie
    sem, inst, _ = segment_stack(segmenter, data, anisotropy, diameter, method, True, min_iou, progress, split_merges)
    if movie.ndim == 3:
        sem, inst = sem[:, 0], inst[:, 0]
    return sem, inst
