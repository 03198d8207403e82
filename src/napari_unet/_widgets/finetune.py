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
import weakref
from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label, LineEdit, ProgressBar, PushButton, SpinBox, create_widget
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from qtpy.QtCore import QEvent, QObject, QPointF, Qt, QTimer
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

from ..core.models import FINETUNE_BASE
from . import _common
from ._common import model_bus, model_names, refresh_model_combo, spatial_transform, upsert_labels

__all__ = ["FinetuneWidget", "ANNOTATION_KEY"]

#: Metadata key of annotation layers this widget created: ``{"image": <image layer name>}``.
ANNOTATION_KEY = "napari-unet-annotation"
CELL_COLOR = (0.15, 0.85, 0.25, 1.0)  # label 1 = cell: green
NOT_CELL_COLOR = (0.95, 0.2, 0.85, 1.0)  # label 2 = not cell: magenta
#: Previews cover the whole plane up to this size, else the visible part (at most this size).
PREVIEW_MAX = 640
#: A validation score this far below the base model's counts as below it.
BELOW_BASE_MARGIN = 0.02
#: The guardrail needs a trend: this many validations in a row below the base model's score
#: (one dip is noise: validation on a few held-out strokes is noisy, and the moving
#: average of the weights often dips in the first seconds before it climbs).
BELOW_BASE_RUN = 3
#: ... and a popup also this much training time (the dock's warning line comes earlier).
BELOW_BASE_POPUP_S = 30.0
#: Keyboard shortcuts (bound on the viewer while the widget is docked; not napari defaults).
TRAIN_KEY = "Shift-T"
STOP_KEY = "Shift-S"
#: The README's Fine-tune section (the widget's Help link).
HELP_URL = "https://pypi.org/project/napari-unet/"  # the README, as published with the package
_STATUS_TIP = "What the widget is doing, and the result of the last action"


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


_ANNOTATION_NAME = re.compile(r"^(.*) annotation(?: \[\d+\])?$")


def annotation_owner(layer) -> str | None:
    """Name of the image an annotation layer was made for, or ``None`` when unknown.

    Layers made by *New annotation layer* / *Start from prediction* say so in their
    metadata; other Labels layers named ``"<image> annotation"`` (or ``"... [2]"``) are
    taken for that image's.
    """
    if not isinstance(layer, Labels):
        return None
    tag = layer.metadata.get(ANNOTATION_KEY)
    if isinstance(tag, dict) and tag.get("image"):
        return str(tag["image"])
    m = _ANNOTATION_NAME.match(layer.name)
    return m.group(1) if m else None


def _short(name: str, n: int = 18) -> str:
    """A model name short enough for a button."""
    return name if len(name) <= n else name[: n - 1] + "\u2026"


def plain_calibration(meta: dict) -> tuple[str, str]:
    """``(sentence for the status line, technical detail for its tooltip)`` on a saved
    model's calibrated cell threshold; ``("", "")`` when there is none.

    The technical phrase is :func:`napari_unet.core.finetune.describe_calibration`'s. A
    pixel is cell when its cell probability is above the threshold, so a threshold above
    0.5 draws cells smaller, one below 0.5 larger.
    """
    from ..core.finetune import describe_calibration

    technical = describe_calibration(meta)
    cal = meta.get("calibration")
    if not cal or not technical:
        return "", ""
    share = f"about {100 * float(cal['cell_fraction']):.0f} %"
    th = float(meta.get("threshold", 0.5))
    if not cal.get("applied", True):
        plain = (f"Cells are drawn as by default: matching them to how much of your images is cell ({share}) "
                 "would have contradicted your strokes (train longer, then save again)")
    elif abs(th - 0.5) < 0.005:
        plain = f"Cells are drawn as by default, which already matches how much of your images is cell ({share})"
    else:
        size = "smaller" if th > 0.5 else "larger"
        amount = "a little " if abs(th - 0.5) < 0.1 else ""
        plain = f"Cells are drawn {amount}{size} than by default, to match how much of your images is cell ({share})"
    detail = (f"Technical: {technical}. A pixel is cell when its cell probability is above this threshold "
              "(0.5 before calibration); the saved model carries it, and Segment's Advanced settings can change it.")
    return plain, detail


class _ParentWatch(QObject):
    """Calls ``callback(has_parent)`` when a widget is docked or taken out of its dock."""

    def __init__(self, widget: QWidget, callback):
        super().__init__(widget)
        self._callback = callback
        widget.installEventFilter(self)

    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.ParentChange:
            try:
                self._callback(obj.parent() is not None)
            except RuntimeError:  # the widget is being deleted
                pass
        return False


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


def _unbinder(viewer, keys: dict):
    """A callable that unbinds the shortcuts in ``keys`` still bound to our functions
    (holds no reference to the widget, so it can run when the widget is destroyed)."""
    viewer_ref = weakref.ref(viewer)

    def unbind(*_):
        from napari.utils.key_bindings import coerce_keybinding

        viewer = viewer_ref()
        for key, func in list(keys.items()):
            keys.pop(key, None)
            if viewer is None:
                continue
            try:
                if viewer.keymap.get(coerce_keybinding(key)) is func:
                    viewer.bind_key(key, None)
            except Exception:  # noqa: BLE001 - a closing viewer
                pass

    return unbind


class FinetuneWidget(Container):
    """Annotation, base model, Train / Stop, live plot and preview, model management."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        # ---- data --------------------------------------------------------------------
        self._image = create_widget(annotation=Image, label="Image", options={
            "tooltip": "The image to fine-tune on; follows the image layer you select. Previews go to its "
                       "'<image> cells' / '<image> instances' layers"})
        self._annotation = create_widget(annotation=Labels, label="Annotation", options={
            "nullable": True,
            "tooltip": "Your strokes for this image (1 = cell, 2 = not cell, 0 = not annotated); picks the "
                       "image's own annotation layer when the image changes"})
        self._new_ann = PushButton(text="New annotation layer", tooltip="An empty Labels layer: paint 1 = cell, 2 = not cell")
        self._from_pred = PushButton(text="Start from prediction", tooltip="Copy the Segment result into a new annotation layer to correct")
        self._reading = Label(label="Reading", value="", tooltip="How the annotation will be read: sparse strokes, "
                              "dense labels (1 = cell, 2 = not cell) or instances (each id above 2 one cell)")
        self._all_pairs = CheckBox(text="Also train on other annotated images", value=True,
                                   tooltip="Also train on the annotation layers made for the other open images "
                                           "(with 'New annotation layer' or 'Start from prediction')")
        # ---- training ------------------------------------------------------------------
        self._base = ComboBox(label="Base model", choices=self._model_choices,
                              tooltip="The model fine-tuning starts from (nuclei first: the best base measured on a new modality)")
        if FINETUNE_BASE in self._base.choices:
            self._base.value = FINETUNE_BASE
        self._budget = SpinBox(label="Time budget (s)", value=60, min=0, max=86400, step=10,
                               tooltip="Training stops after this many seconds; 0 = until you press Stop")
        self._train = PushButton(text="Train")
        self._progress = ProgressBar(label="", min=0, max=1000, value=0, visible=False,
                                     tooltip="Share of the time budget used")
        self._status = Label(label="", value="Paint a few strokes, then Train", tooltip=_STATUS_TIP)
        self._warning = Label(label="", value="", visible=False,
                              tooltip="A guardrail: the training may be going wrong (Stop keeps the best weights either way)")
        self._revert = PushButton(text="Revert to base", enabled=False,
                                  tooltip="Discard the fine-tuned weights and go back to the base model")
        self._next = PushButton(text="Paint here next", enabled=False,
                                tooltip="Show where the model is least sure (the '<image> uncertainty' layer, updated "
                                        "with every preview) and centre the view on the most uncertain unpainted region")
        # ---- models ------------------------------------------------------------------
        self._name = LineEdit(label="Save as", value="",
                              tooltip="The name of the fine-tuned model in the model lists (letters, digits, "
                                      "spaces, '.', '_', '-'); follows the image until you type one")
        self._save = PushButton(text="Save", enabled=False, tooltip=self._SAVE_TIP)
        self._import = PushButton(text="Import...", tooltip="Add a model file (.pt) to your models")
        self._export = PushButton(text="Export...", tooltip="Write the base model picked above to a .pt file")
        self._delete = PushButton(text="Delete", tooltip="Delete the user model picked above")
        self._help = Label(value=f'<a href="{HELP_URL}">Help: how to fine-tune (README)</a>',
                           tooltip=f"Open the README (its Fine-tune section) in your browser: {HELP_URL}")
        row = dict(layout="horizontal", labels=False)
        self.extend([
            self._image,
            self._annotation,
            Container(widgets=[self._new_ann, self._from_pred], **row),
            self._reading,
            self._all_pairs,
            self._base,
            self._budget,
            Container(widgets=[self._train, self._revert, self._next], **row),
            self._progress,
            self._status,
            self._warning,
            Container(widgets=[self._name, self._save], **row),
            Container(widgets=[self._import, self._export, self._delete], **row),
            self._help,
        ])
        self._warning.native.setStyleSheet("color: #f0a040")
        for label in (self._status, self._warning, self._reading):
            # long notes (paths, model names) wrap instead of widening the dock
            label.native.setWordWrap(True)
            label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            label.native.setMinimumWidth(60)
        self._help.native.setTextFormat(Qt.TextFormat.RichText)
        self._help.native.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self._help.native.setOpenExternalLinks(True)
        self._plot = _Plot()
        self._plot.setToolTip("Loss (orange, scaled to its maximum) and validation score on held-out strokes "
                              "(blue dots, 0..1 on the right) against training time; dashed: the base model's score")
        self.native.layout().insertWidget(9, self._plot)
        # ---- state ---------------------------------------------------------------------
        self._worker = None
        self._job: _Job | None = None
        self._trainer = None
        self._info = None
        self._layer: Image | None = None  # the image being trained on and previewed
        self._vals: list[float] = []  # this run's validation scores (the guardrail's trend)
        self._warning_kind = ""  # what the warning line says: "below", "collapse" or ""
        self._warned: set[str] = set()
        self._created: list = []
        self._auto_name = ""  # the Save-as name the widget proposed (replaced when the image changes)
        self._keys: dict[str, object] = {}  # shortcut -> the function bound on the viewer
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
        self._next.changed.connect(lambda *_: self.paint_here_next())
        self._save.changed.connect(lambda *_: self.save_model())
        self._import.changed.connect(lambda *_: self._import_dialog())
        self._export.changed.connect(lambda *_: self._export_dialog())
        self._delete.changed.connect(lambda *_: self.delete_model())
        self._annotation.changed.connect(lambda *_: self._watch_annotation())
        self._image.changed.connect(lambda *_: self._follow_image())
        self._base.changed.connect(lambda *_: self._update_model_buttons())
        self._status.changed.connect(lambda *_: self._status.native.setToolTip(_STATUS_TIP))  # details go with one message
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.viewer.layers.events.inserted.connect(self._on_layer_inserted)
        self.viewer.layers.selection.events.active.connect(self._follow_active)
        model_bus.changed.connect(self.refresh_models)
        self.native.destroyed.connect(self._view_timer.stop)
        self.native.destroyed.connect(self._reading_timer.stop)
        # ---- keyboard shortcuts: bound while the widget is docked ----------------------------
        self._bind_keys()
        self._parent_watch = _ParentWatch(self.native, self._on_docked)
        self.native.destroyed.connect(_unbinder(self.viewer, self._keys))
        self._update_train_button()
        self.reset_choices()
        self._follow_active()
        self._follow_image()
        self._update_model_buttons()
        _start_warm_up()

    _SAVE_TIP = "Save the fine-tuned model under this name"

    # ---- keyboard shortcuts ----------------------------------------------------------------
    def _bind_keys(self):
        """Bind Train / Stop on the viewer (napari's public ``bind_key``).

        A key already bound to something else (by the user or another plugin) is left alone:
        that shortcut is then not offered.
        """
        from napari.utils.key_bindings import coerce_keybinding

        ref = weakref.ref(self)

        def train(viewer):
            w = ref()
            if w is not None and not w._closed and not w.running:
                w._on_train()

        def stop(viewer):
            w = ref()
            if w is not None and not w._closed and w.running:
                w.stop()

        for key, func in ((TRAIN_KEY, train), (STOP_KEY, stop)):
            if key in self._keys:
                continue
            func.__napari_unet__ = True  # ours: a later Fine-tune widget may take the key over
            current = self.viewer.keymap.get(coerce_keybinding(key))
            if current is not None and not getattr(current, "__napari_unet__", False):
                continue
            try:
                self.viewer.bind_key(key, func, overwrite=True)
            except Exception:  # noqa: BLE001 - shortcuts are a convenience, never an error
                continue
            self._keys[key] = func
        self._update_train_button()

    def _unbind_keys(self):
        _unbinder(self.viewer, self._keys)()
        self._update_train_button()

    def _on_docked(self, docked: bool):
        """Shortcuts only while the widget is in the viewer (a closed dock keeps no key)."""
        if self._closed:
            return
        if docked:
            self._bind_keys()
        else:
            self._unbind_keys()

    def _update_train_button(self):
        stop = f" ({STOP_KEY})" if STOP_KEY in self._keys else ""
        if self.running:
            self._train.text = "Stop"
            self._train.tooltip = f"Stop training{stop}: the best weights so far are kept"
        else:
            self._train.text = "Train"
            train = f" ({TRAIN_KEY})" if TRAIN_KEY in self._keys else ""
            self._train.tooltip = (f"Fine-tune the base model on your strokes{train}; while it trains, this button "
                                   f"stops it{stop} and keeps the best weights")

    # ---- pickers -------------------------------------------------------------------------
    def _model_choices(self, *_):
        return model_names()

    def refresh_models(self, select: str | None = None):
        if self._closed:
            return
        if not refresh_model_combo(self._base, select):  # viewer closed: stop listening
            self._closed = True
            model_bus.changed.disconnect(self.refresh_models)
            return
        self._update_model_buttons()

    def _update_model_buttons(self):
        """Export... and Delete name the model they act on (the Base model picked)."""
        from ..core.models import list_models

        name = self._base.value
        if not name:
            self._export.text, self._delete.text = "Export...", "Delete"
            self._export.enabled = self._delete.enabled = False
            return
        self._export.text = f"Export '{_short(name)}'..."
        self._export.enabled = True
        self._export.tooltip = f"Write the model '{name}' (the Base model picked above) to a .pt file"
        self._delete.text = f"Delete '{_short(name)}'"
        try:
            shipped = name in {m.name for m in list_models() if m.source == "shipped"}
        except Exception:  # noqa: BLE001 - Delete then says why it cannot
            shipped = False
        self._delete.enabled = not shipped
        self._delete.tooltip = (f"'{name}' ships with napari-unet and cannot be deleted" if shipped
                                else f"Delete your model '{name}' (the Base model picked above; asks first)")

    def _owner_image(self, layer) -> Image | None:
        """The open image ``layer`` was made for (see :func:`annotation_owner`), if any."""
        owner = annotation_owner(layer)
        if owner is None:
            return None
        for lay in self.viewer.layers:
            if isinstance(lay, Image) and lay.name == owner:
                return lay
        return None  # made for an image that is not open (or was renamed): unknown

    def _fits(self, image: Image, layer) -> bool:
        """``layer`` can annotate ``image``: a Labels layer of its shape, not a prediction
        layer, not made for another open image."""
        if not isinstance(layer, Labels) or _common.is_plugin_layer(layer) or layer.multiscale:
            return False
        other = self._owner_image(layer)
        return (other is None or other is image) and tuple(layer.data.shape) == _labels_shape(image)

    def _annotation_for(self, image: Image):
        """The annotation layer to pair with ``image``: the current one if made for it, else
        the image's own (the topmost), else the current one if it fits, else any that fits,
        else ``None``."""
        current = self._annotation.value
        layers = self.viewer.layers
        choices = [lay for lay in self._annotation.choices if lay is not None and lay in layers]  # none just removed
        if current is not None and annotation_owner(current) == image.name and current in choices:
            return current
        own = [lay for lay in choices if annotation_owner(lay) == image.name]
        if own:
            fit = [lay for lay in own if self._fits(image, lay)]  # of the image's shape, if any is
            return max(fit or own, key=self.viewer.layers.index)
        if current in choices and self._fits(image, current):
            return current
        fitting = [lay for lay in choices if self._fits(image, lay) and annotation_owner(lay) is None]
        return max(fitting, key=self.viewer.layers.index) if fitting else None

    def _follow_active(self, event=None):
        if self._closed:
            return
        layer = self.viewer.layers.selection.active
        if isinstance(layer, Image) and self._worker is None and layer in self._image.choices and not _common.is_plugin_layer(layer):
            self._image.value = layer
        elif isinstance(layer, Labels) and layer in self._annotation.choices and not _common.is_plugin_layer(layer):
            owner = self._owner_image(layer)
            if owner is not None and owner is not self._image.value:
                if self._worker is not None or owner not in self._image.choices:
                    return  # the image is locked while training: keep the pair
                self._annotation.value = layer  # so that the image's change keeps it
                self._image.value = owner
            self._annotation.value = layer

    def _follow_image(self):
        """Pick the chosen image's own annotation layer, and a default model name."""
        image = self._image.value
        if image is None or self._closed:
            return
        ann = self._annotation_for(image)
        if ann is not self._annotation.value:
            self._annotation.value = ann
        if self._name.value in ("", self._auto_name):  # never replace a name the user typed
            self._auto_name = _safe_name(f"{image.name} fine-tuned")
            self._name.value = self._auto_name

    def _on_layer_inserted(self, event=None):
        """A new layer: pick it when it is the chosen image's annotation and none is picked
        (or the picked one belongs to another image). Done on the next event-loop turn, once
        the pickers list the layer."""
        if self._closed:
            return

        def match():
            if self._closed:
                return
            try:
                image, current = self._image.value, self._annotation.value
                if image is None:
                    return
                if current is None or self._owner_image(current) not in (None, image):
                    ann = self._annotation_for(image)
                    if ann is not current:
                        self._annotation.value = ann
            except RuntimeError:  # the widget is gone
                pass

        QTimer.singleShot(0, match)

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

    def new_annotation_layer(self) -> Labels | None:
        """An empty annotation layer for the chosen image, ready to paint label 1 (cell)."""
        image = self._image.value
        if image is None:
            _common.show_info("Open an image first, then make an annotation layer for it")
            return None
        data = np.zeros(_labels_shape(image), np.uint8)
        layer = self.viewer.add_labels(
            data,
            name=_common.unique_layer_name(self.viewer, f"{image.name} annotation"),
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
            name=_common.unique_layer_name(self.viewer, f"{image.name} annotation"),
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
        owner = self._owner_image(ann)
        if owner is not None and owner is not image:
            _common.show_error(
                f"Annotation '{ann.name}' was made for image '{owner.name}', not '{image.name}': pick "
                f"'{image.name}''s annotation layer (or make one with 'New annotation layer'), or pick image '{owner.name}'"
            )
            return
        if ann.multiscale:
            _common.show_error(f"Annotation '{ann.name}' is multiscale; use a plain Labels layer")
            return
        shape = _labels_shape(image)
        if tuple(ann.data.shape) != shape:
            _common.show_error(
                f"Annotation '{ann.name}' has shape {tuple(ann.data.shape)} but image '{image.name}' has shape {shape}: "
                "pick the image's own annotation layer or make one with 'New annotation layer'"
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
        self._vals = []
        self._warned = set()
        self._revert_pending = False
        self._preview_count = 0
        self._set_warning("")
        self._save.enabled = False
        self._save.tooltip = self._SAVE_TIP
        self._revert.enabled = False
        self._plot.clear()
        self._budget_s = budget
        self._t0 = time.perf_counter()
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
        self._update_train_button()
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
        kept = self._kept_note()
        if kept:
            msg += f"; {kept}"
        self._status.value = msg
        if p.val_score is not None:
            self._check_score(p.val_score, p.elapsed)
        now = time.perf_counter()
        if p.val_score is not None or now - self._last_draw > 0.5:
            self._last_draw = now
            self._plot.draw()

    def _kept_note(self, final: bool = False) -> str:
        """The score of the weights Stop keeps now (``trainer.best_score``, never a score
        seen earlier: a later validation within ``keep_within`` of the top score replaces
        the kept weights by longer-trained ones that score a little lower)."""
        t = self._trainer
        if t is None or t.best_score is None:
            return ""
        best, base = t.best_score, self._base_score
        note = f"{'kept' if final else 'Stop keeps'} weights scoring {best:.3f}"
        if base is not None:
            note += f" (base {base:.3f})"
        top = getattr(t, "top_score", None)
        if top is not None and best < top - 5e-4:
            note += f"; the top score {top:.3f} was earlier: later weights within {t.cfg.keep_within:g} of it are kept"
        return note

    def _check_score(self, score: float, elapsed: float = 0.0):
        """The guardrail: warn when validation stays below the base model's score.

        One validation below it is noise (a few held-out strokes, and a moving average that
        dips before it climbs): the dock's warning line needs :data:`BELOW_BASE_RUN`
        validations in a row below it, a popup also :data:`BELOW_BASE_POPUP_S` seconds of
        training. The line goes as soon as the trend no longer holds.
        """
        base = self._base_score
        self._vals.append(score)
        if base is None:
            return
        recent = self._vals[-BELOW_BASE_RUN:]
        trend = len(recent) == BELOW_BASE_RUN and all(v < base - BELOW_BASE_MARGIN for v in recent)
        if trend:
            scores = ", ".join(f"{v:.3f}" for v in recent)
            self._set_warning(
                f"The last {BELOW_BASE_RUN} validation scores ({scores}) are below the base model's {base:.3f}: "
                "the current weights do worse on your held-out strokes. Stop keeps the best weights (the base "
                "model's if none is better); 'Revert to base' discards the training.",
                kind="below",
            )
            self._revert.enabled = True
            if elapsed >= BELOW_BASE_POPUP_S and "below" not in self._warned:
                self._warned.add("below")
                _common.show_warning(
                    f"U-Net fine-tuning: after {elapsed:.0f} s the validation score ({score:.3f}) stays below the "
                    f"base model's ({base:.3f}); Stop keeps the best weights"
                )
        elif self._warning_kind == "below":
            self._set_warning("")

    def _set_warning(self, text: str, kind: str = ""):
        self._warning.value = text
        self._warning.visible = bool(text)
        self._warning_kind = kind if text else ""

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
            _common.mark_written(upsert_labels(self.viewer, data, layer, "cells", opacity=0.4))
            QTimer.singleShot(0, lambda: self._write_instances(layer, prev, sl, shape))
        else:
            cells.data[sl] = prev.semantic
            cells.refresh()
            _common.mark_written(cells)  # a preview, not a hand edit: Segment may replace it
            self._write_instances(layer, prev, sl, shape)
        if prev.uncertainty is not None:
            QTimer.singleShot(0, lambda: self._write_uncertainty(layer, prev, sl, shape))
        self._preview_count += 1
        self._created = []  # the layers hold a result now
        if prev.collapsed:
            what = "no cells" if prev.collapsed == "nothing" else "cells everywhere"
            self._set_warning(
                f"The model now predicts {what} in the view (collapse): check the annotation "
                "(1 = cell, 2 = not cell), or press 'Revert to base'.",
                kind="collapse",
            )
            self._revert.enabled = True
            if "collapse" not in self._warned:
                self._warned.add("collapse")
                _common.show_warning(f"U-Net fine-tuning: the model predicts {what} in the view")
        elif self._warning_kind == "collapse":
            self._set_warning("")

    def _write_instances(self, layer, prev, sl, shape):
        if self._closed or layer not in self.viewer.layers:
            return
        new = prev.instances
        inst = self._plugin_layer(layer, "instances", shape)
        if inst is None:
            data = np.zeros(shape, np.uint32 if int(new.max()) >= 2**16 else np.uint16)
            data[sl] = new
            _common.mark_written(upsert_labels(self.viewer, data, layer, "instances", opacity=0.6))
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
        _common.mark_written(inst)

    # ---- "paint here next" -------------------------------------------------------------------
    def _uncertainty_layer(self, layer, shape=None):
        for lay in self.viewer.layers:
            tag = lay.metadata.get("napari-unet") if isinstance(lay, Image) else None
            if tag and tag.get("source") == layer.name and tag.get("kind") == "uncertainty" and (
                    shape is None or tuple(lay.data.shape) == tuple(shape)):
                return lay
        return None

    def _write_uncertainty(self, layer, prev, sl, shape):
        """The preview's uncertainty into ``<image> uncertainty`` (created hidden: *Paint here
        next* shows it), region by region like the labels."""
        if self._closed or layer not in self.viewer.layers:
            return
        unc = self._uncertainty_layer(layer, shape)
        if unc is None:
            data = np.zeros(shape, np.float32)
            data[sl] = prev.uncertainty
            self.viewer.add_image(data, name=_common.unique_layer_name(self.viewer, f"{layer.name} uncertainty"),
                                  colormap="magma", blending="additive", opacity=0.6, contrast_limits=(0, 1),
                                  scale=layer.scale[-len(shape):], translate=layer.translate[-len(shape):], visible=False,
                                  metadata={"napari-unet": {"source": layer.name, "kind": "uncertainty"}})
            self.viewer.layers.selection.active = layer  # keep the user's selection on the image
        else:
            unc.data[sl] = prev.uncertainty
            unc.refresh()
        try:
            self._next.enabled = True
        except RuntimeError:
            pass

    def paint_here_next(self):
        """Show the uncertainty layer and centre the view on the most uncertain region of the
        current plane that is not painted yet; returns its ``(y, x)`` in data pixels."""
        from ..core.uncertainty import most_uncertain

        layer = self._layer or self._image.value
        unc = self._uncertainty_layer(layer) if layer is not None else None
        if unc is None:
            _common.show_info("No uncertainty yet: press Train, it comes with the first preview")
            return None
        lead = unc.data.ndim - 2
        index = tuple(int(i) for i in self.viewer.dims.current_step[: lead]) if lead else ()
        plane = np.asarray(unc.data[index] if index else unc.data)
        ann = self._annotation.value
        painted = None
        if ann is not None and tuple(ann.data.shape[-2:]) == plane.shape:
            painted = np.asarray(ann.data[index] if index and ann.data.ndim > 2 else ann.data) > 0
        y, x, level = most_uncertain(plane, size=48, exclude=painted, within=plane > 0)
        if level <= 0:
            _common.show_info("The model is sure everywhere in the previewed region")
            return None
        unc.visible = True
        world = unc.data_to_world(index + (y, x))
        self.viewer.camera.center = tuple(world[-2:])
        self._status.value = (f"Paint next around ({y}, {x}): the model is least sure there "
                              f"(mean uncertainty {level:.2f} of 1; bright in '{unc.name}')")
        return y, x

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
        self._update_train_button()
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
        base_name = self._info.base_name if self._info is not None else "the base model"
        if self._no_improvement():
            self._status.value = (
                f"Stopped after {t.step} steps ({secs:.0f} s): no improvement over the base model "
                f"(score {base:.3f}); its weights were kept"
            )
            self._save.tooltip = (f"Training did not improve on the base model '{base_name}': saving writes a copy "
                                  "of it (its weights) under this name")
        elif best is not None:
            note = ""
            if base is not None and best > base:
                if self._warning_kind == "below":
                    self._set_warning("")  # the kept weights beat the base model: the warning is moot
                if "below" in self._warned:
                    note = " The earlier warning no longer applies: the kept weights beat the base model."
            self._status.value = (
                f"Stopped after {t.step} steps ({secs:.0f} s); {self._kept_note(final=True)}. Save them under a name."
                + note
            )
        else:
            self._status.value = f"Stopped after {t.step} steps ({secs:.0f} s)"
        self._save.enabled = True
        self._revert.enabled = True

    def _no_improvement(self) -> bool:
        """The kept weights are the base model's: validation never beat its score."""
        t, base = self._trainer, self._base_score
        return t is not None and t.best_score is not None and base is not None and t.best_score <= base

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
        from ..core.finetune import save_finetuned
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
        plain, detail = plain_calibration(load_model(path).meta)
        same = self._no_improvement()
        base_name = self._info.base_name if self._info is not None else "the base model"
        text = f"Saved '{path.stem}'; it is now in the Segment widget's model list."
        if same:
            text += (f" It has the weights of the base model '{base_name}': training did not improve on it "
                     f"(score {self._base_score:.3f}).")
        self._status.value = text + (f" {plain}." if plain else "")
        self._status.native.setToolTip(f"Saved to {path}" + (f"\n{detail}" if detail else ""))
        if same:
            _common.show_warning(f"U-Net: saved '{path.stem}', but it has the same weights as the base model "
                                 f"'{base_name}': training did not improve on it")
        else:
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
