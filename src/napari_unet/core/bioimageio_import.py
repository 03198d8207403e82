"""bioimage.io model packages: import one back into napari-unet, without executing its code.

:func:`import_package` parses ``rdf.yaml`` with a safe YAML loader, rebuilds the network
with napari-unet's own :func:`~napari_unet.core.model.build_model` from
``config.napari_unet`` and loads only the ``state_dict`` with
``torch.load(weights_only=True)``; the weights must reproduce the package's own test
output. A package that is not a napari-unet U-Net is refused with one line. Export:
:mod:`.bioimageio`.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

__all__ = ["import_package", "install_package"]

_RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")


def _prob_net(net):
    import torch

    class Probabilities(torch.nn.Module):
        def __init__(self, unet):
            super().__init__()
            self.unet = unet
            self.k = unet.config.classes  # then regression outputs (a distance head): sigmoid

        def forward(self, x):
            y = self.unet(x)
            p = torch.softmax(y[:, : self.k], dim=1)
            return torch.cat([p, torch.sigmoid(y[:, self.k :])], dim=1) if self.k < y.shape[1] else p

    return Probabilities(net).eval()


def _scale_range(x: np.ndarray, low: float, high: float, eps: float = 1e-6) -> np.ndarray:
    """bioimage.io's ``scale_range`` over y/x per sample and channel (what its tools apply)."""
    lo = np.percentile(x, low, axis=(-2, -1), keepdims=True)
    hi = np.percentile(x, high, axis=(-2, -1), keepdims=True)
    return ((x - lo) / (hi - lo + eps)).astype(np.float32)


def import_package(zip_path):
    """Read a bioimage.io package of a napari-unet U-Net: ``(UNet, meta)``, eval mode.

    Executes no code from the package: ``rdf.yaml`` is parsed with a safe YAML loader, the
    network is built by napari-unet from ``config.napari_unet`` and only the
    ``pytorch_state_dict`` weights are loaded, with ``torch.load(weights_only=True)``.
    Raises ``ValueError`` (one line) for anything else.
    """
    import torch

    from .model import build_model
    from .models import FORMAT, safe_load

    path = Path(zip_path)
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a bioimage.io model package (a .zip file)")
    with zipfile.ZipFile(path) as zf:
        rdf = _read_rdf(zf, path)
        if not isinstance(rdf, dict) or rdf.get("type") != "model":
            raise ValueError(f"{path} is not a bioimage.io model package")
        ours = (rdf.get("config") or {}).get("napari_unet") if isinstance(rdf.get("config"), dict) else None
        if not isinstance(ours, dict) or ours.get("format") != FORMAT:
            raise ValueError(f"{path} is a bioimage.io model but not a napari-unet U-Net (no config.napari_unet)")
        entry = (rdf.get("weights") or {}).get("pytorch_state_dict")
        if not isinstance(entry, dict) or not entry.get("source"):
            raise ValueError(f"{path} has no pytorch_state_dict weights")
        data = _member(zf, entry["source"], path)
        sha = entry.get("sha256")
        if sha and hashlib.sha256(data).hexdigest() != str(sha).lower():
            raise ValueError(f"{path}: the weights do not match their sha256 in rdf.yaml (damaged package)")
        try:
            state = safe_load(io.BytesIO(data))
        except Exception as exc:  # noqa: BLE001 - any unreadable file, worded once
            raise ValueError(f"{path}: cannot read the state_dict weights ({exc.__class__.__name__})") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{path}: the weights are not a plain state_dict")
        arch = ours.get("architecture")
        try:
            if not isinstance(arch, dict):
                raise TypeError("no config.napari_unet.architecture")
            model = build_model(dict(arch))
        except (TypeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise ValueError(f"{path} does not hold a napari-unet U-Net: {first}") from None
        try:
            model.load_state_dict(state, strict=True)
        except (RuntimeError, KeyError):
            raise ValueError(
                f"{path} does not hold a napari-unet U-Net: its weights do not fit the architecture in config.napari_unet"
            ) from None
        model.float().eval()
        meta = dict(ours.get("meta") or {})
        meta.setdefault("name", path.stem)
        _check_test_tensors(zf, rdf, model, meta, path)
    return model, meta


def install_package(zip_path, name: str | None = None, overwrite: bool = False) -> Path:
    """Import a package into the user's model folder (:func:`.models.install_model`)."""
    from .models import check_name, install_model, save_model

    model, meta = import_package(zip_path)
    name = check_name(name or str(meta.get("name") or Path(zip_path).stem))
    with tempfile.TemporaryDirectory(prefix="napari-unet-import-") as tmp:
        src = save_model(Path(tmp) / "imported.pt", model, dict(meta, name=name))
        return install_model(src, name, overwrite=overwrite)


def _read_rdf(zf: zipfile.ZipFile, path: Path):
    import yaml

    names = set(zf.namelist())
    rdf_name = next((n for n in _RDF_NAMES if n in names), None)
    if rdf_name is None:
        rdf_name = next((n for n in sorted(names) if "/" not in n and n.endswith(".bioimageio.yaml")), None)
    if rdf_name is None:
        raise ValueError(f"{path} is not a bioimage.io package (no rdf.yaml)")
    try:
        return yaml.safe_load(zf.read(rdf_name))
    except yaml.YAMLError:
        raise ValueError(f"{path}: {rdf_name} is not valid YAML") from None


def _member(zf: zipfile.ZipFile, source, path: Path) -> bytes:
    """A file of the package by its relative name (never a URL or a path outside it)."""
    s = str(source)
    p = PurePosixPath(s)
    if "://" in s or p.is_absolute() or ".." in p.parts:
        raise ValueError(f"{path}: {s} is not a file inside the package")
    try:
        return zf.read(str(p))
    except KeyError:
        raise ValueError(f"{path}: {s} is missing from the package") from None


def _check_test_tensors(zf, rdf, model, meta, path: Path) -> None:
    """The weights must reproduce the package's own test output (when it has one)."""
    import torch

    try:
        t_in = rdf["inputs"][0]["test_tensor"]["source"]
        t_out = rdf["outputs"][0]["test_tensor"]["source"]
    except (KeyError, IndexError, TypeError):
        return
    raw_in, raw_out = _member(zf, t_in, path), _member(zf, t_out, path)
    try:
        x = np.load(io.BytesIO(raw_in), allow_pickle=False)
        y = np.load(io.BytesIO(raw_out), allow_pickle=False)
    except Exception:  # noqa: BLE001 - any unreadable tensor, worded once
        raise ValueError(f"{path}: cannot read its test tensors (.npy)") from None
    n = list(meta.get("normalization") or (1.0, 99.8))
    try:
        with torch.no_grad():
            pred = _prob_net(model)(torch.from_numpy(_scale_range(x.astype(np.float32), float(n[0]), float(n[1])))).numpy()
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"{path}: its test input does not fit the network ({exc})") from None
    if pred.shape != y.shape or not np.mean(np.abs(pred - y) > 1e-2) < 1e-3:
        raise ValueError(f"{path}: the weights do not reproduce the package's test output")
