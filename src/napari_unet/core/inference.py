"""Segment images of any size, dtype and dimensionality with a U-Net.

:class:`Segmenter` turns an array into a semantic (1 = cell) and an instance label image:
percentile normalisation, optional rescaling to the model's object size, overlap-tile
prediction and post-processing. Planes larger than ``block`` pixels on a side are processed
in overlapping blocks whose objects are stitched, so memory stays bounded on any size.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .baseline import blob_diameter
from .data import predict_at_scale
from .model import fold_batchnorm
from .models import LoadedModel, load_model
from .normalize import normalize, percentiles, to_gray
from .postprocess import Postprocess, labels_dtype
from .size import central
from .tiling import predict_batch, predict_image

__all__ = ["Segmenter", "Segmentation", "bf16_supported", "resolve_precision", "as_planes", "channel_planes"]

Progress = Callable[[float, str], None]

#: The most an image is enlarged to bring its cells to the model's size (memory grows with
#: the square: a 128 px image with 0.25 px cells would otherwise become 14,000 px wide).
MAX_UPSCALE = 8.0

#: The note of ``diameter="auto"`` when the size search finds no cells.
NO_CELLS_NOTE = "no cells found to estimate their diameter; used the model's scale"

#: A large plane's size check and the fit check look first at a central crop of this side,
#: when the plane's shorter side exceeds twice it (hundreds of cells of a fitting size, 6 %
#: of a 2048 px frame), before the full-size crops.
FIRST_LOOK = 512


def handed_note(name: str, tissue: bool = False) -> str:
    """The note of an image handed to the specialist ``name`` (``tissue``: as stained
    tissue in colour)."""
    if tissue:
        return f"stained tissue in colour: segmented with the {name!r} model"
    return f"looks like the images of the {name!r} model: segmented with it"


def gave_back_note(name: str) -> str:
    """The note of a hand-over undone: the specialist ``name`` found no cells."""
    return f"the {name!r} model, to which the image looked suited, found no cells: segmented with this one"


#: ``diameter="auto"`` keeps the model's own scale when the cells found there are within this
#: factor of its size (training's scale augmentation covers them; see ``auto_diameter``).
AUTO_TOLERANCE = 1.5

#: Cells found at the model's own scale more than this factor smaller than its size (yet
#: inside :data:`AUTO_TOLERANCE`) are segmented at the size found there (their median),
#: i.e. enlarged to the model's size: the network separates small touching nuclei better
#: there (0: kept at the model's scale). Measured with the generalist (F1 / mean AP, off ->
#: on): dsb2018/val 0.831 / 0.476 -> 0.845 / 0.485 (its colour images 0.671 -> 0.708),
#: every 10th dsb2018/train image 0.874 -> 0.878, every 10th from the 5th 0.879 -> 0.881
#: (1.25 and 1.35 gained less, 1.0 as much), bbbc039 unchanged (its nuclei are larger
#: than the model's); ``benchmarks/size_check.py``. Unlike the full search's estimate for
#: such images (tried before: dsb2018/val 0.825 -> 0.794), the fit check's own median is
#: reliable for cells this close to the model's size.
SMALL_FIT = 1.15

#: Large cells can come out of the network in model-sized pieces, which pass the fit check:
#: smooth nuclei of 90-100 px give a few bright spots each, textured ones a mosaic. A fit is
#: therefore confirmed on the image seen at half the scale: real cells keep their size in
#: image pixels there, pieces join into the cells they belong to; found this many times
#: larger (median object), the cells are taken for pieces and every scale is searched.
#: Measured with the generalist (F1 / mean AP, off -> 2.5): dsb2018/val 0.846 / 0.486 ->
#: 0.859 / 0.499 (its 95 px nuclei, ``c901794d1a42``, F1 0 -> 1.0); the grayscale images
#: of dsb2018 with nuclei over 40 px enlarged 2x (90-115 px nuclei), val (10 images) 0.064
#: -> 0.768 and every 3rd of train (25) 0.089 -> 0.891; the colour val images, bbbc039/val
#: and two development subsets of dsb2018/train unchanged (3.0: the same there, but 0.598
#: and 0.797 on the enlarged sets). ``benchmarks/size_check.py --fragment-ratio R`` and
#: ``benchmarks/large_nuclei.py``. An earlier form (area-weighted sizes, 2.0) merged dense
#: small nuclei at half scale and took them for pieces.
FRAGMENT_RATIO = 2.5

#: The half-scale confirmation costs a network pass on a quarter of the crop's pixels
#: (bbbc039/val: 1.1 -> 0.7 MP/s), so it is only run when the image's bright blobs (Otsu,
#: :func:`.baseline.blob_diameter`: touching nuclei make one blob) are this many times larger
#: than the cells found: pieces always sit inside much larger blobs (3.4-6.7x on the enlarged
#: sets above), most images' cells fill theirs (bbbc039/val at most 1.12x; 14 of 207 dsb2018
#: and bbbc039 images above 2, on which the confirmation itself then decides). 0: always.
BLOB_RATIO = 2.0

#: The statistic of the objects' sizes that the fit check reads (see ``Segmenter._size_at``):
#: ``"area-weighted"`` (the size of the cell a typical pixel belongs to, which a few merged
#: small nuclei inflate until they pass for model-sized) or ``"median"`` (the generalist,
#: dsb2018/val F1 0.8221 -> 0.8245, mean of the images' F1 0.837 -> 0.849; every 10th
#: dsb2018/train image: 0.8853 -> 0.8844, 0.876 -> 0.877; bbbc039/val unchanged).
FIT_STATISTIC = "median"

#: A scale the full search picks is kept only if the cells found there, segmented once more
#: at their own size, come out this close to it (a fixed point); otherwise the next best
#: scale is tried (0: the first pick is kept). Clumps of small nuclei seen at a quarter of
#: the model's scale can look like model-sized cells: every 10th dsb2018/train image, F1
#: 0.816 -> 0.885 (one image of 289 nuclei found as 2 cells); the val sets never reach it.
CONSISTENCY = 1.5

#: Blocks of a large plane at the model's own scale take the probabilities of their halos
#: from the blocks before them (:mod:`.bands`) instead of predicting their whole read region
#: (``False``: the previous path, for benchmarks). An 8192 px frame: 2.08x -> 1.60x its
#: pixels through the network, about 60 -> 52 s; peak memory 0.97-1.01 -> 0.98-1.47 GB
#: (``benchmarks/blocks.py``, ``benchmarks/memory.py``; see docs/results.md).
ROLLING = True

#: The gate's margin when a model file gives none (``meta["delegate"]["margin"]``).
GATE_MARGIN = 0.5

#: How far from the gate's margin the int8 encoder's score must lie to be taken as it is;
#: nearer, the float encoder decides. On the grayscale train and val images of dsb2018,
#: bbbc039 and usiigaci (739) the int8 scores moved from the bfloat16 ones by up to 0.47
#: (99 % of dsb2018's within 0.25; bbbc039 0.31, usiigaci 0.18), mostly towards the
#: margin: the guard lies above the largest. The float encoder then still runs for 2 of
#: bbbc039's 155 images, 44 of dsb2018's 544 and 33 of usiigaci's 40. A bbbc039 image's
#: gate: 16-20 -> 10 ms (``python -W ignore benchmarks/gate_scores.py generalist --int8``).
GATE_INT8_GUARD = 0.6

#: On the rolling path (:data:`ROLLING`) a block's halo is this many of the model's cell
#: diameters (at most the network's own halo): its probabilities are exact whatever the
#: halo, so the halo only has to hold the objects a block writes (those whose bounding
#: box is centred in it). The `generalist`: 208 -> 96 px, a block's post-processing
#: covers 1.20x its pixels instead of 1.45x (``0``: the network's halo). The same labels
#: on 4096 px tiled bbbc039 and usiigaci frames and the synthetic 8192 px one, 6.5 -> 5.8 s
#: and 8.2 -> 7.5 s in-process; the 8192 px frame through the command line 31.6 -> 30.7 s,
#: peak memory 1.00 -> 0.93 GB (``benchmarks/memory.py``).
ROLLING_HALO = 4.0

#: Guards the cache of specialist models (inputs segmented side by side load each once).
_SPECIALIST_LOCK = threading.Lock()


def bf16_supported() -> bool:
    """Whether this CPU runs bfloat16 matrix maths natively (AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # older torch
        return False


def resolve_precision(precision: str, device: torch.device, int8: bool = False) -> str:
    """``"auto"`` -> ``"int8"`` where ``int8`` says the model can run so (a CPU, a model file
    calibrated for it, :func:`int8_ready`), else ``"bf16"`` on CUDA or a CPU with native
    bfloat16, else ``"fp32"``. ``"int8"`` asks for int8 and gets ``"auto"``'s float choice
    where the model cannot (a specialist it hands an image to may not be calibrated)."""
    if precision not in ("auto", "int8", "bf16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'int8', 'bf16' or 'fp32', got {precision!r}")
    if precision in ("auto", "int8"):
        if int8:
            return "int8"
        return "bf16" if (device.type == "cuda" or bf16_supported()) else "fp32"
    return precision


def int8_ready(loaded: LoadedModel, device: torch.device) -> bool:
    """Whether ``loaded`` can run in int8 here: a CPU, PyTorch's ``x86`` quantized engine,
    and an int8 calibration in the model file (:mod:`.quantized`)."""
    if device.type != "cpu" or not isinstance(loaded.meta.get("int8"), dict):
        return False
    from . import quantized

    return quantized.available() and quantized.supported(loaded.model)


@dataclass
class Segmentation:
    semantic: np.ndarray  # uint8, 1 = cell
    instances: np.ndarray  # uint16/uint32, 0 = background
    notes: list[str] = field(default_factory=list)
    diameter: float | None = None  # object diameter (px) the image was treated as having
    probs: np.ndarray | None = None  # (C, H, W) class probabilities, when the Segmenter keeps them


def as_planes(image: np.ndarray, rgb: bool | None = None) -> tuple[np.ndarray, list[str], tuple]:
    """``image`` as a stack of 2D grayscale planes ``(N, H, W)``, with notes on what was done.

    RGB(A) images (last axis 3 or 4, or ``rgb=True``) become one channel (:func:`.to_gray`);
    3D, time or other stacks are segmented plane by plane over the last two axes.
    Also returns the shape of the labels (the image's shape without a colour axis).
    """
    image = np.asarray(image)
    notes = []
    if image.dtype.kind not in "biuf":
        raise ValueError(f"cannot segment an image of dtype {image.dtype}")
    if image.ndim < 2:
        raise ValueError(f"need an image with at least 2 dimensions, got shape {image.shape}")
    if rgb is None:
        rgb = image.ndim == 3 and image.shape[-1] in (3, 4) and min(image.shape[:2]) > 4
    if rgb:
        image = to_gray(image)
        notes.append("RGB image: segmented one channel from its colours (the darkest on a bright background, else the brightest)")
    if image.ndim < 2:
        raise ValueError("RGB image has no spatial axes")
    if min(image.shape[-2:]) < 1:
        raise ValueError(f"image is empty: shape {image.shape}")
    planes = image.reshape((-1,) + image.shape[-2:])
    if planes.shape[0] > 1:
        notes.append(f"{image.ndim}D image: segmented each of its {planes.shape[0]} 2D planes")
    return planes, notes, image.shape


def channel_planes(image: np.ndarray, channels: int, name: str = "the model") -> tuple[np.ndarray, list[str], tuple]:
    """For a model that reads ``channels`` channels: ``image`` ``(..., C, H, W)`` as planes
    ``(N, C, H, W)``, notes, and the labels' shape (the image's without C)."""
    image = np.asarray(image)
    if image.dtype.kind not in "biuf":
        raise ValueError(f"cannot segment an image of dtype {image.dtype}")
    if image.ndim < 3 or image.shape[-3] != channels:
        raise ValueError(
            f"the model {name!r} reads {channels} channels: give an image of shape (..., {channels}, height, width) "
            f"(its channels before Y and X; on the command line --channel picks them), got shape {image.shape}"
        )
    if min(image.shape[-2:]) < 1:
        raise ValueError(f"image is empty: shape {image.shape}")
    planes = image.reshape((-1,) + image.shape[-3:])
    notes = [f"{image.ndim - 1}D image: segmented each of its {planes.shape[0]} planes"] if planes.shape[0] > 1 else []
    return planes, notes, image.shape[:-3] + image.shape[-2:]


class Segmenter:
    """A loaded model plus everything needed to segment arrays with it.

    ``precision``: ``"auto"`` (int8 on a CPU with AVX-512 VNNI for a model file calibrated
    for it, :mod:`.quantized`; else bfloat16 autocast and channels_last where the CPU or GPU
    supports them, else float32), ``"int8"`` (the same), ``"bf16"`` or ``"fp32"``.

    ``threshold`` (cell probability above which a pixel is cell) and ``min_size``
    (smallest object, in image pixels) override the model's own post-processing settings
    (``None``: the model's); they can be changed between calls. With ``keep_probs`` a
    single 2D plane's class probabilities are returned with its labels, so that
    :meth:`postprocess` can try other settings without running the network again.
    """

    def __init__(
        self,
        model: LoadedModel | str | None = None,
        precision: str = "auto",
        tile: int = 1024,
        block: int = 2048,
        batch_size: int = 1,
        device: str | None = None,
        fill_holes: bool = True,
        threshold: float | None = None,
        min_size: int | None = None,
        keep_probs: bool = False,
    ):
        self.loaded = model if isinstance(model, LoadedModel) else load_model(model)
        # batch norm folded into the convolutions: an inference-only copy (the loaded model,
        # which fine-tuning may train, is left as it is)
        self.model = fold_batchnorm(self.loaded.model)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.requested_precision = precision
        int8 = None
        if precision in ("auto", "int8") and int8_ready(self.loaded, self.device):
            from .quantized import Int8UNet

            try:
                int8 = Int8UNet(self.model, self.loaded.meta["int8"]["ranges"])
            except (ValueError, TypeError, KeyError, AttributeError, RuntimeError, OverflowError):
                int8 = None  # a file's int8 metadata that does not describe this network: float
        self.precision = resolve_precision(precision, self.device, int8 is not None)
        self.model.to(self.device)
        self.channels_last = self.device.type == "cpu" and self.precision != "int8"  # oneDNN's fast convolutions, in fp32 too
        if self.device.type == "cpu":  # int8 too: its gate may run the float encoder (48 -> 26 ms on one thread)
            self.model.to(memory_format=torch.channels_last)
        #: the network predictions run through: the folded model, or its int8 form
        #: (:mod:`.quantized`); the gate and the geometry read :attr:`model`
        self.net = int8 if self.precision == "int8" else self.model
        self.tile = tile
        self.block = block
        self.batch_size = batch_size
        self.percentiles = self.loaded.normalization
        self.fill_holes = fill_holes
        self.threshold = threshold
        self.min_size = min_size
        self.keep_probs = keep_probs
        #: channels the network reads; above 1 a "plane" is ``(C, H, W)`` (e.g. cytoplasm + nuclei)
        self.in_channels = int(self.model.config.in_channels)
        self.settings()  # check the overrides now

    def limits(self, plane: np.ndarray):
        """The intensity limits :meth:`normalized` maps to 0 and 1: one ``(lo, hi)`` pair, or
        one per channel of a ``(C, H, W)`` plane for a multi-channel model."""
        if self.in_channels > 1:
            return [percentiles(c, *self.percentiles) for c in plane]
        return percentiles(plane, *self.percentiles)

    def normalized(self, plane: np.ndarray, limits=None) -> np.ndarray:
        """``plane`` normalised as the model was trained (each channel on its own)."""
        if limits is None:
            limits = self.limits(plane)
        if self.in_channels > 1:
            return np.stack([normalize(c, *self.percentiles, limits=lim) for c, lim in zip(plane, limits)])
        return normalize(plane, *self.percentiles, limits=limits)

    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities ``(N, K, h, w)`` of one normalised batch ``(N, C, h, w)`` (one network call)."""
        return predict_batch(self.net, batch, self.precision == "bf16", self.channels_last)

    def predict_normalized(self, image: np.ndarray, progress: Callable[[int, int], None] | None = None, margin: int | None = None, blend: int = 0) -> np.ndarray:
        """Class probabilities ``(C, H, W)`` of an already normalised ``(H, W)`` plane."""
        return predict_image(self.net, image, self.tile, margin, blend, self.precision == "bf16",
                             self.channels_last, self.batch_size, progress)

    def probabilities(self, plane: np.ndarray, diameter: float | None = None, limits=None, progress=None) -> np.ndarray:
        """Probabilities of a raw 2D plane, rescaled so objects of ``diameter`` px match the model."""
        scale = self.loaded.scale(diameter)
        if scale > MAX_UPSCALE:
            raise ValueError(
                f"a cell diameter of {diameter:g} px would enlarge the image {scale:.0f}x to reach the model's "
                f"{self.loaded.diameter:g} px; the smallest diameter it accepts is {self.loaded.diameter / MAX_UPSCALE:.1f} px"
            )
        x = self.normalized(plane, limits)
        return predict_at_scale(x, scale, lambda xs: self.predict_normalized(xs, progress))

    def estimate_diameter(self, plane: np.ndarray, limits=None) -> float | None:
        """Typical cell diameter (px) in ``plane``; ``None`` when no cell is found.

        A network finds objects well only near the size it was trained on: cells twice as
        large come out in pieces whose median says "small". So a central crop is segmented
        at four scales (x0.25 to x2 of the model's default), and the scale at which the
        objects found have the model's own diameter (in the pixels the network sees) wins;
        their area-weighted equivalent diameter in image pixels is the estimate. Cellpose's size model
        answers the same question with a regression on its style vector (tried here,
        :mod:`.size`'s features: a median error of 38-43 % on dsb2018/val against this
        search's 14 %, so not used).
        """
        found = self.size_search(plane, limits)[0]
        bias = self.loaded.meta.get("size_bias")
        return found / float(bias) if found is not None and bias else found

    def auto_diameter(self, plane: np.ndarray, limits=None) -> tuple[float | None, str, tuple | None]:
        """What ``diameter="auto"`` segments ``plane`` at: ``(diameter, note, result)``.

        ``None`` (the model's own scale) when the cells found at that scale are within
        :data:`AUTO_TOLERANCE` of the model's size, which its scale augmentation already
        covers (unless they are more than :data:`SMALL_FIT` smaller than the model: then
        the size found there); otherwise the estimate of :meth:`estimate_diameter`.
        Rescaling cells that already fit to the search's estimate only costs accuracy
        (val F1, generalist: dsb2018 0.770 always rescaled, 0.783 with the tolerance,
        0.733 never; bbbc039 0.936 / 0.944-0.949 / 0.949;
        ``benchmarks/auto_diameter.py``). ``result`` is ``(probs, semantic, instances)`` of
        the whole plane when the first, model-scale pass already covered all of it and is
        kept, so small images pay nothing for the check.
        """
        if self.loaded.meta.get("size_bias"):
            return self._enlarge_only(plane, limits)
        found, fits, whole = self.size_search(plane, limits, AUTO_TOLERANCE)
        if found is None:
            return None, NO_CELLS_NOTE, None
        if fits:
            own = self.loaded.diameter
            if SMALL_FIT and found * self.loaded.scale(None) * SMALL_FIT < own:
                return found, f"cells about {found:.0f} px across: enlarged to the model's size ({own:g} px)", None
            return None, f"cells about {found:.0f} px across fit the model: not rescaled", whole
        return found, f"estimated cell diameter: {found:.1f} px", None

    def _enlarge_only(self, plane: np.ndarray, limits=None) -> tuple[float | None, str, tuple | None]:
        """:meth:`auto_diameter` of a model trained at one scale for a whole set (``cells``:
        its phase-contrast cells of 34-74 px all halved), whose metadata records how far the
        search's estimate lies from the true median diameter on its training images
        (``size_bias``, ``scripts/size_bias.py``).

        A central crop is segmented at the model's scale, as the fit check does (the
        answer itself when the crop is the whole plane). Only when the median cell found
        there is more than :data:`AUTO_TOLERANCE` below the model's size is the size
        searched, and cells the search also finds that small are enlarged to it. Larger
        cells keep the model's scale: they come out of such a network in pieces whose size
        the estimate cannot be trusted with (usiigaci/val rescaled to other
        magnifications: ``benchmarks/handover_size.py``)."""
        own = self.loaded.image_diameter
        if not own:
            return None, NO_CELLS_NOTE, None
        if limits is None:
            limits = self.limits(plane)
        side = FIRST_LOOK if min(plane.shape[-2:]) > 2 * FIRST_LOOK else None  # as the fit check looks first
        sizes, whole = self._size_at(plane, own, side, limits)
        if sizes is not None and sizes[FIT_STATISTIC] * AUTO_TOLERANCE >= own:
            return None, f"cells about {sizes[FIT_STATISTIC]:.0f} px across: segmented at the model's scale", whole
        found = self.estimate_diameter(plane, limits)
        if found is None:
            return None, NO_CELLS_NOTE, whole
        if found * AUTO_TOLERANCE < own:
            found = max(found, self.loaded.diameter / MAX_UPSCALE)  # specks: enlarged at most MAX_UPSCALE x
            return found, f"cells about {found:.0f} px across: enlarged to the model's size", None
        return None, f"cells about {found:.0f} px across: segmented at the model's scale", whole

    def size_search(self, plane: np.ndarray, limits=None, tolerance: float | None = None):
        """``(estimate, fits, whole)``: see :meth:`estimate_diameter` and :meth:`auto_diameter`.

        With a ``tolerance``, the search stops after the model's own scale when the objects
        found there are within that factor of the model's size (``fits``). Otherwise the
        best of the four scales is refined: the crop is segmented once more at the scale
        that estimate asks for, where the cells have the model's size, and measured again
        (val F1 of the generalist, dsb2018: 0.782 -> 0.788; every 10th dsb2018/train image:
        0.828 -> 0.839; bbbc039 unchanged; ``napari-unet evaluate generalist``). With
        :data:`CONSISTENCY`, a pick whose refined size is more than that factor off the
        size it was picked for is not a fixed point, and the second best scale is tried.
        """
        own = self.loaded.diameter
        if not own:
            return None, False, None
        if limits is None:
            limits = self.limits(plane)
        h, w = plane.shape[-2:]
        s0 = self.loaded.scale(None)
        seen: dict = {}  # (scale factor, side) -> (found, result)

        def at(f, side=None, stat="area-weighted"):
            if (f, side) not in seen:
                seen[f, side] = self._size_at(plane, own / (s0 * f), side, limits)
            sizes = seen[f, side][0]
            return None if sizes is None else sizes[stat]

        blobs: dict = {}  # side -> bright-blob diameter of that central crop

        def pieces(f, side=None):
            # model-sized pieces of larger cells: at half the scale they join into cells
            # FRAGMENT_RATIO times larger (real cells keep their size in image pixels);
            # looked for only inside bright blobs much larger than the cells found
            if not FRAGMENT_RATIO or f / 2 < 0.25:
                return False
            found = at(f, side, FIT_STATISTIC)
            if BLOB_RATIO:
                if side not in blobs:
                    x = self.normalized(central(plane, side or 1024), limits)
                    blobs[side] = blob_diameter(x.max(0) if x.ndim == 3 else x)
                if blobs[side] is None or blobs[side] < BLOB_RATIO * found:
                    return False
            half = at(f / 2, None, FIT_STATISTIC)
            return half is not None and half > FRAGMENT_RATIO * found

        def fits(f, side=None):
            found = at(f, side, FIT_STATISTIC)
            return found is not None and abs(np.log(found * s0 * f / own)) < math.log(tolerance) and not pieces(f, side)

        if tolerance:
            # on a large plane the fit check first looks at a FIRST_LOOK px centre
            for side in ([FIRST_LOOK] if min(h, w) > 2 * FIRST_LOOK else []) + [None]:
                if fits(1.0, side):
                    return at(1.0, side, FIT_STATISTIC), True, seen[1.0, side][1]
        scored = []
        for f in (1.0, 0.5, 2.0, 0.25):
            found = at(f)
            if found is not None:  # confirmed scales first, then the smallest miss
                scored.append((pieces(f), abs(np.log(found * s0 * f / own)), found))
        if not scored:
            return None, False, None
        answers = []
        for _, _, best in sorted(scored)[: 2 if CONSISTENCY else 1]:
            refined = self._size_at(plane, best, None, limits)[0] if self.loaded.scale(best) <= MAX_UPSCALE else None
            if refined is None:
                answers.append(best)
                continue
            answer = refined["area-weighted"]
            if CONSISTENCY and abs(np.log(answer / best)) < math.log(CONSISTENCY):
                return answer, False, None
            answers.append(answer)
        return answers[0], False, None

    def _size_at(self, plane: np.ndarray, d: float, side: int | None, limits):
        """The diameters (image px) of the cells found in a central crop segmented as if
        its cells were ``d`` px across, ``{"area-weighted": ..., "median": ...}`` (``None``
        for fewer than 3 cells), and ``(probs, semantic, instances)`` when the crop is the
        whole plane."""
        s = self.loaded.diameter / d  # model pixels per image pixel
        if side is None:
            side = int(min(1024, max(256, 1024 / s)))  # the network sees at most ~1024 px
        crop = central(plane, side)
        probs = self.probabilities(crop, d, limits)
        sem, inst = self.postprocess(probs, d)
        areas = np.bincount(inst.ravel())[1:]
        areas = areas[areas > 0]
        if areas.size < 3:
            return None, None
        # area-weighted: the size of the cell a typical pixel belongs to, which the
        # fragments of a too-large cell hardly move (unlike the median object); the median
        # object, which a few merged cells hardly move
        found = {
            "area-weighted": float(2 * np.sqrt((areas.astype(float) ** 2).sum() / areas.sum() / np.pi)),
            "median": float(np.median(2 * np.sqrt(areas / np.pi))),
        }
        return found, ((probs, sem, inst) if crop.shape == plane.shape else None)

    def segment_plane(self, plane: np.ndarray, diameter: float | str | None = None, limits=None, progress: Progress | None = None) -> Segmentation:
        """Semantic and instance labels of one 2D plane of any size."""
        notes = []
        if limits is None:
            limits = self.limits(plane)
        whole = None
        if diameter == "auto" or diameter == 0:
            diameter, note, whole = self.auto_diameter(plane, limits)
            notes.append(note)
        h, w = plane.shape[-2:]
        if whole is not None:  # the size check already segmented the whole plane at this scale
            probs, semantic, instances = whole
        elif h <= self.block and w <= self.block:
            probs = self.probabilities(plane, diameter, limits, _tile_progress(progress))
            semantic, instances = self.postprocess(probs, diameter)
        else:
            probs = None
            semantic = np.zeros((h, w), np.uint8)
            # uint16 (half of uint32's 268 MB on an 8192 px frame), widened only past 65535 cells
            instances = np.zeros((h, w), np.uint16)
            _, instances = self.segment_blocks(plane, diameter, limits, progress, out=(semantic, instances))
        kept = probs if self.keep_probs else None
        return Segmentation(semantic, instances, notes, diameter or self.loaded.image_diameter, kept)

    def resolve_diameter(self, diameter):
        """``diameter`` as asked, or ``"auto"`` when none is asked and the model says so
        (``default_diameter: auto``: a model trained on several object sizes)."""
        if diameter is None and self.loaded.meta.get("default_diameter") == "auto":
            return "auto"
        return diameter

    def delegate_for(self, plane: np.ndarray, colour: bool = False, limits=None) -> Segmenter | None:
        """The specialist to hand ``plane`` to, or ``None``.

        A model file may name a specialist for stained tissue (``colour_model``): a
        ``colour`` image (``plane`` is its one-channel conversion) on a bright background
        goes to it. It may also carry a gate (``delegate``: a linear classifier of the
        network's bottleneck features, fitted by ``scripts/fit_gate.py``) that recognises
        the images of a specialist model, e.g. phase-contrast whole cells for ``cells``;
        above its margin such images go to that model. The gate costs half a forward pass
        on a 384 px crop (the encoder). ``limits``: the plane's (:meth:`limits`), if known.
        """
        if plane.size == 0 or self.in_channels > 1:
            return None
        tissue = self.loaded.meta.get("colour_model")
        if colour and tissue:
            from .normalize import bright_background

            if bright_background(plane):
                return self._specialist(str(tissue))
        gate = self.loaded.meta.get("delegate")
        if not gate or self.gate_score(plane, limits) <= float(gate.get("margin", GATE_MARGIN)):
            return None
        return self._specialist(gate["model"])

    def handover_diameter(self, other: Segmenter, asked):
        """The diameter a specialist gets with a handed-over image: the user's, or, when
        none was asked of a model that sizes every image itself, ``"auto"`` for a
        specialist that can check its own size (``size_bias`` in its metadata)."""
        if asked is None and self.resolve_diameter(None) == "auto" and other.loaded.meta.get("size_bias"):
            return "auto"
        return asked

    def gate_score(self, plane: np.ndarray, limits=None) -> float:
        """The score of the model's gate (``meta["delegate"]``) for a one-channel ``plane``:
        above its margin, :meth:`delegate_for` hands the plane to the gate's model.

        An int8 Segmenter reads its int8 encoder first (half the time) and takes that score
        unless it lies within :data:`GATE_INT8_GUARD` of the margin; there the float
        encoder decides."""
        from .size import style_score

        gate = self.loaded.meta["delegate"]
        # only the central crop the gate looks at is normalised (with the whole plane's
        # limits): an 8192 px frame's float copy would cost 0.6 GB and 1.5 s
        x = self.normalized(central(plane), self.limits(plane) if limits is None else limits)
        if self.precision == "int8":
            score = style_score(self.net, gate, x)
            if abs(score - float(gate.get("margin", GATE_MARGIN))) > GATE_INT8_GUARD:
                return score
        # the float encoder, in bfloat16 where the CPU has it
        bf16 = self.precision == "bf16" or (self.precision == "int8" and bf16_supported())
        return style_score(self.model, gate, x, bf16)

    def _specialist(self, key: str) -> Segmenter:
        """A Segmenter of model ``key`` with this one's settings (kept for the next call)."""
        cache = self.__dict__.setdefault("_specialists", {})
        with _SPECIALIST_LOCK:  # inputs segmented side by side (batch.in_lanes) load it once
            if key not in cache:
                cache[key] = Segmenter(key, precision=self.requested_precision, tile=self.tile, block=self.block,
                                       batch_size=self.batch_size, device=str(self.device), fill_holes=self.fill_holes,
                                       threshold=self.threshold, min_size=self.min_size, keep_probs=False)
        seg = cache[key]
        seg.threshold, seg.min_size = self.threshold, self.min_size  # the user's overrides follow
        return seg

    def postprocess(self, probs: np.ndarray, diameter, split: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Semantic and instance labels from probabilities at image scale (see :mod:`.postprocess`);
        with ``split``, the watershed of a large plane in two halves, side by side in torch's
        threads (1 while inputs are segmented side by side, :func:`.batch.in_lanes`; the
        same labels either way, :mod:`.watershed`)."""
        threads = torch.get_num_threads() if split else 0  # 0: the watershed in one call
        return dataclasses.replace(self.settings(diameter), threads=threads)(probs)

    def settings(self, diameter=None, own: bool = False) -> Postprocess:
        """The post-processing for cells of ``diameter`` px (default: the model's): the
        model's settings with this Segmenter's ``threshold`` and ``min_size``, if set
        (``own``: the model's settings alone)."""
        d = float(diameter) if diameter else self.loaded.image_diameter
        post = Postprocess.for_model(self.loaded.meta, d, self.loaded.scale(diameter), self.fill_holes)
        if own:
            return post
        changes = {}
        if self.threshold is not None:
            t = float(self.threshold)
            if not 0.0 < t < 1.0:
                raise ValueError(f"the cell threshold must lie between 0 and 1 (exclusive), got {self.threshold}")
            changes["threshold"] = t
        if self.min_size is not None:
            if int(self.min_size) != self.min_size or self.min_size < 0:
                raise ValueError(f"the minimum cell size must be a whole number of pixels >= 0, got {self.min_size}")
            changes["min_size"] = max(1, int(self.min_size))
        return dataclasses.replace(post, **changes) if changes else post

    def segment_blocks(self, plane, diameter=None, limits=None, progress=None, out=None) -> tuple[int, Any]:
        """Blockwise segmentation with stitching, for planes larger than ``self.block``;
        returns the number of cells and the instance labels.

        ``plane``: any 2D array that can be sliced (numpy, zarr, dask): only one block
        and its halo are read at a time. ``out``: the ``(semantic, instances)`` arrays to
        write (numpy or zarr, the plane's shape, instances uint32, or a numpy uint16
        array, which is replaced by a uint32 copy if the cells outnumber it). Each block is
        predicted with ``halo`` pixels of real context, so its probabilities equal the
        whole-plane ones; an object is written by the block that holds the centre of its
        bounding box (objects are assumed smaller than the halo).
        """
        if limits is None:
            limits = self.limits(plane)
        semantic, instances = out
        h, w = plane.shape[-2:]
        B = self.block
        scale = 1.0 / self.loaded.scale(diameter)  # image pixels per model pixel
        halo = int(math.ceil(max(128, 2 * (self.model.aligned_radius() + 8)) * scale))
        m = self.model.multiple  # block origins on the pooling grid keep probabilities exact
        halo = -(-min(halo, B // 2) // m) * m
        B = -(-B // m) * m
        from .blocks import block_grid, paste_objects, release_memory

        rolling = ROLLING and scale == 1 and not self.model.shrink() and 2 * halo <= B
        if rolling and ROLLING_HALO and self.loaded.diameter:
            # its probabilities are exact whatever the halo: the halo is for the objects alone
            halo = min(halo, max(m, -(-math.ceil(ROLLING_HALO * self.loaded.diameter) // m) * m))
        blocks = block_grid(h, w, B, halo)
        if rolling:
            # each pixel through the network once: the halos are kept from the blocks before
            from . import tiling
            from .bands import rolling_probabilities

            border = tiling.BORDER if tiling.BORDER is not None else self.model.aligned_radius()
            each = rolling_probabilities(plane, B, halo, lambda x: self.normalized(x, limits), self.predict_batch,
                                         self.tile, self.model.aligned_radius(), border, m,
                                         int(self.model.config.out_channels))
        else:
            each = ((b, self.probabilities(np.asarray(plane[(Ellipsis, *b.read)]), diameter, limits)) for b in blocks)
        next_id = 1
        for k, (b, probs) in enumerate(each):
            # the watershed in one call: in two halves an 8192 px frame took 30.1 s instead
            # of 30.7 and 1.03 GB instead of 0.93 at its peak (benchmarks/memory.py)
            sem, inst = self.postprocess(probs, diameter, split=False)
            del probs
            semantic[b.core] = sem[b.core_in_read]
            if next_id + int(inst.max()) > np.iinfo(instances.dtype).max:
                instances = instances.astype(np.uint32)
            next_id = paste_objects(inst, b, instances, next_id)
            del sem, inst
            release_memory()
            if progress is not None:
                progress((k + 1) / len(blocks), f"block {k + 1}/{len(blocks)}")
        return next_id - 1, instances

    def segment_lazy(self, plane, diameter: float | str | None = None, progress: Progress | None = None) -> Segmentation:
        """Segment a 2D grayscale array that is not in memory (dask, zarr: a napari layer
        backed by either) without reading it whole: planes up to ``self.block`` are read
        and segmented as usual; larger ones block by block (:meth:`segment_blocks`), the
        size check, the gate and the intensity limits looking at a central crop and a
        regular subsample. The labels are numpy arrays of the plane's shape."""
        if self.in_channels > 1:  # a (C, H, W) plane of a multi-channel model: read whole
            return self.segment(np.asarray(plane), diameter, progress=progress)
        h, w = plane.shape
        if h <= self.block and w <= self.block:
            return self.segment(np.asarray(plane), diameter, rgb=False, progress=progress)
        seg, d, limits, notes = self.lazy_plan(plane, diameter)
        res = seg.segment_plane(plane, d, limits, progress)  # larger than a block: blockwise
        if seg is not self and not res.instances.any():  # the gate was wrong: not its kind of image
            _, d, limits, notes = self.lazy_plan(plane, diameter, delegate=False)
            notes.insert(0, gave_back_note(seg.loaded.name))
            res = self.segment_plane(plane, d, limits, progress)
        res.notes[:0] = notes
        return res

    def lazy_plan(self, plane, diameter: float | str | None = None, delegate: bool = True) -> tuple[Segmenter, Any, Any, list[str]]:
        """How a 2D grayscale plane larger than a block and not in memory is segmented
        block by block: ``(segmenter, diameter, limits, notes)``. The gate and the size
        check look at a central crop (with ``delegate``, a specialist, e.g. ``cells``, may
        take the plane over; the caller gives it back if it finds no cells), the intensity
        limits at a regular subsample."""
        from .size import central

        h, w = plane.shape
        crop = np.asarray(central(plane, self.block))
        other = self.delegate_for(crop) if delegate else None
        if other is not None:
            seg, diameter, limits, notes = other.lazy_plan(plane, self.handover_diameter(other, diameter))
            return seg, diameter, limits, [handed_note(other.loaded.name), *notes]
        notes = [f"read block by block ({h} x {w} px, not loaded whole)"]
        limits = percentiles(plane, *self.percentiles)
        diameter = self.resolve_diameter(diameter)
        if diameter in ("auto", 0):
            diameter, note, _ = self.auto_diameter(crop, limits)
            notes.append(note + " (from the centre of the image)")
        return self, diameter, limits, notes

    # ---- any image -------------------------------------------------------------------
    def segment(self, image: np.ndarray, diameter: float | str | None = None, rgb: bool | None = None, progress: Progress | None = None) -> Segmentation:
        """Segment a 2D image, an RGB image or a stack of planes (plane by plane).

        Returns labels with the image's shape (without the colour axis). A 2D grayscale
        plane larger than a block may also be an array on disk that reads what it is
        sliced for (zarr, :class:`.data.TiffPlane`): it is then read block by block, with
        the same answer as in memory.
        """
        asked = diameter
        diameter = self.resolve_diameter(diameter)
        lazy = not isinstance(image, np.ndarray) and getattr(image, "ndim", 0) == 2 and not rgb
        if lazy and self.in_channels == 1 and max(image.shape) > self.block:
            planes, notes, out_shape = [image], [], tuple(image.shape)
        elif self.in_channels > 1:
            image = np.asarray(image)
            planes, notes, out_shape = channel_planes(image, self.in_channels, self.loaded.name)
        else:
            image = np.asarray(image)
            planes, notes, out_shape = as_planes(image, rgb)
        colour = out_shape != tuple(image.shape) and self.in_channels == 1
        # the first plane's limits, computed once for the gate and the segmentation
        first = self.limits(planes[0]) if planes[0].size else None
        other = self.delegate_for(planes[0], colour=colour, limits=first)
        if other is not None:  # a specialist does better on such images: hand them over
            res = other.segment(image, self.handover_diameter(other, asked), rgb, progress)
            tissue = self.__dict__.get("_specialists", {}).get(str(self.loaded.meta.get("colour_model")))
            name = other.loaded.name
            if colour and other is tissue:
                res.notes.insert(0, handed_note(name, tissue=True))
            elif res.instances.any():
                res.notes.insert(0, handed_note(name))
            else:  # the gate was wrong: not its kind of image after all
                notes.insert(0, gave_back_note(name))
                other = None
            if other is not None:
                res.probs = None  # (its probabilities need its own post-processing)
                return res
        sems, insts = [], []
        n = len(planes)
        used = None
        for i, plane in enumerate(planes):
            sub = None
            if progress is not None:
                sub = _sub_progress(progress, i, n)
            seg = self.segment_plane(plane, diameter, first if i == 0 else None, sub)
            if i == 0:
                notes.extend(seg.notes)
                used = seg.diameter
            if diameter in ("auto", 0):
                diameter = seg.diameter  # estimate once per stack
            sems.append(seg.semantic)
            insts.append(seg.instances)
            if progress is not None:
                progress((i + 1) / n, f"plane {i + 1}/{n}")
        nmax = max(int(x.max()) for x in insts)
        insts = [x.astype(labels_dtype(nmax), copy=False) for x in insts]
        if n == 1:  # no copies of a large plane's labels
            semantic, instances = sems[0].reshape(out_shape), insts[0].reshape(out_shape)
        else:
            semantic, instances = np.stack(sems).reshape(out_shape), np.stack(insts).reshape(out_shape)
        from .advice import result_hints

        notes.extend(result_hints(semantic, instances, used))
        return Segmentation(semantic, instances, notes, used, seg.probs if n == 1 else None)


def _tile_progress(progress: Progress | None):
    if progress is None:
        return None
    return lambda done, total: progress(done / total, f"tile {done}/{total}")


def _sub_progress(progress: Progress, i: int, n: int) -> Progress:
    return lambda f, msg: progress((i + f) / n, msg)
