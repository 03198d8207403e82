import os
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not DATA.is_dir():  # CI clones the project next to shared/
    DATA = Path(os.environ.get("NAPARI_UNET_DATA", DATA))


@pytest.fixture(autouse=True)
def _user_models(tmp_path, monkeypatch):
    """Every test gets an empty user-model folder, never the real one."""
    monkeypatch.setenv("NAPARI_UNET_MODEL_DIR", str(tmp_path / "user-models"))


@pytest.fixture
def data_dir():
    if not DATA.is_dir():
        pytest.skip("shared/data not found")
    return DATA


def discs(shape=(96, 128), centers=((40, 40), (40, 62), (70, 100)), radius=12):
    """Instance labels of discs; the first two touch."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lab = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centers, 1):
        d = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        lab[d & (lab == 0)] = i
    return lab


@pytest.fixture
def shipped_model():
    """Name of the default shipped model (tests that need real weights)."""
    from napari_unet.core.models import DEFAULT_MODEL, list_models

    names = [m.name for m in list_models() if m.source == "shipped"]
    if DEFAULT_MODEL not in names:
        pytest.fail(f"shipped model {DEFAULT_MODEL!r} missing from src/napari_unet/weights")
    return DEFAULT_MODEL


@pytest.fixture
def finetune_base():
    """Name of the model fine-tuning starts from unless told (FINETUNE_BASE)."""
    from napari_unet.core.models import FINETUNE_BASE, list_models

    if FINETUNE_BASE not in [m.name for m in list_models() if m.source == "shipped"]:
        pytest.fail(f"shipped model {FINETUNE_BASE!r} missing from src/napari_unet/weights")
    return FINETUNE_BASE


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A small untrained model file (2 poolings, 4 channels) for shape and I/O tests."""
    import torch

    from napari_unet.core.model import UNet, UNetConfig
    from napari_unet.core.models import save_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("m") / "tiny.pt"
    save_model(path, UNet(UNetConfig(depth=2, base_channels=4)), {"name": "tiny", "diameter": 20})
    return path


@pytest.fixture
def blobs():
    """``blobs(shape, centers, r, rz)``: a uint16 volume of bright blurred ellipsoids."""
    return _blobs


def _blobs(shape=(16, 96, 96), centers=((8, 25, 25), (8, 25, 70), (8, 70, 40), (6, 72, 80)), r=11, rz=5.5):
    """A volume of bright blurred ellipsoids (planes ``rz`` apart in z for ``r`` in y, x)."""
    from scipy import ndimage as ndi

    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    v = np.zeros(shape, np.float32)
    for cz, cy, cx in centers:
        v[((zz - cz) / rz) ** 2 + ((yy - cy) / r) ** 2 + ((xx - cx) / r) ** 2 <= 1] = 1
    v = ndi.gaussian_filter(v, (0.7, 1.5, 1.5))
    return (v * 800 + 100 + np.random.default_rng(0).normal(0, 10, shape)).astype(np.uint16)
