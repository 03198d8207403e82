"""The Measurements widget in a real napari viewer: Segment's features as a table."""

import csv

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_unet._sample_data import nuclei
from napari_unet._widgets import _common
from napari_unet._widgets.measurements import MeasurementsWidget
from napari_unet._widgets.segment import SegmentWidget

pytestmark = pytest.mark.gui


@pytest.fixture
def setup(make_napari_viewer, shipped_model):
    viewer = make_napari_viewer()
    seg = SegmentWidget(viewer)
    table = MeasurementsWidget(viewer)
    viewer.window.add_dock_widget(seg)
    viewer.window.add_dock_widget(table)
    return viewer, seg, table


def _segment(viewer, seg, qtbot, data, **kwargs):
    image = viewer.add_image(data, **kwargs)
    seg.image.value = image
    seg.run_button.native.click()
    qtbot.waitUntil(lambda: not seg.running, timeout=120_000)
    return viewer.layers[f"{image.name} instances"]


def _click(qtbot, table, row):
    """Click the row showing table row ``row`` (the view may be sorted)."""
    view = table._view
    src = table._model.index(row, 0)
    index = table._proxy.mapFromSource(src)
    view.scrollTo(index)
    rect = view.visualRect(index)
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def test_table_rows_select_and_centre_cells(setup, qtbot, tmp_path):
    viewer, seg, table = setup
    crop = nuclei()[0][0][:200, :240]
    inst = _segment(viewer, seg, qtbot, crop, name="crop", scale=(0.5, 0.5), translate=(100, -20))
    # the new instances layer is picked and its features shown, one row per cell
    assert table._layer.value is inst
    n = int(inst.data.max())
    assert table._model.rowCount() == n == len(inst.features) and n > 5
    headers = [table._model.headerData(c, Qt.Orientation.Horizontal) for c in range(table._model.columnCount())]
    assert headers[:2] == ["label", "area"] and "index" not in headers
    table.native.show()  # (so that clicks reach the table)
    qtbot.waitExposed(table.native)
    for row in (0, n // 2, n - 1):
        _click(qtbot, table, row)
        label = int(inst.features["label"][row])
        assert inst.selected_label == label
        ys, xs = np.nonzero(inst.data == label)
        want = (ys.mean() * 0.5 + 100, xs.mean() * 0.5 - 20)  # the centroid in world coordinates
        np.testing.assert_allclose(_common.camera(viewer).center[-2:], want, atol=1e-6)
    # sorted by a column, a click still goes to the row's own cell
    table._view.sortByColumn(1, Qt.SortOrder.DescendingOrder)  # area, largest first
    first = table._proxy.mapToSource(table._proxy.index(0, 0)).row()
    assert inst.features["area"][first] == inst.features["area"].max()
    _click(qtbot, table, first)
    assert inst.selected_label == int(inst.features["label"][first])
    # CSV export: one row per cell
    out = table.export_csv(str(tmp_path / "cells.csv"))
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:2] == ["label", "area"] and "index" not in rows[0] and len(rows) == n + 1
    np.testing.assert_allclose([float(r[1]) for r in rows[1:]], np.bincount(inst.data.ravel())[1:] * 0.25, rtol=1e-5)
    # a re-run refreshes the table
    seg.advanced.value = True
    seg.min_size.value = 300
    qtbot.waitUntil(lambda: not seg.running and "re-applied" in seg.status.value, timeout=20_000)
    assert table._model.rowCount() == int(inst.data.max()) < n


def test_a_row_of_a_volume_goes_to_its_plane(setup, qtbot, blobs):
    viewer, seg, table = setup
    vol = blobs((16, 96, 96), ((4, 25, 25), (11, 70, 60)), r=11, rz=4)
    inst = _segment(viewer, seg, qtbot, vol, name="vol", scale=(2.0, 1.0, 1.0), translate=(10, 0, 5))
    assert table._layer.value is inst and table._model.rowCount() == 2
    for row in range(2):
        table.select_row(row)
        label = int(inst.features["label"][row])
        zs, ys, xs = np.nonzero(inst.data == label)
        assert inst.selected_label == label
        assert viewer.dims.point[0] == pytest.approx(zs.mean() * 2 + 10, abs=2.0)  # the cell's plane (a 2-unit step)
        np.testing.assert_allclose(_common.camera(viewer).center[-2:], (ys.mean(), xs.mean() + 5), atol=1e-6)


def test_a_layer_without_measurements(setup, qtbot, tmp_path):
    viewer, seg, table = setup
    viewer.add_labels(np.zeros((20, 20), np.uint8), name="mine")
    assert "no measurements" in table._info.value and table._model.rowCount() == 0
    assert table.export_csv(str(tmp_path / "x.csv")) is None and not (tmp_path / "x.csv").exists()


def test_pixels_that_are_not_square(setup, qtbot):
    """scikit-image's perimeter needs square pixels: measured in pixels then, and said so."""
    viewer, seg, table = setup
    inst = _segment(viewer, seg, qtbot, nuclei()[0][0][:160, :160], name="wide", scale=(0.5, 0.25), translate=(100, -20))
    assert "measured in pixels" in seg.status.value
    n = int(inst.data.max())
    np.testing.assert_allclose(inst.features["area"], np.bincount(inst.data.ravel())[1:])
    assert table._model.rowCount() == n > 3
    table.select_row(n - 1)
    ys, xs = np.nonzero(inst.data == n)
    np.testing.assert_allclose(_common.camera(viewer).center[-2:], (ys.mean() * 0.5 + 100, xs.mean() * 0.25 - 20), atol=1e-6)
