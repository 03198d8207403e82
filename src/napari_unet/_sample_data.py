"""Sample images shipped with the plugin (File > Open Sample > U-Net).

- ``nuclei_bbbc039.tif``: BBBC039 image IXMtest_A02_s1 (U2OS nuclei, Hoechst, 20x),
  Caicedo et al., Cytometry A 2019, Broad Bioimage Benchmark Collection; CC0 1.0.
- ``phase_usiigaci.tif``: 512 x 512 crop of Usiigaci train set 10 (T98G cells, phase
  contrast, 10x), Tsai et al., SoftwareX 2019; MIT licence, (c) 2018 OIST.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

_DIR = Path(__file__).parent / "sample_data"


def load(name: str) -> np.ndarray:
    import tifffile

    return tifffile.imread(_DIR / name)


def nuclei():
    return [(load("nuclei_bbbc039.tif"), {"name": "nuclei (BBBC039)", "colormap": "gray"}, "image")]


def phase_contrast():
    return [(load("phase_usiigaci.tif"), {"name": "phase contrast (Usiigaci)", "colormap": "gray"}, "image")]
