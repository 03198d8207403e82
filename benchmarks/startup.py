"""Start-up of ``napari-unet segment``: seconds from process start to its first network call
(the first tile) and to its end, on one small image.

    python -W ignore benchmarks/startup.py                 # 5 runs, a bbbc039/val image
    python -W ignore benchmarks/startup.py --runs 10 --image X.tif

Each run is a fresh ``python`` process that records the time the interpreter started
(``time.perf_counter`` at the first line, so the interpreter's own start, about 20 ms, is
not counted), wraps the network call, and runs the command line's ``main`` on the image,
as ``napari-unet segment IMAGE -o OUT`` does. Prints every run and the median.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

CHILD = """
import time
t0 = time.perf_counter()
import sys
import napari_unet.core.inference as inference
import napari_unet.core.tiling as tiling
first = []
network = tiling.predict_batch
def timed(*args, **kwargs):
    if not first:
        first.append(time.perf_counter() - t0)
    return network(*args, **kwargs)
tiling.predict_batch = inference.predict_batch = timed
from napari_unet.cli import main
try:
    main(["segment", sys.argv[1], "-o", sys.argv[2], "--overwrite", "-q"])
except SystemExit:
    pass
print(first[0], time.perf_counter() - t0)
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default=str(DATA / "bbbc039" / "val" / "IXMtest_A15_s5.tif"))
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)

    firsts, totals = [], []
    with tempfile.TemporaryDirectory() as out:
        for k in range(args.runs):
            r = subprocess.run([sys.executable, "-W", "ignore", "-c", CHILD, args.image, out],
                               capture_output=True, text=True, check=True)
            first, total = (float(v) for v in r.stdout.split()[-2:])
            firsts.append(first)
            totals.append(total)
            print(f"run {k + 1}: first tile at {first:.2f} s, done at {total:.2f} s", flush=True)
    print(f"median of {args.runs}: first tile at {statistics.median(firsts):.2f} s, "
          f"done at {statistics.median(totals):.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
