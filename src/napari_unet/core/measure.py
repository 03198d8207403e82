"""Per-cell measurements of an instance label image, as a table of columns.

One row per instance (``label`` 1..N in order), from :func:`skimage.measure.regionprops_table`:
area, equivalent diameter, centroid, and for 2D objects perimeter, eccentricity and
solidity; with an intensity image, the mean, max and integrated intensity of each channel.
With ``spacing`` (the pixel size per axis, e.g. a napari layer's ``scale``) lengths and
areas are in those units.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

__all__ = ["measure", "write_csv"]

_AXES = "zyx"


def measure(labels: np.ndarray, image: np.ndarray | None = None, spacing=None) -> dict[str, np.ndarray]:
    """Columns (name -> 1D array) of per-instance measurements of a 2D or 3D label image.

    ``image``: the intensities, with the labels' shape or that shape plus a last channel
    axis. ``spacing``: pixel size per axis (default 1).
    """
    from skimage.measure import regionprops_table

    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise ValueError(f"measurements need 2D or 3D labels, got shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        labels = labels.astype(np.int64)
    spacing = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * labels.ndim
    if len(spacing) != labels.ndim:
        raise ValueError(f"spacing {spacing} does not match {labels.ndim}D labels")
    props = ["label", "area", "equivalent_diameter_area", "centroid"]
    if labels.ndim == 2:
        props += ["perimeter", "solidity"]  # eccentricity: from moments in one pass, below
    intensity = None
    if image is not None:
        intensity = np.asarray(image)
        if intensity.shape[: labels.ndim] != labels.shape:
            raise ValueError(f"intensity image of shape {intensity.shape} does not match labels of shape {labels.shape}")
        if intensity.dtype.kind not in "biuf":
            raise ValueError(f"cannot measure intensities of dtype {intensity.dtype}")
        intensity = intensity.astype(np.float32, copy=False)
        props += ["intensity_mean", "intensity_max"]
    table = regionprops_table(labels, intensity_image=intensity, properties=props, spacing=spacing)
    out: dict[str, np.ndarray] = {"label": table.pop("label"), "area": table.pop("area")}
    out["equivalent_diameter"] = table.pop("equivalent_diameter_area")
    axes = _AXES[-labels.ndim :]
    for i, ax in enumerate(axes):
        out[f"centroid_{ax}"] = table.pop(f"centroid-{i}")
    if labels.ndim == 2:
        out["perimeter"] = table.pop("perimeter")
        out["eccentricity"] = _eccentricity(labels, out["label"], spacing)
        out["solidity"] = table.pop("solidity")
    if intensity is not None:
        channels = 1 if intensity.ndim == labels.ndim else intensity.shape[-1]
        voxel = float(np.prod(spacing))
        for c in range(channels):
            sfx = "" if channels == 1 else f"_{c}"
            mean = table.pop("intensity_mean" if channels == 1 else f"intensity_mean-{c}")
            out[f"mean_intensity{sfx}"] = mean
            out[f"max_intensity{sfx}"] = table.pop("intensity_max" if channels == 1 else f"intensity_max-{c}")
            out[f"integrated_intensity{sfx}"] = mean * out["area"] / voxel  # sum over the object's pixels
    return out


def _eccentricity(labels: np.ndarray, ids: np.ndarray, spacing) -> np.ndarray:
    """regionprops' ``eccentricity`` of each 2D region in ``ids``, from the second central
    moments of the (spaced) pixel coordinates, summed over the foreground pixels of all
    regions at once (skimage takes them region by region: 0.4 s of 1.3 s for 1,000 cells)."""
    if len(ids) == 0:
        return np.zeros(0)
    flat = np.flatnonzero(labels)
    lab = labels.ravel()[flat].astype(np.int64)
    y, x = np.divmod(flat, labels.shape[1])
    y = y * float(spacing[0])
    x = x * float(spacing[1])
    size = int(lab.max()) + 1

    def per_region(w=None):
        return np.bincount(lab, weights=w, minlength=size)[ids]

    n = per_region()
    my, mx = per_region(y) / n, per_region(x) / n
    cyy = per_region(y * y) / n - my * my
    cxx = per_region(x * x) / n - mx * mx
    cxy = per_region(y * x) / n - my * mx
    half, root = (cyy + cxx) / 2, np.sqrt(((cyy - cxx) / 2) ** 2 + cxy**2)
    l1, l2 = half + root, np.maximum(half - root, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ecc = np.sqrt(np.clip(1 - l2 / l1, 0, 1))
    return np.where(l1 > 1e-12, ecc, 0.0)


def write_csv(columns: dict[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Write measurement columns as CSV (header row, one row per instance), atomically."""
    from .io import atomic_write

    names = list(columns)
    n = len(next(iter(columns.values()))) if columns else 0

    def write(f):
        w = csv.writer(f)
        w.writerow(names)
        for i in range(n):
            w.writerow([_fmt(columns[k][i]) for k in names])

    return atomic_write(path, write, text=True)


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (str, np.str_)):
        return str(v)
    if isinstance(v, (np.integer, int)):
        return str(int(v))
    return f"{float(v):.6g}"
