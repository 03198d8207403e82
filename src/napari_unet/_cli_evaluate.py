"""``napari-unet evaluate``: score models or prediction files against ground truth.

Each positional argument is a model (a shipped or user model name, or a ``.pt`` file),
a folder of prediction TIFFs, or a prediction file (all loose prediction files together
form one entry). Predictions match ground truth by name: for labels ``X_labels.tif``
(image ``X.tif``) the prediction is ``X_labels.tif`` (what ``napari-unet segment`` writes)
or ``X.tif``. Models segment the images beside the labels, or ``--images``.

A row for the Otsu + watershed baseline is computed in the same run unless
``--no-baseline``. User errors raise ``ValueError`` with a one-line message.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
_PRED_SUFFIXES = ("_labels", "_instances", "")


def add_parser(subparsers):
    """Add the ``evaluate`` subcommand to an ``argparse`` subparsers object."""
    e = subparsers.add_parser(
        "evaluate",
        help="score models or prediction files against ground-truth labels",
        description=(
            "Score models (name or .pt file) or prediction TIFFs (files or folders) against "
            "ground-truth instance labels. Prints pixel IoU, precision, recall, F1 at IoU 0.5, "
            "mean AP over IoU 0.50:0.05:0.95 and throughput, with an Otsu+watershed baseline."
        ),
    )
    e.add_argument("targets", nargs="+", metavar="PRED_OR_MODEL", help="model name or .pt file, or prediction TIFFs / folders")
    e.add_argument("--labels", nargs="+", required=True, help="ground-truth label files or a folder (X.tif + X_labels.tif)")
    e.add_argument("--images", nargs="+", default=None, help="images for models to segment (default: X.tif beside each X_labels.tif)")
    e.add_argument("--diameter", default=None, help="cell diameter in pixels for models, or 'auto' (default: the model's)")
    e.add_argument("--precision", choices=["auto", "int8", "bf16", "fp32"], default="auto",
                   help="auto: int8 where the model is calibrated for it and the CPU has AVX-512 VNNI, "
                        "else bf16 where the CPU or GPU has it, else fp32")
    e.add_argument("--no-baseline", action="store_true", help="skip the Otsu+watershed baseline row")
    e.add_argument("--json", default=None, metavar="FILE", help="also write all scores (with per-image rows) to FILE")
    e.add_argument("--quiet", "-q", action="store_true", help="print only the table")
    return e


# ---- ground truth ----------------------------------------------------------------------
@dataclass
class Truth:
    key: str  # image stem X
    label: Path
    image: Path | None


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_SUFFIXES


def _label_key(p: Path) -> str:
    return p.stem[: -len("_labels")] if p.stem.endswith("_labels") else p.stem


def _image_beside(label: Path) -> Path | None:
    key = _label_key(label)
    if key == label.stem:
        return None
    for suf in (label.suffix,) + IMAGE_SUFFIXES:
        cand = label.with_name(key + suf)
        if cand.is_file():
            return cand
    return None


def ground_truth(labels: list[str], images: list[str] | None) -> list[Truth]:
    """The ground truth entries named by ``--labels`` (and ``--images``)."""
    from .core.data import find_pairs

    paths = [Path(p) for p in labels]
    for p in paths:
        if not p.exists():
            raise ValueError(f"--labels: no such file or folder: {p}")
    if images:
        for p in images:
            if not Path(p).exists():
                raise ValueError(f"--images: no such file or folder: {p}")
        pairs = find_pairs(images, labels)
        for _, lab in pairs:
            if not lab.is_file():
                raise ValueError(f"--labels: no label file {lab}")
        return [Truth(img.stem, lab, img) for img, lab in pairs]
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and _is_image(q) and q.stem.endswith("_labels"))
            if not found:
                raise ValueError(f"--labels: no *_labels.tif files in {p}")
            files.extend(found)
        else:
            files.append(p)
    out = [Truth(_label_key(f), f, _image_beside(f)) for f in files]
    keys = [t.key for t in out]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})[0]
        raise ValueError(f"--labels: two label files for the same image name {dup!r}")
    return out


# ---- what to evaluate ------------------------------------------------------------------
@dataclass
class Target:
    kind: str  # "model" or "predictions"
    name: str
    model: Path | None = None
    files: list[Path] | None = None


def classify_targets(targets: list[str]) -> list[Target]:
    """Models, prediction folders and (one group of) loose prediction files."""
    from .core.models import resolve_model

    out: list[Target] = []
    loose: list[Path] = []
    for t in targets:
        p = Path(t)
        if p.is_dir():
            files = sorted(q for q in p.iterdir() if q.is_file() and _is_image(q) and not q.stem.endswith("_cells"))
            if not files:
                raise ValueError(f"{p}: folder holds no prediction images")
            out.append(Target("predictions", str(p), files=files))
        elif p.suffix.lower() == ".pt":
            out.append(Target("model", t, model=resolve_model(p)))
        elif p.is_file() and _is_image(p):
            loose.append(p)
        else:
            try:
                out.append(Target("model", t, model=resolve_model(t)))
            except ValueError:
                if p.exists():
                    raise ValueError(f"{p}: not a model file (.pt), a prediction image or a folder") from None
                from .core.models import list_models

                known = ", ".join(m.name for m in list_models()) or "none"
                raise ValueError(f"{t!r}: no such file, folder or model (known models: {known})") from None
    if loose:
        parents = {q.parent for q in loose}
        name = str(parents.pop()) if len(parents) == 1 else "predictions"
        if len(loose) == 1:
            name = str(loose[0])
        out.append(Target("predictions", name, files=loose))
    return out


def match_predictions(files: list[Path], truths: list[Truth], what: str) -> list[Path]:
    """The prediction file for each ground-truth entry, by name or else by order."""
    by_stem = {f.stem: f for f in files}
    matched = []
    missing = []
    for t in truths:
        hit = next((by_stem[t.key + s] for s in _PRED_SUFFIXES if t.key + s in by_stem), None)
        if hit is None:
            missing.append(t.key)
        matched.append(hit)
    if not missing:
        return matched
    if len(missing) == len(truths) and len(files) == len(truths):  # no names in common: by order
        return list(files)
    raise ValueError(
        f"{what}: no prediction for {len(missing)} of {len(truths)} labelled images "
        f"(first: {missing[0]!r}; expected {missing[0]}_labels.tif or {missing[0]}.tif)"
    )


# ---- running ---------------------------------------------------------------------------
def _fmt(v, digits=3):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}"


def format_table(rows: list[dict]) -> str:
    """An aligned text table of result rows."""
    head = ["", "images", "pixel IoU", "precision", "recall", "F1@0.5", "mean AP", "MP/s"]
    body = []
    for r in rows:
        body.append([
            r["name"], str(r["n_images"]), _fmt(r["pixel_iou"]), _fmt(r["precision"]), _fmt(r["recall"]),
            _fmt(r["f1"]), _fmt(r["mean_ap"]), _fmt(r.get("mp_per_s"), 2),
        ])
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    lines = []
    for k, cells in enumerate([head] + body):
        parts = [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        lines.append("  ".join(parts).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(args) -> int:
    from ._cli_common import parse_diameter
    from .core.data import read_image
    from .core.evaluation import evaluate_baseline, evaluate_model, evaluate_predictions

    diameter = parse_diameter(args.diameter)
    truths = ground_truth(args.labels, args.images)
    targets = classify_targets(args.targets)
    if args.json:
        jp = Path(args.json)
        if jp.is_dir():
            raise ValueError(f"--json {jp} is a folder, not a file")
        if not jp.parent.is_dir():
            raise ValueError(f"--json: folder {jp.parent} does not exist")
    # check everything before the slow part
    pred_files = {}
    for t in targets:
        if t.kind == "predictions":
            pred_files[t.name] = match_predictions(t.files, truths, t.name)
    need_images = any(t.kind == "model" for t in targets)
    no_image = [t.key for t in truths if t.image is None]
    if need_images and no_image:
        raise ValueError(f"no image found beside the labels of {no_image[0]!r}: pass the images with --images")
    pairs = [(t.image, t.label) for t in truths] if not no_image else None

    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    rows = []
    for t in targets:
        if t.kind == "predictions":
            files = pred_files[t.name]
            preds, labs = [], []
            for f, tr in zip(files, truths):
                preds.append(read_image(f))
                labs.append(read_image(tr.label))
            res = evaluate_predictions(preds, labs, names=[tr.key for tr in truths])
            res["mp_per_s"] = None
        else:
            say(f"segmenting {len(pairs)} images with {t.name} ...")
            res = evaluate_model(t.model, pairs, diameter=diameter, precision=args.precision)
        res["name"] = t.name
        res["kind"] = t.kind
        rows.append(res)
    if not args.no_baseline:
        if pairs is None:
            say("baseline skipped: no images beside the labels (pass --images)")
        else:
            say(f"running the otsu+watershed baseline on {len(pairs)} images ...")
            res = evaluate_baseline(pairs)
            res["name"] = res["model"]
            res["kind"] = "baseline"
            rows.append(res)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"labels": [str(t.label) for t in truths], "results": rows}, f, indent=1, default=str)
        say(f"wrote {args.json}")
    return 0
