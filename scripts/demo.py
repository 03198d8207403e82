"""Segment the bundled sample image.

With a display: opens napari with the sample and the Segment widget docked, and runs it.
Without one: writes the label TIFFs and a PNG overlay to ``out/demo`` and says where.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def headless(out: Path) -> int:
    import numpy as np
    import tifffile
    from skimage.io import imsave
    from skimage.segmentation import find_boundaries

    from napari_unet._sample_data import nuclei
    from napari_unet.core.inference import Segmenter
    from napari_unet.core.normalize import normalize

    image = nuclei()[0][0]
    res = Segmenter().segment(image)
    out.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(out / "nuclei_labels.tif", res.instances, compression="zlib")
    tifffile.imwrite(out / "nuclei_cells.tif", res.semantic, compression="zlib")
    gray = (np.clip(normalize(image), 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(gray[..., None], 3, -1)
    rng = np.random.default_rng(0)
    from skimage.color import hsv2rgb

    n = int(res.instances.max()) + 1  # saturated colours stay visible on gray nuclei
    hsv = np.stack([rng.random(n), np.ones(n), np.ones(n)], -1)
    colors = (hsv2rgb(hsv[None])[0] * 255).astype(np.uint8)
    edge = find_boundaries(res.instances, mode="inner")
    rgb[edge] = colors[res.instances[edge]]
    imsave(out / "nuclei_overlay.png", rgb, check_contrast=False)
    print(f"{int(res.instances.max())} nuclei found in the BBBC039 sample image.")
    for name in ("nuclei_labels.tif", "nuclei_cells.tif", "nuclei_overlay.png"):
        print(f"  wrote {out / name}")
    return 0


def gui() -> int:
    import napari

    viewer = napari.Viewer()
    viewer.open_sample("napari-unet", "nuclei")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    widget.run_button.native.click()
    napari.run()
    return 0


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("out/demo")
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        sys.exit(gui())
    print("no display found: segmenting without a window")
    sys.exit(headless(out))
