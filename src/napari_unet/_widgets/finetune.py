"""The Fine-tune dock widget: paint a few strokes, train, watch the model learn, save it.

Training runs in a napari worker thread (a generator over
:class:`napari_unet.core.finetune.FinetuneSession`); the GUI thread only updates the
progress bar, the plot and the preview layers, so the viewer stays responsive. Torch in the
worker uses all cores but one, leaving one for the GUI.
"""

from __future__ import annotations

import time
import weakref

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label, LineEdit, ProgressBar, PushButton, SpinBox, create_widget
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtWidgets import QSizePolicy, QWidget

from ..core.models import FINETUNE_BASE
from . import _common
from ._common import model_bus, model_names, refresh_model_combo, upsert_labels
from .annotation import ANNOTATION_KEY, CELL_COLOR, NOT_CELL_COLOR, AnnotationMixin, annotation_owner  # noqa: F401 - API
from .finetune_jobs import WARMED_UP, _Job, _preview_job, _start_warm_up, _train_job  # noqa: F401
from .finetune_preview import PreviewMixin, _image_array, _labels_shape
from .model_manager import ModelManagerMixin, _safe_name, plain_calibration  # noqa: F401 - plain_calibration: API
from .plot import _Plot

__all__ = ["FinetuneWidget", "ANNOTATION_KEY"]

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


def _short(name: str, n: int = 18) -> str:
    """A model name short enough for a button."""
    return name if len(name) <= n else name[: n - 1] + "\u2026"


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


class FinetuneWidget(AnnotationMixin, PreviewMixin, ModelManagerMixin, Container):
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
        self._uncertainty: dict = {}  # (image name, shape) -> the previews' uncertainty (see PreviewMixin)
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
