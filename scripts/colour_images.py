"""Print the colour (RGB) images of a folder of ``X.tif`` / ``X_labels.tif`` pairs, one path
per line, sorted: ``python scripts/colour_images.py ../shared/data/dsb2018/train``.

Used by ``scripts/train_models.sh tissue`` to train the stained-tissue specialist on the
colour images of DSB 2018 alone (92 of its 584 train images).
"""

import sys

from napari_unet.core.data import find_pairs, read_image

if __name__ == "__main__":
    for img_path, _ in find_pairs(sys.argv[1:]):
        img = read_image(img_path)
        if img.ndim == 3 and img.shape[-1] in (3, 4):
            print(img_path)
