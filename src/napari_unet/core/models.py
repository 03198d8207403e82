"""Model files: shipped and user models, safe loading, atomic saving.

A model file is a ``torch.save`` of a plain dict (tensors, strings, numbers, lists):

``{"format": "napari-unet/1", "config": {...UNetConfig...}, "meta": {...}, "state_dict": {...}}``

It is loaded with ``torch.load(weights_only=True)``, which never executes code from the
file. ``meta`` holds the model's name, description, the object ``diameter`` (pixels) it
was trained at, normalisation percentiles, the training command and its metrics.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported lazily so that napari starts fast
    from .model import UNet


__all__ = [
    "FORMAT",
    "DEFAULT_MODEL",
    "FINETUNE_BASE",
    "ModelInfo",
    "LoadedModel",
    "shipped_dir",
    "user_dir",
    "list_models",
    "resolve_model",
    "load_model",
    "save_model",
    "install_model",
    "delete_model",
]

FORMAT = "napari-unet/1"
DEFAULT_MODEL = "generalist"
#: The base fine-tuning starts from unless told: the one measured best on a new modality
#: (benchmarks/finetune.py on electron microscopy, which no shipped model saw).
FINETUNE_BASE = "nuclei"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]{0,63}$")


@dataclass
class ModelInfo:
    name: str
    path: Path
    source: str  # "shipped" or "user"


@dataclass
class LoadedModel:
    model: UNet
    meta: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.path.stem if self.path else "model"))

    @property
    def diameter(self) -> float | None:
        """Median object diameter (px) in the images as the network saw them in training."""
        d = self.meta.get("diameter")
        return float(d) if d else None

    @property
    def normalization(self) -> tuple[float, float, bool]:
        """``(low, high, invert_bright)``: the percentiles mapped to 0 and 1 and whether
        images with a bright background are inverted (see :func:`.normalize.percentiles`)."""
        n = list(self.meta.get("normalization", (1.0, 99.8)))
        return float(n[0]), float(n[1]), bool(n[2]) if len(n) > 2 else False

    @property
    def image_diameter(self) -> float | None:
        """Object diameter (px) assumed in a user's image when none is given.

        Differs from :attr:`diameter` for a model trained on rescaled images: inputs are
        then rescaled by ``diameter / image_diameter`` by default.
        """
        d = self.meta.get("image_diameter")
        return float(d) if d else self.diameter

    def scale(self, diameter: float | None = None) -> float:
        """Model pixels per image pixel for cells of ``diameter`` px (default: :attr:`image_diameter`).

        ``diameter / image_diameter`` for a model trained on rescaled objects; 1 when the
        model has no size or the factor is within 5 % of 1.
        """
        own = self.diameter
        diameter = diameter or self.image_diameter
        if not diameter or not own:
            return 1.0
        s = own / float(diameter)
        return 1.0 if abs(s - 1) < 0.05 else s


def shipped_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "weights"


def user_dir(create: bool = False) -> Path:
    """Where user models live: ``$NAPARI_UNET_MODEL_DIR`` or the platform's data folder."""
    env = os.environ.get("NAPARI_UNET_MODEL_DIR")
    if env:
        path = Path(env)
    else:
        from platformdirs import user_data_dir

        path = Path(user_data_dir("napari-unet", appauthor=False)) / "models"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def list_models() -> list[ModelInfo]:
    """Shipped models first (default first), then the user's, each sorted by name."""
    shipped = sorted(shipped_dir().glob("*.pt"), key=lambda p: (p.stem != DEFAULT_MODEL, p.stem))
    out = [ModelInfo(p.stem, p, "shipped") for p in shipped]
    names = {m.name for m in out}
    udir = user_dir()
    if udir.is_dir():
        from .io import remove_stale

        remove_stale(udir, every=True)  # what a save killed mid-way left (hidden .NAME.*.tmp)
        for p in sorted(udir.glob("*.pt")):
            if p.stem not in names:
                out.append(ModelInfo(p.stem, p, "user"))
    return out


#: What each shipped model is for (the Model picker's tooltip; details in its card).
DESCRIPTIONS = {
    "generalist": "Nuclei of many kinds (fluorescence, brightfield, stained tissue in colour) and phase-contrast "
                  "cells; measures the cell size in each image and hands phase contrast to `cells`, stained "
                  "tissue to `tissue`. Trained on DSB 2018, BBBC039 and Usiigaci.",
    "nuclei": "Fluorescence nuclei about 28 px across (BBBC039, U2OS Hoechst, 20x).",
    "cells": "Whole cells in phase contrast about 44 px across (Usiigaci, T98G, 10x).",
    "tissue": "Nuclei in stained tissue, colour images (H&E-like; DSB 2018); the generalist hands it "
              "such images by itself.",
}


def describe_model(name: str | None) -> str:
    """One line on what a model is for: shipped models from :data:`DESCRIPTIONS`, user
    models as such (without loading the file, so the picker stays fast)."""
    if name in DESCRIPTIONS:
        return f"{name}: {DESCRIPTIONS[name]}"
    return f"{name}: your own model (Fine-tune > Save)" if name else ""


def input_channels(name: str | None) -> int:
    """How many channels model ``name`` reads (1 for most; a cytoplasm + nuclei model 2);
    read once per version of the file. The shipped models all read one, which is answered
    without loading torch, so that opening the Segment widget stays fast."""
    path = resolve_model(name)
    if path.parent == shipped_dir():
        return 1  # tests/test_shipped_models.py checks every shipped file
    return _input_channels(str(path), path.stat().st_mtime)


@functools.lru_cache(maxsize=32)
def _input_channels(path: str, mtime: float) -> int:
    return int(load_model(path).model.config.in_channels)


def check_name(name: str) -> str:
    name = name.strip()
    if not _NAME_RE.match(name):
        raise ValueError(
            f"invalid model name {name!r}: use letters, digits, spaces, '.', '_' or '-' "
            "(at most 64 characters, starting with a letter or digit)"
        )
    return name


def resolve_model(name_or_path: str | os.PathLike | None) -> Path:
    """Path of a model given by name (shipped or user) or file path."""
    if name_or_path is None or str(name_or_path) == "":
        name_or_path = DEFAULT_MODEL
    p = Path(name_or_path)
    if p.suffix == ".pt" and p.is_file():
        return p
    for info in list_models():
        if info.name == str(name_or_path):
            return info.path
    if p.exists():
        raise ValueError(f"{p} is not a napari-unet model file (.pt)")
    known = ", ".join(m.name for m in list_models()) or "none"
    raise ValueError(f"no model named {str(name_or_path)!r} (known models: {known})")


def safe_load(source):
    """``torch.load(source, weights_only=True)`` on the CPU: tensors and plain containers
    only, never code from the file. torch's warning about a pickle protocol it was not
    written with says nothing a user can act on (the load then succeeds or fails with an
    exception the caller words), so it is not shown."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        return torch.load(source, map_location="cpu", weights_only=True)


def load_model(name_or_path: str | os.PathLike | None = None) -> LoadedModel:
    """Load a model by name or path, safely (``weights_only=True``); eval mode."""
    import torch

    from .model import UNet, UNetConfig

    path = resolve_model(name_or_path)
    try:
        data = safe_load(path)
    except Exception as exc:  # noqa: BLE001 - corrupt, truncated, or a pickle with code in it
        raise ValueError(f"cannot read model file {path}: {exc.__class__.__name__}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a napari-unet model file")
    try:
        config = UNetConfig(**data["config"])
        state = data["state_dict"]
        # the declared architecture is checked against the file's tensors on the meta
        # device (no memory) before anything is allocated: a tiny file cannot declare a
        # network of many gigabytes
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in UNet(config).state_dict().items()}
        found = {k: tuple(v.shape) for k, v in state.items()} if isinstance(state, dict) else None
    except (TypeError, KeyError, AttributeError, RuntimeError, ValueError) as exc:
        raise ValueError(f"{path} does not hold a valid U-Net: {str(exc).splitlines()[0][:200]}") from None
    if found != expected:
        raise ValueError(f"{path} does not hold a valid U-Net: its weights do not match its declared architecture")
    model = UNet(config)
    model.load_state_dict(state)
    model.eval()
    meta = dict(data.get("meta", {}))
    meta.setdefault("name", path.stem)
    return LoadedModel(model, meta, path)


def save_model(path: str | os.PathLike, model: UNet, meta: dict | None = None, overwrite: bool = True, half: bool = False) -> Path:
    """Write ``model`` to ``path`` atomically (temporary file, then rename).

    ``half``: store floating-point tensors as float16 (half the file; loading casts them
    back to float32). Inference runs in bfloat16 on most CPUs anyway, whose mantissa is
    shorter than float16's.
    """

    import torch

    path = Path(path)
    if path.suffix != ".pt":
        path = path.with_suffix(".pt")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    # contiguous copies: a model trained in channels-last memory is stored as any other
    state = {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    data = {
        "format": FORMAT,
        "config": model.config.to_dict(),
        "meta": _plain(meta or {}),
        "state_dict": state,
    }
    atomic_save(data, path)
    return path


def atomic_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: never a half file."""
    import torch

    from .io import atomic_write

    atomic_write(path, lambda f: torch.save(obj, f))


def _plain(obj):
    """Metadata reduced to types that ``weights_only`` loading accepts."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def install_model(src: str | os.PathLike, name: str | None = None, overwrite: bool = False) -> Path:
    """Copy a model file into the user's model folder under ``name`` (validated first)."""
    loaded = load_model(Path(src)) if Path(src).is_file() else load_model(src)
    name = check_name(name or loaded.name)
    if name in {m.name for m in list_models() if m.source == "shipped"}:
        raise ValueError(f"{name!r} is the name of a shipped model; choose another")
    meta = dict(loaded.meta, name=name)
    dest = user_dir(create=True) / f"{name}.pt"
    if dest.exists() and not overwrite:
        raise FileExistsError(f"a model named {name!r} exists already")
    return save_model(dest, loaded.model, meta)


def delete_model(name: str) -> None:
    """Delete a user model (shipped models cannot be deleted)."""
    for info in list_models():
        if info.name == name:
            if info.source != "user":
                raise ValueError(f"{name!r} is a shipped model and cannot be deleted")
            info.path.unlink()
            return
    raise ValueError(f"no user model named {name!r}")
