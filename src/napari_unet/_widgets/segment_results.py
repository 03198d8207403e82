"""The Segment widget's results: labels written into the plugin's layers for an image (a
layer edited by hand is never overwritten: the result goes to a new one) and the tracks
of a time-lapse (mixed into :class:`.segment.SegmentWidget`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Tracks

from . import _common
from ._common import (
    add_plugin_labels,
    edited_since_written,
    mark_written,
    plugin_layers,
    show_info,
    unique_layer_name,
)

if TYPE_CHECKING:
    from .segment import _Outcome
    from .segment_axes import _Geometry


class ResultsMixin:
    """Result layers; uses the widget's viewer and status line."""

    def _target(self, source, kind: str, shape) -> tuple:
        """The plugin layer to write ``kind`` into (``None``: a new one), and the layers
        kept because they were edited since the plugin wrote them."""
        candidates = plugin_layers(self.viewer, source.name, kind, shape)
        edited = [lay for lay in candidates if edited_since_written(lay)]
        free = [lay for lay in candidates if lay not in edited]
        recent = self._recent.get((source.name, kind))
        target = recent if recent is not None and recent in free else (free[-1] if free else None)
        return target, edited

    def _write(self, source, kind: str, data: np.ndarray, fp, geometry: _Geometry, notes: list, **kwargs):
        target, edited = self._target(source, kind, data.shape)
        if target is not None:
            target.data = data
            target.scale = geometry.scale
            target.translate = geometry.translate
            target.metadata[_common._KEY]["axes"] = geometry.axes
        else:
            name = unique_layer_name(self.viewer, f"{source.name} {kind}")
            target = add_plugin_labels(self.viewer, data, source, kind, name, geometry.scale, geometry.translate,
                                       tag={"axes": geometry.axes}, **kwargs)
            if edited:
                which = ", ".join(f"'{lay.name}'" for lay in edited)
                was, it = ("was", "it was") if len(edited) == 1 else ("were", "they were")
                notes.append(f"{which} {was} edited since Segment wrote it, so {it} kept: the new {kind} are in '{target.name}'")
        mark_written(target, fp if target.data is data else None)
        self._recent[(source.name, kind)] = target
        return target

    def _show_result(self, layer, res: _Outcome, geometry: _Geometry | None):
        if layer not in self.viewer.layers:
            self.status.value = "image removed; results not added"
            show_info(f"'{layer.name}' was removed while it was segmented; results not added")
            return None
        if geometry is None:
            geometry = self._geometry(layer, self._parsed_axes() or ("YXS" if layer.rgb else "YX"))
        kept: list[str] = []
        fps = res.written or (None, None)
        cells = self._write(layer, "cells", res.semantic, fps[0], geometry, kept, opacity=0.4)
        inst = self._write(layer, "instances", res.instances, fps[1], geometry, kept, opacity=0.6)
        inst.features = res.features if res.features is not None else {}  # (never a stale table)
        inst.metadata[_common._KEY]["spacing"] = tuple(res.spacing) if res.spacing else (1.0,) * inst.ndim
        self._show_tracks(layer, res, geometry)
        n = res.n_cells
        secs = time.perf_counter() - self._t0
        msg = f"{n} cells in {secs:.1f} s"
        notes = list(res.notes) + list(res.extra)
        if notes:
            msg += " (" + "; ".join(notes) + ")"
        if kept:
            msg += ". " + "; ".join(kept)
        self.status.value = msg
        show_info(f"U-Net: {msg}")
        return cells, inst

    def _show_tracks(self, layer, res: _Outcome, geometry: _Geometry):
        """A Tracks layer ``<image> tracks`` of a time-lapse's cells (replaced at each Run)."""
        old = [lay for lay in self.viewer.layers if isinstance(lay, Tracks)
               and (lay.metadata.get(_common._KEY) or {}).get("source") == layer.name]
        if res.tracks is None:  # not a time-lapse
            return
        for lay in old:
            self.viewer.layers.remove(lay)
        if len(res.tracks) == 0:
            return
        self.viewer.add_tracks(res.tracks, name=unique_layer_name(self.viewer, f"{layer.name} tracks"),
                               scale=geometry.scale, translate=geometry.translate, tail_length=10,
                               metadata={_common._KEY: {"source": layer.name, "kind": "tracks"}})


def features_table(columns: dict):
    """Measurement columns as a napari features table: one row per cell, with napari's
    ``index`` column (the label value each row belongs to)."""
    import pandas as pd

    table = pd.DataFrame({k: np.asarray(v) for k, v in columns.items()})
    table["index"] = table["label"].to_numpy()
    return table
