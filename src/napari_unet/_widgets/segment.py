"""The Segment dock widget: run a U-Net on an image layer, add cell and instance layers.

2D images (``YX``, RGB ``YXS``) go through :meth:`.core.inference.Segmenter.segment`, which
keeps the class probabilities for the *Advanced settings*' instant re-apply; volumes,
time-lapses and channels through :func:`.core.pipeline.segment_input` (3D instances, ids
kept over time). Each instance's measurements go into the instances layer's ``features``.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass, field

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils import progress
from qtpy.QtCore import QTimer

from ..core.measure import measure
from ._common import (
    Relay,
    active_image,
    edited_since_written,
    fingerprint,
    model_bus,
    model_names,
    notify_error,
    refresh_model_combo,
    show_info,
)
from .batch import FolderRunMixin
from .segment_axes import AxesMixin, _Geometry, _layer_dims, _plane_data  # noqa: F401
from .segment_results import ResultsMixin, features_table

__all__ = ["SegmentWidget", "RUN_KEY"]

#: The keyboard shortcut for Run (not used by napari's own shortcuts).
RUN_KEY = "Shift-R"


class Cancelled(Exception):
    pass


@dataclass
class _LastRun:
    """The last 2D result, kept so that *Advanced settings* re-apply without the network."""

    layer: object  # the image layer
    data: object  # its array when segmented (a new array means a new image)
    key: tuple  # (model name, ...): the segmenter used
    probs: np.ndarray
    diameter: float | None
    notes: list
    targets: list  # the result layers written
    geometry: object  # their _Geometry


@dataclass
class _Outcome:
    """What a worker hands to the GUI thread: labels, their measurements and tracks."""

    semantic: np.ndarray
    instances: np.ndarray
    notes: list
    n_cells: int
    features: object = None  # a pandas DataFrame, one row per cell (per frame over time)
    tracks: np.ndarray | None = None  # (track_id, t, [z,] y, x), for a time-lapse
    probs: np.ndarray | None = None  # a 2D image's class probabilities (re-apply)
    diameter: float | None = None
    written: tuple = ()  # fingerprints of semantic and instances
    extra: list = field(default_factory=list)  # notes on the measurements
    spacing: tuple | None = None  # the pixel size the measurements are in (None: pixels)


class SegmentWidget(AxesMixin, ResultsMixin, FolderRunMixin, Container):
    """Image picker, axes, model picker, object diameter, Run / Cancel, progress.

    The controls are public attributes (``image``, ``model``, ``axes``, ``diameter``,
    ``advanced``, ``threshold``, ``run_button``, ``status``, ``plan``...), so that scripts
    and tests drive the widget as a user does.

    *Axes* names the image's dimensions (guessed from its shape, editable); a Z axis gives
    3D instances (*Anisotropy* from the layer's scale), a T axis ids kept over time, a C
    axis a *Channel* to segment. *Advanced settings* override the model's cell threshold
    and smallest object size. The class probabilities of the last 2D image segmented are
    kept, so changing either re-applies the post-processing to it at once, without running
    the network again. A result layer edited by hand is never overwritten: Run then writes
    into a new layer.
    """

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.image = create_widget(annotation=Image, label="Image")
        self.axes = LineEdit(label="Axes", value="",
                              tooltip="One letter per dimension of the image: T (time), Z (depth), C (channel), "
                                      "Y, X (height, width), S (RGB samples); e.g. ZYX, TYX, CYX, TZCYX. "
                                      "Guessed from the shape: correct it if it is wrong.")
        self.anisotropy = FloatSpinBox(label="Anisotropy", value=1.0, min=0.01, max=1000, step=0.5, visible=False,
                                        tooltip="Z step over the XY pixel size (3 = planes 3 pixels apart); "
                                                "filled from the layer's scale")
        self.anisotropy.native.setDecimals(3)
        self.channel = SpinBox(label="Channel", value=0, min=0, max=0, visible=False,
                                tooltip="The channel (along C, counted from 0) to segment")
        self.channels = LineEdit(label="Channels", value="0,1", visible=False,
                                  tooltip="This model reads several channels (e.g. cytoplasm, nuclei): the image's "
                                          "channels (along C or the RGB colours, counted from 0) for its inputs, in its order")
        self.plan = Label(label="", value="")
        self.plan.native.setWordWrap(True)
        self.model = ComboBox(label="Model", choices=self._model_choices,
                               tooltip="The network to run; the shipped ones need no training (hover for what each is for)")
        self.diameter = FloatSpinBox(label="Cell diameter (px)", value=0, min=0, max=2000, step=1,
                                      tooltip="Typical cell diameter in pixels; 0 = the model's default: the size it was "
                                              "trained on, or for a model of many sizes (generalist) checked in each image")
        self.diameter.native.setSpecialValueText("model's default")  # shown at 0
        self.estimate = CheckBox(text="Estimate diameter from the image", value=False,
                                  tooltip="Measure the typical cell size in the image first and rescale to the model's")
        self.advanced = CheckBox(text="Advanced settings", value=False, tooltip="Cell threshold and smallest cell")
        self.threshold = FloatSpinBox(label="Cell threshold", value=0, min=0, max=0.95, step=0.05, visible=False,
                                       tooltip="Cell probability above which a pixel is cell: lower finds more and larger "
                                               "cells, higher fewer and smaller. Changing it updates the last result at once.")
        self.threshold.native.setSpecialValueText("model's own")
        # (a float box with no decimals: the integer box cannot show a "model's own" text)
        self.min_size = FloatSpinBox(label="Smallest cell (px)", value=0, min=0, max=1e7, step=10, visible=False,
                                      tooltip="Objects with fewer pixels are dropped. Changing it updates the last result at once.")
        self.min_size.native.setDecimals(0)
        self.min_size.native.setSpecialValueText("model's own")
        self.run_button = PushButton(text="Run", tooltip="Segment the image in the background (press again to cancel). "
                                                   f"Shortcut in the viewer: {RUN_KEY.replace('-', '+')}")
        self.folder_button = PushButton(text="Run on folder...", tooltip="Segment every image of a folder with this model and "
                                  "these settings, into a 'napari-unet' subfolder (images done before are skipped; "
                                  "summary.csv counts the cells per image)")
        self.progress_bar = ProgressBar(label="", min=0, max=1000, value=0, visible=False)
        self.status = Label(label="", value="")
        self.status.native.setWordWrap(True)  # long notes wrap instead of widening the dock
        self.extend([self.image, self.axes, self.anisotropy, self.channel, self.channels, self.plan, self.model, self.diameter,
                     self.estimate, self.advanced, self.threshold, self.min_size, self.run_button, self.folder_button, self.progress_bar,
                     self.status])
        self._relay = Relay()
        self._relay.progress.connect(self._on_progress)
        self.run_button.changed.connect(self._on_run)
        self.folder_button.changed.connect(self._on_folder)
        self.last_summary: list[dict] | None = None  # the last folder run's rows (see run_folder)
        self.estimate.changed.connect(lambda v: setattr(self.diameter, "enabled", not v))
        self.advanced.changed.connect(self._show_advanced)
        self._worker = None
        self._pbar = None  # the entry in napari's activity panel while a worker runs
        self._cancel = threading.Event()
        self._segmenters: dict = {}
        self._t0 = 0.0
        # the last 2D result's probabilities, to re-apply changed settings without the network
        self._last: _LastRun | None = None
        self._pending = False  # settings changed while a worker ran
        # axes the user typed, per layer: {layer: (shape, axes)}
        self._typed_axes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        # anisotropy the user typed, per layer: {layer: (the scale's anisotropy then, value)}
        self._typed_aniso: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._filling = False  # the widget itself is filling the axes / anisotropy boxes
        self._aniso_scale: float | None = None  # the anisotropy the layer's scale gives
        self._watched = None  # the image layer whose data / scale events we follow
        # the layer each (image name, kind) result went into last
        self._recent: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._debounce = QTimer()
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(250)
        self._debounce.timeout.connect(self._reapply)
        self.threshold.changed.connect(self._settings_changed)
        self.min_size.changed.connect(self._settings_changed)
        self.model.changed.connect(lambda *_: self.advanced.value and self._show_model_settings())
        self.model.changed.connect(self._describe_model)
        self.image.changed.connect(self._image_changed)
        self.axes.changed.connect(self._axes_typed)
        self.axes.native.editingFinished.connect(self._axes_entered)
        self.anisotropy.changed.connect(self._anisotropy_typed)
        self.channel.changed.connect(lambda *_: self._describe_plan())
        self.channels.changed.connect(lambda *_: self._describe_plan())
        self.model.changed.connect(lambda *_: self._fill_axes())
        self.viewer.layers.selection.events.active.connect(self._follow_active)
        model_bus.changed.connect(self.refresh_models)
        self.viewer.bind_key(RUN_KEY, self._key_run, overwrite=True)
        self.native.destroyed.connect(self._closed)  # a closed dock stops its worker
        self.reset_choices()
        self._follow_active()
        self._image_changed()
        self._describe_model()

    # ---- pickers ---------------------------------------------------------------------
    def _describe_model(self, *_):
        from ..core.models import describe_model

        self.model.tooltip = describe_model(self.model.value)

    def _model_choices(self, *_):
        return model_names()

    def refresh_models(self, select: str | None = None):
        if not refresh_model_combo(self.model, select):  # viewer closed: stop listening
            model_bus.changed.disconnect(self.refresh_models)

    def _follow_active(self, event=None):
        layer = active_image(self.viewer)
        if layer is not None and self._worker is None:
            self.image.reset_choices()
            if layer in self.image.choices:
                self.image.value = layer

    def _key_run(self, viewer=None):
        try:
            self._on_run()
        except RuntimeError:  # the dock is gone
            pass

    def _closed(self, *_):
        self._cancel.set()
        self._watch(None)
        try:  # hand the shortcut back unless another Segment dock took it since
            unbound = self.viewer.bind_key(RUN_KEY, None)
            if unbound is not None and unbound != self._key_run:
                self.viewer.bind_key(RUN_KEY, unbound, overwrite=True)
        except Exception:  # noqa: BLE001 - the viewer is closing too
            pass

    # ---- running ---------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._worker is not None

    def _on_run(self, *_):
        if self._worker is not None:
            self._cancel.set()
            self.status.value = "cancelling..."
            return
        layer = self.image.value
        if layer is None:
            show_info("Open an image first (File > Open Sample > napari-unet for an example)")
            return
        axes = self._parsed_axes(notify=True)
        if axes is None:
            self.status.value = "correct the axes, then press Run"
            return
        data = _plane_data(layer)
        geometry = self._geometry(layer, axes)
        diameter = "auto" if self.estimate.value else (self.diameter.value or None)
        self._cancel.clear()
        self._t0 = time.perf_counter()
        self.run_button.text = "Cancel"
        self.progress_bar.value = 0
        self.progress_bar.visible = True
        self.status.value = "loading model..."
        key = (self.model.value, diameter)
        reads = self._model_reads()
        if reads > 1:
            from ..core.axes import parse_channels

            try:
                channel = parse_channels(self.channels.value, "Channels")
            except ValueError as exc:
                show_info(str(exc))
                return
        else:
            channel = int(self.channel.value) if "C" in axes else None
        if axes in ("YX", "YXS") and reads == 1:  # 2D: the probabilities are kept for the instant re-apply
            worker = create_worker(self._work, data, axes == "YXS", self.model.value, diameter, self._overrides(),
                                   geometry.scale, _start_thread=False, _ignore_errors=True)
        else:
            from ..core.pipeline import Input

            inp = Input(data, axes, self._anisotropy_value()[0] if "Z" in axes else 1.0, channel)
            worker = create_worker(self._work_stack, inp, self.model.value, diameter, self._overrides(), geometry,
                                   _start_thread=False, _ignore_errors=True)
        worker.returned.connect(
            lambda res, layer=layer, data=data, key=key, geometry=geometry: self._on_done(layer, res, data, key, geometry))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self._open_activity(f"U-Net: segmenting '{layer.name}'")
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
        if not self.advanced.value:
            return None, None
        return (self.threshold.value or None), (int(round(self.min_size.value)) or None)

    def _progress_fn(self):
        def progress_cb(frac: float, msg: str):
            if self._cancel.is_set():
                raise Cancelled()
            self._relay.progress.emit(frac, msg)

        return progress_cb

    def _work(self, data, rgb: bool, model: str, diameter, overrides=(None, None), spacing=None):
        """A 2D image (or RGB): labels, probabilities and measurements (worker thread)."""
        seg = self._segmenter(model)
        seg.threshold, seg.min_size = overrides
        seg.keep_probs = True
        if not isinstance(data, np.ndarray) and not rgb and data.ndim == 2:  # dask / zarr: never loaded whole
            res = seg.segment_lazy(data, diameter, progress=self._progress_fn())
            image = np.asarray(data) if max(data.shape) <= seg.block else None  # (no intensities: not read whole)
        else:
            image = np.asarray(data)
            res = seg.segment(image, diameter=diameter, rgb=rgb, progress=self._progress_fn())
        out = _Outcome(res.semantic, res.instances, list(res.notes), int(res.instances.max()), probs=res.probs,
                       diameter=res.diameter)
        self._measure(out, lambda sp: measure(res.instances, image, sp), spacing)
        return out

    def _work_stack(self, inp, model: str, diameter, overrides, geometry: _Geometry):
        """Volumes, time-lapses, channels: :func:`.core.pipeline.segment_input` (worker thread)."""
        from ..core.pipeline import segment_input

        seg = self._segmenter(model)
        seg.threshold, seg.min_size = overrides
        seg.keep_probs = False
        inp.data = np.asarray(inp.data)
        res = segment_input(seg, inp, diameter, self._progress_fn())
        out = _Outcome(res.semantic, res.instances, list(res.notes), res.n_cells)

        def columns(spacing):
            res.spacing = spacing or ()  # in the layer's units
            return res.measurements()

        self._measure(out, columns, geometry.scale)
        if "T" in res.axes and res.axes in ("TYX", "TZYX"):  # (a Tracks layer needs T first)
            from ..core.stack import tracks_from_labels

            out.tracks = tracks_from_labels(res.instances)
        return out

    def _measure(self, out: _Outcome, columns, spacing):
        """Measurements as a features table (one row per cell, napari's ``index`` column
        = the label) in the units of ``spacing`` (the layer's scale), and the fingerprints
        of the labels (worker thread). ``columns(spacing)`` measures."""
        progress_cb = self._progress_fn()
        progress_cb(1.0, f"measuring {out.n_cells} cells...")
        try:
            try:
                out.features, out.spacing = features_table(columns(spacing)), spacing
            except NotImplementedError:  # scikit-image's 2D perimeter needs square pixels
                out.features, out.spacing = features_table(columns(None)), None
                out.extra.append("measured in pixels: the layer's pixels are not square")
        except Exception as exc:  # noqa: BLE001 - the labels are worth showing without them
            out.extra.append(f"measurements failed: {exc.__class__.__name__}: {exc}")
        out.written = (fingerprint(out.semantic), fingerprint(out.instances))

    def _on_progress(self, frac: float, msg: str):
        try:
            value = int(1000 * min(max(frac, 0.0), 1.0))
            self.progress_bar.value = value
            self.status.value = msg
        except RuntimeError:  # the dock was closed under a running worker: stop it
            self._cancel.set()
            return
        pbar = self._pbar
        if pbar is not None:
            pbar.update(max(value - pbar.n, 0))
            pbar.set_description(f"U-Net: {msg}")

    def _open_activity(self, text: str):
        self._close_activity()
        self._pbar = progress(total=1000)
        self._pbar.set_description(text)

    def _close_activity(self):
        pbar, self._pbar = self._pbar, None
        if pbar is not None:
            pbar.close()

    def _on_done(self, layer, res: _Outcome, data=None, key=None, geometry: _Geometry | None = None, reapplied: bool = False):
        try:
            targets = self._show_result(layer, res, geometry)
        except RuntimeError:  # the viewer was closed while the worker ran: nothing to show
            return
        if targets is None:
            self._last = None
        elif reapplied and self._last is not None:
            self._last.targets = targets
        elif res.probs is not None:
            self._last = _LastRun(layer, data, key, res.probs, res.diameter, list(res.notes), targets, geometry)
        else:
            self._last = None

    def _on_error(self, exc):
        self._close_activity()
        if isinstance(exc, Cancelled):
            try:
                self.status.value = "cancelled"
            except RuntimeError:  # cancelled because the dock was closed
                pass
            return
        try:
            self.status.value = "failed"
        except RuntimeError:
            pass
        notify_error(exc, "Segmentation")

    def _on_finished(self):
        self._worker = None
        self._close_activity()
        try:
            self.run_button.text = "Run"
            self.folder_button.enabled = True
            self.progress_bar.visible = False
        except RuntimeError:  # the dock is gone
            return
        if self._pending:
            self._pending = False
            self._debounce.start()

    # ---- advanced settings -------------------------------------------------------------
    def _show_advanced(self, on: bool):
        self.threshold.visible = self.min_size.visible = bool(on)
        if on:  # (loaded only now: opening the widget does not load a model)
            self._show_model_settings()
        if self._last is not None:
            self._debounce.start()  # back to (or away from) the model's own settings

    def _show_model_settings(self, *_):
        """Show the model's own threshold and smallest object in the spin boxes' "model's own"."""
        try:
            post = self._segmenter(self.model.value).settings(own=True)
        except Exception:  # noqa: BLE001 - an unreadable model says so when it is run
            return
        self.threshold.native.setSpecialValueText(f"model's ({post.threshold:.2f})")
        self.min_size.native.setSpecialValueText(f"model's ({post.min_size} px)")
        for box in (self.threshold, self.min_size):
            box.native.updateGeometry()  # the longer text needs a wider box

    def _settings_changed(self, *_):
        if self._last is None:  # nothing kept to re-apply to (none yet, a stack, a very large image)
            if self._worker is None:
                self.status.value = "the new settings apply when you press Run"
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
        layer = last.layer
        data = _plane_data(layer)
        model = last.key[0]
        if layer not in self.viewer.layers or data is not last.data or model != self.model.value:
            self._last = None  # the image or the model changed: the next Run starts afresh
            return
        for out in last.targets:
            if out not in self.viewer.layers:
                self._last = None  # a result layer was removed: the next Run makes it again
                return
            if edited_since_written(out):
                self._last = None  # never overwrite the user's corrections without a Run
                self.status.value = f"'{out.name}' was edited: press Run to segment with the new settings (into a new layer)"
                show_info(f"U-Net: '{out.name}' was edited, so it was not updated; press Run to apply the new settings")
                return
        self._t0 = time.perf_counter()
        self.status.value = "applying the new settings..."
        overrides = self._overrides()
        geometry = last.geometry
        self._cancel.clear()

        def work():
            seg = self._segmenter(model)
            seg.threshold, seg.min_size = overrides
            semantic, instances = seg.postprocess(last.probs, last.diameter)
            out = _Outcome(semantic, instances, last.notes + ["settings re-applied without re-running the network"],
                           int(instances.max()), diameter=last.diameter)
            self._measure(out, lambda sp: measure(instances, np.asarray(data), sp), geometry.scale)
            return out

        worker = create_worker(work, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(lambda res: self._on_done(layer, res, geometry=geometry, reapplied=True))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.run_button.text = "Cancel"
        worker.start()

