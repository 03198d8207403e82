"""Reading image / label pairs from disk and measuring object sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["read_image", "find_pairs", "median_diameter", "rescale_pair", "predict_at_scale"]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


def read_image(path: str | Path) -> np.ndarray:
    """Read a TIFF (tifffile) or a PNG/JPEG/BMP (scikit-image); ``ValueError`` if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            return tifffile.imread(path)
        from skimage.io import imread

        return imread(path)
    except Exception as exc:  # noqa: BLE001 - readers raise anything on a bad file; worded once
        raise ValueError(f"cannot read {path}: {exc.__class__.__name__}: {exc}") from None


def _expand(paths) -> list[Path]:
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(q for q in sorted(p.iterdir()) if q.suffix.lower() in IMAGE_SUFFIXES and "_labels" not in q.stem)
        else:
            out.append(p)
    return out


def find_pairs(images, labels=None) -> list[tuple[Path, Path]]:
    """Image/label path pairs from folders or lists.

    With ``labels`` omitted, each image ``X.tif`` pairs with ``X_labels.tif`` beside it
    (the layout of ``shared/data``); images without labels are skipped.
    """
    imgs = _expand(images)
    if labels:
        labs = [Path(p) for p in labels]
        if len(labs) == 1 and labs[0].is_dir():
            labs = [labs[0] / f"{p.stem}_labels{p.suffix}" for p in imgs]
        if len(labs) != len(imgs):
            raise ValueError(f"{len(imgs)} images but {len(labs)} label files")
        pairs = list(zip(imgs, labs))
    else:
        pairs = [(p, p.with_name(f"{p.stem}_labels{p.suffix}")) for p in imgs]
        pairs = [(a, b) for a, b in pairs if b.is_file()]
    if not pairs:
        raise ValueError("no image/label pairs found")
    return pairs


def median_diameter(labels: list[np.ndarray] | np.ndarray) -> float:
    """Median equivalent-circle diameter (px) of the objects in instance label images."""
    if isinstance(labels, np.ndarray):
        labels = [labels]
    areas = []
    for lab in labels:
        a = np.bincount(np.asarray(lab).ravel().astype(np.int64))[1:]
        areas.append(a[a > 0])
    areas = np.concatenate(areas) if areas else np.zeros(0)
    if areas.size == 0:
        return 0.0
    return float(2 * np.sqrt(np.median(areas) / np.pi))


def scaled_shape(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """The ``(H, W)`` that :func:`rescale_pair` gives an image of ``shape`` at ``scale``."""
    if abs(scale - 1) < 1e-3:
        return tuple(shape)
    return tuple(max(1, round(s * scale)) for s in shape)


def rescale_pair(image: np.ndarray, labels: np.ndarray | None, scale: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Rescale a 2D image (or ``(C, H, W)``, each channel alike; linear) and its labels (nearest; ``None``: image only) by ``scale``."""
    if abs(scale - 1) < 1e-3:
        return image, labels
    from skimage.transform import resize

    shape = scaled_shape(image.shape[-2:], scale)
    img = resize(image.astype(np.float32), image.shape[:-2] + shape, order=1, anti_aliasing=scale < 1, preserve_range=True).astype(np.float32)
    if labels is not None:
        labels = resize(labels, shape, order=0, anti_aliasing=False, preserve_range=True).astype(labels.dtype)
    return img, labels


def predict_at_scale(image: np.ndarray, scale: float, predict) -> np.ndarray:
    """``predict`` (2D image -> ``(C, h, w)``) on ``image`` rescaled by ``scale``; the output
    is resized back (linearly) to the image's size."""
    x, _ = rescale_pair(image, None, scale)
    out = predict(x)
    if x.shape[-2:] == image.shape[-2:]:
        return out
    from skimage.transform import resize

    return resize(out, out.shape[:-2] + image.shape[-2:], order=1, preserve_range=True).astype(np.float32)
