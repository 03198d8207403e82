"""Patch sampling and augmentation (Ronneberger et al. 2015 and successors).

One interpolation pass per patch does the crop, scale jitter, flips, 90-degree rotations
and the paper's elastic deformation (random displacements on a coarse 3x3 grid, 10 px
standard deviation, smoothly interpolated). Intensity augmentation follows: scale, shift,
gamma, Gaussian noise and blur.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = ["AugmentConfig", "sample_patch", "augment_intensity"]


@dataclass
class AugmentConfig:
    elastic_std: float = 10.0  # px, on a coarse grid
    elastic_grid: int = 3
    elastic_p: float = 0.5
    scale: tuple[float, float] = (0.8, 1.25)
    flips: bool = True
    intensity: bool = True
    noise_std: float = 0.05
    blur_p: float = 0.2
    enabled: bool = True


def _coords(size: int, center: tuple[float, float], rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Source coordinates ``(2, size, size)`` of an augmented patch centred on ``center``."""
    g = np.arange(size, dtype=np.float32) - (size - 1) / 2
    yy, xx = np.meshgrid(g, g, indexing="ij")
    if cfg.enabled:
        s = np.exp(rng.uniform(np.log(cfg.scale[0]), np.log(cfg.scale[1])))
        yy, xx = yy / s, xx / s
        k = rng.integers(4)
        for _ in range(k):
            yy, xx = xx, -yy
        if cfg.flips and rng.random() < 0.5:
            xx = -xx
        if cfg.elastic_std > 0 and rng.random() < cfg.elastic_p:
            n = cfg.elastic_grid
            for arr in (yy, xx):
                d = rng.normal(0, cfg.elastic_std, (n, n)).astype(np.float32)
                arr += ndi.zoom(d, size / n, order=3, mode="nearest")[:size, :size]
    return np.stack([yy + center[0], xx + center[1]])


def sample_patch(
    image: np.ndarray,
    target: np.ndarray,
    size: int,
    rng: np.random.Generator,
    cfg: AugmentConfig,
    labeled: np.ndarray | None = None,
    order_target: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """An augmented ``size`` x ``size`` patch of ``image`` ``(C, H, W)`` and ``target`` ``(H, W)``.

    ``labeled``: flat indices of labeled pixels; when given, the patch centre is drawn
    near one of them so sparse strokes are seen often. Borders are mirrored.
    """
    h, w = target.shape
    if labeled is not None and labeled.size:
        idx = labeled[rng.integers(labeled.size)]
        cy, cx = divmod(int(idx), w)
        jitter = size / 4
        center = (cy + rng.uniform(-jitter, jitter), cx + rng.uniform(-jitter, jitter))
    else:
        center = (rng.uniform(0, h - 1), rng.uniform(0, w - 1))
    coords = _coords(size, center, rng, cfg)
    # Mirror coordinates into the image (like mode="mirror", but also for far-off points).
    for ax, n in enumerate((h, w)):
        c = coords[ax]
        if n == 1:
            c[...] = 0
            continue
        period = 2 * (n - 1)
        c = np.mod(c, period)
        coords[ax] = np.where(c > n - 1, period - c, c)
    img = np.stack([ndi.map_coordinates(ch, coords, order=1, mode="nearest") for ch in image])
    tgt = ndi.map_coordinates(target, np.round(coords), order=order_target, mode="nearest")
    return img.astype(np.float32), tgt


def augment_intensity(img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Random contrast, brightness, gamma, noise and blur of a normalised patch."""
    if not (cfg.enabled and cfg.intensity):
        return img
    img = img * rng.uniform(0.7, 1.3) + rng.uniform(-0.1, 0.1)
    if rng.random() < 0.3:
        gamma = np.exp(rng.uniform(np.log(0.7), np.log(1.5)))
        lo = img.min()
        img = (img - lo) ** gamma + lo if np.isfinite(lo) else img
    if rng.random() < cfg.blur_p:
        img = ndi.gaussian_filter(img, (0, rng.uniform(0.5, 1.5), rng.uniform(0.5, 1.5)))
    if cfg.noise_std > 0 and rng.random() < 0.5:
        img = img + rng.normal(0, rng.uniform(0, cfg.noise_std), img.shape)
    return img.astype(np.float32)
