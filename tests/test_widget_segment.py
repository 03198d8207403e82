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
    assert widget.image.value is image  # follows the active layer
    assert widget.model.value in widget.model.choices
    before = image.data.copy()
    widget.run_button.native.click()
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
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    assert len(viewer.layers) == 3


def test_dask_layer_segments_without_loading_the_image(viewer_widget, qtbot, monkeypatch):
    """A dask-backed layer (a huge file opened lazily) goes block by block: the same labels
    as the in-memory layer (core/test_inference checks that only chunks are read)."""
    import dask.array as da

    from napari_unet.core import inference

    viewer, widget = viewer_widget
    data = nuclei()[0][0]
    monkeypatch.setattr(inference.Segmenter.__init__, "__defaults__",
                        tuple(256 if d == 2048 else d for d in inference.Segmenter.__init__.__defaults__))  # block 256 px
    viewer.add_image(data, name="memory")
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    lazy = da.from_array(data, chunks=128)
    viewer.add_image(lazy, name="lazy", contrast_limits=(0, 4095))  # (napari reads what it displays)
    widget.image.value = viewer.layers["lazy"]
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    a, b = viewer.layers["memory instances"].data, viewer.layers["lazy instances"].data
    np.testing.assert_array_equal(viewer.layers["lazy cells"].data, viewer.layers["memory cells"].data)
    assert a.max() == b.max() > 50 and "block by block" in widget.status.value


def test_stack_and_rgb_inputs(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    data = nuclei()[0][0][:128, :160]
    stack = viewer.add_image(np.stack([data, data[::-1]]), name="stack")
    widget.image.value = stack
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    inst = viewer.layers["stack instances"]
    assert inst.data.shape == stack.data.shape and inst.data[0].max() > 0 and inst.data[1].max() > 0
    assert widget.axes.value == "ZYX" and "3D" in widget.status.value  # a (2, Y, X) stack is taken for planes
    rgb = viewer.add_image(np.repeat((data // 16).astype(np.uint8)[..., None], 3, -1), name="rgb", rgb=True)
    widget.image.value = rgb
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert viewer.layers["rgb instances"].data.shape == data.shape
    # a stack's probabilities are not kept: a changed setting waits for Run, and says so
    widget.image.value = stack
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    before = inst.data.copy()
    widget.advanced.value = True
    widget.threshold.value = 0.9
    assert "press Run" in widget.status.value
    qtbot.wait(500)
    np.testing.assert_array_equal(inst.data, before)


def test_bad_inputs_notify_without_crashing(viewer_widget, qtbot, monkeypatch):
    viewer, widget = viewer_widget
    messages = []
    import napari_unet._widgets._common as common

    monkeypatch.setattr(common, "show_error", lambda msg: messages.append(msg))
    const = viewer.add_image(np.full((40, 50), 3, np.uint16), name="constant")
    widget.image.value = const
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert viewer.layers["constant instances"].data.max() == 0  # nothing found, no crash
    nan = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    nan[10:20] = np.nan
    viewer.add_image(nan, name="nan")
    widget.image.value = viewer.layers["nan"]
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert "nan instances" in [lay.name for lay in viewer.layers]
    assert messages == []
    tiny = viewer.add_image(np.zeros((3, 4), np.uint8), name="tiny")
    widget.image.value = tiny
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert viewer.layers["tiny instances"].data.shape == (3, 4)


def test_removing_the_image_mid_run_loses_nothing(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    data = nuclei()[0][0]
    image = viewer.add_image(data, name="gone")
    other = viewer.add_labels(np.zeros(data.shape, np.uint8), name="mine")
    widget.image.value = image
    widget.run_button.native.click()
    viewer.layers.remove(image)
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert [lay.name for lay in viewer.layers] == ["mine"]
    assert not other.data.any()
    assert widget.status.value == "image removed; results not added"


def test_advanced_settings_reapply_without_the_network(viewer_widget, qtbot, monkeypatch):
    viewer, widget = viewer_widget
    data = nuclei()[0][0][:256, :256]
    image = viewer.add_image(data, name="crop")
    # (the viewer window is not shown in tests: "hidden" is what the widget asked for)
    assert widget.threshold.native.isHidden()
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    cells, inst = viewer.layers["crop cells"], viewer.layers["crop instances"]
    first_cells, first_inst = cells.data.copy(), inst.data.copy()
    assert first_inst.max() > 5

    from napari_unet.core.inference import Segmenter

    def no_network(*a, **k):
        raise AssertionError("the network ran again")

    monkeypatch.setattr(Segmenter, "probabilities", no_network)
    widget.advanced.value = True
    assert not widget.threshold.native.isHidden() and not widget.min_size.native.isHidden()
    assert "model's (" in widget.threshold.native.specialValueText()  # the model's own value, once shown
    widget.threshold.value = 0.9
    qtbot.waitUntil(lambda: "re-applied" in widget.status.value, timeout=10_000)
    qtbot.waitUntil(lambda: not widget.running, timeout=10_000)
    assert 0 < cells.data.sum() < first_cells.sum()  # the same layers, updated
    widget.min_size.value = 10**6
    qtbot.waitUntil(lambda: not widget.running and inst.data.max() == 0, timeout=10_000)
    # unticking "Advanced settings" goes back to the model's own settings
    widget.advanced.value = False
    qtbot.waitUntil(lambda: not widget.running and inst.data.max() > 0, timeout=10_000)
    np.testing.assert_array_equal(cells.data, first_cells)
    np.testing.assert_array_equal(inst.data, first_inst)
    assert len(viewer.layers) == 3
    # a changed image is not re-processed from stale probabilities: the next Run applies
    image.data = data[::-1].copy()
    widget.advanced.value = True
    qtbot.wait(600)
    assert not widget.running
    np.testing.assert_array_equal(inst.data, first_inst)
    widget.threshold.value = 0.7  # and stays so: a setting now waits for Run, and says so
    qtbot.wait(600)
    assert "apply when you press Run" in widget.status.value
    np.testing.assert_array_equal(inst.data, first_inst)


def test_changed_settings_never_overwrite_edited_results(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    viewer.add_image(nuclei()[0][0][:200, :200], name="crop")
    widget.advanced.value = True
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    inst = viewer.layers["crop instances"]
    # the user corrects the result by hand (painting into the layer)
    inst.data_setitem((np.arange(5), np.arange(5)), 999)
    edited = inst.data.copy()
    widget.threshold.value = 0.9
    qtbot.waitUntil(lambda: "was edited" in widget.status.value, timeout=10_000)
    assert not widget.running
    np.testing.assert_array_equal(inst.data, edited)
    # an explicit Run segments again, into a new layer: the corrected one is kept as it is
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    np.testing.assert_array_equal(inst.data, edited)
    new = viewer.layers["crop instances [2]"]
    assert 0 < new.data.max() < 999
    assert "crop instances [2]" in widget.status.value and "edited" in widget.status.value


def test_the_boxes_show_the_models_own_settings_after_a_run_with_others(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    viewer.add_image(nuclei()[0][0][:128, :128], name="crop")
    widget.advanced.value = True
    own = widget.threshold.native.specialValueText()
    widget.threshold.value = 0.8
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    widget.advanced.value = False  # untick and tick again: the boxes show the model's own values
    widget.advanced.value = True
    qtbot.wait(600)
    qtbot.waitUntil(lambda: not widget.running, timeout=30_000)
    assert widget.threshold.native.specialValueText() == own and "0.80" not in own


def test_model_tooltip_and_hint_on_an_implausible_result(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    tip = widget.model.tooltip
    assert tip.startswith(f"{widget.model.value}:") and len(tip) > 40  # says what the model is for
    blank = viewer.add_image(np.zeros((64, 64), np.uint16), name="blank")
    widget.image.value = blank
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert "no cells found" in widget.status.value and "Fine-tune" in widget.status.value
    assert widget.status.native.wordWrap()  # long notes wrap instead of widening the dock


# ---- volumes, time-lapses, channels ------------------------------------------------------------
def test_a_volume_gets_3d_instances_with_its_scale(viewer_widget, qtbot, blobs):
    viewer, widget = viewer_widget
    vol = blobs()
    image = viewer.add_image(vol, name="vol", scale=(1.0, 0.5, 0.5), translate=(3, 10, 20))
    assert widget.image.value is image
    # the axes are guessed, the anisotropy read from the layer's scale, and the plan said before Run
    assert widget.axes.value == "ZYX"
    assert widget.anisotropy.value == pytest.approx(2.0) and not widget.anisotropy.native.isHidden()
    assert widget.channel.native.isHidden()
    plan = widget.plan.value
    assert "3D volume" in plan and "16 planes" in plan and "anisotropy 2" in plan and "from the layer scale" in plan
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    inst, cells = viewer.layers["vol instances"], viewer.layers["vol cells"]
    for layer in (inst, cells):
        assert layer.data.shape == vol.shape
        assert tuple(layer.scale) == (1.0, 0.5, 0.5) and tuple(layer.translate) == (3, 10, 20)
    # one id per cell through the volume: each ellipsoid's id is the same in the planes it spans
    ids = {int(inst.data[z, 25, 25]) for z in (5, 8, 11)}
    assert len(ids) == 1 and 0 not in ids
    assert len({int(inst.data[8, y, x]) for y, x in ((25, 25), (25, 70), (70, 40), (72, 80))}) == 4
    n = len(np.unique(inst.data[inst.data > 0]))
    assert n == 4 and widget.status.value.startswith("4 cells")  # real cells, not a per-plane count
    # measurements: one row per cell; 3D area = volume in the layer's units
    feats = inst.features
    assert len(feats) == n and set(feats["index"]) == set(np.unique(inst.data[inst.data > 0]))
    counts = np.bincount(inst.data.ravel())
    np.testing.assert_allclose(feats["area"], counts[feats["label"]] * 1.0 * 0.5 * 0.5)
    assert "centroid_z" in feats and "mean_intensity" in feats
    # an anisotropy typed by the user is said so, and kept for this layer
    widget.anisotropy.value = 3
    assert "anisotropy 3 (set here)" in widget.plan.value
    widget.image.value = viewer.add_image(vol[0], name="plane")
    assert widget.axes.value == "YX" and widget.anisotropy.native.isHidden() and "2D image" in widget.plan.value
    widget.image.value = image
    assert widget.anisotropy.value == 3 and "anisotropy 3 (set here)" in widget.plan.value


def test_a_time_lapse_keeps_ids_over_time(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    crop = nuclei()[0][0][:128, :160]
    movie = np.stack([np.roll(crop, (2 * t, 3 * t), axis=(0, 1)) for t in range(3)])
    image = viewer.add_image(movie, name="movie", scale=(5.0, 0.5, 0.5))
    assert widget.axes.value == "ZYX"  # a short leading axis is taken for planes ...
    widget.axes.value = "tyx"  # ... the user says it is time
    widget.axes.native.editingFinished.emit()
    assert widget.axes.value == "TYX" and widget.anisotropy.native.isHidden()
    assert "time-lapse, 3 frames, ids kept over time" in widget.plan.value
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    inst = viewer.layers["movie instances"]
    assert inst.data.shape == movie.shape and tuple(inst.scale) == (5.0, 0.5, 0.5)
    # the same nucleus has the same id in every frame
    for y, x in ((40, 40), (90, 100), (60, 120)):
        ids = [int(inst.data[t, y + 2 * t, x + 3 * t]) for t in range(3)]
        assert ids[0] == ids[1] == ids[2]
    per_frame = max(len(np.unique(f[f > 0])) for f in inst.data)
    total = len(np.unique(inst.data[inst.data > 0]))
    assert total <= per_frame + 5 and widget.status.value.startswith(f"{total} cells")
    # measurements per cell and frame, with a frame column; centroid tracks
    feats = inst.features
    assert set(feats["frame"]) == {0, 1, 2} and len(feats) == sum(len(np.unique(f[f > 0])) for f in inst.data)
    tracks = viewer.layers["movie tracks"]
    assert len(np.unique(tracks.data[:, 0])) == total and tuple(tracks.scale) == (5.0, 0.5, 0.5)
    # the axes typed for this layer are kept when it is picked again
    widget.image.value = viewer.add_image(crop, name="flat")
    assert widget.axes.value == "YX"
    widget.image.value = image
    assert widget.axes.value == "TYX"


def test_channels_and_wrong_axes(viewer_widget, qtbot, monkeypatch):
    viewer, widget = viewer_widget
    errors = []
    import napari_unet._widgets._common as common

    monkeypatch.setattr(common, "show_error", lambda msg: errors.append(msg))
    crop = nuclei()[0][0][:96, :128]
    data = np.stack([np.zeros_like(crop), crop])  # channel 1 holds the nuclei
    image = viewer.add_image(data, name="two")
    widget.axes.value = "cyx"
    widget.axes.native.editingFinished.emit()
    assert not widget.channel.native.isHidden() and widget.channel.max == 1
    widget.channel.value = 1
    assert "channel 1 of 2" in widget.plan.value
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    inst = viewer.layers["two instances"]
    assert inst.data.shape == crop.shape and inst.data.max() > 3 and len(image.scale) == 3 and len(inst.scale) == 2
    assert errors == []
    # a wrong entry: a notification (not a traceback), the plan says why, Run refuses
    for bad in ("ZZX", "ZYXQ", "YX"):
        widget.axes.value = bad
        widget.axes.native.editingFinished.emit()
        assert errors and errors[-1].startswith("Axes:"), bad
        assert "correct the axes" in widget.plan.value
    n = len(errors)
    widget.run_button.native.click()
    assert not widget.running and len(errors) == n + 1 and "correct the axes" in widget.status.value


def test_a_two_channel_model_gets_the_channels_typed(viewer_widget, qtbot, monkeypatch):
    """A model that reads two channels (here ``nuclei`` widened to read its second input):
    the Channels box replaces the Channel picker, the plan says what goes where, the
    order typed decides what the model sees, and a wrong count is a notification."""
    from napari_unet.core.model import with_input_channels
    from napari_unet.core.models import load_model, save_model, user_dir

    viewer, widget = viewer_widget
    errors = []
    import napari_unet._widgets._common as common

    monkeypatch.setattr(common, "show_error", lambda msg: errors.append(msg))
    one = load_model("nuclei")
    save_model(user_dir(create=True) / "two inputs.pt", with_input_channels(one.model, 2, reads=1), {**one.meta, "name": "two inputs"})
    crop = nuclei()[0][0][:96, :128]
    viewer.add_image(np.stack([np.zeros_like(crop), crop]), name="two")
    widget.axes.value = "CYX"
    widget.axes.native.editingFinished.emit()
    assert not widget.channel.native.isHidden() and widget.channels.native.isHidden()
    widget.refresh_models("two inputs")
    assert widget.model.value == "two inputs"
    assert widget.channel.native.isHidden() and not widget.channels.native.isHidden()
    assert widget.channels.value == "0,1" and "channels 0,1 of 2 given to the model's 2 inputs" in widget.plan.value
    counts = {}
    for typed in ("0,1", "1,0"):  # the nuclei reach the input the model reads, then the other one
        widget.channels.value = typed
        widget.run_button.native.click()
        qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
        counts[typed] = int(viewer.layers["two instances"].data.max())
        assert viewer.layers["two instances"].data.shape == crop.shape
    assert counts["0,1"] > 3 and counts["1,0"] == 0 and errors == []
    widget.channels.value = "1"
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert errors and "reads 2 channels" in errors[-1]


def test_measurements_in_features(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    crop = nuclei()[0][0][:200, :200]
    viewer.add_image(crop, name="crop", scale=(0.5, 0.5))
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    inst = viewer.layers["crop instances"]
    feats = inst.features
    n = int(inst.data.max())
    assert n > 5 and len(feats) == n
    np.testing.assert_array_equal(feats["index"], np.arange(1, n + 1))  # napari's row -> label column
    np.testing.assert_allclose(feats["area"], np.bincount(inst.data.ravel())[1:] * 0.25)
    # napari shows a cell's row when the mouse is over it
    y, x = np.argwhere(inst.data == 3)[0]
    assert "area:" in inst.get_status((y * 0.5, x * 0.5), world=True)["coordinates"]
    # re-applied settings measure again
    widget.advanced.value = True
    widget.min_size.value = 200
    qtbot.waitUntil(lambda: "re-applied" in widget.status.value and not widget.running, timeout=20_000)
    assert len(inst.features) == int(inst.data.max()) < n


def test_edited_results_are_kept_and_ctrl_z_still_works(viewer_widget, qtbot, blobs):
    viewer, widget = viewer_widget
    vol = blobs((10, 64, 64), ((5, 20, 20), (5, 44, 44)), r=10, rz=4)
    viewer.add_image(vol, name="v")
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    inst = viewer.layers["v instances"]
    # an unedited result is updated in place
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    assert [lay.name for lay in viewer.layers] == ["v", "v cells", "v instances"]
    # the user erases a cell in 3D by hand
    inst.data_setitem(tuple(np.nonzero(inst.data == inst.data[5, 20, 20])), 0)
    edited = inst.data.copy()
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    np.testing.assert_array_equal(inst.data, edited)
    new = viewer.layers["v instances [2]"]
    assert new.data[5, 20, 20] > 0 and tuple(new.scale) == tuple(inst.scale)
    assert "'v instances' was edited since Segment wrote it, so it was kept" in widget.status.value
    assert "v cells [2]" not in [lay.name for lay in viewer.layers]  # the untouched one was updated
    inst.undo()  # the edit is still undoable
    assert inst.data[5, 20, 20] > 0
    # the next Run updates the layer it wrote last instead of piling up a third
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    assert "v instances [3]" not in [lay.name for lay in viewer.layers]


def test_activity_entry_shortcut_and_cancel(viewer_widget, qtbot, monkeypatch, blobs):
    viewer, widget = viewer_widget
    import napari_unet._widgets.segment as segment

    bars = []

    class Recorder(segment.progress):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.values, self.closed_ = [], False
            bars.append(self)

        def update(self, n=1):
            super().update(n)
            self.values.append(self.n)

        def close(self):
            self.closed_ = True
            super().close()

    monkeypatch.setattr(segment, "progress", Recorder)
    viewer.add_image(blobs(), name="vol")
    # the shortcut is bound in the viewer, said in the tooltip, and runs
    from napari.utils.key_bindings import coerce_keybinding

    assert "Shift+R" in widget.run_button.tooltip
    func = viewer.keymap[coerce_keybinding(segment.RUN_KEY)]
    func(viewer)
    assert widget.running and len(bars) == 1
    qtbot.waitUntil(lambda: len(bars[0].values) > 1, timeout=60_000)
    func(viewer)  # pressed again: cancel
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert widget.status.value == "cancelled" and bars[0].closed_
    assert "vol instances" not in [lay.name for lay in viewer.layers]
    assert bars[0].values == sorted(bars[0].values) and bars[0].values[-1] <= 1000


def test_run_on_folder_segments_every_image_skips_done_ones_and_reports(viewer_widget, qtbot, tmp_path):
    import tifffile

    viewer, widget = viewer_widget
    data = nuclei()[0][0]
    tifffile.imwrite(tmp_path / "a.tif", data[:160, :160])
    tifffile.imwrite(tmp_path / "a_labels.tif", np.ones((160, 160), np.uint16))  # ground truth: not an input
    tifffile.imwrite(tmp_path / "b.tif", data[160:320, 160:320])
    (tmp_path / "broken.tif").write_bytes(b"not a tiff")
    n_layers = len(viewer.layers)
    assert widget.run_folder(tmp_path) is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    out = tmp_path / "napari-unet"
    rows = {r["file"]: r for r in widget.last_summary}
    assert set(rows) == {"a.tif", "b.tif", "broken.tif"}
    assert rows["a.tif"]["status"] == rows["b.tif"]["status"] == "done" and rows["a.tif"]["cells"] > 5
    assert rows["broken.tif"]["status"].startswith("failed") and rows["broken.tif"]["cells"] is None
    for name in ("a_labels.tif", "a_cells.tif", "a_measurements.csv", "b_labels.tif", "summary.csv"):
        assert (out / name).is_file(), name
    assert tifffile.imread(tmp_path / "a_labels.tif").max() == 1  # the user's file is untouched
    assert tifffile.imread(out / "a_labels.tif").max() == rows["a.tif"]["cells"]
    assert "2 segmented" in widget.status.value and "1 failed (broken.tif)" in widget.status.value
    assert len(viewer.layers) == n_layers  # a folder run adds no layers
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0] == "file,cells,status,seconds" and len(summary) == 4
    # a second run skips what is done and counts its cells from the files
    stamp = (out / "a_labels.tif").stat().st_mtime_ns
    widget.run_folder(tmp_path)
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    again = {r["file"]: r for r in widget.last_summary}
    assert again["a.tif"]["status"].startswith("skipped") and again["a.tif"]["cells"] == rows["a.tif"]["cells"]
    assert (out / "a_labels.tif").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("name", ["uint8 2D", "int8 2D", "float32 NaN", "float64 inf", "all NaN", "constant", "bool",
                                  "tiny 3x3", "one row", "RGB", "RGBA", "stack ZYX", "TZYX", "1D", "empty"])
def test_any_array_segments_or_one_clear_message(viewer_widget, qtbot, monkeypatch, name):
    """The bad-input matrix of tests/test_safety.py, through the widget: labels with the
    layer's spatial shape, or one notification; never a traceback or a frozen viewer."""
    import napari_unet._widgets._common as common
    from napari_unet.testing import odd_arrays

    viewer, widget = viewer_widget
    errors = []
    monkeypatch.setattr(common, "show_error", lambda msg: errors.append(msg))
    data = odd_arrays()[name]
    try:
        layer = viewer.add_image(data, name="odd", rgb=name in ("RGB", "RGBA"))
    except Exception:  # noqa: BLE001 - napari itself refuses it: nothing for the plugin to do
        pytest.skip(f"napari does not open a {name} array")
    widget.image.value = layer
    before = np.array(layer.data, copy=True)
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    np.testing.assert_array_equal(np.asarray(layer.data), before)  # the image is never modified
    made = [lay for lay in viewer.layers if lay.name == "odd instances"]
    if made:
        spatial = data.shape[:-1] if name in ("RGB", "RGBA") else data.shape
        assert made[0].data.shape[-2:] == spatial[-2:] and not errors
    else:
        assert len(errors) == 1 and "\n" not in errors[0] and "Traceback" not in errors[0], errors
