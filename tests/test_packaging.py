"""The built wheel holds what a fresh install needs, and napari can read the manifest."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(out)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {r.stderr.strip().splitlines()[-1:]}")
    return next(out.glob("napari_unet-*.whl"))


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for model in ("nuclei", "cells", "generalist", "tissue"):
        assert f"napari_unet/weights/{model}.pt" in names and f"napari_unet/weights/{model}.md" in names
    assert "napari_unet/napari.yaml" in names
    assert {"napari_unet/sample_data/nuclei_bbbc039.tif", "napari_unet/sample_data/phase_usiigaci.tif"} <= names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "runs/"))]
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "Framework :: napari" in text and "Requires-Dist: torch" in text
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    eps = zipfile.ZipFile(wheel).read(entry).decode()
    assert "napari.manifest" in eps and "napari-unet = napari_unet.cli:main" in eps


def test_npe2_manifest_is_valid():
    npe2 = pytest.importorskip("npe2")
    from npe2 import PluginManifest

    mf = PluginManifest.from_distribution("napari-unet")
    assert {w.display_name for w in mf.contributions.widgets} >= {"Segment", "Fine-tune"}
    assert npe2.__version__
