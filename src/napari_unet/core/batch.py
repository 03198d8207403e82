"""Segmenting many files, shared by ``napari-unet segment`` and the Segment widget's
*Run on folder*: which files a folder holds, which outputs each gets, what is skipped or
refused, and one file end to end (read with axes, segment, write atomically, measure).

Outputs never replace an input or a file the run did not create: an input whose outputs
all exist is skipped (an interrupted folder resumes), one with only some of them is refused
unless ``overwrite``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .data import IMAGE_SUFFIXES

__all__ = ["OUTPUT_SUFFIXES", "Plan", "folder_images", "in_lanes", "is_image", "lanes_for", "outputs_for", "plan", "run_folder",
           "segment_file"]

#: what this tool writes next to a stem; such files are never taken as inputs
OUTPUT_SUFFIXES = ("_labels", "_cells", "_measurements")


def is_image(p: Path) -> bool:
    """An image file that is not one of this tool's outputs (``X_labels.tif``, ...)."""
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not any(p.stem.endswith(s) for s in OUTPUT_SUFFIXES)


def folder_images(folder: str | Path) -> list[Path]:
    """The images of ``folder`` (not its subfolders), sorted by name."""
    return [q for q in sorted(Path(folder).iterdir()) if is_image(q)]


def outputs_for(p: Path, out: Path, measure: bool = False) -> list[Path]:
    if p.suffix.lower() == ".zarr":
        paths = [out / f"{p.stem}_labels.zarr", out / f"{p.stem}_cells.zarr"]
    else:
        paths = [out / f"{p.stem}_labels.tif", out / f"{p.stem}_cells.tif"]
    if measure:
        paths.append(out / f"{p.stem}_measurements.csv")
    return paths


@dataclass
class Plan:
    todo: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # outputs exist: done before


def plan(inputs: list[Path], out: Path, measure: bool = False, overwrite: bool = False) -> Plan:
    """What to segment; ``ValueError`` (one line) for an output folder that is a file,
    colliding names, an output that would replace an input, or one the run did not create."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"the output {out} is a file, not a folder")
    stems = [p.stem for p in inputs]
    if len(set(stems)) != len(stems):
        raise ValueError("two inputs have the same file name; their outputs would collide")
    protected = {p.resolve() for p in inputs}
    result = Plan()
    for p in inputs:
        paths = outputs_for(p, out, measure)
        clash = [q for q in paths if q.resolve() in protected]
        if clash:
            raise ValueError(f"refusing to overwrite the input {clash[0]} (choose another output folder)")
        if not overwrite and any(q.exists() for q in paths):
            if all(q.exists() for q in paths):
                result.skipped.append(p)
                continue
            done = next(q for q in paths if q.exists())
            raise ValueError(f"{done} exists and this run did not create it; pass --overwrite to replace it")
        result.todo.append(p)
    return result


def segment_file(segmenter, path: Path, out: Path, diameter=None, axes: str | None = None,
                 anisotropy: float | None = None, channel: int | None = None, rgb: bool | None = None,
                 measure: bool = False):
    """Segment one file into ``out``; returns the :class:`.pipeline.Result`."""
    from .io import write_tiff
    from .pipeline import read_input, segment_input, segment_zarr

    path, out = Path(path), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels, cells, *table = outputs_for(path, out, measure)
    if path.suffix.lower() == ".zarr":
        return segment_zarr(segmenter, path, labels, cells, diameter)
    inp = _on_disk(segmenter, path, axes, channel, rgb) or read_input(path, axes, anisotropy, channel, rgb=rgb)
    res = segment_input(segmenter, inp, diameter)
    write_tiff(labels, res.instances, **res.tiff_kwargs)
    write_tiff(cells, res.semantic, **res.tiff_kwargs)
    if table:
        from .measure import write_csv

        write_csv(res.measurements(), table[0])
    return res


def _on_disk(segmenter, path: Path, axes, channel, rgb):
    """A 2D grayscale TIFF larger than a block as an :class:`.pipeline.Input` read from
    disk block by block (:func:`.data.open_plane`; the same labels as read whole, with the
    frame never in memory), else ``None``."""
    from .data import open_plane
    from .pipeline import Input

    if axes not in (None, "YX") or channel is not None or rgb or getattr(segmenter, "in_channels", 1) > 1:
        return None
    plane = open_plane(path, larger_than=getattr(segmenter, "block", 0))
    if plane is None:
        return None
    return Input(plane, "YX", 1.0, None, [])


#: Inputs at most this large on disk are segmented two at a time on a CPU (a 4096 px uint16
#: frame is 32 MB); larger ones one at a time, so that peak memory stays one input's.
LANE_MAX_BYTES = 64 * 2**20


def lanes_for(segmenter, paths: list[Path]) -> int:
    """How many inputs to segment side by side: 2 for several image files of at most
    :data:`LANE_MAX_BYTES` on a CPU with at least two threads, else 1. Each lane's network
    then runs on half the cores while the other lane reads, post-processes (which mostly
    releases the GIL) or writes: bbbc039/val 1.35 -> 1.78 MP/s, four 2048 px frames 1.51 ->
    2.06 MP/s on 2 cores, the same labels (``benchmarks/lanes.py``)."""
    import torch

    device = getattr(segmenter, "device", None)
    if len(paths) < 2 or device is None or device.type != "cpu" or torch.get_num_threads() < 2:
        return 1
    if any(not p.is_file() or p.stat().st_size > LANE_MAX_BYTES for p in paths):
        return 1
    return 2


def in_lanes(func, items, lanes: int, stop=lambda result: False):
    """``func(item)`` for each item, yielded in order, ``lanes`` of them at a time in threads
    with torch's intra-op threads shared out between them (restored afterwards). After a
    result for which ``stop(result)`` is true nothing new starts (those running finish)."""
    items = list(items)
    if lanes <= 1:
        for item in items:
            result = func(item)
            yield result
            if stop(result):
                return
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // lanes))
    try:
        with ThreadPoolExecutor(lanes, thread_name_prefix="napari-unet-lane") as pool:
            todo = iter(items)
            # one more queued than lanes: a lane that frees starts the next at once
            pending = deque(pool.submit(func, item) for _, item in zip(range(lanes + 1), todo))
            try:
                while pending:
                    result = pending.popleft().result()
                    yield result
                    if stop(result):
                        return
                    nxt = next(todo, None)
                    if nxt is not None:
                        pending.append(pool.submit(func, nxt))
            finally:  # stopped, failed or closed by the caller: what has not begun never will
                for f in pending:
                    f.cancel()
    finally:
        torch.set_num_threads(threads)


def run_folder(segmenter, inputs: list[Path], out: Path, diameter=None, measure: bool = True,
               overwrite: bool = False, cancelled=lambda: False):
    """Segment ``inputs`` into ``out`` (two at a time where :func:`lanes_for` says so), as a generator of summary rows
    ``{"file", "cells", "status", "seconds"}`` (``cells`` ``None`` when unknown; status ``done``, ``skipped`` (outputs exist:
    done before; its cells are counted from them) or ``failed: <why>``), then write
    ``out/summary.csv`` with every row. An unreadable file is reported and the others go on;
    ``cancelled()`` is checked after each file (those already started finish). Raises ``ValueError`` when the plan is refused
    (see :func:`plan`)."""
    import time

    import numpy as np

    from .data import read_image
    from .errors import is_input_error, one_line
    from .measure import write_csv

    out = Path(out)
    work = plan(list(inputs), out, measure, overwrite)

    def one(p: Path) -> dict:
        t0 = time.perf_counter()
        if p in work.skipped:
            try:
                lab = read_image(outputs_for(p, out)[0]) if p.suffix.lower() != ".zarr" else None
                n = int(np.unique(lab[lab > 0]).size) if lab is not None else None
            except (ValueError, OSError):
                n = None
            row = {"file": p.name, "cells": n, "status": "skipped (done before)"}
        else:
            try:
                res = segment_file(segmenter, p, out, diameter, measure=measure)
                row = {"file": p.name, "cells": res.n_cells, "status": "done"}
            except (ValueError, OSError, MemoryError) as exc:
                if not is_input_error(exc):
                    raise  # a bug, not this file's fault: its traceback shows
                row = {"file": p.name, "cells": None, "status": f"failed: {one_line(exc)}"}
        row["seconds"] = round(time.perf_counter() - t0, 2)
        return row

    rows = []
    if not cancelled():
        for row in in_lanes(one, inputs, lanes_for(segmenter, list(work.todo)), stop=lambda _: cancelled()):
            rows.append(row)
            yield row
    if rows:
        out.mkdir(parents=True, exist_ok=True)
        write_csv({k: np.array([r[k] for r in rows], dtype=object) for k in ("file", "cells", "status", "seconds")}, out / "summary.csv")
