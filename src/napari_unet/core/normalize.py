"""Percentile normalisation that copes with any dtype, NaNs and constant images."""

from __future__ import annotations

import numpy as np

__all__ = ["percentiles", "normalize", "to_float"]

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


def percentiles(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> tuple[float, float]:
    """The ``low`` and ``high`` percentiles of the finite pixels of ``image``.

    Large images are subsampled on a regular grid so the estimate costs little memory.
    Returns ``(0, 0)`` for an image without finite pixels.
    """
    a = np.asarray(image)
    if a.size > _MAX_SAMPLES:
        step = int(np.ceil(np.sqrt(a.size / _MAX_SAMPLES)))
        a = a[..., ::step, ::step]
    a = to_float(a).ravel()
    a = a[np.isfinite(a)]
    if a.size == 0:
        return 0.0, 0.0
    lo, hi = np.percentile(a, [low, high])
    return float(lo), float(hi)


def normalize(
    image: np.ndarray,
    low: float = 1.0,
    high: float = 99.8,
    limits: tuple[float, float] | None = None,
) -> np.ndarray:
    """Map the ``low``/``high`` percentiles to 0/1 (float32); NaN and inf become 0.

    A constant image maps to all zeros rather than dividing by zero. ``limits`` passes
    precomputed ``(lo, hi)`` values, e.g. to normalise blocks of a large image alike.
    """
    lo, hi = limits if limits is not None else percentiles(image, low, high)
    out = to_float(image)
    out = out - np.float32(lo)  # a new array: the caller's image is never modified
    scale = hi - lo
    if scale > 1e-12 * max(1.0, abs(hi)):
        out *= np.float32(1.0 / scale)
    else:
        out[...] = 0
    np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return out
