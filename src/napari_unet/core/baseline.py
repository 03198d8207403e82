"""Classic baseline: Otsu threshold plus distance-transform watershed.

The reference every learned model should beat: smooth lightly, threshold the percentile
normalised image at Otsu's level, fill holes, drop small specks, and split touching
objects with a watershed on the negative distance transform seeded at its local maxima.
Bright objects are assumed to be foreground (fluorescence); on phase contrast or EM the
baseline is expected to fail, and that is reported rather than hidden.
"""

from __future__ import annotations

import numpy as np

from .normalize import normalize, to_gray
from .postprocess import labels_dtype, remove_small

__all__ = ["otsu_watershed", "blob_diameter"]


def otsu_watershed(
    image: np.ndarray,
    sigma: float = 1.0,
    min_size: int = 30,
    min_distance: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Semantic (uint8, 1 = cell) and instance (uint16) labels of a 2D image.

    ``sigma``: Gaussian smoothing (pixels, 0 for none) before thresholding; ``min_size``:
    objects and holes smaller than this many pixels are removed/filled; ``min_distance``:
    the least distance (pixels) between two watershed seeds; 10 suits objects about 30 px
    across (chosen on bbbc039/val: F1@0.5 0.879 at 7, 0.904 at 10, 0.905 at 12). A
    constant or empty image gives all zeros.
    """
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.segmentation import watershed

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        image = to_gray(image)
    if image.ndim != 2:
        raise ValueError(f"the Otsu baseline needs a 2D image, got shape {image.shape}")
    shape = image.shape
    empty = np.zeros(shape, np.uint8), np.zeros(shape, np.uint16)
    if image.size == 0:
        return empty
    x = normalize(image)
    if sigma > 0:
        x = gaussian(x, sigma=sigma, preserve_range=True).astype(np.float32)
    if not np.isfinite(x).all() or float(x.max()) - float(x.min()) < 1e-6:
        return empty
    try:
        t = threshold_otsu(x)
    except ValueError:  # a single grey level
        return empty
    mask = x > t
    mask = ndi.binary_fill_holes(mask)
    cc, _ = ndi.label(mask)
    mask = remove_small(cc, min_size) > 0
    if not mask.any():
        return empty
    dist = ndi.distance_transform_edt(mask)
    cc, _ = ndi.label(mask)
    peaks = peak_local_max(dist, min_distance=min_distance, labels=cc, exclude_border=False)
    markers = np.zeros(shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-dist, markers, mask=mask)
    # components without a peak (should not happen with labels=cc, but be safe)
    rest, n_rest = ndi.label(mask & (labels == 0))
    if n_rest:
        labels = np.where(rest > 0, rest + labels.max(), labels)
    labels = remove_small(labels, min_size)
    semantic = (labels > 0).astype(np.uint8)
    return semantic, labels.astype(labels_dtype(int(labels.max())))


def blob_diameter(x: np.ndarray, sigma: float = 1.0) -> float | None:
    """Area-weighted equivalent diameter (px) of the bright blobs of a normalised 2D image:
    its connected components above Otsu's level after a light smoothing (``None`` for a
    flat image). Touching objects count as one blob, so this is an upper bound on the
    size of the objects in a fluorescence-like image, found without a network."""
    from scipy import ndimage as ndi
    from skimage.filters import gaussian, threshold_otsu

    x = np.asarray(x, np.float32)
    if sigma > 0:
        x = gaussian(x, sigma=sigma, preserve_range=True)
    if x.size == 0 or not np.isfinite(x).all() or float(x.max()) - float(x.min()) < 1e-6:
        return None
    cc, n = ndi.label(x > threshold_otsu(x))
    if not n:
        return None
    areas = np.bincount(cc.ravel())[1:].astype(float)
    return float(2 * np.sqrt((areas**2).sum() / areas.sum() / np.pi))
