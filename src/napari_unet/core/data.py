"""Reading image / label pairs from disk, large 2D TIFFs piece by piece, and measuring object sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["TiffPlane", "read_image", "open_plane", "find_pairs", "median_diameter", "rescale_pair", "predict_at_scale"]

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


class TiffPlane:
    """A 2D image stored uncompressed in a TIFF file, read piece by piece: each slicing
    maps the file, copies the pixels asked for and unmaps it, so a large frame segmented
    block by block is never in memory whole (an 8192 px uint16 frame: 134 MB less at the
    peak, ``benchmarks/memory.py``). Supports what the segmentation reads: ``shape``,
    ``dtype``, ``ndim``, ``size``, basic slicing (with steps) and ``np.asarray``."""

    ndim = 2

    def __init__(self, path: Path, offset: int, dtype: np.dtype, shape: tuple[int, int]):
        self.path, self.offset, self.dtype, self.shape = Path(path), int(offset), np.dtype(dtype), tuple(shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __getitem__(self, key) -> np.ndarray:
        mapped = np.memmap(self.path, self.dtype, "r", self.offset, self.shape)
        part = np.array(mapped[key])  # a copy: the mapping closes when ``mapped`` goes
        del mapped
        return part.astype(part.dtype.newbyteorder("="), copy=False)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        a = self[...]
        return a if dtype is None else a.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"TiffPlane({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"


def open_plane(path: str | Path, larger_than: int = 0):
    """``path`` as a 2D array read from disk piece by piece, or ``None`` (read it whole with
    :func:`read_image`): a :class:`TiffPlane` when the file holds one 2D grayscale image
    stored uncompressed in one piece (what ``tifffile.imwrite`` and many cameras write); a
    read-only zarr array over the file (``tifffile``'s zarr store) when that image is stored
    in several strips or tiles (compressed TIFFs), each slicing decoding only the strips
    it touches. ``None`` too when neither side exceeds ``larger_than`` px (an image that
    small is read whole, without importing zarr)."""
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff") or not path.is_file():
        return None
    try:
        import tifffile

        with tifffile.TiffFile(path) as tf:
            if len(tf.series) != 1:
                return None
            s = tf.series[0]
            if len(s.shape) != 2 or s.dtype.kind not in "biuf" or len(s.levels) != 1 or len(s.pages) != 1:
                return None
            if max(s.shape) <= larger_than:
                return None
            if s.dataoffset is not None:
                return TiffPlane(path, s.dataoffset, s.dtype.newbyteorder(tf.byteorder), s.shape)
            if len(s.pages[0].dataoffsets) < 2:  # one compressed piece: decoded whole anyway
                return None
        import zarr

        return zarr.open(tifffile.imread(path, aszarr=True), mode="r")
    except Exception:  # noqa: BLE001 - anything odd: read_image reads it (or words the error)
        return None


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
    if all(a >= b for a, b in zip(image.shape[-2:], out.shape[-2:])):
        # enlarged back: torch's bilinear (threaded; 0.03 s instead of 0.8 s for three 1024 px
        # maps to 2048 px) gives skimage's answer except on the outermost pixels, which it
        # extends instead of mirroring
        import torch

        t = torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))
        return torch.nn.functional.interpolate(t[None], size=tuple(image.shape[-2:]), mode="bilinear",
                                               align_corners=False)[0].numpy()
    from skimage.transform import resize

    return resize(out, out.shape[:-2] + image.shape[-2:], order=1, preserve_range=True).astype(np.float32)
