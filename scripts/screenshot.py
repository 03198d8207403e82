"""Screenshots of the widgets for the README (run under xvfb-run)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication


def wait(cond, timeout=300):
    t0 = time.time()
    while not cond():
        QApplication.processEvents()
        time.sleep(0.05)
        if time.time() - t0 > timeout:
            raise TimeoutError
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.02)


def segment(out: Path):
    viewer = napari.Viewer()
    viewer.window.resize(1400, 850)
    viewer.open_sample("napari-unet", "nuclei")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    widget.advanced.value = True  # show the settings (left at the model's own)
    widget.run_button.native.click()
    wait(lambda: not widget.running)
    viewer.layers[-2].visible = False  # show the instances over the image
    viewer.reset_view()
    wait(lambda: True)
    viewer.screenshot(str(out), canvas_only=False)
    viewer.close()


def cells(out: Path):
    """The `cells` model on a crop of a usiigaci *val* image (not seen in training)."""
    import tifffile

    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "usiigaci" / "val"
    viewer = napari.Viewer()
    viewer.window.resize(1400, 850)
    viewer.add_image(tifffile.imread(data / "val_set46.tif")[150:750, 150:750], name="val_set46 (usiigaci)")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    widget.model.value = "cells"
    widget.run_button.native.click()
    wait(lambda: not widget.running)
    viewer.layers[-2].visible = False
    viewer.layers[-1].contour = 2
    viewer.reset_view()
    wait(lambda: True)
    viewer.screenshot(str(out), canvas_only=False)
    viewer.close()


def default_model(out: Path, image: str, name: str):
    """The default model, nothing chosen, on a val image no shipped model was trained on."""
    import tifffile

    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    viewer = napari.Viewer()
    viewer.window.resize(1400, 850)
    img = tifffile.imread(data / image)
    viewer.add_image(img, name=name, rgb=img.ndim == 3)
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    _, table = viewer.window.add_plugin_dock_widget("napari-unet", "Measurements")
    widget.run_button.native.click()
    wait(lambda: not widget.running)
    viewer.layers[f"{name} cells"].visible = False
    viewer.layers[f"{name} instances"].contour = 2
    viewer.layers.selection.active = viewer.layers[f"{name} instances"]
    viewer.reset_view()
    wait(lambda: True)
    viewer.screenshot(str(out), canvas_only=False)
    viewer.close()


def _train_on_strokes(viewer, lab, n: int, length: int, until, timeout: float):
    """Dock Fine-tune, paint simulated strokes from ``lab`` on the image, Train until ``until``."""
    from napari_unet.testing import simulate_strokes

    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Fine-tune")
    layer = widget.new_annotation_layer()
    strokes = simulate_strokes(lab, n_cells=n, n_background=n, length=length, seed=0)
    for label in (1, 2):
        layer.data_setitem(np.nonzero(strokes == label), label)
    widget.budget.value = 0
    widget.train_button.native.click()
    t0 = time.time()
    wait(lambda: until(widget, t0), timeout=timeout)
    return widget


def finetune(out: Path, seconds: float = 40):
    """Fine-tune on simulated strokes on an EM slice (a modality no shipped model saw, as in
    benchmarks/finetune.py); shot while training."""
    import tifffile

    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012" / "val"
    img = tifffile.imread(data / "slice16.tif")
    lab = tifffile.imread(data / "slice16_labels.tif")
    viewer = napari.Viewer()
    viewer.window.resize(1400, 900)
    viewer.add_image(img, name="em slice16")
    widget = _train_on_strokes(viewer, lab, 15, 24, lambda w, t0: time.time() - t0 > seconds, seconds + 60)
    viewer.reset_view()
    wait(lambda: True)
    viewer.screenshot(str(out), canvas_only=False)
    widget.stop()
    wait(lambda: not widget.running)
    viewer.close()


def paint_next(out: Path, seconds: float = 20):
    """Fine-tune briefly on EM strokes, stop, press Paint here next: the uncertainty layer
    and the view centred on the most uncertain unpainted region."""
    import tifffile

    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012" / "val"
    img = tifffile.imread(data / "slice17.tif")[:384, :384]
    lab = tifffile.imread(data / "slice17_labels.tif")[:384, :384]
    viewer = napari.Viewer()
    viewer.window.resize(1400, 900)
    viewer.add_image(img, name="em slice17")
    widget = _train_on_strokes(viewer, lab, 6, 24, lambda w, t0: time.time() - t0 > seconds and w.next_button.enabled,
                               seconds + 120)
    widget.stop()
    wait(lambda: not widget.running)
    viewer.layers["em slice17 instances"].visible = False
    viewer.reset_view()
    widget.paint_here_next()
    wait(lambda: True)
    viewer.screenshot(str(out), canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs")
    out.mkdir(exist_ok=True)
    which = sys.argv[2] if len(sys.argv) > 2 else "all"
    if which in ("all", "segment"):
        segment(out / "screenshot_segment.png")
        print("wrote", out / "screenshot_segment.png")
    if which in ("all", "cells"):
        cells(out / "screenshot_cells.png")
        print("wrote", out / "screenshot_cells.png")
    if which in ("all", "default"):
        default_model(out / "screenshot_tissue.png", "dsb2018/val/ad473063dab4.tif", "stained tissue (dsb2018 val)")
        default_model(out / "screenshot_phase.png", "usiigaci/val/val_set50.tif", "phase contrast (usiigaci val_set50)")
        print("wrote", out / "screenshot_tissue.png", out / "screenshot_phase.png")
    if which in ("all", "finetune"):
        finetune(out / "screenshot_finetune.png")
        print("wrote", out / "screenshot_finetune.png")
    if which in ("all", "paint_next"):
        paint_next(out / "screenshot_paint_next.png")
        print("wrote", out / "screenshot_paint_next.png")
