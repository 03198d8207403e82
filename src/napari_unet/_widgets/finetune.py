"""The Fine-tune dock widget: paint a few strokes, train, watch the model learn, save it.

Training runs in a napari worker thread (a generator over
:class:`napari_unet.core.finetune.FinetuneSession`); the GUI thread only updates the
progress bar, the plot and the preview layers, so the viewer stays responsive. Torch in the
worker uses all cores but one, leaving one for the GUI.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label, LineEdit, ProgressBar, PushButton, SpinBox, create_widget
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from qtpy.QtCore import QPointF, Qt, QTimer
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QWidget

from . import _common
from ._common import model_bus, model_names, refresh_model_combo, spatial_transform, upsert_labels
from ..core.models import FINETUNE_BASE

__all__ = ["FinetuneWidget", "ANNOTATION_KEY"]

#: Metadata key of annotation layers this widget created: ``{"image": <image layer name>}``.
ANNOTATION_KEY = "napari-unet-annotation"
CELL_COLOR = (0.15, 0.85, 0.25, 1.0)  # label 1 = cell: green
NOT_CELL_COLOR = (0.95, 0.2, 0.85, 1.0)  # label 2 = not cell: magenta
#: Previews cover the whole plane up to this size, else the visible part (at most this size).
PREVIEW_MAX = 640
#: A validation score this far below the base model's triggers the guardrail.
BELOW_BASE_MARGIN = 0.02


class _Job:
    """State shared by the GUI thread and the training thread (no reference to the viewer)."""

    def __init__(self):
        self.request = None  # latest PreviewRequest, set by the GUI thread
        self.trainer = None
        self.done = threading.Event()
        self.stop_requested = False
        self.closing = False  # the viewer is closing: skip the final preview

    def stop(self):
        self.stop_requested = True
        if self.trainer is not None:
            self.trainer.stop()


def _train_job(job: _Job, images, annotations, rgbs, base, budget, threads):
    """The worker's generator: build the trainer, then yield its progress and previews."""
    try:
        from ..core.finetune import FinetuneSession, make_finetuner

        trainer, info = make_finetuner(images, annotations, base, budget, rgb=rgbs)
        job.trainer = trainer
        if job.stop_requested:
            trainer.stop()
        yield ("ready", trainer, info)
        session = FinetuneSession(trainer, info, request=lambda: job.request, threads=threads)
        yield from session.run()
        # the best weights are back in the model: show what Stop kept
        if not job.closing:
            final = session.preview_now()
            if final is not None:
                yield ("final", final)
    finally:
        job.done.set()


def _warm_up():
    """Import torch and what its optimiser pulls in (``torch._dynamo``) ahead of training.

    The first optimiser step imports ``torch._dynamo``, whose import holds the GIL in long
    stretches; done here, right after the widget opens, it cannot stall the viewer during
    training.
    """
    try:
        import torch
        import torch._dynamo  # noqa: F401

        from ..core import finetune, training  # noqa: F401
    except Exception:  # noqa: BLE001 - only a warm-up; training imports these anyway
        pass
    finally:
        WARMED_UP.set()


#: Set once the background imports that the widget starts when it opens are done.
WARMED_UP = threading.Event()
_warm_up_started = False


def _start_warm_up():
    global _warm_up_started
    if not _warm_up_started:
        _warm_up_started = True
        threading.Thread(target=_warm_up, name="napari-unet warm-up", daemon=True).start()


def _preview_job(trainer, info, request):
    from ..core.finetune import FinetuneSession

    return FinetuneSession(trainer, info, request=lambda: request).preview_now()


def _safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.\- ]+", "_", text).strip(" _.-")[:64]
    return name or "fine-tuned"


def _image_array(layer: Image) -> np.ndarray:
    return layer.data[0] if layer.multiscale else layer.data


def _labels_shape(layer: Image) -> tuple:
    shape = tuple(_image_array(layer).shape)
    return shape[:-1] if layer.rgb else shape


class _Plot(QWidget):
    """Loss and validation score against training time, painted with QPainter.

    Cheap to redraw (a few polylines), so the plot never holds up the event loop.
    Loss (orange) is scaled to its maximum; the validation score (blue dots) and the base
    model's score (dashed) use the 0..1 axis on the right.
    """

    LOSS = QColor(240, 160, 64)
    VAL = QColor(64, 192, 240)
    FG = QColor(214, 208, 206)

    def __init__(self):
        super().__init__()
        self.setMinimumHeight(130)
        self.clear()

    def clear(self):
        self.t, self.loss, self.vt, self.val = [], [], [], []
        self.base = None
        self.update()

    def add(self, p):
        if p.step == 0:
            self.base = p.val_score
            return
        if np.isfinite(p.loss):
            self.t.append(p.elapsed)
            self.loss.append(p.loss)
        if p.val_score is not None:
            self.vt.append(p.elapsed)
            self.val.append(p.val_score)

    def draw(self):
        self.update()

    def paintEvent(self, event):
        qp = QPainter(self)
        qp.setRenderHint(QPainter.RenderHint.Antialiasing)
        w, h = self.width(), self.height()
        fm = qp.fontMetrics()
        left, right, top, bottom = 8, 34, 16, fm.height() + 6
        pw, ph = max(w - left - right, 10), max(h - top - bottom, 10)
        qp.setPen(QPen(self.FG, 1))
        qp.drawRect(left, top, pw, ph)
        tmax = max(self.t[-1] if self.t else 0.0, self.vt[-1] if self.vt else 0.0, 1.0)
        lmax = max(self.loss) if self.loss else 1.0

        def X(t):
            return left + pw * t / tmax

        def Y(v):  # v in 0..1
            return top + ph * (1.0 - min(max(v, 0.0), 1.0))

        qp.drawText(left, h - 4, "0 s")
        label = f"{tmax:.0f} s"
        qp.drawText(left + pw - fm.horizontalAdvance(label), h - 4, label)
        for v in (0.0, 0.5, 1.0):
            qp.drawText(left + pw + 4, int(Y(v)) + fm.ascent() // 2, f"{v:g}")
        qp.setPen(QPen(self.LOSS, 1))
        qp.drawText(left + 2, top - 4, "loss")
        qp.setPen(QPen(self.VAL, 1))
        qp.drawText(left + 40, top - 4, "validation score")
        if self.base is not None:
            pen = QPen(self.VAL, 1, Qt.PenStyle.DashLine)
            qp.setPen(pen)
            qp.drawLine(QPointF(left, Y(self.base)), QPointF(left + pw, Y(self.base)))
        if len(self.t) > 1:
            step = max(1, len(self.t) // (2 * pw))  # at most ~2 points per pixel
            pts = [QPointF(X(t), Y(v / lmax)) for t, v in zip(self.t[::step], self.loss[::step])]
            qp.setPen(QPen(self.LOSS, 1))
            qp.drawPolyline(QPolygonF(pts))
        if self.vt:
            pts = [QPointF(X(t), Y(v)) for t, v in zip(self.vt, self.val)]
            qp.setPen(QPen(self.VAL, 1.5))
            if len(pts) > 1:
                qp.drawPolyline(QPolygonF(pts))
            qp.setBrush(self.VAL)
            for pt in pts:
                qp.drawEllipse(pt, 2.5, 2.5)
        qp.end()


class FinetuneWidget(Container):
    """Annotation, base model, Train / Stop, live plot and preview, model management."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        # ---- data --------------------------------------------------------------------
        self._image = create_widget(annotation=Image, label="Image")
        self._annotation = create_widget(annotation=Labels, label="Annotation")
        self._new_ann = PushButton(text="New annotation layer", tooltip="An empty Labels layer: paint 1 = cell, 2 = not cell")
        self._from_pred = PushButton(text="Start from prediction", tooltip="Copy the Segment result into a new annotation layer to correct")
        self._reading = Label(label="Reading", value="")
        self._all_pairs = CheckBox(text="Also train on other annotated images", value=True)
        # ---- training ------------------------------------------------------------------
        self._base = ComboBox(label="Base model", choices=self._model_choices,
                              tooltip="The model fine-tuning starts from (nuclei first: the best base measured on a new modality)")
        if FINETUNE_BASE in self._base.choices:
            self._base.value = FINETUNE_BASE
        self._budget = SpinBox(label="Time budget (s)", value=60, min=0, max=86400, step=10,
                               tooltip="Training stops after this many seconds; 0 = until you press Stop")
        self._train = PushButton(text="Train")
        self._progress = ProgressBar(label="", min=0, max=1000, value=0, visible=False)
        self._status = Label(label="", value="Paint a few strokes, then Train")
        self._warning = Label(label="", value="", visible=False)
        self._revert = PushButton(text="Revert to base", enabled=False,
                                  tooltip="Discard the fine-tuned weights and go back to the base model")
        # ---- models ------------------------------------------------------------------
        self._name = LineEdit(label="Save as", value="")
        self._save = PushButton(text="Save", enabled=False, tooltip="Save the fine-tuned model under this name")
        self._import = PushButton(text="Import...", tooltip="Add a model file (.pt) to your models")
        self._export = PushButton(text="Export...", tooltip="Write the base model picked above to a .pt file")
        self._delete = PushButton(text="Delete", tooltip="Delete the user model picked above")
        row = dict(layout="horizontal", labels=False)
        self.extend([
            self._image,
            self._annotation,
            Container(widgets=[self._new_ann, self._from_pred], **row),
            self._reading,
            self._all_pairs,
            self._base,
            self._budget,
            Container(widgets=[self._train, self._revert], **row),
            self._progress,
            self._status,
            self._warning,
            Container(widgets=[self._name, self._save], **row),
            Container(widgets=[self._import, self._export, self._delete], **row),
        ])
        self._warning.native.setStyleSheet("color: #f0a040")
        self._warning.native.setWordWrap(True)
        self._status.native.setWordWrap(True)
        self._reading.native.setWordWrap(True)
        self._plot = _Plot()
        self.native.layout().insertWidget(9, self._plot)
        # ---- state ---------------------------------------------------------------------
        self._worker = None
        self._job: _Job | None = None
        self._trainer = None
        self._info = None
        self._layer: Image | None = None  # the image being trained on and previewed
        self._below = 0
        self._warned: set[str] = set()
        self._created: list = []
        self._revert_pending = False
        self._task_id = None
        self._closed = False
        self._last_draw = 0.0
        self._preview_count = 0
        self._view_timer = QTimer()
        self._view_timer.setInterval(500)
        self._view_timer.timeout.connect(self._update_request)
        self._reading_timer = QTimer()  # re-read the annotation shortly after painting
        self._reading_timer.setSingleShot(True)
        self._reading_timer.setInterval(300)
        self._reading_timer.timeout.connect(self._describe_annotation)
        self._watched = None
        # ---- connections ---------------------------------------------------------------
        self._new_ann.changed.connect(lambda *_: self.new_annotation_layer())
        self._from_pred.changed.connect(lambda *_: self.annotation_from_prediction())
        self._train.changed.connect(lambda *_: self._on_train())
        self._revert.changed.connect(lambda *_: self.revert_to_base())
        self._save.changed.connect(lambda *_: self.save_model())
        self._import.changed.connect(lambda *_: self._import_dialog())
        self._export.changed.connect(lambda *_: self._export_dialog())
        self._delete.changed.connect(lambda *_: self.delete_model())
        self._annotation.changed.connect(lambda *_: self._watch_annotation())
        self._image.changed.connect(lambda *_: self._follow_image())
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.viewer.layers.selection.events.active.connect(self._follow_active)
        model_bus.changed.connect(self.refresh_models)
        self.native.destroyed.connect(self._view_timer.stop)
        self.native.destroyed.connect(self._reading_timer.stop)
        self.reset_choices()
        self._follow_active()
        _start_warm_up()

    # ---- pickers -------------------------------------------------------------------------
    def _model_choices(self, *_):
        return model_names()

    def refresh_models(self, select: str | None = None):
        if self._closed:
            return
        if not refresh_model_combo(self._base, select):  # viewer closed: stop listening
            self._closed = True
            model_bus.changed.disconnect(self.refresh_models)

    def _follow_active(self, event=None):
        if self._closed:
            return
        layer = self.viewer.layers.selection.active
        if isinstance(layer, Image) and self._worker is None and layer in self._image.choices:
            self._image.value = layer
        elif isinstance(layer, Labels) and layer in self._annotation.choices and not _common.is_plugin_layer(layer):
            self._annotation.value = layer

    def _follow_image(self):
        """Pick the annotation layer made for the chosen image, and a default model name."""
        image = self._image.value
        if image is None:
            return
        for layer in self.viewer.layers:
            tag = layer.metadata.get(ANNOTATION_KEY) if isinstance(layer, Labels) else None
            if tag and tag.get("image") == image.name and layer in self._annotation.choices:
                self._annotation.value = layer
                break
        if not self._name.value:
            self._name.value = _safe_name(f"{image.name} fine-tuned")

    def _watch_annotation(self):
        """Follow painting in the chosen annotation layer to say how it will be read."""
        old, new = self._watched, self._annotation.value
        if old is not new:
            for ev in ("paint", "data"):
                if old is not None:
                    try:
                        getattr(old.events, ev).disconnect(self._on_painted)
                    except (TypeError, ValueError, RuntimeError):
                        pass
                if new is not None:
                    getattr(new.events, ev).connect(self._on_painted)
            self._watched = new
        self._describe_annotation()

    def _on_painted(self, event=None):
        if not self._closed:
            self._reading_timer.start()

    def _describe_annotation(self):
        from ..core.finetune import describe_reading
        from ..core.losses import annotation_kind

        ann = self._annotation.value
        if ann is None or self._closed:
            self._reading.value = ""
            return
        data = np.asarray(ann.data[0] if ann.multiscale else ann.data)
        planes = data.reshape((-1,) + data.shape[-2:]) if data.ndim >= 2 else data[None]
        kinds = [k for k in (annotation_kind(p) for p in planes) if k != "empty"]
        self._reading.value = describe_reading(kinds) if kinds else "empty: paint 1 = cell and 2 = not cell"

    # ---- annotation layers -----------------------------------------------------------------
    def _style_annotation(self, layer: Labels) -> None:
        from napari.utils.colormaps import CyclicLabelColormap

        colors = np.array(layer.colormap.colors, dtype=np.float32)
        if len(colors) > 2:
            colors[1] = CELL_COLOR
            colors[2] = NOT_CELL_COLOR
            layer.colormap = CyclicLabelColormap(colors=colors, seed=getattr(layer.colormap, "seed", 0.5))

    def _select_for_painting(self, layer: Labels, label: int = 1) -> None:
        self.viewer.layers.selection.active = layer
        layer.selected_label = label
        layer.brush_size = max(3, int(layer.brush_size))
        layer.mode = "paint"
        self.reset_choices()
        self._annotation.value = layer
        self._describe_annotation()

    def _unique_name(self, name: str) -> str:
        names = {lay.name for lay in self.viewer.layers}
        if name not in names:
            return name
        k = 2
        while f"{name} [{k}]" in names:
            k += 1
        return f"{name} [{k}]"

    def new_annotation_layer(self) -> Labels | None:
        """An empty annotation layer for the chosen image, ready to paint label 1 (cell)."""
        image = self._image.value
        if image is None:
            _common.show_info("Open an image first, then make an annotation layer for it")
            return None
        data = np.zeros(_labels_shape(image), np.uint8)
        layer = self.viewer.add_labels(
            data,
            name=self._unique_name(f"{image.name} annotation"),
            metadata={ANNOTATION_KEY: {"image": image.name}},
            **spatial_transform(image),
        )
        self._style_annotation(layer)
        self._select_for_painting(layer, 1)
        self._status.value = "Paint cells with label 1 (green) and background with label 2 (magenta); 0 = not annotated"
        return layer

    def annotation_from_prediction(self) -> Labels | None:
        """A copy of the Segment result for the chosen image, to correct and train on.

        The instance prediction is copied as instance annotation (ids > 2), the semantic one
        as dense labels (1 = cell, 2 = not cell). The prediction layers are not modified.
        """
        image = self._image.value
        if image is None:
            _common.show_info("Open an image first")
            return None
        shape = _labels_shape(image)
        found = {}
        for layer in self.viewer.layers:
            tag = layer.metadata.get("napari-unet") if isinstance(layer, Labels) else None
            if tag and tag.get("source") == image.name and layer.data.shape == shape:
                found[tag.get("kind")] = layer
        if not found:
            _common.show_info(f"No prediction for '{image.name}' yet: run U-Net: Segment first")
            return None
        inst = found.get("instances")
        if inst is not None and int(np.max(inst.data)) > 2:
            data = np.array(inst.data, dtype=np.uint32 if int(np.max(inst.data)) >= 2**16 else np.uint16)
            note = "instances copied: each id is one cell (0 = background); fix cells by painting new ids or 0"
        else:
            src = found.get("cells") if "cells" in found else inst
            sem = np.asarray(src.data) > 0
            data = np.where(sem, 1, 2).astype(np.uint8)
            note = "prediction copied as dense labels: 1 = cell, 2 = not cell; repaint what is wrong"
        layer = self.viewer.add_labels(
            data,
            name=self._unique_name(f"{image.name} annotation"),
            metadata={ANNOTATION_KEY: {"image": image.name}},
            **spatial_transform(image),
        )
        if data.dtype == np.uint8:
            self._style_annotation(layer)
        self._select_for_painting(layer, 1 if data.dtype == np.uint8 else int(data.max()) + 1)
        self._status.value = note
        return layer

    # ---- training --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._worker is not None

    def _pairs(self):
        """(image layer, annotation layer) pairs to train on; the chosen pair first."""
        image, ann = self._image.value, self._annotation.value
        pairs = [(image, ann)]
        if self._all_pairs.value:
            names = {lay.name: lay for lay in self.viewer.layers if isinstance(lay, Image)}
            for layer in self.viewer.layers:
                tag = layer.metadata.get(ANNOTATION_KEY) if isinstance(layer, Labels) else None
                if not tag or layer is ann:
                    continue
                img = names.get(tag.get("image"))
                if img is None or img is image or tuple(layer.data.shape) != _labels_shape(img):
                    continue
                if np.any(layer.data):
                    pairs.append((img, layer))
        return pairs

    def _on_train(self):
        if self._worker is not None:
            self.stop()
            return
        image, ann = self._image.value, self._annotation.value
        if image is None:
            _common.show_info("Open an image first")
            return
        if ann is None:
            _common.show_error("No annotation layer: press 'New annotation layer' and paint 1 = cell, 2 = not cell")
            return
        if ann.multiscale:
            _common.show_error(f"Annotation '{ann.name}' is multiscale; use a plain Labels layer")
            return
        shape = _labels_shape(image)
        if tuple(ann.data.shape) != shape:
            _common.show_error(
                f"Annotation '{ann.name}' has shape {tuple(ann.data.shape)} but image '{image.name}' has shape {shape}: "
                "make one with 'New annotation layer'"
            )
            return
        if not np.any(ann.data):
            _common.show_error(f"Annotation '{ann.name}' is empty: paint a few cells (label 1) and background (label 2) first")
            return
        pairs = self._pairs()
        images = [np.asarray(_image_array(i)) for i, _ in pairs]
        anns = [np.array(a.data, copy=True) for _, a in pairs]  # painting may go on meanwhile
        has_cell = any(bool(np.any(a == 1)) or int(a.max()) > 2 for a in anns)
        has_bg = any(bool(np.any(a == 2)) or int(a.max()) > 2 for a in anns)
        if not (has_cell and has_bg):
            missing = "not cell (label 2)" if has_cell else "cell (label 1)"
            _common.show_error(f"Only one class is painted in '{ann.name}': add a few strokes of {missing} too")
            return
        rgbs = [bool(i.rgb) for i, _ in pairs]
        budget = float(self._budget.value) or None
        self._created = self._ensure_preview_layers(image, ann)
        self.start_training(images, anns, rgbs, budget, layer=image)

    def _ensure_preview_layers(self, image: Image, annotation: Labels | None = None) -> list:
        """Create the prediction layers the preview writes to, if missing (empty until then).

        Done when Train is pressed, before training starts, so that creating layers (the
        costliest thing napari does here) never stalls the viewer during training. The
        selection and the annotation layer's place on top are kept, so painting can go on.
        Returns the layers created.
        """
        shape = _labels_shape(image)
        keep = self.viewer.layers.selection.active
        created = []
        for kind, dtype, opacity in (("cells", np.uint8, 0.4), ("instances", np.uint16, 0.6)):
            if self._plugin_layer(image, kind, shape) is not None:
                continue
            new = upsert_labels(self.viewer, np.zeros(shape, dtype), image, kind, opacity=opacity)
            created.append(new)
            layers = self.viewer.layers
            if annotation is not None and annotation in layers and layers.index(new) > layers.index(annotation):
                layers.move(layers.index(new), layers.index(annotation))
        if keep is not None and keep in self.viewer.layers:
            self.viewer.layers.selection.active = keep
        return created

    def _remove_unused(self):
        """Remove prediction layers created for a run that failed before any preview."""
        for layer in getattr(self, "_created", []):
            if layer in self.viewer.layers and not np.any(layer.data):
                self.viewer.layers.remove(layer)
        self._created = []

    def start_training(self, images, annotations, rgbs, budget, layer: Image | None = None):
        from ..core.finetune import default_threads

        job = _Job()
        self._job = job
        self._layer = layer
        self._trainer = self._info = None
        self._below = 0
        self._warned = set()
        self._revert_pending = False
        self._preview_count = 0
        self._set_warning("")
        self._save.enabled = False
        self._revert.enabled = False
        self._plot.clear()
        self._budget_s = budget
        self._t0 = time.perf_counter()
        self._train.text = "Stop"
        self._progress.value = 0
        self._progress.max = 1000 if budget else 0
        self._progress.visible = True
        self._status.value = "loading the base model..."
        self._update_request()
        worker = create_worker(
            _train_job, job, images, annotations, rgbs, self._base.value, budget, default_threads(),
            _start_thread=False, _ignore_errors=True,  # errors go to _on_error: one notification, no traceback
        )
        worker.yielded.connect(self._on_event)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        # set from the worker thread itself when it ends, however it ends (also when napari
        # quits the worker on close without finishing the generator)
        worker.finished.connect(job.done.set, Qt.ConnectionType.DirectConnection)
        self._worker = worker
        self._register_task()
        self._view_timer.start()
        worker.start()

    def stop(self):
        """Stop training after the current step; the best weights are kept."""
        if self._job is not None:
            self._job.stop()
            if self._worker is not None:
                self._status.value = "stopping (keeping the best weights)..."

    # ---- preview requests (GUI thread) -------------------------------------------------------
    def _update_request(self):
        if self._job is None or self._closed:
            return
        self._job.request = self._make_request()

    def _make_request(self):
        from ..core.finetune import PreviewRequest

        layer = self._layer
        if layer is None or layer not in self.viewer.layers:
            return None
        data = _image_array(layer)
        shape = _labels_shape(layer)
        if len(shape) < 2:
            return None
        H, W = shape[-2:]
        lead = len(shape) - 2
        index = ()
        if lead:
            try:
                point = layer.world_to_data(self.viewer.dims.point)
                index = tuple(int(np.clip(round(float(v)), 0, n - 1)) for v, n in zip(point[:lead], shape[:lead]))
            except Exception:  # noqa: BLE001 - any odd transform: preview the first plane
                index = (0,) * lead
        region = None
        if H > PREVIEW_MAX or W > PREVIEW_MAX:
            try:
                c = np.asarray(layer.corner_pixels)[:, -2:]
                y0, x0 = c[0]
                y1, x1 = c[1] + 1
            except Exception:  # noqa: BLE001
                y0, x0, y1, x1 = 0, 0, H, W
            if y1 - y0 < 8 or x1 - x0 < 8:
                y0, x0, y1, x1 = 0, 0, H, W
            cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
            hh, hw = min(y1 - y0, PREVIEW_MAX) // 2, min(x1 - x0, PREVIEW_MAX) // 2
            y0, y1 = max(0, cy - hh), min(H, cy + hh)
            x0, x1 = max(0, cx - hw), min(W, cx + hw)
            region = (int(y0), int(y1), int(x0), int(x1))
        return PreviewRequest(data, index, region, bool(layer.rgb), key=layer.name)

    # ---- worker events (GUI thread) ------------------------------------------------------
    def _on_event(self, ev):
        if self._closed:
            return
        from ..core.finetune import Preview
        from ..core.training import Progress

        if isinstance(ev, tuple) and ev and ev[0] == "ready":
            _, self._trainer, self._info = ev
            self._reading.value = self._info.reading
            held = "held-out strokes" if self._info.held_out else "the training strokes (too few to hold some out)"
            self._status.value = f"scoring the base model on {held}..."
        elif isinstance(ev, tuple) and ev and ev[0] == "final":
            self._show_preview(ev[1])
        elif isinstance(ev, Progress):
            self._on_progress(ev)
        elif isinstance(ev, Preview):
            self._show_preview(ev)

    @property
    def _base_score(self) -> float | None:
        """The base model's score on the validation strokes (the trainer's step 0)."""
        return self._trainer.base_score if self._trainer is not None else None

    def _on_progress(self, p):
        self._plot.add(p)
        if p.step == 0:
            self._status.value = f"base model score {p.val_score:.3f}; training..."
            return
        if self._budget_s:
            self._progress.value = int(1000 * min(p.elapsed / self._budget_s, 1.0))
        msg = f"step {p.step}, {p.elapsed:.0f} s: loss {p.loss:.3f}"
        if self._trainer is not None and self._trainer.best_score is not None:
            base = f" (base {self._base_score:.3f})" if self._base_score is not None else ""
            msg += f"; kept weights: score {self._trainer.best_score:.3f}{base}"
        self._status.value = msg
        if p.val_score is not None:
            self._check_score(p.val_score)
        now = time.perf_counter()
        if p.val_score is not None or now - self._last_draw > 0.5:
            self._last_draw = now
            self._plot.draw()

    def _check_score(self, score: float):
        base = self._base_score
        if base is None:
            return
        if score < base - BELOW_BASE_MARGIN:
            self._below += 1
            self._set_warning(
                f"Validation score {score:.3f} is below the base model's {base:.3f}: these weights do worse on "
                "your held-out strokes. Stop keeps the best weights (the base model's if none is better); "
                "'Revert to base' discards the training."
            )
            self._revert.enabled = True
            if self._below >= 2 and "below" not in self._warned:
                self._warned.add("below")
                _common.show_warning(f"U-Net fine-tuning: validation score {score:.3f} is below the base model's {base:.3f}")
        else:
            self._below = 0
            if "below" in self._warning.value:
                self._set_warning("")

    def _set_warning(self, text: str):
        self._warning.value = text
        self._warning.visible = bool(text)

    def _show_preview(self, prev):
        """Write a preview into the plugin's ``cells`` / ``instances`` layers of the image.

        Existing layers are updated in place (only the previewed region changes); a missing
        layer is created, the second one on the next event-loop turn so that creating two
        layers never blocks the viewer at once.
        """
        layer = self._layer
        if layer is None or layer not in self.viewer.layers or layer.name != prev.key:
            return
        req = prev.request
        shape = _labels_shape(layer)
        if req.region is None:
            sl = tuple(req.index) + (slice(None), slice(None))
        else:
            y0, y1, x0, x1 = req.region
            sl = tuple(req.index) + (slice(y0, y1), slice(x0, x1))
        cells = self._plugin_layer(layer, "cells", shape)
        if cells is None:
            data = np.zeros(shape, np.uint8)
            data[sl] = prev.semantic
            upsert_labels(self.viewer, data, layer, "cells", opacity=0.4)
            QTimer.singleShot(0, lambda: self._write_instances(layer, prev, sl, shape))
        else:
            cells.data[sl] = prev.semantic
            cells.refresh()
            self._write_instances(layer, prev, sl, shape)
        self._preview_count += 1
        self._created = []  # the layers hold a result now
        if prev.collapsed:
            what = "no cells" if prev.collapsed == "nothing" else "cells everywhere"
            self._set_warning(
                f"The model now predicts {what} in the view (collapse): check the annotation "
                "(1 = cell, 2 = not cell), or press 'Revert to base'."
            )
            self._revert.enabled = True
            if "collapse" not in self._warned:
                self._warned.add("collapse")
                _common.show_warning(f"U-Net fine-tuning: the model predicts {what} in the view")
        elif "collapse" in self._warning.value:
            self._set_warning("")

    def _write_instances(self, layer, prev, sl, shape):
        if self._closed or layer not in self.viewer.layers:
            return
        new = prev.instances
        inst = self._plugin_layer(layer, "instances", shape)
        if inst is None:
            data = np.zeros(shape, np.uint32 if int(new.max()) >= 2**16 else np.uint16)
            data[sl] = new
            upsert_labels(self.viewer, data, layer, "instances", opacity=0.6)
            return
        # ids in the previewed region follow the largest id outside it (in the same plane)
        plane = inst.data[tuple(sl[:-2])] if len(sl) > 2 else inst.data
        ys, xs = sl[-2], sl[-1]
        y0, y1, _ = ys.indices(plane.shape[0])
        x0, x1, _ = xs.indices(plane.shape[1])
        parts = [plane[:y0], plane[y1:], plane[y0:y1, :x0], plane[y0:y1, x1:]]
        offset = max((int(p.max()) for p in parts if p.size), default=0)
        top = offset + int(new.max())
        values = np.where(new > 0, new.astype(np.int64) + offset, 0)
        if top >= np.iinfo(inst.data.dtype).max if inst.data.dtype.kind in "iu" else True:
            data = np.asarray(inst.data, dtype=np.uint32 if top < 2**32 else np.uint64)
            data[sl] = values
            inst.data = data
        else:
            inst.data[sl] = values
            inst.refresh()

    def _plugin_layer(self, layer, kind, shape):
        for lay in self.viewer.layers:
            tag = lay.metadata.get("napari-unet") if isinstance(lay, Labels) else None
            if tag and tag.get("source") == layer.name and tag.get("kind") == kind and tuple(lay.data.shape) == tuple(shape):
                return lay
        return None

    def _on_error(self, exc):
        if self._closed:
            return
        self._remove_unused()
        self._status.value = "training failed; nothing was changed"
        _common.notify_error(exc, "Fine-tuning")

    def _on_finished(self):
        self._view_timer.stop()
        self._worker = None
        self._finish_task()
        if self._closed:
            return
        self._train.text = "Train"
        self._progress.visible = False
        t = self._trainer
        if t is None:
            return
        self._plot.draw()
        if self._revert_pending:
            self._revert_pending = False
            self._apply_revert()
            return
        h = t.history
        secs = h[-1].elapsed if h else 0.0
        base = self._base_score
        best = t.best_score
        if best is not None and base is not None and best <= base:
            self._status.value = (
                f"Stopped after {t.step} steps ({secs:.0f} s): no improvement over the base model "
                f"(score {base:.3f}); its weights were kept"
            )
        elif best is not None:
            self._status.value = (
                f"Stopped after {t.step} steps ({secs:.0f} s); kept weights: score {best:.3f}"
                + (f" (base {base:.3f})" if base is not None else "") + ". Save them under a name."
            )
        else:
            self._status.value = f"Stopped after {t.step} steps ({secs:.0f} s)"
        self._save.enabled = True
        self._revert.enabled = True

    # ---- guardrail: revert -----------------------------------------------------------------
    def revert_to_base(self):
        """Discard the fine-tuned weights (stopping training first if it runs)."""
        if self._trainer is None:
            return
        if self._worker is not None:
            self._revert_pending = True
            self.stop()
            return
        self._apply_revert()

    def _apply_revert(self):
        from ..core.finetune import revert_to_base

        revert_to_base(self._trainer, self._info)
        self._set_warning("")
        self._save.enabled = False
        self._revert.enabled = False
        self._status.value = f"Reverted to the base model '{self._info.base_name}'"
        self._layer_preview()

    def _layer_preview(self):
        """Re-segment the view with the model as it is now (after a revert)."""
        req = self._make_request()
        if req is None or self._trainer is None:
            return
        worker = create_worker(_preview_job, self._trainer, self._info, req, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(lambda prev: prev is not None and not self._closed and self._show_preview(prev))
        worker.errored.connect(lambda exc: _common.notify_error(exc, "Preview"))
        worker.start()

    # ---- layers removed, viewer closed -------------------------------------------------------
    def _on_layer_removed(self, event):
        layer = event.value
        if self._worker is not None and layer is self._layer:
            self._layer = None
            if self._job is not None:
                self._job.request = None
            self.stop()
            # said on the next event-loop turn, unless the viewer is closing (its layers are
            # removed before the window closes)
            QTimer.singleShot(0, lambda name=layer.name: self._warn_removed(name))

    def _warn_removed(self, name: str):
        if self._closed:
            return
        _common.show_warning(
            f"U-Net fine-tuning: image '{name}' was removed, so training stopped; "
            "the best weights so far are kept (Save them under a name)"
        )

    def _register_task(self):
        try:
            from napari.utils.task_status import Status

            self._task_id = self.viewer.window._register_task_status(
                "napari-unet", Status.BUSY, "fine-tuning a U-Net", cancel_callback=self._abort
            )
        except Exception:  # noqa: BLE001 - private napari API; closing still stops via destroyed
            self._task_id = None
        job = self._job
        self.native.destroyed.connect(lambda *_: job.stop())

    def _finish_task(self):
        if self._task_id is None:
            return
        try:
            from napari.utils.task_status import Status

            self.viewer.window._update_task_status(self._task_id, Status.COMPLETED, "")
        except Exception:  # noqa: BLE001
            pass
        self._task_id = None

    def _abort(self) -> bool:
        """The viewer is closing: stop training and wait (briefly) for the thread to end."""
        self._closed = True
        self._view_timer.stop()
        job, worker = self._job, self._worker
        if job is None:
            return True
        job.closing = True
        job.stop()
        job.done.wait(20)
        if worker is not None:
            for sig, slot in ((worker.yielded, self._on_event), (worker.errored, self._on_error)):
                try:
                    sig.disconnect(slot)
                except (TypeError, RuntimeError):
                    pass
        return job.done.is_set()

    # ---- models ---------------------------------------------------------------------------
    def save_model(self, name: str | None = None):
        """Save the fine-tuned (best) weights as a user model; it appears in Segment's list."""
        from ..core.finetune import describe_calibration, save_finetuned
        from ..core.models import check_name, load_model

        if self._trainer is None or self._worker is not None:
            _common.show_info("Train first (and Stop), then save")
            return None
        name = (name if name is not None else self._name.value).strip()
        try:
            # a name, never a path: "../x", "/tmp/x", "a/b" or "x.pt" would land outside the
            # models folder and never show in the Segment widget (Export... writes files)
            check_name(name)
            if name.lower().endswith(".pt"):
                raise ValueError(f"{name!r} looks like a file name: type a model name (Export... writes a file)")
            path = save_finetuned(self._trainer, name, self._info)
        except Exception as exc:  # noqa: BLE001 - one notification, nothing lost
            _common.notify_error(exc, "Saving the model")
            return None
        model_bus.changed.emit()
        self.refresh_models(select=path.stem)
        cal = describe_calibration(load_model(path).meta)
        self._status.value = f"Saved '{path.stem}' ({path}); it is now in the Segment widget's model list" + (f"; {cal}" if cal else "")
        _common.show_info(f"U-Net: saved model '{path.stem}'")
        return path

    def import_model(self, path) -> str | None:
        """Add a model file to the user's models (validated; loading never runs code)."""
        from ..core.models import install_model

        try:
            dest = install_model(Path(path), name=_safe_name(Path(path).stem))
        except Exception as exc:  # noqa: BLE001
            _common.notify_error(exc, "Importing the model")
            return None
        model_bus.changed.emit()
        self.refresh_models(select=dest.stem)
        self._status.value = f"Imported '{dest.stem}'"
        return dest.stem

    def export_model(self, path, name: str | None = None):
        """Write the model picked as base (or ``name``) to a single ``.pt`` file."""
        from ..core.models import load_model, save_model

        name = name or self._base.value
        try:
            loaded = load_model(name)
            dest = save_model(Path(path), loaded.model, loaded.meta)
        except Exception as exc:  # noqa: BLE001
            _common.notify_error(exc, "Exporting the model")
            return None
        self._status.value = f"Exported '{name}' to {dest}"
        return dest

    def delete_model(self, name: str | None = None, confirm: bool = True) -> bool:
        """Delete a user model (asks first unless ``confirm=False``)."""
        from ..core.models import delete_model

        name = name or self._base.value
        if confirm:
            from qtpy.QtWidgets import QMessageBox

            answer = QMessageBox.question(self.native, "Delete model", f"Delete the model '{name}'? This cannot be undone.")
            if answer != QMessageBox.StandardButton.Yes:
                return False
        try:
            delete_model(name)
        except Exception as exc:  # noqa: BLE001
            _common.notify_error(exc, "Deleting the model")
            return False
        model_bus.changed.emit()
        self.refresh_models()
        self._status.value = f"Deleted '{name}'"
        return True

    def _import_dialog(self):
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self.native, "Import a U-Net model", "", "napari-unet model (*.pt)")
        if path:
            self.import_model(path)

    def _export_dialog(self):
        from qtpy.QtWidgets import QFileDialog

        name = self._base.value
        path, _ = QFileDialog.getSaveFileName(self.native, f"Export '{name}'", f"{name}.pt", "napari-unet model (*.pt)")
        if path:
            self.export_model(path, name)
