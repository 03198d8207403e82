"""Every shipped model: small, loads safely, described by a model card, and good on real data."""

import pytest
import tifffile

from napari_unet.core.baseline import otsu_watershed
from napari_unet.core.inference import Segmenter
from napari_unet.core.metrics import instance_scores, pixel_scores, summarize
from napari_unet.core.models import input_channels, list_models, load_model, shipped_dir

SHIPPED = sorted(m.name for m in list_models() if m.source == "shipped")


def test_the_four_models_are_shipped():
    assert {"nuclei", "cells", "generalist", "tissue"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_model_file_and_card(name):
    path = shipped_dir() / f"{name}.pt"
    assert path.stat().st_size < 5 * 2**20  # "a few MB": float16 weights; `cells` (medium preset, 3.9 MB) is the biggest
    loaded = load_model(name)
    assert loaded.name == name and loaded.diameter and loaded.meta.get("description")
    # input_channels answers 1 for shipped files without loading them (the Segment widget opens fast)
    assert loaded.model.config.in_channels == input_channels(name) == 1
    card = (shipped_dir() / f"{name}.md").read_text()
    for needed in ("**Data**", "**Command**", "seed", "val", "F1@0.5", "mean AP"):
        assert needed in card, (name, needed)


# (set, image, model): a val image of each set, scored against its ground truth
CASES = [("usiigaci", "val_set46", "cells"), ("usiigaci", "val_set46", "generalist"), ("bbbc039", "IXMtest_A15_s5", "generalist")]


@pytest.mark.parametrize("dataset,image,model", CASES)
def test_models_beat_the_baseline_on_real_images(data_dir, dataset, image, model):
    img = tifffile.imread(data_dir / dataset / "val" / f"{image}.tif")
    truth = tifffile.imread(data_dir / dataset / "val" / f"{image}_labels.tif")
    seg = Segmenter(model).segment(img)
    base_sem, base = otsu_watershed(img)
    ours = summarize([instance_scores(seg.instances, truth)])["f1"], pixel_scores(seg.semantic, truth)["iou"]
    theirs = summarize([instance_scores(base, truth)])["f1"], pixel_scores(base_sem, truth)["iou"]
    assert seg.instances.shape == truth.shape
    assert ours[0] > theirs[0] and ours[1] > theirs[1], (ours, theirs)
    floor = {"usiigaci": 0.6, "bbbc039": 0.85}[dataset]
    assert ours[1] >= floor, ours
    if model == "cells":  # its own post-processing (one seed per interior region) matters here
        assert ours[0] >= 0.7, ours  # 0.75 here; 0.64 with the default post-processing
