"""The Segment dock widget: run a U-Net on an image layer, add cell and instance layers."""

from __future__ import annotations

import threading
import time

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, Label, ProgressBar, PushButton, create_widget
from napari.layers import Image
from napari.qt.threading import create_worker

from ._common import Relay, active_image, model_bus, model_names, notify_error, refresh_model_combo, show_info, upsert_labels

__all__ = ["SegmentWidget"]


class Cancelled(Exception):
    pass


class SegmentWidget(Container):
    """Image picker, model picker, object diameter, Run / Cancel, progress."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self._image = create_widget(annotation=Image, label="Image")
        self._model = ComboBox(label="Model", choices=self._model_choices)
        self._diameter = FloatSpinBox(label="Cell diameter (px)", value=0, min=0, max=2000, step=1,
                                      tooltip="Typical cell diameter in pixels; 0 = the size the model was trained on")
        self._diameter.native.setSpecialValueText("model's own")  # shown at 0
        self._estimate = CheckBox(text="Estimate diameter from the image", value=False)
        self._run = PushButton(text="Run")
        self._progress = ProgressBar(label="", min=0, max=1000, value=0, visible=False)
        self._status = Label(label="", value="")
        self.extend([self._image, self._model, self._diameter, self._estimate, self._run, self._progress, self._status])
        self._relay = Relay()
        self._relay.progress.connect(self._on_progress)
        self._run.changed.connect(self._on_run)
        self._estimate.changed.connect(lambda v: setattr(self._diameter, "enabled", not v))
        self._worker = None
        self._cancel = threading.Event()
        self._segmenters: dict = {}
        self._t0 = 0.0
        self.viewer.layers.selection.events.active.connect(self._follow_active)
        model_bus.changed.connect(self.refresh_models)
        self.reset_choices()
        self._follow_active()

    # ---- pickers ---------------------------------------------------------------------
    def _model_choices(self, *_):
        return model_names()

    def refresh_models(self, select: str | None = None):
        if not refresh_model_combo(self._model, select):  # viewer closed: stop listening
            model_bus.changed.disconnect(self.refresh_models)

    def _follow_active(self, event=None):
        layer = active_image(self.viewer)
        if layer is not None and self._worker is None:
            self._image.reset_choices()
            if layer in self._image.choices:
                self._image.value = layer

    # ---- running ---------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._worker is not None

    def _on_run(self, *_):
        if self._worker is not None:
            self._cancel.set()
            self._status.value = "cancelling..."
            return
        layer = self._image.value
        if layer is None:
            show_info("Open an image first (File > Open Sample > U-Net for an example)")
            return
        data = layer.data[0] if layer.multiscale else layer.data
        diameter = "auto" if self._estimate.value else (self._diameter.value or None)
        self._cancel.clear()
        self._t0 = time.perf_counter()
        self._run.text = "Cancel"
        self._progress.value = 0
        self._progress.visible = True
        self._status.value = "loading model..."
        worker = create_worker(self._work, data, bool(layer.rgb), self._model.value, diameter, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(lambda res, layer=layer: self._on_done(layer, res))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()

    def _segmenter(self, name: str):
        from ..core.inference import Segmenter
        from ..core.models import resolve_model

        path = resolve_model(name)
        key = (str(path), path.stat().st_mtime)
        if key not in self._segmenters:
            self._segmenters = {key: Segmenter(str(path))}
        return self._segmenters[key]

    def _work(self, data, rgb: bool, model: str, diameter):
        seg = self._segmenter(model)

        def progress(frac: float, msg: str):
            if self._cancel.is_set():
                raise Cancelled()
            self._relay.progress.emit(frac, msg)

        return seg.segment(np.asarray(data), diameter=diameter, rgb=rgb, progress=progress)

    def _on_progress(self, frac: float, msg: str):
        self._progress.value = int(1000 * min(max(frac, 0.0), 1.0))
        self._status.value = msg

    def _on_done(self, layer, res):
        try:
            self._show_result(layer, res)
        except RuntimeError:  # the viewer was closed while the worker ran: nothing to show
            pass

    def _show_result(self, layer, res):
        if layer not in self.viewer.layers:
            self._status.value = "image removed; results not added"
            show_info(f"'{layer.name}' was removed while it was segmented; results not added")
            return
        upsert_labels(self.viewer, res.semantic, layer, "cells", opacity=0.4)
        upsert_labels(self.viewer, res.instances, layer, "instances", opacity=0.6)
        n = int(res.instances.max())
        secs = time.perf_counter() - self._t0
        msg = f"{n} cells in {secs:.1f} s"
        if res.notes:
            msg += " (" + "; ".join(res.notes) + ")"
        self._status.value = msg
        show_info(f"U-Net: {msg}")

    def _on_error(self, exc):
        if isinstance(exc, Cancelled):
            self._status.value = "cancelled"
            return
        self._status.value = "failed"
        notify_error(exc, "Segmentation")

    def _on_finished(self):
        self._worker = None
        self._run.text = "Run"
        self._progress.visible = False
