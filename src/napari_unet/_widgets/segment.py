"""The Segment dock widget: run a U-Net on an image layer, add cell and instance layers."""

from __future__ import annotations

import threading
import time

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, Label, ProgressBar, PushButton, create_widget
from napari.layers import Image
from napari.qt.threading import create_worker
from qtpy.QtCore import QTimer

from ._common import Relay, active_image, model_bus, model_names, notify_error, plugin_layer, refresh_model_combo, show_info, upsert_labels

__all__ = ["SegmentWidget"]


class Cancelled(Exception):
    pass


class SegmentWidget(Container):
    """Image picker, model picker, object diameter, Run / Cancel, progress.

    *Advanced settings* override the model's cell threshold and smallest object size. The
    class probabilities of the last 2D image segmented are kept, so changing either
    re-applies the post-processing to it at once, without running the network again.
    """

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self._image = create_widget(annotation=Image, label="Image")
        self._model = ComboBox(label="Model", choices=self._model_choices,
                               tooltip="The network to run; the shipped ones need no training (hover for what each is for)")
        self._diameter = FloatSpinBox(label="Cell diameter (px)", value=0, min=0, max=2000, step=1,
                                      tooltip="Typical cell diameter in pixels; 0 = the size the model was trained on")
        self._diameter.native.setSpecialValueText("model's own")  # shown at 0
        self._estimate = CheckBox(text="Estimate diameter from the image", value=False,
                                  tooltip="Measure the typical cell size in the image first and rescale to the model's")
        self._advanced = CheckBox(text="Advanced settings", value=False, tooltip="Cell threshold and smallest cell")
        self._threshold = FloatSpinBox(label="Cell threshold", value=0, min=0, max=0.95, step=0.05, visible=False,
                                       tooltip="Cell probability above which a pixel is cell: lower finds more and larger "
                                               "cells, higher fewer and smaller. Changing it updates the last result at once.")
        self._threshold.native.setSpecialValueText("model's own")
        # (a float box with no decimals: the integer box cannot show a "model's own" text)
        self._min_size = FloatSpinBox(label="Smallest cell (px)", value=0, min=0, max=1e7, step=10, visible=False,
                                      tooltip="Objects with fewer pixels are dropped. Changing it updates the last result at once.")
        self._min_size.native.setDecimals(0)
        self._min_size.native.setSpecialValueText("model's own")
        self._run = PushButton(text="Run", tooltip="Segment the image in the background (press again to cancel)")
        self._progress = ProgressBar(label="", min=0, max=1000, value=0, visible=False)
        self._status = Label(label="", value="")
        self._status.native.setWordWrap(True)  # long notes wrap instead of widening the dock
        self.extend([self._image, self._model, self._diameter, self._estimate, self._advanced, self._threshold,
                     self._min_size, self._run, self._progress, self._status])
        self._relay = Relay()
        self._relay.progress.connect(self._on_progress)
        self._run.changed.connect(self._on_run)
        self._estimate.changed.connect(lambda v: setattr(self._diameter, "enabled", not v))
        self._advanced.changed.connect(self._show_advanced)
        self._worker = None
        self._cancel = threading.Event()
        self._segmenters: dict = {}
        self._t0 = 0.0
        # the last 2D result's probabilities, to re-apply changed settings without the network
        self._last: dict | None = None
        self._pending = False  # settings changed while a worker ran
        self._debounce = QTimer()
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(250)
        self._debounce.timeout.connect(self._reapply)
        self._threshold.changed.connect(self._settings_changed)
        self._min_size.changed.connect(self._settings_changed)
        self._model.changed.connect(lambda *_: self._advanced.value and self._show_model_settings())
        self._model.changed.connect(self._describe_model)
        self.viewer.layers.selection.events.active.connect(self._follow_active)
        model_bus.changed.connect(self.refresh_models)
        self.native.destroyed.connect(lambda *_: self._cancel.set())  # a closed dock stops its worker
        self.reset_choices()
        self._follow_active()
        self._describe_model()

    # ---- pickers ---------------------------------------------------------------------
    def _describe_model(self, *_):
        from ..core.models import describe_model

        self._model.tooltip = describe_model(self._model.value)

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
            show_info("Open an image first (File > Open Sample > napari-unet for an example)")
            return
        data = _plane_data(layer)
        diameter = "auto" if self._estimate.value else (self._diameter.value or None)
        self._cancel.clear()
        self._t0 = time.perf_counter()
        self._run.text = "Cancel"
        self._progress.value = 0
        self._progress.visible = True
        self._status.value = "loading model..."
        key = (self._model.value, diameter)
        worker = create_worker(self._work, data, bool(layer.rgb), self._model.value, diameter, self._overrides(),
                               _start_thread=False, _ignore_errors=True)
        worker.returned.connect(lambda res, layer=layer, data=data, key=key: self._on_done(layer, res, data, key))
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

    def _overrides(self) -> tuple[float | None, int | None]:
        """The advanced settings: ``(threshold, min_size)``, ``None`` for the model's own."""
        if not self._advanced.value:
            return None, None
        return (self._threshold.value or None), (int(round(self._min_size.value)) or None)

    def _work(self, data, rgb: bool, model: str, diameter, overrides=(None, None)):
        seg = self._segmenter(model)
        seg.threshold, seg.min_size = overrides
        seg.keep_probs = True

        def progress(frac: float, msg: str):
            if self._cancel.is_set():
                raise Cancelled()
            self._relay.progress.emit(frac, msg)

        return seg.segment(np.asarray(data), diameter=diameter, rgb=rgb, progress=progress)

    def _on_progress(self, frac: float, msg: str):
        try:
            self._progress.value = int(1000 * min(max(frac, 0.0), 1.0))
            self._status.value = msg
        except RuntimeError:  # the dock was closed under a running worker: stop it
            self._cancel.set()

    def _on_done(self, layer, res, data=None, key=None, reapplied: bool = False):
        try:
            self._show_result(layer, res)
        except RuntimeError:  # the viewer was closed while the worker ran: nothing to show
            return
        # what was written, to tell whether the user has edited the layers since
        written = (res.semantic.copy(), res.instances.copy())
        if reapplied and self._last is not None:
            self._last["written"] = written
        elif res.probs is not None and layer in self.viewer.layers:
            self._last = {"layer": layer, "data": data, "key": key, "probs": res.probs, "diameter": res.diameter,
                          "notes": list(res.notes), "written": written}
        else:
            self._last = None

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
            try:
                self._status.value = "cancelled"
            except RuntimeError:  # cancelled because the dock was closed
                pass
            return
        self._status.value = "failed"
        notify_error(exc, "Segmentation")

    def _on_finished(self):
        self._worker = None
        try:
            self._run.text = "Run"
            self._progress.visible = False
        except RuntimeError:  # the dock is gone
            return
        if self._pending:
            self._pending = False
            self._debounce.start()

    # ---- advanced settings -------------------------------------------------------------
    def _show_advanced(self, on: bool):
        self._threshold.visible = self._min_size.visible = bool(on)
        if on:  # (loaded only now: opening the widget does not load a model)
            self._show_model_settings()
        if self._last is not None:
            self._debounce.start()  # back to (or away from) the model's own settings

    def _show_model_settings(self, *_):
        """Show the model's own threshold and smallest object in the spin boxes' "model's own"."""
        try:
            post = self._segmenter(self._model.value).settings(own=True)
        except Exception:  # an unreadable model says so when it is run
            return
        self._threshold.native.setSpecialValueText(f"model's ({post.threshold:.2f})")
        self._min_size.native.setSpecialValueText(f"model's ({post.min_size} px)")
        for box in (self._threshold, self._min_size):
            box.native.updateGeometry()  # the longer text needs a wider box

    def _settings_changed(self, *_):
        if self._last is None:  # nothing kept to re-apply to (none yet, a stack, a very large image)
            if self._worker is None:
                self._status.value = "the new settings apply when you press Run"
            return
        if self._worker is not None:
            self._pending = True
            return
        self._debounce.start()

    def _reapply(self):
        """Post-process the last result's probabilities again with the current settings."""
        last = self._last
        if last is None or self._worker is not None:
            return
        layer = last["layer"]
        data = _plane_data(layer)
        model = last["key"][0]
        if layer not in self.viewer.layers or data is not last["data"] or model != self._model.value:
            self._last = None  # the image or the model changed: the next Run starts afresh
            return
        for kind, arr in zip(("cells", "instances"), last["written"]):
            out = plugin_layer(self.viewer, layer, kind, arr.shape)
            if out is not None and not np.array_equal(np.asarray(out.data), arr):
                self._last = None  # never overwrite the user's corrections without a Run
                self._status.value = f"'{out.name}' was edited: press Run to segment with the new settings"
                show_info(f"U-Net: '{out.name}' was edited, so it was not updated; press Run to apply the new settings")
                return
        self._t0 = time.perf_counter()
        self._status.value = "applying the new settings..."
        overrides = self._overrides()

        def work():
            seg = self._segmenter(model)
            seg.threshold, seg.min_size = overrides
            semantic, instances = seg.postprocess(last["probs"], last["diameter"])
            from ..core.inference import Segmentation

            return Segmentation(semantic, instances, last["notes"] + ["settings re-applied without re-running the network"],
                                last["diameter"])

        worker = create_worker(work, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(lambda res: self._on_done(layer, res, reapplied=True))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self._run.text = "Cancel"
        worker.start()


def _plane_data(layer: Image):
    """The array Segment runs on: the layer's data, its full resolution if multiscale."""
    return layer.data[0] if layer.multiscale else layer.data
