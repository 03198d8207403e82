"""``napari-unet export`` / ``napari-unet import``: bioimage.io model packages.

    napari-unet export MODEL --output X.zip [--overwrite] [--test-image IMG]
    napari-unet import X.zip [--name NAME] [--overwrite]

``export`` writes a model (shipped or user name, or ``.pt`` file) as a bioimage.io model
package that ``bioimageio.core``'s test passes (PyTorch state_dict and TorchScript weights,
test tensors, cover, model card); it needs the ``bioimageio`` extra. ``import`` brings such
a package of a napari-unet U-Net into the user's model folder, executing no code from it.
See :mod:`napari_unet.core.bioimageio`. User errors raise ``ValueError`` with a one-line
message.
"""

from __future__ import annotations

from pathlib import Path


def add_parser(subparsers):
    """Add the ``export`` and ``import`` subcommands to an ``argparse`` subparsers object."""
    e = subparsers.add_parser(
        "export",
        help="write a model as a bioimage.io model package (.zip)",
        description=(
            "Write a model as a bioimage.io model package (rdf.yaml, PyTorch state_dict and "
            "TorchScript weights, test tensors, cover, model card) that bioimageio.core's test "
            "passes and Fiji/deepImageJ, QuPath or bioimage.io tools can run. Needs "
            "pip install 'napari-unet[bioimageio]'."
        ),
    )
    e.add_argument("model", help="shipped/user model name or .pt file")
    e.add_argument("--output", "-o", required=True, help="package to write (.zip)")
    e.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    e.add_argument("--test-image", default=None, metavar="IMG",
                   help="2D image to cut the package's 256 x 256 test input from (default: a bundled sample image)")
    e.add_argument("--author", action="append", default=None, metavar="NAME",
                   help="author to credit (repeatable; default: napari-unet developers)")
    e.add_argument("--license", default=None, metavar="SPDX", help="license of the weights (default: BSD-3-Clause)")
    e.add_argument("--quiet", "-q", action="store_true", help="print nothing on success")

    i = subparsers.add_parser(
        "import",
        help="add a bioimage.io package of a napari-unet model to your models",
        description=(
            "Add a bioimage.io model package written by 'napari-unet export' to your model "
            "folder, so that it appears in the Segment widget and 'segment --model NAME' finds "
            "it. Only its state_dict weights are loaded; no code from the package is run."
        ),
    )
    i.add_argument("package", help="bioimage.io model package (.zip)")
    i.add_argument("--name", default=None, help="name to save the model under (default: the name in the package)")
    i.add_argument("--overwrite", action="store_true", help="replace a user model of the same name")
    i.add_argument("--quiet", "-q", action="store_true", help="print nothing on success")
    return e, i


def run(args) -> int:
    if args.command == "export":
        return _export(args)
    if args.command == "import":
        return _import(args)
    raise ValueError(f"unknown command {args.command!r}")


def _export(args) -> int:
    from .core.bioimageio import export_package

    out = export_package(
        args.model, Path(args.output), overwrite=args.overwrite, test_image=args.test_image,
        authors=args.author, license=args.license,
    )
    if not args.quiet:
        print(f"{args.model} -> {out} (bioimage.io model package)")
    return 0


def _import(args) -> int:
    from .core.bioimageio_import import install_package

    dest = install_package(args.package, name=args.name, overwrite=args.overwrite)
    if not args.quiet:
        print(f"{args.package} -> model {dest.stem!r} ({dest})")
    return 0
