"""Several inputs segmented one at a time against two side by side (``batch.in_lanes``).

``napari-unet segment`` with several image files on a CPU runs two lanes, each network on
half the cores, so that one input's reading, post-processing and writing overlap the other's
network. This times the same job (read, segment, write the label files) over a folder both
ways, alternating, and compares the label files written.

    python -W ignore benchmarks/lanes.py                      # bbbc039/val and four 2048 px frames
    python -W ignore benchmarks/lanes.py --repeats 3 --folders ../shared/data/usiigaci/val
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def frames_folder(tmp: Path) -> Path:
    """Four 2048 px frames: usiigaci tiled 2 x 2 and bbbc039 tiled, twice each."""
    import tifffile

    from frames import frames

    folder = tmp / "frames2048"
    folder.mkdir()
    for i in range(2):
        for name, img in frames(2048).items():
            tifffile.imwrite(folder / f"{name.split()[0]}_{i}.tif", img)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folders", nargs="*", default=None, help="default: bbbc039/val and four 2048 px frames")
    ap.add_argument("--model", default=None)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import tifffile

    from napari_unet._cli_segment import SegmentJob
    from napari_unet.core.batch import folder_images, in_lanes

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folders = [Path(f) for f in args.folders] if args.folders else [DATA / "bbbc039" / "val", frames_folder(tmp)]
        for folder in folders:
            files = [p for p in folder_images(folder) if not p.stem.endswith("_labels")]
            mp = sum(np.prod(tifffile.TiffFile(p).pages[0].shape[:2]) for p in files) / 1e6
            outs = {lanes: tmp / f"{folder.name}_{lanes}" for lanes in (1, 2)}
            best = {}
            for _ in range(args.repeats):
                for lanes, out in outs.items():
                    job = SegmentJob({"model": args.model, "diameter": None, "threshold": None, "min_size": None,
                                      "axes": None, "anisotropy": None, "channel": None, "measure": False,
                                      "output": str(out), "tile": 1024, "precision": "auto", "rgb": False})
                    job.segmenter.segment(tifffile.imread(files[0]))  # warm: model loaded, kernels chosen
                    out.mkdir(exist_ok=True)
                    t = time.perf_counter()
                    for name, error, _ in in_lanes(job.safe, files, lanes):
                        assert error is None, (name, error)
                    best[lanes] = min(best.get(lanes, np.inf), time.perf_counter() - t)
            same = n1 = n2 = 0
            for p in files:
                a = tifffile.imread(outs[1] / f"{p.stem}_labels.tif")
                b = tifffile.imread(outs[2] / f"{p.stem}_labels.tif")
                same += int(np.array_equal(a, b))
                n1, n2 = n1 + len(np.unique(a)) - 1, n2 + len(np.unique(b)) - 1
            print(f"{folder.name}: {len(files)} images, {mp:.1f} MP; one at a time {best[1]:.2f} s ({mp / best[1]:.2f} MP/s), "
                  f"two lanes {best[2]:.2f} s ({mp / best[2]:.2f} MP/s), {best[1] / best[2]:.2f}x; "
                  f"identical labels {same}/{len(files)}, cells {n1} vs {n2}", flush=True)


if __name__ == "__main__":
    main()
