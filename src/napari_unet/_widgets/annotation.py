"""The Fine-tune widget's annotation layers: which Labels layer annotates which image,
new and from-prediction annotation layers styled for painting (1 = cell, 2 = not cell),
and what the painted ids mean (mixed into :class:`.finetune.FinetuneWidget`)."""

from __future__ import annotations

import re

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import QTimer

from . import _common
from ._common import spatial_transform
from .finetune_preview import _labels_shape
from .model_manager import _safe_name

#: Metadata key of annotation layers this widget created: ``{"image": <image layer name>}``.
ANNOTATION_KEY = "napari-unet-annotation"
CELL_COLOR = (0.15, 0.85, 0.25, 1.0)  # label 1 = cell: green
NOT_CELL_COLOR = (0.95, 0.2, 0.85, 1.0)  # label 2 = not cell: magenta


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


class AnnotationMixin:
    """Finding, creating and describing annotation layers; uses the widget's pickers."""

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
        current = self.annotation_layer.value
        layers = self.viewer.layers
        choices = [lay for lay in self.annotation_layer.choices if lay is not None and lay in layers]  # none just removed
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

    def _watch_annotation(self):
        """Follow painting in the chosen annotation layer to say how it will be read."""
        old, new = self._watched, self.annotation_layer.value
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

        ann = self.annotation_layer.value
        if ann is None or self._closed:
            self.reading.value = ""
            return
        data = np.asarray(ann.data[0] if ann.multiscale else ann.data)
        planes = data.reshape((-1,) + data.shape[-2:]) if data.ndim >= 2 else data[None]
        kinds = [k for k in (annotation_kind(p) for p in planes) if k != "empty"]
        self.reading.value = describe_reading(kinds) if kinds else "empty: paint 1 = cell and 2 = not cell"

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
        self.annotation_layer.value = layer
        self._describe_annotation()

    def new_annotation_layer(self) -> Labels | None:
        """An empty annotation layer for the chosen image, ready to paint label 1 (cell)."""
        image = self.image.value
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
        self.status.value = "Paint cells with label 1 (green) and background with label 2 (magenta); 0 = not annotated"
        return layer

    def annotation_from_prediction(self) -> Labels | None:
        """A copy of the Segment result for the chosen image, to correct and train on.

        The instance prediction is copied as instance annotation (ids > 2), the semantic one
        as dense labels (1 = cell, 2 = not cell). The prediction layers are not modified.
        """
        image = self.image.value
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
        self.status.value = note
        return layer

    # ---- which image and annotation are picked ----------------------------------------------
    def _follow_active(self, event=None):
        if self._closed:
            return
        layer = self.viewer.layers.selection.active
        if isinstance(layer, Image) and self._worker is None and layer in self.image.choices and not _common.is_plugin_layer(layer):
            self.image.value = layer
        elif isinstance(layer, Labels) and layer in self.annotation_layer.choices and not _common.is_plugin_layer(layer):
            owner = self._owner_image(layer)
            if owner is not None and owner is not self.image.value:
                if self._worker is not None or owner not in self.image.choices:
                    return  # the image is locked while training: keep the pair
                self.annotation_layer.value = layer  # so that the image's change keeps it
                self.image.value = owner
            self.annotation_layer.value = layer

    def _follow_image(self):
        """Pick the chosen image's own annotation layer, and a default model name."""
        image = self.image.value
        if image is None or self._closed:
            return
        ann = self._annotation_for(image)
        if ann is not self.annotation_layer.value:
            self.annotation_layer.value = ann
        if self.model_name.value in ("", self._auto_name):  # never replace a name the user typed
            self._auto_name = _safe_name(f"{image.name} fine-tuned")
            self.model_name.value = self._auto_name

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
                image, current = self.image.value, self.annotation_layer.value
                if image is None:
                    return
                if current is None or self._owner_image(current) not in (None, image):
                    ann = self._annotation_for(image)
                    if ann is not current:
                        self.annotation_layer.value = ann
            except RuntimeError:  # the widget is gone
                pass

        QTimer.singleShot(0, match)

    def _pairs(self):
        """(image layer, annotation layer) pairs to train on; the chosen pair first."""
        image, ann = self.image.value, self.annotation_layer.value
        pairs = [(image, ann)]
        if self.all_pairs.value:
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
