"""The Fine-tune widget's model manager: save the fine-tuned weights under a name, import,
export and delete model files (mixed into :class:`.finetune.FinetuneWidget`)."""

from __future__ import annotations

import re
from pathlib import Path

from . import _common
from ._common import model_bus, refresh_model_combo


def _safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.\- ]+", "_", text).strip(" _.-")[:64]
    return name or "fine-tuned"


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


def _short(name: str, n: int = 18) -> str:
    """A model name short enough for a button."""
    return name if len(name) <= n else name[: n - 1] + "\u2026"


class ModelManagerMixin:
    """Save / Import / Export / Delete; uses the widget's trainer, pickers and status line."""

    def save_model(self, name: str | None = None):
        """Save the fine-tuned (best) weights as a user model; it appears in Segment's list."""
        from ..core.finetune import save_finetuned
        from ..core.models import check_name, load_model

        if self._trainer is None or self._worker is not None:
            _common.show_info("Train first (and Stop), then save")
            return None
        name = (name if name is not None else self.model_name.value).strip()
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
        meta = load_model(path).meta
        plain, detail = plain_calibration(meta)
        same = self.run.no_improvement()
        base_name = self._info.base_name if self._info is not None else "the base model"
        text = f"Saved '{path.stem}'; it is now in the Segment widget's model list."
        if same:
            text += (f" It has the weights of the base model '{base_name}': training did not improve on it "
                     f"(score {self.run.base_score:.3f}).")
        if meta.get("seeds"):  # (see core.finetune_save.seed_settings)
            text += " Touching cells are not split by their shape: the base model's rule cut your cells into pieces."
        self.status.value = text + (f" {plain}." if plain else "")
        self.status.native.setToolTip(f"Saved to {path}" + (f"\n{detail}" if detail else ""))
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
        self.status.value = f"Imported '{dest.stem}'"
        return dest.stem

    def export_model(self, path, name: str | None = None):
        """Write the model picked as base (or ``name``) to a single ``.pt`` file."""
        from ..core.models import load_model, save_model

        name = name or self.base.value
        try:
            loaded = load_model(name)
            dest = save_model(Path(path), loaded.model, loaded.meta)
        except Exception as exc:  # noqa: BLE001
            _common.notify_error(exc, "Exporting the model")
            return None
        self.status.value = f"Exported '{name}' to {dest}"
        return dest

    def delete_model(self, name: str | None = None, confirm: bool = True) -> bool:
        """Delete a user model (asks first unless ``confirm=False``)."""
        from ..core.models import delete_model

        name = name or self.base.value
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
        self.status.value = f"Deleted '{name}'"
        return True

    def _import_dialog(self):
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self.native, "Import a U-Net model", "", "napari-unet model (*.pt)")
        if path:
            self.import_model(path)

    def _export_dialog(self):
        from qtpy.QtWidgets import QFileDialog

        name = self.base.value
        path, _ = QFileDialog.getSaveFileName(self.native, f"Export '{name}'", f"{name}.pt", "napari-unet model (*.pt)")
        if path:
            self.export_model(path, name)

    def refresh_models(self, select: str | None = None):
        if self._closed:
            return
        if not refresh_model_combo(self.base, select):  # viewer closed: stop listening
            self._closed = True
            model_bus.changed.disconnect(self.refresh_models)
            return
        self._update_model_buttons()

    def _update_model_buttons(self):
        """Export... and Delete name the model they act on (the Base model picked)."""
        from ..core.models import list_models

        name = self.base.value
        if not name:
            self.export_button.text, self.delete_button.text = "Export...", "Delete"
            self.export_button.enabled = self.delete_button.enabled = False
            return
        self.export_button.text = f"Export '{_short(name)}'..."
        self.export_button.enabled = True
        self.export_button.tooltip = f"Write the model '{name}' (the Base model picked above) to a .pt file"
        self.delete_button.text = f"Delete '{_short(name)}'"
        try:
            shipped = name in {m.name for m in list_models() if m.source == "shipped"}
        except Exception:  # noqa: BLE001 - Delete then says why it cannot
            shipped = False
        self.delete_button.enabled = not shipped
        self.delete_button.tooltip = (f"'{name}' ships with napari-unet and cannot be deleted" if shipped
                                else f"Delete your model '{name}' (the Base model picked above; asks first)")
