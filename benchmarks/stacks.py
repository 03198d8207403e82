"""The default model on inputs that are not one 2D image in memory: a phase-contrast
time-lapse, colour time-lapses and zarr arrays, with and without the hand-overs to the
specialists (phase contrast to ``cells``, stained tissue to ``tissue``) that these paths
once skipped: ``python -W ignore benchmarks/stacks.py``.

- ``usiigaci/val`` as one 6-frame time-lapse (``stack.segment_timelapse``);
- the colour images of ``dsb2018/val``, each as a 2-frame RGB time-lapse (the image and its
  mirror, ``pipeline.segment_input`` with axes ``TYXS``);
- ``usiigaci/val`` as zarr arrays (``pipeline.segment_zarr``).

"Without" disables ``Segmenter.delegate_for`` (for zarr: the block path with the typed
diameter alone, as ``segment_zarr`` did); scores are F1@0.5 / mean AP / pixel IoU pooled
over all frames.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import val_pairs


def main() -> int:
    import zarr

    from napari_unet.core.data import read_image
    from napari_unet.core.evaluation import evaluate_predictions
    from napari_unet.core.inference import Segmenter
    from napari_unet.core.pipeline import Input, segment_input, segment_zarr
    from napari_unet.core.stack import segment_timelapse

    seg = Segmenter("generalist")
    phase = [(read_image(i), read_image(lb)) for i, lb in val_pairs("usiigaci", None)]
    colour = [(img[..., :3], lab) for img, lab in ((read_image(i), read_image(lb)) for i, lb in val_pairs("dsb2018", None))
              if img.ndim == 3]

    def time_lapse():
        h, w = (min(img.shape[k] for img, _ in phase) for k in (0, 1))
        _, inst = segment_timelapse(seg, np.stack([img[:h, :w] for img, _ in phase]))
        return list(inst), [lab[:h, :w] for _, lab in phase]

    def colour_movies():
        preds, truths = [], []
        for img, lab in colour:
            res = segment_input(seg, Input(np.stack([img, img[:, ::-1]]), "TYXS", 1.0, None, []))
            preds += [res.instances[0], res.instances[1][:, ::-1]]
            truths += [lab, lab]
        return preds, truths

    def zarrs(handover):
        preds = []
        with tempfile.TemporaryDirectory() as tmp:
            for k, (img, _) in enumerate(phase):
                z = zarr.open_array(f"{tmp}/{k}.zarr", mode="w", shape=img.shape, chunks=(256, 256), dtype=img.dtype)
                z[:] = img
                if handover:
                    preds.append(segment_zarr(seg, f"{tmp}/{k}.zarr", f"{tmp}/{k}_l.zarr", f"{tmp}/{k}_c.zarr").instances[:])
                else:
                    sem, inst = np.zeros(img.shape, np.uint8), np.zeros(img.shape, np.uint32)
                    seg.segment_blocks(z, None, out=(sem, inst))
                    preds.append(inst)
        return preds, [lab for _, lab in phase]

    print("| input | without the hand-over | with it (now) |")
    print("|---|---|---|")
    delegate = type(seg).delegate_for
    for name, run in (("usiigaci/val as a 6-frame time-lapse", time_lapse),
                      (f"the {len(colour)} colour dsb2018/val images as 2-frame RGB time-lapses", colour_movies),
                      ("usiigaci/val as zarr arrays", None)):
        cells = []
        for handover in (False, True):
            t0 = time.perf_counter()
            if run is None:
                preds, truths = zarrs(handover)
            else:
                type(seg).delegate_for = delegate if handover else (lambda self, plane, colour=False: None)
                try:
                    preds, truths = run()
                finally:
                    type(seg).delegate_for = delegate
            r = evaluate_predictions(preds, truths)
            cells.append(f"{r['f1']:.3f} / {r['mean_ap']:.3f} / {r['pixel_iou']:.3f} ({time.perf_counter() - t0:.1f} s)")
        print(f"| {name} | {cells[0]} | {cells[1]} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
