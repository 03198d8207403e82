"""``napari-unet segment``: images, folders, globs and zarr arrays to label files.

For each input ``X`` it writes ``DIR/X_labels.tif`` (instances) and ``DIR/X_cells.tif``
(1 = cell), or ``DIR/X_labels.zarr`` for a zarr input, and with ``--measure``
``DIR/X_measurements.csv``. Outputs are written atomically and never replace an input or a
file this run did not create: an input whose outputs exist is skipped (so an interrupted
folder resumes where it stopped) unless ``--overwrite``. An unreadable input is reported
and the others go on (``--fail-fast`` stops at the first); the exit status is 1 if any
input failed.
"""

from __future__ import annotations

import glob
import sys
import time
from pathlib import Path

from .core.batch import folder_images, is_image, plan

_SEGMENTERS: dict = {}


def add_parser(sub) -> None:
    s = sub.add_parser("segment", help="segment images into instance and semantic label files")
    s.add_argument("inputs", nargs="+", help="image files (TIFF, PNG, JPEG), zarr arrays, folders or quoted globs")
    s.add_argument("--output", "-o", required=True, help="output folder")
    s.add_argument("--model", "-m", default=None, help="shipped/user model name or .pt file (default: the default model)")
    s.add_argument("--diameter", default=None, help="typical cell diameter in pixels, or 'auto' to estimate (default: the model's)")
    s.add_argument("--threshold", type=float, default=None, metavar="P",
                   help="cell probability above which a pixel is cell, between 0 and 1 (default: the model's; lower finds more and larger cells)")
    s.add_argument("--min-size", type=int, default=None, metavar="PX", help="drop objects smaller than this many pixels (default: the model's)")
    s.add_argument("--axes", default=None,
                   help="axes of the input from T, Z, C, Y, X (S: RGB samples), e.g. ZYX, TYX, CYX (default: the file's metadata, else guessed)")
    s.add_argument("--anisotropy", type=float, default=None, metavar="Z",
                   help="z spacing / xy pixel size of a volume (default: the file's metadata, else 1)")
    s.add_argument("--channel", default=None, metavar="C",
                   help="the channel to segment along a C axis (default 0); for a model that reads several channels, "
                        "one per input in its order, e.g. 1,0 (default: the first ones)")
    s.add_argument("--measure", action="store_true", help="also write DIR/<stem>_measurements.csv (one row per cell)")
    s.add_argument("--overwrite", action="store_true", help="replace outputs that exist already (never an input)")
    s.add_argument("--fail-fast", action="store_true", help="stop at the first input that fails (default: report it and go on)")
    s.add_argument("--workers", type=int, default=None, metavar="N",
                   help="segment the inputs on a local dask.distributed cluster of N processes")
    s.add_argument("--scheduler", default=None, metavar="ADDRESS", help="segment the inputs on an existing Dask cluster")
    s.add_argument("--tile", type=int, default=1024, help="largest tile side in pixels (default 1024; smaller uses less memory)")
    s.add_argument("--precision", choices=["auto", "int8", "bf16", "fp32"], default="auto",
                   help="auto: int8 where the model is calibrated for it and the CPU has AVX-512 VNNI, "
                        "else bf16 where the CPU or GPU has it, else fp32")
    s.add_argument("--rgb", action="store_true", help="treat a last axis of 3/4 as colour (auto-detected otherwise)")
    s.add_argument("--quiet", "-q", action="store_true")


def expand_inputs(specs: list[str]) -> list[Path]:
    """Files from file names, folders (their images, not this tool's outputs) and globs."""
    from ._cli_common import UserError

    out: list[Path] = []
    for spec in specs:
        p = Path(spec)
        if p.suffix.lower() == ".zarr" and p.exists():
            out.append(p)
        elif p.is_dir():
            found = folder_images(p)
            if not found:
                raise UserError(f"no images in folder {p}")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        elif any(c in spec for c in "*?["):
            found = [Path(q) for q in sorted(glob.glob(spec)) if is_image(Path(q)) or q.endswith(".zarr")]
            if not found:
                raise UserError(f"no images match {spec}")
            out.extend(found)
        else:
            raise UserError(f"no such file: {p}")
    seen, unique = set(), []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def run(args) -> int:
    from ._cli_common import UserError, parse_diameter
    from .core.axes import parse_channels

    if args.tile < 32:
        raise UserError("--tile must be at least 32")
    if args.threshold is not None and not 0 < args.threshold < 1:
        raise UserError(f"--threshold must lie between 0 and 1, got {args.threshold}")
    if args.min_size is not None and args.min_size < 0:
        raise UserError(f"--min-size must be >= 0, got {args.min_size}")
    if args.anisotropy is not None and not args.anisotropy > 0:
        raise UserError(f"--anisotropy must be a positive number, got {args.anisotropy}")
    args.channel = parse_channels(args.channel, "--channel")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    parse_diameter(args.diameter)
    inputs = expand_inputs(args.inputs)
    out = Path(args.output)
    try:
        work = plan(inputs, out, args.measure, args.overwrite)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    for p in work.skipped:
        _say(args, f"{p.name}: outputs exist, skipped (--overwrite replaces them)")
    todo = work.todo
    from .core.models import load_model

    loaded = load_model(args.model)  # an unknown model fails now, in one line, before any work
    out.mkdir(parents=True, exist_ok=True)
    if args.workers or args.scheduler:
        from ._cli_distributed import run_distributed

        results = run_distributed(todo, args)
    else:
        from .core.batch import in_lanes, lanes_for

        job = SegmentJob.from_args(args, loaded)
        # the model loads here, before any thread starts; --fail-fast: one at a time, so that
        # nothing after the failing input has begun
        lanes = 1 if args.fail_fast else lanes_for(job.segmenter, todo)
        results = []
        for result in in_lanes(job.safe, todo, lanes, stop=lambda r: args.fail_fast and r[1] is not None):
            results.append(result)
            _report(args, result)
    failed = [r for r in results if r[1] is not None]
    if failed:
        if len(inputs) > 1:  # (one input: its own error line says it all)
            print(f"napari-unet segment: {len(failed)} of {len(inputs)} inputs failed", file=sys.stderr)
        return 1
    return 0


def _say(args, msg: str) -> None:
    if not args.quiet:
        print(msg)


def _report(args, result) -> None:
    name, error, msg = result
    if error is not None:
        print(f"napari-unet segment: error: {name}: {error}", file=sys.stderr)
    else:
        _say(args, msg)


class SegmentJob:
    """Segment one input with the options of a command line (picklable for Dask workers:
    the model is loaded lazily, once per process)."""

    def __init__(self, options: dict, loaded=None):
        self.options = options
        self._seg = None
        self._loaded = loaded  # the model file, if already read (not sent to Dask workers)

    @classmethod
    def from_args(cls, args, loaded=None) -> SegmentJob:
        keys = ("model", "diameter", "threshold", "min_size", "axes", "anisotropy", "channel", "measure",
                "output", "tile", "precision", "rgb")
        return cls({k: getattr(args, k) for k in keys}, loaded)

    def __getstate__(self):
        return {"options": self.options, "_seg": None, "_loaded": None}

    @property
    def segmenter(self):
        if self._seg is None:
            o = self.options
            key = (o["model"], o["precision"], o["tile"], o["threshold"], o["min_size"])
            if key not in _SEGMENTERS:  # one per process: Dask workers load the model once
                from .core.inference import Segmenter

                model = self._loaded if self._loaded is not None else o["model"]  # read once, not twice
                _SEGMENTERS[key] = Segmenter(model, precision=o["precision"], tile=o["tile"], threshold=o["threshold"], min_size=o["min_size"])
            self._seg = _SEGMENTERS[key]
        return self._seg

    def safe(self, path: Path) -> tuple[str, str | None, str]:
        """``(name, error or None, message)``: expected failures (unreadable input, a bad
        file, a full disk) are reported, not raised; a genuine bug still raises."""
        from ._cli_common import UserError, is_user_error

        try:
            return path.name, None, self(path)
        except (UserError, ValueError, OSError, MemoryError) as exc:
            if not is_user_error(exc):
                raise  # a bug, not this file's fault: its traceback shows
            from .core.errors import one_line

            return path.name, one_line(exc), ""

    def __call__(self, path: Path) -> str:
        from ._cli_common import parse_diameter
        from .core.batch import segment_file

        o = self.options
        t0 = time.perf_counter()
        out = Path(o["output"])
        res = segment_file(self.segmenter, path, out, parse_diameter(o["diameter"]), o["axes"], o["anisotropy"],
                           o["channel"], rgb=True if o["rgb"] else None, measure=o["measure"])
        extra = f" ({'; '.join(res.notes)})" if res.notes else ""
        return f"{path.name}: {res.n_cells} cells -> {out} ({time.perf_counter() - t0:.1f} s){extra}"
