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


def _tool(name):
    import shutil
    from pathlib import Path

    exe = Path(sys.executable).with_name(name)
    return str(exe) if exe.exists() else shutil.which(name)


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_ruff_passes():
    ruff = _tool("ruff")
    assert ruff, "ruff is part of the testing extra"
    out = subprocess.run([ruff, "check", "src", "tests", "benchmarks", "scripts"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]


def test_import_contracts_are_kept():
    lint = _tool("lint-imports")
    assert lint, "import-linter is part of the testing extra"
    out = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "broken" in out.stdout and ", 0 broken" in out.stdout, out.stdout[-3000:]


def test_version_is_written_once():
    from importlib.metadata import version

    import napari_unet

    assert version("napari-unet") == napari_unet.__version__
    import re

    assert not re.search(r'^version\s*=\s*"', (ROOT / "pyproject.toml").read_text(), re.M)  # dynamic, from __init__
