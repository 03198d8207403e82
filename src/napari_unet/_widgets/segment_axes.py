"""The Segment widget's axes, anisotropy and channel: guessed from the layer, typed by the
user (kept per layer), checked, and the one-line plan of what Run will do (mixed into
:class:`.segment.SegmentWidget`)."""

from __future__ import annotations

from dataclasses import dataclass

from napari.layers import Image

from ._common import notify_error


def _plane_data(layer: Image):
    """The array Segment runs on: the layer's data, its full resolution if multiscale."""
    return layer.data[0] if layer.multiscale else layer.data


def _layer_dims(layer: Image, axes: str) -> str:
    """The letters of the layer's own dimensions: an RGB layer's colour axis is not one."""
    return axes[:-1] if layer.rgb else axes


@dataclass(frozen=True)
class _Geometry:
    """The result layers' axes (the image's without C and S), scale and translate."""

    axes: str
    scale: tuple
    translate: tuple


class AxesMixin:
    """Axes / Anisotropy / Channel boxes and the plan line; uses the widget's image picker."""

    def _watch(self, layer):
        """Follow the picked image's data and scale (its axes and anisotropy depend on them)."""
        old = self._watched
        if old is not None:
            for ev in (old.events.data, old.events.scale):
                ev.disconnect(self._layer_changed)
        self._watched = layer
        if layer is not None:
            for ev in (layer.events.data, layer.events.scale):
                ev.connect(self._layer_changed)

    def _layer_changed(self, event=None):
        try:
            self._fill_axes()
        except RuntimeError:  # the dock was closed
            self._watch(None)

    def _image_changed(self, *_):
        layer = self.image.value
        if layer is not self._watched:
            self._watch(layer)
        self._fill_axes()

    def _fill_axes(self):
        """The picked layer's axes (typed by the user for it, else guessed), anisotropy, channel."""
        layer = self.image.value
        self._filling = True
        try:
            if layer is None:
                self.axes.value = ""
            else:
                shape = tuple(_plane_data(layer).shape)
                typed = self._typed_axes.get(layer)
                if typed is not None and typed[0] == shape:
                    axes = typed[1]
                else:
                    try:
                        from ..core.axes import guess_axes

                        axes = guess_axes(shape, rgb=bool(layer.rgb))
                    except ValueError:
                        axes = ""
                self.axes.value = axes
            self._fill_anisotropy()
        finally:
            self._filling = False
        self._describe_plan()

    def _parsed_axes(self, notify: bool = False) -> str | None:
        """The Axes box checked against the picked image; ``None`` (and a notification with
        ``notify``) when it does not fit."""
        axes, error = self._check_axes()
        if error is not None and notify:
            notify_error(error, "Axes")
        return axes

    def _check_axes(self) -> tuple[str | None, ValueError | None]:
        layer = self.image.value
        if layer is None:
            return None, None
        from ..core.axes import parse_axes

        try:
            axes = parse_axes(self.axes.value, _plane_data(layer).shape, option="axes")
            if layer.rgb and not axes.endswith(("S", "C")):
                raise ValueError(f"axes {axes}: '{layer.name}' is an RGB layer, its last axis holds the colours (S)")
        except ValueError as exc:
            return None, exc
        return axes, None

    def _axes_typed(self, *_):
        if self._filling:
            return
        axes = self._parsed_axes()
        layer = self.image.value
        if axes is not None and layer is not None:
            self._typed_axes[layer] = (tuple(_plane_data(layer).shape), axes)
        self._filling = True
        try:
            self._fill_anisotropy()
        finally:
            self._filling = False
        self._describe_plan()

    def _axes_entered(self):
        if self.image.value is not None and self._parsed_axes(notify=True) is not None:
            self.axes.value = self._parsed_axes()  # the canonical (upper case) spelling

    def _fill_anisotropy(self):
        """Anisotropy from the layer's scale (z step / y pixel size); the Channel range."""
        layer, axes = self.image.value, self._parsed_axes()
        self._aniso_scale = None
        has_z = axes is not None and "Z" in axes
        has_c = axes is not None and "C" in axes
        if has_z:
            dims = _layer_dims(layer, axes)
            if "Z" in dims and "Y" in dims:
                sz, sy = abs(float(layer.scale[dims.index("Z")])), abs(float(layer.scale[dims.index("Y")]))
                if sz > 0 and sy > 0:
                    self._aniso_scale = sz / sy
                    value = sz / sy
                    typed = self._typed_aniso.get(layer)
                    if typed is not None and typed[0] == self._aniso_scale:
                        value = typed[1]  # what the user typed for this layer (its scale unchanged)
                    self.anisotropy.value = min(max(value, self.anisotropy.min), self.anisotropy.max)
        if has_c:
            n = int(_plane_data(layer).shape[axes.index("C")])
            self.channel.max = max(n - 1, 0)
            self.channel.value = min(self.channel.value, n - 1)
        reads = self._model_reads()
        self.anisotropy.visible = has_z
        self.channel.visible = has_c and reads == 1
        self.channels.visible = reads > 1
        if reads > 1 and len(str(self.channels.value).split(",")) != reads:
            self.channels.value = ",".join(str(i) for i in range(reads))

    def _model_reads(self) -> int:
        """How many channels the picked model reads (1 when it cannot be read)."""
        from ..core.models import input_channels

        try:
            return input_channels(self.model.value)
        except Exception:  # noqa: BLE001 - a missing or damaged file: Run says so
            return 1

    def _anisotropy_typed(self, *_):
        layer = self.image.value
        if not self._filling and layer is not None and self._aniso_scale is not None:
            self._typed_aniso[layer] = (self._aniso_scale, float(self.anisotropy.value))
        self._describe_plan()

    def _anisotropy_value(self) -> tuple[float, str]:
        """The anisotropy to use and where it comes from."""
        value = float(self.anisotropy.value)
        if self._aniso_scale is not None and abs(value - self._aniso_scale) <= 0.0005 * max(1.0, self._aniso_scale):
            return self._aniso_scale, "from the layer scale"
        return value, "set here"

    def _describe_plan(self):
        """Say what Run will do with the picked image and its axes."""
        try:
            self.plan.value = self._plan_text()
        except RuntimeError:  # the dock was closed
            pass

    def _plan_text(self) -> str:
        layer = self.image.value
        if layer is None:
            return ""
        axes, error = self._check_axes()
        if error is not None:
            return f"{error} - correct the axes to run"
        shape = dict(zip(axes, _plane_data(layer).shape))
        parts = []
        if "Z" in axes:
            a, src = self._anisotropy_value()
            vol = f"{shape['Z']} planes, anisotropy {a:.3g} ({src})"
            from ..core.stack import MAX_VOXELS, MIN_PLANES_3D

            how = "3D instances" if shape["Z"] >= MIN_PLANES_3D else "3D instances linked plane to plane (few planes)"
            if shape["Z"] >= MIN_PLANES_3D and shape["Z"] * shape["Y"] * shape["X"] > MAX_VOXELS:
                how += " (in XY blocks at full depth: a large volume)"
            if "T" in axes:
                parts.append(f"time-lapse of {shape['T']} 3D volumes, {vol}, {how}, ids kept over time")
            else:
                parts.append(f"3D volume, {vol}, {how}")
        elif "T" in axes:
            parts.append(f"time-lapse, {shape['T']} frames, ids kept over time")
        elif "S" in axes:
            parts.append("RGB image, segmented as one grayscale channel (the generalist hands stained tissue to its 'tissue' model)")
        else:
            parts.append(f"2D image, {shape['Y']} x {shape['X']} px")
        reads = self._model_reads()
        if reads > 1:
            have = shape.get("C", shape.get("S", 1))
            parts.append(f"channels {self.channels.value} of {have} given to the model's {reads} inputs")
        elif "C" in axes:
            parts.append(f"channel {self.channel.value} of {shape['C']} ({shape['C']} channels)")
        return "; ".join(parts)

    def _geometry(self, layer, axes: str) -> _Geometry:
        """Axes, scale and translate of the result layers: the image's without C and S."""
        from ..core.axes import labels_axes

        dims = _layer_dims(layer, axes)
        keep = [i for i, ch in enumerate(dims) if ch not in "CS"]
        return _Geometry(labels_axes(axes), tuple(float(layer.scale[i]) for i in keep),
                         tuple(float(layer.translate[i]) for i in keep))
