"""Screenshots of the widgets for the README (run under xvfb-run)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
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
    viewer.window._qt_window.resize(1400, 850)
    viewer.open_sample("napari-unet", "nuclei")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    widget._on_run()
    wait(lambda: not widget.running)
    viewer.layers[-2].visible = False  # show the instances over the image
    viewer.reset_view()
    wait(lambda: True)
    viewer.screenshot(str(out), canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs")
    out.mkdir(exist_ok=True)
    segment(out / "screenshot_segment.png")
    print("wrote", out / "screenshot_segment.png")
