"""The Segment widget in a real napari viewer (under Xvfb via pytest-xvfb)."""

import numpy as np
import pytest

from napari_unet._sample_data import nuclei
from napari_unet._widgets.segment import SegmentWidget

pytestmark = pytest.mark.gui


@pytest.fixture
def viewer_widget(make_napari_viewer, shipped_model):
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget


def test_segment_adds_and_updates_layers(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    data, kwargs, _ = nuclei()[0]
    image = viewer.add_image(data, scale=(0.5, 0.5), translate=(10, 20), **kwargs)
    assert widget._image.value is image  # follows the active layer
    assert widget._model.value in widget._model.choices
    before = image.data.copy()
    widget._on_run()
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    names = [lay.name for lay in viewer.layers]
    assert f"{image.name} cells" in names and f"{image.name} instances" in names
    inst = viewer.layers[f"{image.name} instances"]
    cells = viewer.layers[f"{image.name} cells"]
    assert inst.data.shape == data.shape
    assert tuple(inst.scale) == (0.5, 0.5) and tuple(inst.translate) == (10, 20)
    assert inst.data.max() > 50  # a BBBC039 field has ~100 nuclei
    assert set(np.unique(cells.data)) == {0, 1}
    np.testing.assert_array_equal(image.data, before)  # the image is never modified
    # running again updates the same layers instead of adding copies
    widget._on_run()
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    assert len(viewer.layers) == 3


def test_stack_and_rgb_inputs(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    data = nuclei()[0][0][:128, :160]
    stack = viewer.add_image(np.stack([data, data[::-1]]), name="stack")
    widget._image.value = stack
    widget._on_run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    inst = viewer.layers["stack instances"]
    assert inst.data.shape == stack.data.shape and inst.data[0].max() > 0 and inst.data[1].max() > 0
    assert "2D planes" in widget._status.value
    rgb = viewer.add_image(np.repeat((data // 16).astype(np.uint8)[..., None], 3, -1), name="rgb", rgb=True)
    widget._image.value = rgb
    widget._on_run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert viewer.layers["rgb instances"].data.shape == data.shape
    # a stack's probabilities are not kept: a changed setting waits for Run, and says so
    widget._image.value = stack
    widget._on_run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    before = inst.data.copy()
    widget._advanced.value = True
    widget._threshold.value = 0.9
    assert "press Run" in widget._status.value
    qtbot.wait(500)
    np.testing.assert_array_equal(inst.data, before)


def test_bad_inputs_notify_without_crashing(viewer_widget, qtbot, monkeypatch):
    viewer, widget = viewer_widget
    messages = []
    import napari_unet._widgets._common as common

    monkeypatch.setattr(common, "show_error", lambda msg: messages.append(msg))
    const = viewer.add_image(np.full((40, 50), 3, np.uint16), name="constant")
    widget._image.value = const
    widget._on_run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert viewer.layers["constant instances"].data.max() == 0  # nothing found, no crash
    nan = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    nan[10:20] = np.nan
    viewer.add_image(nan, name="nan")
    widget._image.value = viewer.layers["nan"]
    widget._on_run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert "nan instances" in [lay.name for lay in viewer.layers]
    assert messages == []
    tiny = viewer.add_image(np.zeros((3, 4), np.uint8), name="tiny")
    widget._image.value = tiny
    widget._on_run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert viewer.layers["tiny instances"].data.shape == (3, 4)


def test_removing_the_image_mid_run_loses_nothing(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    data = nuclei()[0][0]
    image = viewer.add_image(data, name="gone")
    other = viewer.add_labels(np.zeros(data.shape, np.uint8), name="mine")
    widget._image.value = image
    widget._on_run()
    viewer.layers.remove(image)
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert [lay.name for lay in viewer.layers] == ["mine"]
    assert not other.data.any()
    assert widget._status.value == "image removed; results not added"


def test_advanced_settings_reapply_without_the_network(viewer_widget, qtbot, monkeypatch):
    viewer, widget = viewer_widget
    data = nuclei()[0][0][:256, :256]
    image = viewer.add_image(data, name="crop")
    # (the viewer window is not shown in tests: "hidden" is what the widget asked for)
    assert widget._threshold.native.isHidden()
    widget._on_run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    cells, inst = viewer.layers["crop cells"], viewer.layers["crop instances"]
    first_cells, first_inst = cells.data.copy(), inst.data.copy()
    assert first_inst.max() > 5

    from napari_unet.core.inference import Segmenter

    def no_network(*a, **k):
        raise AssertionError("the network ran again")

    monkeypatch.setattr(Segmenter, "probabilities", no_network)
    widget._advanced.value = True
    assert not widget._threshold.native.isHidden() and not widget._min_size.native.isHidden()
    assert "model's (" in widget._threshold.native.specialValueText()  # the model's own value, once shown
    widget._threshold.value = 0.9
    qtbot.waitUntil(lambda: "re-applied" in widget._status.value, timeout=10_000)
    qtbot.waitUntil(lambda: not widget.running, timeout=10_000)
    assert 0 < cells.data.sum() < first_cells.sum()  # the same layers, updated
    widget._min_size.value = 10**6
    qtbot.waitUntil(lambda: not widget.running and inst.data.max() == 0, timeout=10_000)
    # unticking "Advanced settings" goes back to the model's own settings
    widget._advanced.value = False
    qtbot.waitUntil(lambda: not widget.running and inst.data.max() > 0, timeout=10_000)
    np.testing.assert_array_equal(cells.data, first_cells)
    np.testing.assert_array_equal(inst.data, first_inst)
    assert len(viewer.layers) == 3
    # a changed image is not re-processed from stale probabilities: the next Run applies
    image.data = data[::-1].copy()
    widget._advanced.value = True
    qtbot.wait(600)
    assert not widget.running and widget._last is None
    np.testing.assert_array_equal(inst.data, first_inst)


def test_changed_settings_never_overwrite_edited_results(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    viewer.add_image(nuclei()[0][0][:200, :200], name="crop")
    widget._advanced.value = True
    widget._on_run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    inst = viewer.layers["crop instances"]
    # the user corrects the result by hand (painting into the layer)
    inst.data_setitem((np.arange(5), np.arange(5)), 999)
    edited = inst.data.copy()
    widget._threshold.value = 0.9
    qtbot.waitUntil(lambda: "was edited" in widget._status.value, timeout=10_000)
    assert not widget.running
    np.testing.assert_array_equal(inst.data, edited)
    # an explicit Run still segments again
    widget._on_run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert inst.data.max() < 999


def test_the_boxes_show_the_models_own_settings_after_a_run_with_others(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    viewer.add_image(nuclei()[0][0][:128, :128], name="crop")
    widget._advanced.value = True
    own = widget._threshold.native.specialValueText()
    widget._threshold.value = 0.8
    widget._on_run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    widget._show_model_settings()
    assert widget._threshold.native.specialValueText() == own and "0.80" not in own


def test_model_tooltip_and_hint_on_an_implausible_result(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    tip = widget._model.tooltip
    assert tip.startswith(f"{widget._model.value}:") and len(tip) > 40  # says what the model is for
    blank = viewer.add_image(np.zeros((64, 64), np.uint16), name="blank")
    widget._image.value = blank
    widget._on_run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert "no cells found" in widget._status.value and "Fine-tune" in widget._status.value
    assert widget._status.native.wordWrap()  # long notes wrap instead of widening the dock
