"""What a dock widget does as it is docked, undocked and its window closes: keyboard shortcuts
bound on the viewer only while docked (napari's public ``bind_key``), and a callback when the
viewer's window closes (a Qt event filter, no private napari API)."""

from __future__ import annotations

import weakref

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QWidget

__all__ = ["DockedShortcuts", "on_window_close"]


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


class _CloseWatch(QObject):
    """Calls ``callback()`` when the top-level window of ``widget`` gets a Close event.

    The window is found again whenever the widget or one of its ancestors changes parent
    (docking puts the widget into a dock widget first, and the dock into the window later).
    """

    def __init__(self, widget: QWidget, callback):
        super().__init__(widget)
        self._callback = callback
        self._widget = widget
        self._watched: list = []
        self._window = None
        self._follow()

    def _follow(self):
        for ref in self._watched:  # weak: holding the viewer's window would keep it alive
            obj = ref()
            if obj is not None:
                try:
                    obj.removeEventFilter(self)
                except RuntimeError:
                    pass
        chain, w = [], self._widget
        while w is not None:
            chain.append(w)
            w = w.parentWidget()
        for obj in chain:
            obj.installEventFilter(self)
        self._watched = [weakref.ref(obj) for obj in chain]
        self._window = weakref.ref(chain[-1]) if len(chain) > 1 else None

    def eventFilter(self, obj, event):
        kind = event.type()
        try:
            if kind == QEvent.Type.ParentChange:
                self._follow()
            elif kind == QEvent.Type.Close and self._window is not None and obj is self._window():
                self._callback()
        except RuntimeError:  # the widget is being deleted
            pass
        return False


def on_window_close(widget: QWidget, callback) -> QObject:
    """Run ``callback()`` when the window that holds ``widget`` (the viewer's, once the widget
    is docked; the widget's own otherwise) closes. Returns the watcher (owned by ``widget``)."""
    return _CloseWatch(widget, callback)


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


class DockedShortcuts:
    """Binds ``{key: action(widget)}`` on ``viewer`` while ``native`` is docked.

    A key already bound to something else (by the user or another plugin) is left alone:
    that shortcut is then not offered (``key in shortcuts.bound`` says which are).
    ``on_change`` runs after every (un)binding, e.g. to update tooltips.
    """

    def __init__(self, viewer, widget, native: QWidget, actions: dict, on_change=None):
        self.viewer = viewer
        self.bound: dict[str, object] = {}  # key -> the function bound on the viewer
        self._actions = actions
        self._widget = weakref.ref(widget)
        self._on_change = on_change or (lambda: None)
        self._closed = False
        self._watch = _ParentWatch(native, self._on_docked)
        native.destroyed.connect(_unbinder(viewer, self.bound))

    def __contains__(self, key: str) -> bool:
        return key in self.bound

    def bind(self):
        from napari.utils.key_bindings import coerce_keybinding

        for key, action in self._actions.items():
            if key in self.bound:
                continue
            func = self._bound_action(action)
            current = self.viewer.keymap.get(coerce_keybinding(key))
            if current is not None and not getattr(current, "__napari_unet__", False):
                continue
            try:
                self.viewer.bind_key(key, func, overwrite=True)
            except Exception:  # noqa: BLE001 - shortcuts are a convenience, never an error
                continue
            self.bound[key] = func
        self._on_change()

    def unbind(self):
        _unbinder(self.viewer, self.bound)()
        self._on_change()

    def close(self):
        self._closed = True

    def _bound_action(self, action):
        ref = self._widget

        def func(viewer):
            w = ref()
            if w is not None and not self._closed:
                action(w)

        func.__napari_unet__ = True  # ours: a later widget may take the key over
        return func

    def _on_docked(self, docked: bool):
        """Shortcuts only while the widget is in the viewer (a closed dock keeps no key)."""
        if self._closed:
            return
        if docked:
            self.bind()
        else:
            self.unbind()
