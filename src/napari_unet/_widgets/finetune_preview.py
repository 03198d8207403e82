"""The Fine-tune widget's live previews: the current weights' segmentation written into the
plugin's ``cells`` / ``instances`` layers region by region, the uncertainty layer and
*Paint here next* (mixed into :class:`.finetune.FinetuneWidget`)."""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import QTimer

from . import _common
from ._common import upsert_labels


def _image_array(layer: Image) -> np.ndarray:
    return layer.data[0] if layer.multiscale else layer.data


def _labels_shape(layer: Image) -> tuple:
    shape = tuple(_image_array(layer).shape)
    return shape[:-1] if layer.rgb else shape


class PreviewMixin:
    """Writes previews; uses the widget's viewer, image, annotation and status line."""

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
        self.previews_shown += 1
        self._created = []  # the layers hold a result now
        self._apply(self.run.preview(prev.collapsed))

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
        """Keep the preview's uncertainty, region by region like the labels, in an array per
        image; the ``<image> uncertainty`` layer shows that array and is created only when
        *Paint here next* is pressed (adding a layer costs the event loop ~200 ms, too much
        while training)."""
        if self._closed or layer not in self.viewer.layers:
            return
        key = (layer.name, tuple(shape))
        data = self._uncertainty.get(key)
        if data is None:
            data = self._uncertainty[key] = np.zeros(shape, np.float32)
        data[sl] = prev.uncertainty
        unc = self._uncertainty_layer(layer, shape)
        if unc is not None and unc.visible:
            unc.refresh()
        try:
            self.next_button.enabled = True
        except RuntimeError:
            pass

    def _show_uncertainty(self, layer):
        """The ``<image> uncertainty`` layer (created over the kept array if missing), shown."""
        unc = self._uncertainty_layer(layer)
        if unc is None:
            shape = _labels_shape(layer)
            data = self._uncertainty.get((layer.name, tuple(shape)))
            if data is None:
                return None
            active = self.viewer.layers.selection.active  # e.g. the annotation being painted
            unc = self.viewer.add_image(data, name=_common.unique_layer_name(self.viewer, f"{layer.name} uncertainty"),
                                        colormap="magma", blending="additive", opacity=0.6, contrast_limits=(0, 1),
                                        scale=layer.scale[-len(shape):], translate=layer.translate[-len(shape):],
                                        metadata={"napari-unet": {"source": layer.name, "kind": "uncertainty"}})
            if active is not None and active in self.viewer.layers:
                self.viewer.layers.selection.active = active  # the user's selection stays
        unc.visible = True
        unc.refresh()
        return unc

    def paint_here_next(self):
        """Show the uncertainty layer and centre the view on the most uncertain region of the
        current plane that is not painted yet; returns its ``(y, x)`` in data pixels."""
        from ..core.uncertainty import most_uncertain

        layer = self._layer or self.image.value
        unc = self._show_uncertainty(layer) if layer is not None else None
        if unc is None:
            _common.show_info("No uncertainty yet: press Train, it comes with the first preview")
            return None
        lead = unc.data.ndim - 2
        index = tuple(int(i) for i in self.viewer.dims.current_step[: lead]) if lead else ()
        plane = np.asarray(unc.data[index] if index else unc.data)
        ann = self.annotation_layer.value
        painted = None
        if ann is not None and tuple(ann.data.shape[-2:]) == plane.shape:
            painted = np.asarray(ann.data[index] if index and ann.data.ndim > 2 else ann.data) > 0
        y, x, level = most_uncertain(plane, size=48, exclude=painted, within=plane > 0)
        if level <= 0:
            _common.show_info("The model is sure everywhere in the previewed region")
            return None
        world = unc.data_to_world(index + (y, x))
        _common.camera(self.viewer).center = tuple(world[-2:])
        self._mark_spot(layer, unc, index + (y, x))
        self.status.value = (f"Paint next around ({y}, {x}): the model is least sure there "
                              f"(mean uncertainty {level:.2f} of 1; bright in '{unc.name}')")
        return y, x

    def _plugin_layer(self, layer, kind, shape):
        for lay in self.viewer.layers:
            tag = lay.metadata.get("napari-unet") if isinstance(lay, Labels) else None
            if tag and tag.get("source") == layer.name and tag.get("kind") == kind and tuple(lay.data.shape) == tuple(shape):
                return lay
        return None

    def _mark_spot(self, layer, unc, point):
        """A ring around the spot in ``<image> paint here`` (one point, replaced each time)."""
        name = f"{layer.name} paint here"
        marker = next((lay for lay in self.viewer.layers if lay.name == name and _common.is_plugin_layer(lay)), None)
        if marker is None:
            active = self.viewer.layers.selection.active
            self.viewer.add_points([point], name=name, size=48, symbol="ring", face_color="transparent",
                                   border_color="yellow", scale=unc.scale, translate=unc.translate,
                                   metadata={"napari-unet": {"source": layer.name, "kind": "paint here"}})
            if active is not None and active in self.viewer.layers:
                self.viewer.layers.selection.active = active
        else:
            marker.data = np.asarray([point], float)

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
