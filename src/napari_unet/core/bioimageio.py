"""bioimage.io model packages: export a napari-unet model (import: :mod:`.bioimageio_import`).

:func:`export_package` writes a zip that ``bioimageio.core``'s test passes (model
description format 0.5, built with the ``bioimageio.spec`` API):

- ``rdf.yaml``: axes ``batch, channel, y, x``; the input size a multiple of the network's
  pooling factor (a parameterized size); percentile normalisation as ``scale_range``
  preprocessing; the outputs are class probabilities (the exported network ends with a
  softmax); napari-unet's own architecture and settings (object diameter, normalisation,
  post-processing) under ``config.napari_unet``;
- ``weights.pt``: the PyTorch ``state_dict``, with ``napari_unet_architecture.py``, a
  self-contained copy of :mod:`napari_unet.core.model` that rebuilds the network from its
  kwargs (for bioimage.io's Python tools);
- ``weights_torchscript.pt``: the same network traced to TorchScript (Fiji/deepImageJ,
  QuPath, ...);
- ``test_input.npy`` / ``test_output.npy`` (a 256 x 256 crop of a sample image and the
  class probabilities), ``cover.png`` and the model card as documentation.

:func:`import_package` reads such a package back without executing any of its code: it
parses ``rdf.yaml`` with a safe YAML loader, rebuilds the network with napari-unet's own
:func:`~napari_unet.core.model.build_model` from ``config.napari_unet`` and loads only the
``state_dict`` with ``torch.load(weights_only=True)``. A package that is not a napari-unet
U-Net is refused.

``bioimageio.spec`` (the ``bioimageio`` extra) is needed to export, not to import; it is
imported inside the functions so that napari starts fast.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .bioimageio_import import _prob_net, _scale_range

__all__ = ["export_package", "CITATION_DOI"]

#: Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical Image
#: Segmentation", MICCAI 2015.
CITATION_DOI = "10.1007/978-3-319-24574-4_28"
CITATION_TEXT = (
    "Ronneberger, O., Fischer, P., Brox, T. U-Net: Convolutional Networks for Biomedical "
    "Image Segmentation. MICCAI 2015, LNCS 9351, 234-241."
)
DEFAULT_AUTHORS = ("napari-unet developers",)
DEFAULT_LICENSE = "BSD-3-Clause"
ARCH_FILE = "napari_unet_architecture.py"
ARCH_CALLABLE = "NapariUNetProbabilities"
TEST_SIZE = 256

_ARCH_WRAPPER = f'''

# ---- added by napari-unet's bioimage.io export ----------------------------------------
class {ARCH_CALLABLE}(UNet):
    """napari-unet's U-Net followed by a softmax over the classes: the outputs are class
    probabilities (then any regression output, e.g. a distance head, through a sigmoid).
    The kwargs are the fields of ``UNetConfig``; the state_dict keys are those of ``UNet``."""

    def __init__(self, **kwargs):
        super().__init__(UNetConfig(**kwargs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        k = self.config.out_channels - self.config.regression
        p = torch.softmax(y[:, :k], dim=1)
        return torch.cat([p, torch.sigmoid(y[:, k:])], dim=1) if k < y.shape[1] else p
'''


# ---- export -----------------------------------------------------------------------------
def export_package(
    model_name_or_path,
    output_path,
    overwrite: bool = False,
    test_image=None,
    authors=None,
    license: str | None = None,
) -> Path:
    """Write the model as a bioimage.io model package (a ``.zip``) at ``output_path``.

    ``test_image``: a 2D image (array or file) to cut the test input from; default a
    sample image of the plugin (phase contrast for a phase-contrast model, else nuclei).
    The file is written atomically; an existing one is refused unless ``overwrite``.
    """
    out = Path(output_path)
    if out.suffix.lower() != ".zip":
        raise ValueError(f"the output must be a .zip file, got {out}")
    if out.is_dir():
        raise ValueError(f"the output {out} is a folder")
    if out.exists() and not overwrite:
        raise ValueError(f"{out} exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise ValueError(f"no such folder: {out.parent}")
    _need_bioimageio_spec()
    authors, license = _check_authors_license(authors, license)

    import torch

    from .models import load_model

    loaded = load_model(model_name_or_path)
    net = loaded.model.float().eval()
    meta = _yaml_plain(loaded.meta)
    image = _test_image(test_image, loaded)

    with tempfile.TemporaryDirectory(prefix="napari-unet-bioimageio-") as tmp:
        tmp = Path(tmp)
        x = _test_input(image, net)
        with torch.no_grad():
            y = _prob_net(net)(torch.from_numpy(_scale_range(x, *loaded.normalization[:2]))).numpy()
        np.save(tmp / "test_input.npy", x)
        np.save(tmp / "test_output.npy", y.astype(np.float32))
        _write_samples(tmp, x, y)
        _write_cover(tmp / "cover.png", _scale_range(x, *loaded.normalization[:2])[0, 0], y[0])
        (tmp / ARCH_FILE).write_text(_architecture_source(), encoding="utf-8")
        state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        torch.save(state, tmp / "weights.pt")
        _save_torchscript(net, tmp / "weights_torchscript.pt")
        (tmp / "README.md").write_text(_documentation(loaded, meta), encoding="utf-8")
        try:
            descr = _describe(loaded, meta, tmp, authors, license)
        except ValueError as exc:  # pydantic's ValidationError: a bug here, not a user error
            raise RuntimeError(f"bioimage.io rejected the model description: {exc}") from exc
        _save_atomic(descr, out)
    return out


def _need_bioimageio_spec():
    try:
        import bioimageio.spec  # noqa: F401
    except ImportError:
        raise ValueError(
            "bioimage.io export needs bioimageio.spec: pip install 'napari-unet[bioimageio]'"
        ) from None


def _check_authors_license(authors, license):
    """The ``--author`` names and the ``--license`` SPDX id, checked as bioimage.io does."""
    from bioimageio.spec.model import v0_5 as bio

    authors = [str(a).strip() for a in (authors or DEFAULT_AUTHORS)]
    for a in authors:
        if not a or "/" in a:
            raise ValueError(f"invalid author name {a!r}: give a non-empty name without '/'")
    license = str(license or DEFAULT_LICENSE).strip()
    try:
        bio.LicenseId(license)
    except ValueError:
        raise ValueError(f"unknown license {license!r}: give an SPDX license identifier such as BSD-3-Clause or CC-BY-4.0") from None
    return authors, license


def _architecture_source() -> str:
    """:mod:`napari_unet.core.model` (torch only) plus the softmax wrapper."""
    from . import model

    src = Path(model.__file__).read_text(encoding="utf-8")
    header = (
        "# U-Net architecture of napari-unet, written into this bioimage.io package by\n"
        "# `napari-unet export`; self-contained (needs only torch).\n"
    )
    _check_self_contained(src)
    return header + src.rstrip() + "\n" + _ARCH_WRAPPER


def _check_self_contained(src: str) -> None:
    """The architecture file may import only torch and the standard library."""
    import ast
    import sys

    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.ImportFrom):
            mods = [("." * node.level) + (node.module or "")]
        elif isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        else:
            continue
        for mod in mods:
            top = mod.split(".")[0]
            if not top or (top != "torch" and top not in sys.stdlib_module_names):
                raise RuntimeError(f"core/model.py imports {mod!r}: the exported architecture would not be self-contained")


def _save_torchscript(net, path: Path) -> None:
    """Trace the network (with softmax) and check the trace at a second input size."""
    import warnings

    import torch

    prob = _prob_net(net)
    n0, n1 = _valid_size(net, 64), _valid_size(net, 96)
    c = net.config.in_channels
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(1, c, n0, n0, generator=gen), torch.rand(2, c, n1, n1 + net.multiple, generator=gen)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings of the shape checks in forward
        traced = torch.jit.trace(prob, a, check_trace=False)
        same = torch.allclose(traced(b), prob(b), atol=1e-5)
    if not same:
        raise RuntimeError("the TorchScript trace of the model does not generalise to other input sizes")
    traced.save(str(path))


def _valid_size(net, n: int) -> int:
    """The smallest input size >= ``n`` that the network accepts."""
    while net.output_size(n) is None:
        n += 1
    return n


def _min_size(net) -> int:
    return _valid_size(net, 1)


def _test_image(test_image, loaded) -> np.ndarray:
    from .._sample_data import load as load_sample
    from .data import read_image, rescale_pair
    from .normalize import to_gray

    if test_image is None:
        desc = f"{loaded.meta.get('name', '')} {loaded.meta.get('description', '')}".lower()
        image = load_sample("phase_usiigaci.tif" if "phase" in desc else "nuclei_bbbc039.tif")
    elif isinstance(test_image, (str, os.PathLike)):
        if not Path(test_image).is_file():
            raise ValueError(f"no such file: {test_image}")
        image = read_image(test_image)
    else:
        image = np.asarray(test_image)
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        image = to_gray(image)
    if image.ndim != 2:
        raise ValueError(f"the test image must be 2D (grayscale or RGB), got shape {image.shape}")
    image = np.nan_to_num(image.astype(np.float32))
    # at the model's own scale: what the network sees when napari-unet segments the image
    image, _ = rescale_pair(image, None, loaded.scale())
    return image


def _test_input(image: np.ndarray, net) -> np.ndarray:
    """A central crop of ``TEST_SIZE`` (a valid size) px a side, mirrored if too small: (1, C, n, n)."""
    n = _valid_size(net, TEST_SIZE)
    h, w = image.shape
    if h < n or w < n:
        py, px = max(0, n - h), max(0, n - w)
        image = np.pad(image, ((py // 2, py - py // 2), (px // 2, px - px // 2)), mode="symmetric")
        h, w = image.shape
    y0, x0 = (h - n) // 2, (w - n) // 2
    crop = image[y0 : y0 + n, x0 : x0 + n]
    c = net.config.in_channels
    return np.ascontiguousarray(np.broadcast_to(crop, (1, c, n, n)), dtype=np.float32)


def _write_samples(tmp: Path, x: np.ndarray, y: np.ndarray) -> None:
    """The test tensors as TIFFs (``sample_tensor``: for people and image viewers)."""
    import tifffile

    tifffile.imwrite(tmp / "sample_input.tif", x[0, 0] if x.shape[1] == 1 else x[0])
    tifffile.imwrite(tmp / "sample_output.tif", y[0].astype(np.float32), photometric="minisblack")


def _write_cover(path: Path, image: np.ndarray, probs: np.ndarray) -> None:
    """Input (gray) beside the prediction (interior green, boundary magenta): 2:1."""
    import imageio.v3 as iio

    h, w = probs.shape[-2:]
    dy, dx = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2  # unpadded networks: the output's region
    gray = np.clip(image[dy : dy + h, dx : dx + w], 0, 1)
    left = np.repeat(gray[..., None], 3, axis=-1)
    right = 0.4 * left
    if probs.shape[0] >= 3:
        right = right + probs[1][..., None] * np.array([0.1, 0.9, 0.2]) + probs[2][..., None] * np.array([0.9, 0.1, 0.8])
    elif probs.shape[0] == 2:
        right = right + probs[1][..., None] * np.array([0.1, 0.9, 0.2])
    rgb = np.concatenate([left, np.clip(right, 0, 1)], axis=1)
    iio.imwrite(path, (rgb * 255).round().astype(np.uint8))


def _documentation(loaded, meta: dict) -> str:
    card = loaded.path.with_suffix(".md") if loaded.path is not None else None
    if card is not None and card.is_file():
        text = card.read_text(encoding="utf-8").rstrip() + "\n"
    else:
        text = f"# Model card: `{meta.get('name', 'model')}`\n\n{meta.get('description', '')}\n"
        cfg = loaded.model.config
        text += (
            f"\n- **Architecture**: U-Net, {cfg.depth} poolings, {cfg.base_channels} base channels, "
            f"{cfg.norm} norm, {cfg.padding} convolutions, {cfg.out_channels} output classes.\n"
        )
        if meta.get("diameter"):
            text += f"- **Object size**: median object diameter {meta['diameter']} px.\n"
        training = meta.get("training") or {}
        if training.get("command"):
            text += f"- **Training command**: `{training['command']}`\n"
    low, high, invert = loaded.normalization
    text += (
        "\n## Use in bioimage.io tools\n\n"
        "Input: one grayscale image (axes batch, channel, y, x), each side a multiple of "
        f"{loaded.model.multiple} px. Preprocessing maps the {low:g} and {high:g} percentiles "
        "to 0 and 1 (`scale_range`). Output: class probabilities "
        f"({', '.join(map(str, meta.get('classes', [])))}), summing to 1 per pixel.\n"
    )
    if invert:
        text += (
            "\nImages with a bright background (brightfield, stained tissue) must be inverted "
            "first (napari-unet does so by itself): the network expects bright objects.\n"
        )
    if loaded.diameter:
        text += (
            f"\nThe network was trained on objects about {loaded.diameter:g} px across; rescale "
            "images whose objects are much larger or smaller (napari-unet does so from its "
            "`diameter` setting).\n"
        )
    text += (
        "\nInstances (one id per cell) come from napari-unet's post-processing: cell mask where "
        "the background probability is below the threshold, seeds in the confident interior, "
        "watershed. Its settings are stored under `config.napari_unet` in `rdf.yaml`; "
        "`napari-unet import` brings the package back into napari-unet with them.\n"
    )
    if not re.search(r"#.*[vV]alidation", text):
        text += (
            "\n## Validation\n\n"
            "Segment annotated images of your own and score them against their labels with "
            "`napari-unet evaluate MODEL --labels FOLDER` (pixel IoU, F1 and AP at IoU "
            "thresholds); the figures above were measured that way where given.\n"
        )
    return text


def _describe(loaded, meta: dict, tmp: Path, authors, license: str):
    import torch
    from bioimageio.spec.model import v0_5 as bio

    net = loaded.model
    cfg = net.config
    m = net.multiple
    low, high, invert = loaded.normalization
    shrink = net.shrink()
    in_names = ["raw"] if cfg.in_channels == 1 else [f"channel{i}" for i in range(cfg.in_channels)]
    classes = [_identifier(c, i) for i, c in enumerate(meta.get("classes") or [])]
    if len(classes) != cfg.out_channels or len(set(classes)) != len(classes):
        classes = [f"class{i}" for i in range(cfg.out_channels)]
    size = bio.ParameterizedSize(min=_min_size(net), step=m)
    inp = bio.InputTensorDescr(
        id=bio.TensorId("raw"),
        description="grayscale image, any intensity range (normalised by the preprocessing)",
        axes=[
            bio.BatchAxis(),
            bio.ChannelAxis(channel_names=[bio.Identifier(n) for n in in_names]),
            bio.SpaceInputAxis(id=bio.AxisId("y"), size=size),
            bio.SpaceInputAxis(id=bio.AxisId("x"), size=size),
        ],
        test_tensor=bio.FileDescr(source=tmp / "test_input.npy"),
        sample_tensor=bio.FileDescr(source=tmp / "sample_input.tif"),
        data=bio.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[
            bio.ScaleRangeDescr(
                kwargs=bio.ScaleRangeKwargs(
                    axes=[bio.AxisId("y"), bio.AxisId("x")], min_percentile=float(low), max_percentile=float(high)
                )
            )
        ],
    )
    out = bio.OutputTensorDescr(
        id=bio.TensorId("probabilities"),
        description="class probabilities (softmax over the channel axis)",
        axes=[
            bio.BatchAxis(),
            bio.ChannelAxis(channel_names=[bio.Identifier(n) for n in classes]),
            *[
                bio.SpaceOutputAxis(
                    id=bio.AxisId(a),
                    size=bio.SizeReference(tensor_id=bio.TensorId("raw"), axis_id=bio.AxisId(a), offset=-2 * shrink),
                )
                for a in ("y", "x")
            ],
        ],
        test_tensor=bio.FileDescr(source=tmp / "test_output.npy"),
        sample_tensor=bio.FileDescr(source=tmp / "sample_output.tif"),
        data=bio.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
    )
    torch_version = bio.Version(torch.__version__.split("+")[0])
    weights = bio.WeightsDescr(
        pytorch_state_dict=bio.PytorchStateDictWeightsDescr(
            source=tmp / "weights.pt",
            architecture=bio.ArchitectureFromFileDescr(
                source=tmp / ARCH_FILE, callable=bio.Identifier(ARCH_CALLABLE), kwargs=cfg.to_dict()
            ),
            pytorch_version=torch_version,
        ),
        torchscript=bio.TorchscriptWeightsDescr(
            source=tmp / "weights_torchscript.pt", pytorch_version=torch_version, parent="pytorch_state_dict"
        ),
    )
    from .. import __version__
    from .models import FORMAT

    name = str(meta.get("name") or "model")
    description = str(meta.get("description") or f"napari-unet model {name}")
    description = (
        f"{description}. U-Net ({cfg.depth} poolings, {cfg.base_channels} base channels) from napari-unet; "
        f"outputs the probabilities of {', '.join(classes)}."
    )
    if invert:
        description += " Invert images with a bright background first."
    tags = ["unet", "unet2d", "pytorch", "segmentation", "instance-segmentation", "semantic-segmentation", "napari-unet", "2d"]
    text = f"{name} {meta.get('description', '')}".lower()
    for word in ("nuclei", "cells", "fluorescence", "phase-contrast"):
        if word.replace("-", " ") in text or word in text:
            tags.append(word)
    fields = dict(
        name=_rdf_name(name),
        description=description[:1024],
        authors=[bio.Author(name=str(a)) for a in authors],
        cite=[bio.CiteEntry(text=CITATION_TEXT, doi=bio.Doi(CITATION_DOI))],
        license=bio.LicenseId(license),
        documentation=bio.FileDescr(source=tmp / "README.md"),
        covers=[bio.FileDescr(source=tmp / "cover.png")],
        tags=tags,
        inputs=[inp],
        outputs=[out],
        weights=weights,
        config=bio.Config(
            napari_unet={
                "format": FORMAT,
                "napari_unet_version": __version__,
                "architecture": cfg.to_dict(),
                "meta": meta,
            }
        ),
    )
    return bio.ModelDescr(**fields)


def _save_atomic(descr, out: Path) -> None:
    """``save_bioimageio_package`` into a temporary folder beside ``out``, then rename."""
    from bioimageio.spec import save_bioimageio_package

    tmpdir = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.stem}."))
    try:
        try:
            path = save_bioimageio_package(descr, output_path=tmpdir / out.name)
        except ValueError as exc:  # an invalid package is a bug here, not a user error
            raise RuntimeError(f"bioimage.io rejected the exported package: {exc}") from exc
        os.chmod(path, 0o644)
        os.replace(path, out)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _rdf_name(name: str) -> str:
    """bioimage.io names allow letters, digits, ``_+- ()``; at least 5 characters."""
    clean = re.sub(r"[^A-Za-z0-9_+\- ()]", "-", name)
    return f"napari-unet {clean}"[:128]


def _identifier(value, i: int) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", str(value))
    return s if s and not s[0].isdigit() else f"class{i}"


def _yaml_plain(obj):
    """Metadata as YAML values (no tuples, numpy scalars or NaN)."""
    if isinstance(obj, dict):
        return {str(k): _yaml_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_yaml_plain(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if hasattr(obj, "item"):
        return _yaml_plain(obj.item())
    return str(obj)
