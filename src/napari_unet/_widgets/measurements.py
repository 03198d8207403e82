"""The Measurements dock widget: a Labels layer's per-cell features as a table.

Segment puts each cell's measurements into its instances layer's ``features`` (one row per
cell, per frame over time, with napari's ``index`` column naming the label of each row).
Clicking a row selects that label and brings its cell to the centre of the view (its plane
and frame too); *Export CSV...* writes the table.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import Container, Label, PushButton, create_widget
from napari.layers import Labels
from qtpy.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt
from qtpy.QtWidgets import QAbstractItemView, QFileDialog, QTableView

from . import _common
from ._common import notify_error, show_info

__all__ = ["MeasurementsWidget"]

_SORT_ROLE = Qt.ItemDataRole.UserRole


class _ColumnsModel(QAbstractTableModel):
    """A read-only table over numpy columns (fast for tens of thousands of rows)."""

    def __init__(self):
        super().__init__()
        self._names: list[str] = []
        self._cols: list[np.ndarray] = []
        self._n = 0

    def set_columns(self, columns: dict):
        self.beginResetModel()
        self._names = list(columns)
        self._cols = [np.asarray(v) for v in columns.values()]
        self._n = len(self._cols[0]) if self._cols else 0
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()):  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else self._n

    def columnCount(self, parent=QModelIndex()):  # noqa: B008
        return 0 if parent.isValid() else len(self._names)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        v = self._cols[index.column()][index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            if isinstance(v, (np.integer, int)):
                return str(int(v))
            if isinstance(v, (np.floating, float)):
                return f"{float(v):.4g}"
            return str(v)
        if role == _SORT_ROLE:
            return float(v) if isinstance(v, (np.integer, np.floating, int, float)) else str(v)
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return self._names[section] if section < len(self._names) else None
        return str(section + 1)


class MeasurementsWidget(Container):
    """Per-cell measurements of a Labels layer (its ``features``), a row per cell."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self._layer = create_widget(annotation=Labels, label="Labels",
                                    options={"tooltip": "The instance layer whose measurements are shown (Segment fills them)"})
        self._info = Label(label="", value="")
        self._info.native.setWordWrap(True)
        self._export = PushButton(text="Export CSV...", tooltip="Write the table as a CSV file (one row per cell)")
        self.extend([self._layer, self._info, self._export])
        self._model = _ColumnsModel()
        self._proxy = QSortFilterProxyModel()
        self._proxy.setSourceModel(self._model)
        self._proxy.setSortRole(_SORT_ROLE)
        self._view = QTableView()
        self._view.setModel(self._proxy)
        self._view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self._view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self._view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self._view.setSortingEnabled(True)
        self._view.setMinimumHeight(240)
        self._view.setToolTip("Click a row to select that cell's label and bring it to the centre of the view")
        self.native.layout().addWidget(self._view)
        self._view.selectionModel().currentRowChanged.connect(self._row_changed)
        self._view.clicked.connect(lambda index: self._row_changed(index))
        self._watched = None
        self._layer.changed.connect(self._layer_changed)
        self._export.changed.connect(lambda *_: self.export_csv())
        self.viewer.layers.selection.events.active.connect(self._follow_active)
        self.native.destroyed.connect(lambda *_: self._watch(None))
        self.reset_choices()
        self._follow_active()
        self._layer_changed()

    # ---- which layer ---------------------------------------------------------------------
    def _follow_active(self, event=None):
        layer = self.viewer.layers.selection.active
        try:
            if isinstance(layer, Labels) and layer is not self._layer.value:
                self._layer.reset_choices()
                if layer in self._layer.choices:
                    self._layer.value = layer
        except RuntimeError:  # the dock was closed
            pass

    def _watch(self, layer):
        if self._watched is not None:
            self._watched.events.features.disconnect(self._refresh)
        self._watched = layer
        if layer is not None:
            layer.events.features.connect(self._refresh)

    def _layer_changed(self, *_):
        layer = self._layer.value
        if layer is not self._watched:
            self._watch(layer)
        self._refresh()

    def columns(self) -> dict:
        """The shown table: the layer's features without napari's ``index`` column."""
        layer = self._layer.value
        if layer is None:
            return {}
        feats = layer.features
        return {str(k): feats[k].to_numpy() for k in feats.columns if k != "index"}

    def _refresh(self, event=None):
        try:
            cols = self.columns()
            self._model.set_columns(cols)
            layer = self._layer.value
            n = len(next(iter(cols.values()))) if cols else 0
            if layer is None:
                self._info.value = "no Labels layer"
            elif not cols:
                self._info.value = f"'{layer.name}' has no measurements: run Segment on its image"
            else:
                per = " (one row per cell and frame)" if "frame" in cols else ""
                self._info.value = f"{n} rows{per}: click one to go to its cell"
            self._export.enabled = n > 0
            self._view.resizeColumnsToContents()
        except RuntimeError:  # the dock was closed
            self._watch(None)

    # ---- a row: select its label, go to its cell -------------------------------------------
    def _row_changed(self, current, previous=None):
        if current is None or not current.isValid():
            return
        self.select_row(self._proxy.mapToSource(current).row())

    def select_row(self, row: int) -> int | None:
        """Select the label of table row ``row`` (of the layer's features) and centre the
        view on its cell (its plane and frame too); returns the label."""
        layer = self._layer.value
        if layer is None or layer not in self.viewer.layers:
            return None
        feats = layer.features
        if not 0 <= row < len(feats):
            return None
        key = "label" if "label" in feats else "index" if "index" in feats else None
        label = int(feats[key].iloc[row]) if key else row
        layer.selected_label = label
        point = _world_point(layer, feats.iloc[row])
        if point is not None:
            self._go_to(layer, point)
        return label

    def _go_to(self, layer, point: np.ndarray):
        """Move the sliders and the camera to ``point`` (world coordinates of the layer's dims)."""
        dims = self.viewer.dims
        offset = dims.ndim - layer.ndim
        displayed = list(dims.displayed)
        world = {offset + i: float(v) for i, v in enumerate(point) if np.isfinite(v)}
        for wd, v in world.items():
            if wd not in displayed:
                dims.set_point(wd, v)
        center = list(_common.camera(self.viewer).center)
        shown = [world.get(wd) for wd in displayed]
        current = center[-len(displayed):]
        center[-len(displayed):] = [c if v is None else v for v, c in zip(shown, current)]
        _common.camera(self.viewer).center = tuple(center)

    # ---- export ---------------------------------------------------------------------------
    def export_csv(self, path: str | None = None):
        """Write the table as CSV (one row per cell); asks where without ``path``."""
        layer = self._layer.value
        cols = self.columns()
        if layer is None or not cols:
            show_info("No measurements to export: run Segment first")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self.native, "Export measurements", f"{layer.name}_measurements.csv",
                                                  "CSV files (*.csv)")
            if not path:
                return None
        from ..core.measure import write_csv

        numeric = {k: v for k, v in cols.items() if v.dtype.kind in "biuf"}  # (text columns are left out)
        if not numeric:
            show_info("No numeric measurements to export")
            return None
        try:
            out = write_csv(numeric, path)
        except (OSError, ValueError) as exc:
            notify_error(exc, "Export")
            return None
        show_info(f"U-Net: wrote {len(next(iter(numeric.values())))} rows to {out}")
        return out


def _world_point(layer, row) -> np.ndarray | None:
    """World coordinates (one per dimension of ``layer``) of a features row's cell.

    Segment's features hold centroids in the layer's units at the time of measuring (the
    ``spacing`` it records in the layer's metadata) and, over time, the ``frame``; the
    layer's current scale and translate place them in the world.
    """
    names = [c for c in ("centroid_z", "centroid_y", "centroid_x") if c in row.index]
    if not names:
        return None
    tag = layer.metadata.get(_common._KEY) or {}
    nd = layer.ndim
    axes = tag.get("axes")
    if not axes or len(axes) != nd:
        axes = ("T" if "frame" in row.index else "") + "ZYX"[-len(names):]
        axes = "?" * (nd - len(axes)) + axes[-nd:]
    spacing = tag.get("spacing")
    scale, translate = np.asarray(layer.scale, float), np.asarray(layer.translate, float)
    if spacing is None or len(spacing) != nd:
        spacing = scale
    spatial = [i for i, ch in enumerate(axes) if ch not in "T?"]
    if len(spatial) != len(names):
        return None
    point = np.full(nd, np.nan)
    for i, name in zip(spatial, names):
        pixel = float(row[name]) / float(spacing[i])
        point[i] = pixel * scale[i] + translate[i]
    if "T" in axes and "frame" in row.index:
        t = axes.index("T")
        point[t] = float(row["frame"]) * scale[t] + translate[t]
    return point
