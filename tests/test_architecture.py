"""The core never imports napari or Qt; napari starts without importing torch."""

import subprocess
import sys

CHECK = """
import importlib, pkgutil, sys
import napari_unet.core as core
for m in pkgutil.iter_modules(core.__path__):
    importlib.import_module(f"napari_unet.core.{m.name}")
import napari_unet.cli
bad = sorted(k for k in sys.modules if k.split('.')[0] in {"napari", "qtpy", "magicgui", "superqt", "PyQt5", "PyQt6", "PySide2", "PySide6"})
print(",".join(bad))
"""


def test_core_and_cli_import_no_gui_toolkit():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_widget_modules_import_torch_lazily():
    code = "import sys, napari_unet._widgets.segment, napari_unet._sample_data; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_manifest_is_valid():
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution("napari-unet")
    assert {w.display_name for w in pm.contributions.widgets} == {"Segment", "Fine-tune", "Measurements"}
    assert len(pm.contributions.sample_data) == 2
