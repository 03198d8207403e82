"""Percentile normalisation that copes with any dtype, NaNs and constant images."""

from __future__ import annotations

import numpy as np

__all__ = ["percentiles", "normalize", "to_float", "to_gray", "bright_background"]

#: Pixels sampled to estimate percentiles of large images (exact below this).
_MAX_SAMPLES = 4_000_000


def to_float(image: np.ndarray) -> np.ndarray:
    """``image`` as float32 (bool -> 0/1), without copying float32 input."""
    image = np.asarray(image)
    if image.dtype == np.float32:
        return image
    if image.dtype.kind not in "biuf":
        raise ValueError(f"cannot segment an image of dtype {image.dtype}")
    return image.astype(np.float32)


#: Integer images whose values span fewer than this many levels get their percentiles from
#: a histogram: the same numbers as ``np.percentile``, without its sort (a 0.36 MP uint16
#: bbbc039 image 5.9 -> 0.5 ms, a 2048 px uint16 frame 70 -> 13 ms).
_HISTOGRAM_LEVELS = 1 << 20


def _sample(image: np.ndarray) -> np.ndarray:
    """The finite pixels of ``image`` (flat; integers as they are, anything else as
    float32), on a regular grid for large images."""
    a = image if hasattr(image, "shape") else np.asarray(image)
    size = int(np.prod(a.shape))
    if size > _MAX_SAMPLES:  # subsampled before reading: a zarr or dask array stays on disk
        step = int(np.ceil(np.sqrt(size / _MAX_SAMPLES)))
        a = a[..., ::step, ::step]
    a = np.asarray(a)
    if a.dtype.kind in "ui":
        return a.ravel()
    a = to_float(a).ravel()
    return a[np.isfinite(a)]


def _percentiles_of(a: np.ndarray, qs: list[float]) -> list[float]:
    """``np.percentile`` (its default linear interpolation) of the float32 copy of a flat,
    non-empty array; for integers of float32's exact range spanning few levels, from a
    histogram, with the same float64 interpolation between the order statistics around
    each rank."""
    if a.dtype.kind in "ui" and a.dtype.itemsize <= 4:
        lo, hi = int(a.min()), int(a.max())
        if max(-lo, hi) < 1 << 24 and hi - lo < _HISTOGRAM_LEVELS:
            if a.dtype.kind == "u" and hi < _HISTOGRAM_LEVELS:
                lo, idx = 0, a  # counted as they are (a shifted copy would cost 4x the counting)
            else:
                idx = a.astype(np.intp) - lo
            cum = np.cumsum(np.bincount(idx))
            n = a.size
            out = []
            for q in qs:
                pos = q / 100 * (n - 1)
                k = int(np.floor(pos))
                g = pos - k
                v0 = float(np.searchsorted(cum, k, side="right") + lo)  # the k-th smallest value (from 0)
                v1 = float(np.searchsorted(cum, min(k + 1, n - 1), side="right") + lo)
                out.append(v1 - (v1 - v0) * (1 - g) if g >= 0.5 else v0 + (v1 - v0) * g)  # numpy's lerp
            return out
    return [float(v) for v in np.percentile(a.astype(np.float32, copy=False), qs)]


def percentiles(image: np.ndarray, low: float = 1.0, high: float = 99.8, invert_bright: bool = False) -> tuple[float, float]:
    """The ``low`` and ``high`` percentiles of the finite pixels of ``image``.

    Large images are subsampled on a regular grid so the estimate costs little memory.
    Returns ``(0, 0)`` for an image without finite pixels. With ``invert_bright`` an image
    whose background is bright (brightfield, stained tissue: the median pixel lies in the
    upper half of the range) gets the limits swapped, ``(high, low)``: :func:`normalize`
    then inverts it, so objects are bright on a dark background as in fluorescence.
    """
    a = _sample(image)
    if a.size == 0:
        return 0.0, 0.0
    lo, hi, med = _percentiles_of(a, [low, high, 50])
    if invert_bright and med - lo > 0.5 * (hi - lo) > 0:
        return float(hi), float(lo)
    return float(lo), float(hi)


def bright_background(image: np.ndarray) -> bool:
    """Whether the median pixel of ``image`` lies in the upper half of its 1-99.8 % range."""
    lo, hi = percentiles(image, invert_bright=True)
    return lo > hi


def to_gray(image: np.ndarray) -> np.ndarray:
    """One float32 channel from an RGB(A) image ``(..., 3|4)``, chosen by how the colour forms.

    Absorbing stains on a bright background (H&E and other stained tissue, brightfield)
    darken the channels they absorb, so the darkest channel carries the most contrast;
    emitting dyes on a dark background (fluorescence in colour) brighten theirs, so the
    brightest channel does. On DSB 2018's colour images the darkest channel separates
    nuclei better than the mean of R, G and B (Otsu pixel IoU 0.731 vs 0.716).
    """
    rgb = to_float(np.asarray(image)[..., :3])
    if bright_background(rgb.mean(axis=-1)):
        return rgb.min(axis=-1)
    return rgb.max(axis=-1)


def normalize(
    image: np.ndarray,
    low: float = 1.0,
    high: float = 99.8,
    invert_bright: bool = False,
    limits: tuple[float, float] | None = None,
) -> np.ndarray:
    """Map the ``low``/``high`` percentiles to 0/1 (float32); NaN and inf become 0.

    A constant image maps to all zeros rather than dividing by zero. ``limits`` passes
    precomputed ``(lo, hi)`` values, e.g. to normalise blocks of a large image alike;
    ``lo > hi`` (from ``percentiles(..., invert_bright=True)``) inverts the image.
    """
    lo, hi = limits if limits is not None else percentiles(image, low, high, invert_bright)
    out = to_float(image)
    out = out - np.float32(lo)  # a new array: the caller's image is never modified
    scale = hi - lo  # negative for swapped limits: the image is inverted
    if abs(scale) > 1e-12 * max(1.0, abs(hi), abs(lo)):
        out *= np.float32(1.0 / scale)
    else:
        out[...] = 0
    np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return out
