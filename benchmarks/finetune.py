"""Few-stroke fine-tuning on a new modality (EM), against an ilastik-style random forest.

    python benchmarks/finetune.py                  # the README figures (60 s budget)
    python benchmarks/finetune.py --budget 30 --eval-split val   # for choosing settings
    python benchmarks/finetune.py --threads 1 --strokes 5        # fewer strokes (5 / 15 / 30 per class)

Simulates a person's strokes on two ``isbi2012/val`` images (one stroke inside each of 15
cells and 15 short strokes along membranes per image, about 1 % of the pixels; fixed seed),
fine-tunes the shipped default model (trained on fluorescence nuclei, never on EM) with the
plugin's own fine-tuning code (``napari_unet.core.finetune``, the widget's and the CLI's code
path) for a fixed wall-clock budget, and scores the cell class (pixel IoU, pixel error) on
every ``isbi2012/train`` image. The peer, trained in the same run on the same strokes, is an
ilastik-style pixel classifier: a random forest (scikit-learn, 100 trees) on
``skimage.feature.multiscale_basic_features``.

Prints time-to-quality (the weights a user would keep when pressing Stop after 10, 20, 30
and 60 s of training: the best by the held-out strokes so far), the time from pressing
Train to the first live preview (a 512 x 512 view), and a Markdown table.

Settings were chosen with ``--eval-split val`` (the three ``isbi2012/val`` images that
carry no strokes); ``isbi2012/train`` is only ever used for the reported scores.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NAPARI_UNET_DATA", ROOT.parent / "shared" / "data")) / "isbi2012"
STROKE_IMAGES = ("slice15", "slice16")
CHECKPOINTS = (10, 20, 30, 60)


def load(split: str, names=None):
    import tifffile

    folder = DATA / split
    if not folder.is_dir():
        raise SystemExit(f"no data at {folder} (set NAPARI_UNET_DATA)")
    out = []
    for p in sorted(folder.glob("*.tif")):
        if p.stem.endswith("_labels") or (names and p.stem not in names):
            continue
        out.append((p.stem, tifffile.imread(p), tifffile.imread(p.with_name(p.stem + "_labels.tif"))))
    return out


def score(preds, truths) -> tuple[float, float]:
    """Pooled pixel IoU of the cell class and pixel error."""
    inter = union = wrong = total = 0
    for p, t in zip(preds, truths):
        p = p.astype(bool)
        t = t > 0
        inter += np.count_nonzero(p & t)
        union += np.count_nonzero(p | t)
        wrong += np.count_nonzero(p != t)
        total += t.size
    return inter / union, wrong / total


def save_predictions(folder: Path, method: str, names, preds, truths) -> None:
    """Write ``<method>_<image>.tif`` (1 = cell) and print where the wrong pixels are."""
    import tifffile
    from scipy import ndimage as ndi

    folder.mkdir(parents=True, exist_ok=True)
    fp = fn = fp_band = fn_band = total = 0
    for name, p, t in zip(names, preds, truths):
        p, t = np.asarray(p, bool), t > 0
        tifffile.imwrite(folder / f"{method}_{name}.tif", p.astype(np.uint8))
        # the band: pixels within 3 px of the true cell / membrane border
        band = ndi.binary_dilation(t, iterations=3) & ndi.binary_dilation(~t, iterations=3)
        fp += np.count_nonzero(p & ~t)
        fn += np.count_nonzero(~p & t)
        fp_band += np.count_nonzero(p & ~t & band)
        fn_band += np.count_nonzero(~p & t & band)
        total += t.size
    print(f"{method} errors (fractions of all pixels): cell where membrane {fp / total:.4f} "
          f"({fp_band / total:.4f} within 3 px of a border), membrane where cell {fn / total:.4f} "
          f"({fn_band / total:.4f} within 3 px of a border); predictions in {folder}")


def unet_predict(session, images):
    """The cell masks a user gets from the session's current weights: the plugin's own
    post-processing, as in the live preview and the Segment widget."""
    session.trainer.model.eval()
    return [session.segment(im)[0] > 0 for im in images]


def score_instances(trainer, info, session, images, truths) -> None:
    """F1@0.5 / mean AP of the current weights' instances, post-processed as the saved model
    would be (threshold and seeds of ``finetuned_settings``) and with the base model's seeds."""
    from napari_unet.core.baseline import otsu_watershed
    from napari_unet.core.evaluation import evaluate_predictions
    from napari_unet.core.finetune import finetuned_settings

    if trainer.best_state is not None:  # the weights a saved model carries
        trainer.eval_model().load_state_dict(trainer.best_state)
    saved = finetuned_settings(trainer, base_meta=info.base_meta)
    from napari_unet.core.finetune_save import ONE_SEED_PER_REGION, SPLIT_RATIO, annotated_probs, split_ratio

    cal = {k: v for k, v in saved.items() if k in ("threshold", "calibration")}
    ratio = split_ratio(annotated_probs(trainer), {**info.base_meta, **cal})
    print(f"\nthe base's seeds find {ratio or 0:.2f}x as many cells on the annotated images as one seed per interior region (limit {SPLIT_RATIO:g})")
    rows = [("saved model's seeds" + (" (one per interior region)" if saved.get("seeds") else " (the base's)"), saved)]
    if saved.get("seeds"):
        rows.append(("the base model's seeds", cal))
    else:
        rows.append(("one seed per connected interior region", {**cal, **ONE_SEED_PER_REGION}))
    print("\ninstances of the final weights (F1@0.5 / mean AP):")
    for name, meta in rows:
        session.post = info.postprocess(**meta)
        session.trainer.model.eval()
        r = evaluate_predictions([session.segment(im)[1] for im in images], truths)
        print(f"  {name}: F1 {r['f1']:.4f}  mean AP {r['mean_ap']:.4f}")
    r = evaluate_predictions([otsu_watershed(im)[1] for im in images], truths)
    print(f"  Otsu + watershed: F1 {r['f1']:.4f}  mean AP {r['mean_ap']:.4f}")
    session.post = info.postprocess(**saved)


def random_forest(stroke_set, images, seed: int, n_jobs: int):
    from skimage.feature import multiscale_basic_features
    from sklearn.ensemble import RandomForestClassifier

    from napari_unet.core.normalize import normalize

    def feats(im):
        return multiscale_basic_features(normalize(im), intensity=True, edges=True, texture=True, sigma_min=1, sigma_max=16)

    t0 = time.perf_counter()
    X, y = [], []
    for im, ann in stroke_set:
        f = feats(im)
        m = ann > 0
        X.append(f[m])
        y.append(ann[m] == 1)
    clf = RandomForestClassifier(n_estimators=100, n_jobs=n_jobs, random_state=seed)
    clf.fit(np.concatenate(X), np.concatenate(y))
    t_train = time.perf_counter() - t0
    preds = []
    for im in images:
        f = feats(im)
        preds.append(clf.predict(f.reshape(-1, f.shape[-1])).reshape(im.shape))
    return preds, t_train


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=60.0, help="seconds of fine-tuning (default 60)")
    p.add_argument("--base", default=None, help="base model (default: FINETUNE_BASE, the one the Fine-tune widget offers first)")
    p.add_argument("--eval-split", choices=["train", "val"], default="train",
                   help="score on isbi2012/train (reported) or on the val images without strokes (for choosing settings)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strokes", type=int, default=15, metavar="N",
                   help="strokes per class per image: N cells and N membrane strokes (default 15)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for training (default: as the widget, cores - 1)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override a fine-tuning setting, e.g. lr=2e-3")
    p.add_argument("--no-rf", action="store_true", help="skip the random forest")
    p.add_argument("--uncalibrated", action="store_true", help="also score each snapshot at threshold 0.5")
    p.add_argument("--instances", action="store_true",
                   help="also score the final weights' instances (F1@0.5, mean AP) with the seeds the saved model "
                        "carries and with the base model's, beside Otsu + watershed")
    p.add_argument("--save", type=Path, default=None, metavar="DIR",
                   help="write the final predictions (uint8 TIFFs, 1 = cell) and an error breakdown here")
    args = p.parse_args(argv)

    from dataclasses import asdict

    import torch

    from napari_unet.core.finetune import (
        FINETUNE_DEFAULTS,
        FinetuneSession,
        PreviewRequest,
        default_threads,
        finetuned_settings,
        make_finetuner,
    )
    from napari_unet.core.models import FINETUNE_BASE
    from napari_unet.testing import simulate_strokes

    defaults = asdict(FINETUNE_DEFAULTS)
    overrides = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        if k not in defaults:
            raise SystemExit(f"unknown setting {k!r}; known: {', '.join(defaults)}")
        overrides[k] = type(defaults[k])(v) if not isinstance(defaults[k], bool) else v.lower() in ("1", "true", "yes")
    threads = args.threads or default_threads()

    strokes = load("val", STROKE_IMAGES)
    anns = [simulate_strokes(lab, n_cells=args.strokes, n_background=args.strokes, seed=args.seed * 100 + k)
            for k, (_, _, lab) in enumerate(strokes)]
    frac = np.mean([(a > 0).mean() for a in anns])
    n_cell = sum(int((a == 1).sum()) for a in anns)
    n_bg = sum(int((a == 2).sum()) for a in anns)
    if args.eval_split == "val":
        evalset = [e for e in load("val") if e[0] not in STROKE_IMAGES]
    else:
        evalset = load("train")
    eval_imgs = [e[1] for e in evalset]
    eval_truth = [e[2] for e in evalset]
    base = args.base or FINETUNE_BASE
    print(f"strokes: {len(strokes)} isbi2012/val images ({', '.join(s[0] for s in strokes)}), "
          f"{n_cell} cell + {n_bg} membrane pixels ({100 * frac:.2f} % of the pixels)")
    print(f"scored on isbi2012/{args.eval_split}: {len(evalset)} images; base model {base}; "
          f"budget {args.budget:g} s; torch threads {threads} of {os.cpu_count()} cores")
    settings = dict(defaults, **overrides)
    print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))

    # ---- U-Net fine-tuning, timed as a user pressing Train -------------------------------
    import torch._dynamo  # the optimiser imports it (2.4 s); the widget does so when it opens
    torch.set_num_threads(threads)
    plane = strokes[0][1]
    t_press = time.perf_counter()
    trainer, info = make_finetuner([s[1] for s in strokes], anns, base, args.budget, seed=args.seed, **overrides)
    session = FinetuneSession(trainer, info, request=lambda: PreviewRequest(plane, key="view"), threads=threads)
    first_preview = None
    snaps = {}
    marks = [c for c in CHECKPOINTS if c < args.budget]
    base_state = copy.deepcopy(info.base_state)
    base_score = None
    for ev in session.run():
        if hasattr(ev, "semantic"):
            if first_preview is None:
                first_preview = time.perf_counter() - t_press
            continue
        if ev.step == 0:
            base_score = ev.val_score
            continue
        while marks and ev.elapsed >= marks[0]:
            snaps[marks.pop(0)] = (copy.deepcopy(trainer.best_state or trainer.eval_model().state_dict()), trainer.step, trainer.best_score)
    t_total = time.perf_counter() - t_press
    snaps[args.budget] = (copy.deepcopy(trainer.model.state_dict()), trainer.step, trainer.best_score)
    print(f"trained {trainer.step} steps in {trainer.history[-1].elapsed:.1f} s "
          f"({trainer.step / max(trainer.history[-1].elapsed, 1e-9):.1f} steps/s, precision {trainer.precision}); "
          f"held-out stroke score (mean IoU): base {base_score:.3f}, best {trainer.best_score:.3f}; "
          f"Train to done {t_total:.1f} s")
    print(f"first live preview {first_preview:.1f} s after pressing Train" if first_preview is not None else "no preview")

    torch.set_num_threads(os.cpu_count() or 1)  # scoring is not part of the budget
    model = trainer.eval_model()  # the weights Segment would get (the moving average, if any)
    rows = []
    model.load_state_dict(base_state)
    iou, err = score(unet_predict(session, eval_imgs), eval_truth)
    rows.append((f"{base} (base model, no fine-tuning)", 0, iou, err))
    print(f"\ntime-to-quality (U-Net fine-tuned, scored on isbi2012/{args.eval_split}):")
    print(f"  {0:>5.0f} s: pixel IoU {iou:.4f}  pixel error {err:.4f}  (base model)")
    for t in sorted(snaps):
        state, steps, best = snaps[t]
        model.load_state_dict(state)
        # the post-processing the saved model would carry (threshold calibrated on the
        # annotated images)
        saved = finetuned_settings(trainer, state)
        session.post = info.postprocess(**saved)
        iou, err = score(unet_predict(session, eval_imgs), eval_truth)
        cal = saved.get("calibration")
        note = f", threshold {session.post.threshold:.3f} for {100 * cal['cell_fraction']:.1f} % cells" + ("" if cal["applied"] else " (kept)") if cal else ""
        print(f"  {t:>5.0f} s: pixel IoU {iou:.4f}  pixel error {err:.4f}  ({steps} steps, held-out stroke score {best:.3f}{note})")
        if args.uncalibrated and cal:
            session.post = info.postprocess()
            iou0, err0 = score(unet_predict(session, eval_imgs), eval_truth)
            session.post = info.postprocess(**saved)
            print(f"         uncalibrated (threshold 0.5): pixel IoU {iou0:.4f}  pixel error {err0:.4f}")
        rows.append((f"U-Net fine-tuned from {base}, {t:g} s", t, iou, err))

    if args.instances:
        score_instances(trainer, info, session, eval_imgs, eval_truth)
    if args.save:
        final_preds = unet_predict(session, eval_imgs)
        save_predictions(args.save, "unet", [e[0] for e in evalset], final_preds, eval_truth)
    if not args.no_rf:
        preds, t_rf = random_forest(list(zip([s[1] for s in strokes], anns)), eval_imgs, args.seed, n_jobs=os.cpu_count() or 1)
        iou_rf, err_rf = score(preds, eval_truth)
        if args.save:
            save_predictions(args.save, "rf", [e[0] for e in evalset], preds, eval_truth)
        rows.append(("random forest on multiscale_basic_features (ilastik-style)", t_rf, iou_rf, err_rf))
        from napari_unet.core.postprocess import fill_small_holes

        iou_rff, err_rff = score([fill_small_holes(np.asarray(p, bool), session.post.max_hole) for p in preds], eval_truth)
        rows.append((f"random forest + the plugin's hole filling ({session.post.max_hole} px)", t_rf, iou_rff, err_rff))
        print(f"\nrandom forest: trained in {t_rf:.1f} s; pixel IoU {iou_rf:.4f}  pixel error {err_rf:.4f}")

    print("\n| method | training (s) | pixel IoU (cell) | pixel error |")
    print("|---|---:|---:|---:|")
    for name, t, iou, err in rows:
        print(f"| {name} | {t:.0f} | {iou:.4f} | {err:.4f} |")
    final = rows[-3] if not args.no_rf else rows[-1]
    if not args.no_rf:
        ok_iou = final[2] >= iou_rf + 0.08
        print(f"\ntargets after {args.budget:g} s: pixel IoU >= RF + 0.08: {final[2]:.4f} vs {iou_rf + 0.08:.4f} "
              f"({'met' if ok_iou else 'NOT met'}); pixel error <= 0.10: {final[3]:.4f} "
              f"({'met' if final[3] <= 0.10 else 'NOT met'}); first preview <= 3 s: "
              f"{'met' if first_preview is not None and first_preview <= 3 else 'NOT met'}")
    print("Reference: U-Net paper, ISBI 2012 test set, pixel error 0.0611 after ~10 h of GPU training on dense labels.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
