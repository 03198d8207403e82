"""From a file to labels: read with axes, segment in 2D, 3D or over time, measure.

The command line and batch jobs go through :func:`read_input` and :func:`segment_input`;
zarr arrays through :func:`segment_zarr`, block by block without loading them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .axes import (
    anisotropy_from_tiff,
    axes_from_tiff,
    guess_axes,
    labels_from_tzyx,
    parse_axes,
    pick_channel,
    pick_channels,
    to_tzcyx,
)
from .data import read_image

__all__ = ["Input", "Result", "read_input", "segment_input", "segment_zarr"]


@dataclass
class Input:
    data: np.ndarray
    axes: str  # one letter per dimension of data, from TZCYXS
    anisotropy: float = 1.0
    channel: int | tuple[int, ...] | None = None  # several for a model that reads several channels
    notes: list[str] = field(default_factory=list)


@dataclass
class Result:
    semantic: np.ndarray
    instances: np.ndarray
    axes: str  # of the labels: the input's without C and S
    intensity: np.ndarray | None = None  # the segmented channel, labels' shape
    spacing: tuple = ()
    notes: list[str] = field(default_factory=list)

    @property
    def n_cells(self) -> int:
        return int(np.unique(self.instances[self.instances > 0]).size) if self.instances.ndim > 2 else int(self.instances.max())

    @property
    def tiff_kwargs(self) -> dict:
        return {"metadata": {"axes": self.axes}} if len(self.axes) > 2 else {}

    def measurements(self) -> dict[str, np.ndarray]:
        """Per-cell measurements (:func:`.measure.measure`); over time, one row per cell
        and frame with a ``frame`` column."""
        from .measure import measure

        if "T" not in self.axes:
            return measure(self.instances, self.intensity, self.spacing or None)
        t = self.axes.index("T")
        inst, inten = np.moveaxis(self.instances, t, 0), None if self.intensity is None else np.moveaxis(self.intensity, t, 0)
        spacing = tuple(s for i, s in enumerate(self.spacing) if i != t) or None
        tables = []
        for k in range(inst.shape[0]):
            cols = measure(inst[k], None if inten is None else inten[k], spacing)
            tables.append({"frame": np.full(len(cols["label"]), k), **cols})
        return {key: np.concatenate([tb[key] for tb in tables]) for key in tables[0]}


def read_input(path: str | Path, axes: str | None = None, anisotropy: float | None = None, channel: int | tuple[int, ...] | None = None, rgb: bool | None = None) -> Input:
    """An image file with its axes: ``axes`` if given (checked against the shape), else
    the file's own metadata (OME / ImageJ TIFF), else guessed from the shape."""
    path = Path(path)
    image = read_image(path)
    notes = []
    if axes:
        axes = parse_axes(axes, image.shape)
    else:
        meta = axes_from_tiff(path) if path.suffix.lower() in (".tif", ".tiff") else None
        if meta is not None and len(meta) == image.ndim:
            axes = meta
        else:
            axes = guess_axes(image.shape, rgb)
        if len(axes) > 2 and axes not in ("YXS",):
            notes.append(f"axes {axes} ({'from the file' if meta == axes else 'guessed; --axes sets them'})")
    if anisotropy is None and "Z" in axes and path.suffix.lower() in (".tif", ".tiff"):
        anisotropy = anisotropy_from_tiff(path)
    return Input(image, axes, float(anisotropy or 1.0), channel, notes)


def segment_input(segmenter, inp: Input, diameter=None, progress=None) -> Result:
    """Labels of an :class:`Input` with the axes of its labels (the input's without C/S).

    2D images (and RGB) go through :meth:`.inference.Segmenter.segment` (blockwise when
    large); stacks with Z are segmented in 3D, with T linked over time
    (:func:`.stack.segment_stack`).
    """
    axes = inp.axes
    notes = list(inp.notes)
    if getattr(segmenter, "in_channels", 1) > 1:
        return _segment_channels(segmenter, inp, diameter, progress)
    if axes in ("YX", "YXS"):
        res = segmenter.segment(inp.data, diameter=diameter, rgb=axes == "YXS", progress=progress)
        notes += res.notes
        intensity = inp.data if axes == "YX" else None
        return Result(res.semantic, res.instances, "YX", intensity, (1.0, 1.0), notes)
    from .stack import segment_stack

    data, info = to_tzcyx(inp.data, axes)
    notes += list(info.notes)
    if isinstance(inp.channel, tuple):
        raise ValueError(f"the model {segmenter.loaded.name!r} reads one channel: give one number with --channel")
    c = 0 if inp.channel is None else inp.channel
    planes = pick_channel(data, c)
    if data.shape[2] > 1:
        notes.append(f"segmented channel {c} of {data.shape[2]}" + (" (--channel picks another)" if inp.channel is None else ""))
    sem, inst, more = segment_stack(segmenter, planes, inp.anisotropy, diameter, progress=progress, colour=info.rgb)
    notes += more
    lax = info.labels_axes
    spacing = tuple(inp.anisotropy if ch == "Z" else 1.0 for ch in lax)
    return Result(labels_from_tzyx(sem, axes), labels_from_tzyx(inst, axes), lax,
                  labels_from_tzyx(planes, axes), spacing, notes)


def _segment_channels(segmenter, inp: Input, diameter=None, progress=None) -> Result:
    """:func:`segment_input` for a model that reads several channels (e.g. cytoplasm and
    nuclei): the channels picked (``inp.channel``, default the first ones) go to it
    together; an RGB image's colours count as channels."""
    from .stack import segment_stack

    n = segmenter.in_channels
    axes = inp.axes.replace("S", "C") if "C" not in inp.axes else inp.axes
    if "C" not in axes and "Z" in axes and inp.data.shape[axes.index("Z")] == n:
        axes = axes.replace("Z", "C")  # n planes for an n-channel model: its channels (volumes need one channel)
        notes_axes = [f"its {n} planes read as the model's {n} channels (--axes sets the axes)"]
    else:
        notes_axes = []
    if isinstance(inp.channel, int | np.integer):
        raise ValueError(f"the model {segmenter.loaded.name!r} reads {n} channels: give {n} channel numbers, e.g. "
                         + ",".join(str(i) for i in range(n)))
    data, info = to_tzcyx(inp.data, axes)
    chans, used = pick_channels(data, inp.channel, n)
    notes = list(inp.notes) + notes_axes + list(info.notes)
    notes.append(f"channels {', '.join(map(str, used))} of {data.shape[2]} given to the model's {n} inputs, in that order"
                 + (" (--channel picks others)" if inp.channel is None else ""))
    sem, inst, more = segment_stack(segmenter, chans, inp.anisotropy, diameter, progress=progress)
    notes += more
    lax = info.labels_axes
    return Result(labels_from_tzyx(sem, axes), labels_from_tzyx(inst, axes), lax,
                  labels_from_tzyx(np.ascontiguousarray(chans[:, :, 0]), axes), tuple(1.0 for _ in lax), notes)


def segment_zarr(segmenter, path: str | Path, labels_path: str | Path, cells_path: str | Path, diameter=None, chunk: int = 1024) -> Result:
    """Segment a 2D zarr array block by block into new zarr arrays at ``labels_path``
    (instances, uint32) and ``cells_path`` (1 = cell, uint8), without loading the image:
    memory stays bounded by the block size (``Segmenter.block``) whatever the image size."""
    import zarr

    try:
        src = zarr.open(str(path), mode="r")
    except Exception as exc:  # noqa: BLE001 - zarr raises many kinds; worded once
        raise ValueError(f"cannot read {path} as a zarr array: {exc.__class__.__name__}") from None
    if not hasattr(src, "shape"):  # a group (OME-Zarr): its first array, the full resolution
        keys = sorted(src.array_keys())
        if not keys:
            raise ValueError(f"{path} holds no array")
        src = src[keys[0]]
    if src.ndim != 2:
        raise ValueError(f"zarr input must be a 2D (Y, X) array, got shape {src.shape}")
    if getattr(segmenter, "in_channels", 1) > 1:
        raise ValueError(f"the model {segmenter.loaded.name!r} reads {segmenter.in_channels} channels; "
                         "zarr input is a single 2D (Y, X) array: give a TIFF with the channels")
    kw = dict(shape=src.shape, chunks=(chunk, chunk), zarr_format=2)
    inst = zarr.open_array(str(labels_path), mode="w-", dtype=np.uint32, fill_value=0, **kw)
    sem = zarr.open_array(str(cells_path), mode="w-", dtype=np.uint8, fill_value=0, **kw)
    if max(src.shape) <= segmenter.block:  # one block: read whole, as the same image in a TIFF
        res = segmenter.segment(np.asarray(src), diameter, rgb=False)
        sem[:], inst[:] = res.semantic, res.instances
        return _ZarrResult(sem, inst, "YX", notes=res.notes, count=int(res.instances.max()))
    # the gate, the size check and the intensity limits look at a central crop and a subsample
    seg, d, limits, notes = segmenter.lazy_plan(src, diameter)
    n, _ = seg.segment_blocks(src, d, limits, out=(sem, inst))
    if n == 0 and seg is not segmenter:  # the gate was wrong: every block's cells are written again
        from .inference import gave_back_note

        _, d, limits, notes = segmenter.lazy_plan(src, diameter, delegate=False)
        notes.insert(0, gave_back_note(seg.loaded.name))
        n, _ = segmenter.segment_blocks(src, d, limits, out=(sem, inst))
    return _ZarrResult(sem, inst, "YX", notes=[f"blockwise, {src.shape[0]} x {src.shape[1]} px", *notes], count=n)


@dataclass
class _ZarrResult(Result):
    count: int = 0

    @property
    def n_cells(self) -> int:
        return self.count
