"""Calibrate a model for int8 inference: ``python scripts/calibrate_int8.py MODEL.pt
DIR[:EVERY]... --output OUT.pt``.

Segments every EVERY-th image of each folder (training images: ``X.tif`` beside
``X_labels.tif``, or any ``*.tif``) as ``napari-unet segment`` does, in float32, and records
the range of every tensor the int8 network stores (:func:`napari_unet.core.quantized.
calibrate`) over all the tiles the network sees there. The ranges go into the model
file's metadata (``meta["int8"]``); weights and other metadata are unchanged. A file
without them runs in bfloat16 or float32 as before.
"""

import argparse
from pathlib import Path

import torch

from napari_unet.core import quantized
from napari_unet.core.data import read_image
from napari_unet.core.inference import Segmenter
from napari_unet.core.models import load_model, safe_load, save_model


class _Recorder(torch.nn.Module):
    """Runs the float network in the int8 network's order, recording each tensor's range."""

    def __init__(self, net):
        super().__init__()
        self.inner = net
        self.ranges: dict[str, list[float]] = {}

    def __getattr__(self, name):  # geometry (config, multiple, margins) from the network
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)

    def forward(self, x):
        return quantized.walk(self.inner, x, quantized.recorder(self.ranges))


def images(spec: str) -> list[Path]:
    if Path(spec).is_file():
        return [Path(spec)]
    folder, _, every = spec.partition(":")
    files = sorted(p for p in Path(folder).glob("*.tif") if not p.stem.endswith("_labels"))
    return files[:: int(every or 1)]


def _described(specs: list[str]) -> list[str]:
    """The calibration images as the model card names them: folders as given, files by folder."""
    folders = [s for s in specs if not Path(s).is_file()]
    files = [Path(s) for s in specs if Path(s).is_file()]
    by_folder = sorted({str(f.parent) for f in files})
    return folders + [f"{d}: {sum(str(f.parent) == d for f in files)} files" for d in by_folder]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("folders", nargs="+", help="FOLDER, FOLDER:EVERY (every EVERY-th image) or an image file")
    ap.add_argument("--output", help="write the model with its int8 ranges here (default: only print them)")
    args = ap.parse_args(argv)

    loaded = load_model(args.model)
    loaded.meta.pop("int8", None)
    if not quantized.supported(loaded.model):
        raise SystemExit(f"{args.model}: this network cannot run in int8 (unpadded or with a regression head)")
    seg = Segmenter(loaded, precision="fp32")
    seg.channels_last = False
    seg.net = recorder = _Recorder(seg.model)
    files = [f for spec in args.folders for f in images(spec)]
    if not files:
        raise SystemExit("no images found")
    for f in files:
        res = seg.segment(read_image(f))
        print(f"{f.name}: {int(res.instances.max())} cells", flush=True)
    ranges = {k: [round(lo, 4), round(hi, 4)] for k, (lo, hi) in recorder.ranges.items()}
    for k, (lo, hi) in ranges.items():
        print(f"  {k}: {lo:g} .. {hi:g}")
    if args.output:
        meta = {**loaded.meta, "int8": {"ranges": ranges, "images": _described(args.folders), "count": len(files)}}
        stored = safe_load(loaded.path)["state_dict"].values()  # kept as the file stores them
        save_model(args.output, loaded.model, meta, half=any(v.dtype == torch.float16 for v in stored))
        print(f"wrote {args.output} (int8 ranges of {len(ranges)} tensors from {len(files)} images)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
