import os
from pathlib import Path

import pytest

from napari_unet.testing import blobs as blobs_volume

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not DATA.is_dir():  # CI clones the project next to shared/
    DATA = Path(os.environ.get("NAPARI_UNET_DATA", DATA))


@pytest.fixture(autouse=True)
def _user_models(tmp_path, monkeypatch):
    """Every test gets an empty user-model folder, never the real one."""
    monkeypatch.setenv("NAPARI_UNET_MODEL_DIR", str(tmp_path / "user-models"))


@pytest.fixture(scope="session")
def data_dir():
    if not DATA.is_dir():
        pytest.skip("shared/data not found")
    return DATA


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
    return blobs_volume
