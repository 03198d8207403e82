"""Helpers shared by the widgets: result layers, notifications, thread-safe progress."""

from __future__ import annotations

import weakref as _weakref
import zlib as _zlib

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QObject, Signal

__all__ = ["Relay", "upsert_labels", "plugin_layer", "spatial_transform", "notify_error", "show_info", "show_warning", "active_image"]

_KEY = "napari-unet"


class Relay(QObject):
    """Carries progress from a worker thread to the GUI thread (queued Qt signal)."""

    progress = Signal(float, str)


def spatial_transform(image: Image) -> dict:
    """``scale`` and ``translate`` of an image layer for labels without a colour axis."""
    nd = image.ndim
    return {"scale": tuple(image.scale[-nd:]), "translate": tuple(image.translate[-nd:])}


def upsert_labels(viewer, data: np.ndarray, source: Image, kind: str, suffix: str | None = None, **kwargs) -> Labels:
    """Put ``data`` into the plugin's ``kind`` layer for ``source``; create it if needed.

    Only layers this plugin created (tagged in their metadata) are ever updated, so the
    user's own layers are never overwritten. Running again updates rather than piles up.
    """
    layer = plugin_layer(viewer, source, kind, data.shape)
    if layer is not None:
        layer.data = data
        layer.scale = spatial_transform(source)["scale"]
        layer.translate = spatial_transform(source)["translate"]
        return layer
    name = f"{source.name} {suffix or kind}"
    layer = viewer.add_labels(data, name=name, metadata={_KEY: {"source": source.name, "kind": kind}}, **spatial_transform(source), **kwargs)
    return layer


def plugin_layer(viewer, source: Image, kind: str, shape: tuple | None = None) -> Labels | None:
    """The Labels layer this plugin made for ``source`` and ``kind`` (of ``shape``), if any."""
    for layer in viewer.layers:
        tag = layer.metadata.get(_KEY) if isinstance(layer, Labels) else None
        if tag and tag.get("source") == source.name and tag.get("kind") == kind and (shape is None or layer.data.shape == shape):
            return layer
    return None


def is_plugin_layer(layer) -> bool:
    return bool(layer.metadata.get(_KEY)) if hasattr(layer, "metadata") else False


def notify_error(exc: BaseException, what: str) -> None:
    """One clear notification for an error in a worker, never a traceback dialog."""
    if isinstance(exc, (ValueError, FileNotFoundError, FileExistsError)):
        show_error(f"{what}: {exc}")
    elif isinstance(exc, MemoryError):
        show_error(f"{what}: not enough memory for this image; try a smaller tile or crop it")
    else:
        show_error(f"{what} failed: {exc.__class__.__name__}: {exc}")


def camera(viewer):
    """The viewer's camera: ``viewer.scene.camera`` since napari 0.9 (``viewer.camera`` is
    deprecated there), ``viewer.camera`` before."""
    scene = getattr(viewer, "scene", None)
    return getattr(scene, "camera", None) or viewer.camera


def active_image(viewer) -> Image | None:
    """The active image layer, else the last one; never one the plugin made (uncertainty)."""
    layer = viewer.layers.selection.active
    if isinstance(layer, Image) and not is_plugin_layer(layer):
        return layer
    images = [lay for lay in viewer.layers if isinstance(lay, Image) and not is_plugin_layer(lay)]
    return images[-1] if images else None


class _ModelBus:
    """Tells every open widget that the list of models changed (saved, imported, deleted)."""

    from psygnal import Signal as _Signal

    changed = _Signal()


model_bus = _ModelBus()


def model_names() -> list[str]:
    """Names for a model picker: shipped models (default first), then the user's."""
    from ..core.models import DEFAULT_MODEL, list_models

    return [m.name for m in list_models()] or [DEFAULT_MODEL]


def refresh_model_combo(combo, select: str | None = None) -> bool:
    """Re-read the model list into ``combo``, keeping (or making) ``select`` current.

    Returns False when the Qt widget is gone (its viewer was closed).
    """
    try:
        current = select or combo.value
        combo.reset_choices()
        if current in combo.choices:
            combo.value = current
    except RuntimeError:
        return False
    return True


# ---- result layers that keep the user's hand edits (Segment) --------------------------------

#: what the plugin last wrote into each of its layers (see :func:`mark_written`)
_WRITTEN: _weakref.WeakKeyDictionary = _weakref.WeakKeyDictionary()


def fingerprint(data) -> tuple:
    """A cheap fingerprint of an array: shape, dtype and a CRC-32 of its bytes (a few ms
    for 100 MB), to tell whether a layer's data changed since the plugin wrote it."""
    arr = np.ascontiguousarray(np.asarray(data))
    return arr.shape, arr.dtype.str, _zlib.crc32(memoryview(arr).cast("B")) if arr.size else 0


def mark_written(layer, fp: tuple | None = None) -> None:
    """Remember what the plugin just wrote into ``layer`` (``fp``: its :func:`fingerprint`,
    computed from the layer's data if not given). Every widget that writes a result into a
    plugin layer should call this, so that :func:`edited_since_written` stays true only for
    the user's own edits."""
    _WRITTEN[layer] = fp if fp is not None else fingerprint(layer.data)


def edited_since_written(layer) -> bool:
    """Whether ``layer``'s data changed since the plugin last wrote it (painted, filled,
    erased by hand, or replaced). ``False`` for a layer no :func:`mark_written` call knows."""
    fp = _WRITTEN.get(layer)
    return fp is not None and fingerprint(layer.data) != fp


def plugin_layers(viewer, source_name: str, kind: str, shape: tuple | None = None) -> list:
    """Every Labels layer this plugin made for the image named ``source_name`` and ``kind``
    (of ``shape``), in the layer list's order."""
    out = []
    for layer in viewer.layers:
        tag = layer.metadata.get(_KEY) if isinstance(layer, Labels) else None
        if tag and tag.get("source") == source_name and tag.get("kind") == kind and (
                shape is None or tuple(layer.data.shape) == tuple(shape)):
            out.append(layer)
    return out


def unique_layer_name(viewer, base: str) -> str:
    """``base``, or ``base [2]``, ``base [3]``, ... whichever no layer has yet."""
    names = {layer.name for layer in viewer.layers}
    if base not in names:
        return base
    k = 2
    while f"{base} [{k}]" in names:
        k += 1
    return f"{base} [{k}]"


def add_plugin_labels(viewer, data: np.ndarray, source, kind: str, name: str, scale, translate, tag: dict | None = None, **kwargs) -> Labels:
    """A new Labels layer tagged as the plugin's ``kind`` result for ``source``."""
    meta = {_KEY: {"source": source.name, "kind": kind, **(tag or {})}}
    return viewer.add_labels(data, name=name, metadata=meta, scale=tuple(scale), translate=tuple(translate), **kwargs)
