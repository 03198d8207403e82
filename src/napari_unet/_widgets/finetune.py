"""The Fine-tune dock widget: paint a few strokes, train, watch the model learn, save it.

Training runs in a napari worker thread (a generator over
:class:`napari_unet.core.finetune.FinetuneSession`); the GUI thread only updates the
progress bar, the plot and the preview layers, so the viewer stays responsive. Torch in the
worker uses all cores but one, leaving one for the GUI.
"""

from __future__ import annotations

import time

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label, LineEdit, ProgressBar, PushButton, SpinBox, create_widget
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QSizePolicy

from ..core.finetune_control import FinetuneRun, Update, check_annotation, preview_region
from ..core.models import FINETUNE_BASE
from . import _common
from ._common import model_bus, model_names
from .annotation import ANNOTATION_KEY, CELL_COLOR, NOT_CELL_COLOR, AnnotationMixin, annotation_owner  # noqa: F401 - API
from .docking import DockedShortcuts, on_window_close
from .finetune_jobs import _Job, _preview_job, _train_job, start_warm_up
from .finetune_preview import PreviewMixin, _image_array, _labels_shape
from .model_manager import ModelManagerMixin, _safe_name, plain_calibration  # noqa: F401 - plain_calibration: API
from .plot import _Plot

__all__ = ["FinetuneWidget", "ANNOTATION_KEY"]

#: Keyboard shortcuts (bound on the viewer while the widget is docked; not napari defaults).
TRAIN_KEY = "Shift-T"
STOP_KEY = "Shift-S"
#: The README's Fine-tune section (the widget's Help link).
HELP_URL = "https://pypi.org/project/napari-unet/"  # the README, as published with the package
_STATUS_TIP = "What the widget is doing, and the result of the last action"


class FinetuneWidget(AnnotationMixin, PreviewMixin, ModelManagerMixin, Container):
    """Annotation, base model, Train / Stop, live plot and preview, model management.

    The controls are public attributes (``image``, ``annotation_layer``, ``base``,
    ``budget``, ``train_button``, ``status``, ``warning``, ``model_name``, ``save_button``...)
    so that scripts and tests drive the widget as a user does; ``run`` is the Qt-free state
    of the current training run (:class:`~napari_unet.core.finetune_control.FinetuneRun`).
    """

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        # ---- data --------------------------------------------------------------------
        self.image = create_widget(annotation=Image, label="Image", options={
            "tooltip": "The image to fine-tune on; follows the image layer you select. Previews go to its "
                       "'<image> cells' / '<image> instances' layers"})
        self.annotation_layer = create_widget(annotation=Labels, label="Annotation", options={
            "nullable": True,
            "tooltip": "Your strokes for this image (1 = cell, 2 = not cell, 0 = not annotated); picks the "
                       "image's own annotation layer when the image changes"})
        self.new_annotation_button = PushButton(text="New annotation layer", tooltip="An empty Labels layer: paint 1 = cell, 2 = not cell")
        self.from_prediction_button = PushButton(text="Start from prediction", tooltip="Copy the Segment result into a new annotation layer to correct")
        self.reading = Label(label="Reading", value="", tooltip="How the annotation will be read: sparse strokes, "
                              "dense labels (1 = cell, 2 = not cell) or instances (each id above 2 one cell)")
        self.all_pairs = CheckBox(text="Also train on other annotated images", value=True,
                                   tooltip="Also train on the annotation layers made for the other open images "
                                           "(with 'New annotation layer' or 'Start from prediction')")
        # ---- training ------------------------------------------------------------------
        self.base = ComboBox(label="Base model", choices=self._model_choices,
                              tooltip="The model fine-tuning starts from (nuclei first: the best base measured on a new modality)")
        if FINETUNE_BASE in self.base.choices:
            self.base.value = FINETUNE_BASE
        self.budget = SpinBox(label="Time budget (s)", value=60, min=0, max=86400, step=10,
                               tooltip="Training stops after this many seconds; 0 = until you press Stop")
        self.train_button = PushButton(text="Train")
        self.progress_bar = ProgressBar(label="", min=0, max=1000, value=0, visible=False,
                                     tooltip="Share of the time budget used")
        self.status = Label(label="", value="Paint a few strokes, then Train", tooltip=_STATUS_TIP)
        self.warning = Label(label="", value="", visible=False,
                              tooltip="A guardrail: the training may be going wrong (Stop keeps the best weights either way)")
        self.revert_button = PushButton(text="Revert to base", enabled=False,
                                  tooltip="Discard the fine-tuned weights and go back to the base model")
        self.next_button = PushButton(text="Paint here next", enabled=False,
                                tooltip="Show where the model is least sure (the '<image> uncertainty' layer, updated "
                                        "with every preview) and centre the view on the most uncertain unpainted region")
        # ---- models ------------------------------------------------------------------
        self.model_name = LineEdit(label="Save as", value="",
                              tooltip="The name of the fine-tuned model in the model lists (letters, digits, "
                                      "spaces, '.', '_', '-'); follows the image until you type one")
        self.save_button = PushButton(text="Save", enabled=False, tooltip=self._SAVE_TIP)
        self.import_button = PushButton(text="Import...", tooltip="Add a model file (.pt) to your models")
        self.export_button = PushButton(text="Export...", tooltip="Write the base model picked above to a .pt file")
        self.delete_button = PushButton(text="Delete", tooltip="Delete the user model picked above")
        self.help_link = Label(value=f'<a href="{HELP_URL}">Help: how to fine-tune (README)</a>',
                           tooltip=f"Open the README (its Fine-tune section) in your browser: {HELP_URL}")
        row = dict(layout="horizontal", labels=False)
        self.extend([
            self.image,
            self.annotation_layer,
            Container(widgets=[self.new_annotation_button, self.from_prediction_button], **row),
            self.reading,
            self.all_pairs,
            self.base,
            self.budget,
            Container(widgets=[self.train_button, self.revert_button, self.next_button], **row),
            self.progress_bar,
            self.status,
            self.warning,
            Container(widgets=[self.model_name, self.save_button], **row),
            Container(widgets=[self.import_button, self.export_button, self.delete_button], **row),
            self.help_link,
        ])
        self.warning.native.setStyleSheet("color: #f0a040")
        for label in (self.status, self.warning, self.reading):
            # long notes (paths, model names) wrap instead of widening the dock
            label.native.setWordWrap(True)
            label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            label.native.setMinimumWidth(60)
        self.help_link.native.setTextFormat(Qt.TextFormat.RichText)
        self.help_link.native.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.help_link.native.setOpenExternalLinks(True)
        self.plot = _Plot()
        self.plot.setToolTip("Loss (orange, scaled to its maximum) and validation score on held-out strokes "
                              "(blue dots, 0..1 on the right) against training time; dashed: the base model's score")
        self.native.layout().insertWidget(9, self.plot)
        # ---- state ---------------------------------------------------------------------
        self._worker = None
        self._job: _Job | None = None
        self._trainer = None
        self._info = None
        self.run = FinetuneRun()  # what the status and warning lines say (Qt-free)
        self._layer: Image | None = None  # the image being trained on and previewed
        self._created: list = []
        self._auto_name = ""  # the Save-as name the widget proposed (replaced when the image changes)
        self._revert_pending = False
        self._activity = None  # the run's progress bar in napari's activity dock
        self._closed = False
        self._last_draw = 0.0
        self.previews_shown = 0  # previews written into the layers during this run
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
        for control, action in ((self.new_annotation_button, self.new_annotation_layer),
                                (self.from_prediction_button, self.annotation_from_prediction),
                                (self.train_button, self._on_train), (self.revert_button, self.revert_to_base),
                                (self.next_button, self.paint_here_next), (self.save_button, self.save_model),
                                (self.import_button, self._import_dialog), (self.export_button, self._export_dialog),
                                (self.delete_button, self.delete_model), (self.annotation_layer, self._watch_annotation),
                                (self.image, self._follow_image), (self.base, self._update_model_buttons)):
            control.changed.connect(lambda *_, act=action: act())
        self.status.changed.connect(lambda *_: self.status.native.setToolTip(_STATUS_TIP))  # details go with one message
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.viewer.layers.events.inserted.connect(self._on_layer_inserted)
        self.viewer.layers.selection.events.active.connect(self._follow_active)
        model_bus.changed.connect(self.refresh_models)
        self.native.destroyed.connect(self._view_timer.stop)
        self.native.destroyed.connect(self._reading_timer.stop)
        # ---- keyboard shortcuts while docked; training stops when the window closes ----------
        self._shortcuts = DockedShortcuts(self.viewer, self, self.native, {
            TRAIN_KEY: lambda w: w.running or w._on_train(),
            STOP_KEY: lambda w: w.running and w.stop(),
        }, on_change=self._update_train_button)
        self._shortcuts.bind()
        self._close_watch = on_window_close(self.native, self._abort)
        self.native.destroyed.connect(self._shortcuts.close)
        self.reset_choices()
        self._follow_active()
        self._follow_image()
        self._update_model_buttons()
        #: set once torch's imports, started in the background as the widget opens, are done
        self.warmed_up = start_warm_up()

    _SAVE_TIP = "Save the fine-tuned model under this name"

    def _update_train_button(self):
        keys = self._shortcuts.bound if hasattr(self, "_shortcuts") else {}
        stop = f" ({STOP_KEY})" if STOP_KEY in keys else ""
        if self.running:
            self.train_button.text = "Stop"
            self.train_button.tooltip = f"Stop training{stop}: the best weights so far are kept"
        else:
            self.train_button.text = "Train"
            train = f" ({TRAIN_KEY})" if TRAIN_KEY in keys else ""
            self.train_button.tooltip = (f"Fine-tune the base model on your strokes{train}; while it trains, this button "
                                   f"stops it{stop} and keeps the best weights")

    # ---- pickers -------------------------------------------------------------------------
    def _model_choices(self, *_):
        return model_names()

    # ---- training --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._worker is not None

    def _on_train(self):
        if self._worker is not None:
            self.stop()
            return
        image, ann = self.image.value, self.annotation_layer.value
        if image is None:
            _common.show_info("Open an image first")
            return
        if ann is None:
            _common.show_error("No annotation layer: press 'New annotation layer' and paint 1 = cell, 2 = not cell")
            return
        if ann.multiscale:
            _common.show_error(f"Annotation '{ann.name}' is multiscale; use a plain Labels layer")
            return
        owner = self._owner_image(ann)
        shape = _labels_shape(image)
        pairs = self._pairs() if tuple(ann.data.shape) == shape else [(image, ann)]
        anns = [np.array(a.data, copy=True) for _, a in pairs]  # painting may go on meanwhile
        problem = check_annotation(image.name, ann.name, owner.name if owner is not None and owner is not image else None,
                                   shape, ann.data.shape, anns)
        if problem:
            _common.show_error(problem)
            return
        images = [np.asarray(_image_array(i)) for i, _ in pairs]
        rgbs = [bool(i.rgb) for i, _ in pairs]
        budget = float(self.budget.value) or None
        self._created = self._ensure_preview_layers(image, ann)
        self.start_training(images, anns, rgbs, budget, layer=image)

    def start_training(self, images, annotations, rgbs, budget, layer: Image | None = None):
        from ..core.finetune import default_threads

        job = _Job()
        self._job = job
        self._layer = layer
        self._trainer = self._info = None
        self.run = FinetuneRun(budget)
        self._revert_pending = False
        self.previews_shown = 0
        self._set_warning("")
        self.save_button.enabled = False
        self.save_button.tooltip = self._SAVE_TIP
        self.revert_button.enabled = False
        self.plot.clear()
        self.progress_bar.value = 0
        self.progress_bar.max = 1000 if budget else 0
        self.progress_bar.visible = True
        self.status.value = "loading the base model..."
        self._update_request()
        worker = create_worker(
            _train_job, job, images, annotations, rgbs, self.base.value, budget, default_threads(),
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
        self._start_activity(job, budget)
        self._view_timer.start()
        worker.start()

    def stop(self):
        """Stop training after the current step; the best weights are kept."""
        if self._job is not None:
            self._job.stop()
            if self._worker is not None:
                self.status.value = "stopping (keeping the best weights)..."

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
        try:
            visible = np.asarray(layer.corner_pixels)
        except Exception:  # noqa: BLE001 - any odd transform: the centre of the plane
            visible = None
        region = preview_region((H, W), visible)
        return PreviewRequest(data, index, region, bool(layer.rgb), key=layer.name)

    # ---- worker events (GUI thread) ------------------------------------------------------
    def _on_event(self, ev):
        if self._closed:
            return
        from ..core.finetune import Preview
        from ..core.training import Progress

        if isinstance(ev, tuple) and ev and ev[0] == "ready":
            _, self._trainer, self._info = ev
            self.reading.value = self._info.reading
            self._apply(self.run.ready(self._trainer, self._info))
        elif isinstance(ev, tuple) and ev and ev[0] == "final":
            self._show_preview(ev[1])
        elif isinstance(ev, Progress):
            self._on_progress(ev)
        elif isinstance(ev, Preview):
            self._show_preview(ev)

    def _on_progress(self, p):
        self.plot.add(p)
        self._apply(self.run.progress(p))
        now = time.perf_counter()
        if p.step and (p.val_score is not None or now - self._last_draw > 0.5):
            self._last_draw = now
            self.plot.draw()

    def _apply(self, up: Update):
        """Show what the run state says (:class:`~napari_unet.core.finetune_control.Update`)."""
        if up.status is not None:
            self.status.value = up.status
        if up.progress is not None:
            self.progress_bar.value = int(1000 * up.progress)
            if self._activity is not None:
                self._activity.n = int(1000 * up.progress)
                self._activity.refresh()
        if up.warning is not None:
            self.warning.value = up.warning
            self.warning.visible = bool(up.warning)
        if up.revert:
            self.revert_button.enabled = True
        if up.save_tip is not None:
            self.save_button.tooltip = up.save_tip
        if up.popup:
            _common.show_warning(up.popup)

    def _set_warning(self, text: str):
        self._apply(self.run.clear_warning() if not text else Update(warning=text))

    def _on_error(self, exc):
        if self._closed:
            return
        self._remove_unused()
        self.status.value = "training failed; nothing was changed"
        _common.notify_error(exc, "Fine-tuning")

    def _on_finished(self):
        self._view_timer.stop()
        self._worker = None
        self._finish_activity()
        if self._closed:
            return
        self._update_train_button()
        self.progress_bar.visible = False
        t = self._trainer
        if t is None:
            return
        self.plot.draw()
        if self._revert_pending:
            self._revert_pending = False
            self._apply_revert()
            return
        self._apply(self.run.finished())
        self.save_button.enabled = True

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
        self.save_button.enabled = False
        self.revert_button.enabled = False
        self.status.value = f"Reverted to the base model '{self._info.base_name}'"
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

    def _start_activity(self, job, budget):
        """The run's progress bar in napari's activity dock (public ``napari.utils.progress``)."""
        from napari.utils import progress

        self._finish_activity()
        self._activity = progress(total=1000 if budget else 0, desc="napari-unet: fine-tuning")
        self.native.destroyed.connect(lambda *_: job.stop())

    def _finish_activity(self):
        if self._activity is not None:
            self._activity.close()
            self._activity = None

    def _abort(self) -> bool:
        """The viewer is closing: stop training and wait (briefly) for the thread to end."""
        self._closed = True
        self._shortcuts.close()
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
