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
