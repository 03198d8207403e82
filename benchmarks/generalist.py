"""A model with automatic size on the val splits of several sets: size estimate, one network
pass per image, then a sweep of post-processing settings scored per set (and on the colour
images of dsb2018 alone), so that one choice can be made that holds across sets.

    python benchmarks/generalist.py runs/generalist2.pt --sets dsb2018 bbbc039 usiigaci
    python benchmarks/generalist.py generalist --seed-depth 0 0.07 --seed-spacing 0 0.4

Each image's cell diameter is estimated as Segment does by default (``--diameter auto``);
the estimate is compared with the ground truth's median equivalent diameter (its error is
printed per set). ``--cache DIR`` keeps the probabilities for another sweep. Choose on
``val`` only; held-out images judge the choice.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import val_pairs


def compute(seg, sets, limit, cache: Path | None):
    from napari_unet.core.data import median_diameter, read_image
    from napari_unet.core.inference import as_planes
    from napari_unet.core.normalize import percentiles

    out = {}
    for name in sets:
        rows = []
        t_all, px = 0.0, 0
        for img_path, lab_path in val_pairs(name, limit):
            f = cache / f"{name}_{img_path.stem}.npz" if cache else None
            truth = read_image(lab_path)
            raw = read_image(img_path)
            rgb = raw.ndim == 3
            if f is not None and f.is_file():
                z = np.load(f)
                probs, d, secs = z["probs"], float(z["d"]), float(z["secs"])
            else:
                t0 = time.perf_counter()
                plane = as_planes(raw)[0][0]
                limits = percentiles(plane, *seg.percentiles)
                auto = seg.loaded.meta.get("default_diameter") == "auto"
                d = (seg.estimate_diameter(plane, limits) if auto else None) or seg.loaded.image_diameter or seg.loaded.diameter
                probs = seg.probabilities(plane, d, limits).astype(np.float16)
                secs = time.perf_counter() - t0
                if f is not None:
                    np.savez(f, probs=probs, d=d, secs=secs)
            t_all += secs
            px += truth.size
            rows.append({"probs": probs.astype(np.float32), "d": d, "truth": truth, "rgb": rgb,
                         "true_d": median_diameter(truth)})
        out[name] = rows
        err = [abs(np.log(r["d"] / r["true_d"])) for r in rows if r["true_d"]]
        within = np.mean([e < np.log(1.25) for e in err])
        print(f"{name}/val: {len(rows)} images; size estimate median error {100 * (np.exp(np.median(err)) - 1):.0f} %, "
              f"{100 * within:.0f} % within 25 %; network + estimate {px / 1e6 / max(t_all, 1e-9):.2f} MP/s", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--sets", nargs="+", default=["dsb2018", "bbbc039", "usiigaci"])
    ap.add_argument("--seed-threshold", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    ap.add_argument("--seed-spacing", type=float, nargs="+", default=[0], help="x diameter; 0 = one seed per interior region")
    ap.add_argument("--seed-depth", type=float, nargs="+", default=[0, 0.05, 0.1], help="x diameter; 0 = use the spacing")
    ap.add_argument("--min-size", type=int, nargs="+", default=[15, 30, 60], help="model px")
    ap.add_argument("--threshold", type=float, nargs="+", default=[0.5])
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--cache", default=None)
    args = ap.parse_args(argv)

    from napari_unet.core.evaluation import evaluate_predictions
    from napari_unet.core.inference import Segmenter
    from napari_unet.core.postprocess import Postprocess

    seg = Segmenter(args.model, precision="fp32")
    cache = Path(args.cache) if args.cache else None
    if cache:
        cache.mkdir(parents=True, exist_ok=True)
    data = compute(seg, args.sets, args.limit, cache)
    meta = dict(seg.loaded.meta)
    cols = [f"{s} F1 / mAP / IoU" for s in args.sets] + (["dsb2018 colour F1"] if "dsb2018" in args.sets else [])
    print("\n| threshold | seed threshold | spacing | depth | min size | " + " | ".join(cols) + " | mean F1 |")
    print("|" + "---:|" * (6 + len(cols)))
    for th, st, sp, sd, ms in itertools.product(args.threshold, args.seed_threshold, args.seed_spacing, args.seed_depth, args.min_size):
        m = dict(meta, threshold=th, seed_threshold=st, seed_spacing=sp, seed_depth=sd or None, min_size=ms)
        cells, f1s = [], []
        colour_cell = "-"
        for name in args.sets:
            rows = data[name]
            preds = [Postprocess.for_model(m, r["d"], seg.loaded.scale(r["d"]))(r["probs"])[1] for r in rows]
            res = evaluate_predictions(preds, [r["truth"] for r in rows])
            cells.append(f"{res['f1']:.3f} / {res['mean_ap']:.3f} / {res['pixel_iou']:.3f}")
            f1s.append(res["f1"])
            if name == "dsb2018":
                colour = [i for i, r in enumerate(rows) if r["rgb"]]
                if colour:
                    rc = evaluate_predictions([preds[i] for i in colour], [rows[i]["truth"] for i in colour])
                    colour_cell = f"{rc['f1']:.3f}"
        if "dsb2018" in args.sets:
            cells.append(colour_cell)
        print(f"| {th} | {st} | {sp} | {sd} | {ms} | " + " | ".join(cells) + f" | {np.mean(f1s):.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
