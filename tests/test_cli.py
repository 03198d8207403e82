"""The command line on real images from shared/data, with score floors against ground truth."""

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from napari_unet.core.metrics import instance_scores, pixel_scores, summarize

VAL = ["IXMtest_A15_s5", "IXMtest_B21_s4"]


def test_segment_real_images_scores(data_dir, tmp_path, shipped_model, capsys):
    inputs = [str(data_dir / "bbbc039" / "val" / f"{n}.tif") for n in VAL]
    assert main(["segment", *inputs, "--output", str(tmp_path / "out")]) == 0
    counts, ious = [], []
    for n in VAL:
        lab = tifffile.imread(tmp_path / "out" / f"{n}_labels.tif")
        cells = tifffile.imread(tmp_path / "out" / f"{n}_cells.tif")
        truth = tifffile.imread(data_dir / "bbbc039" / "val" / f"{n}_labels.tif")
        assert lab.dtype in (np.uint16, np.uint32) and lab.shape == truth.shape
        assert set(np.unique(cells)) <= {0, 1}
        counts.append(instance_scores(lab, truth))
        ious.append(pixel_scores(cells, truth)["iou"])
    r = summarize(counts)
    assert r["f1"] >= 0.85, r
    assert min(ious) >= 0.8
    assert "cells ->" in capsys.readouterr().out


def test_segment_writes_stacks_and_accepts_options(data_dir, tmp_path, shipped_model):
    img = tifffile.imread(data_dir / "bbbc039" / "val" / f"{VAL[0]}.tif")[:200, :200]
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([img, img]))
    assert main(["segment", str(tmp_path / "stack.tif"), "-o", str(tmp_path / "o"), "--diameter", "auto", "--precision", "fp32", "-q"]) == 0
    lab = tifffile.imread(tmp_path / "o" / "stack_labels.tif")
    assert lab.shape == (2, 200, 200) and lab[0].max() > 5
    np.testing.assert_array_equal(lab[0] > 0, lab[1] > 0)
    # a higher cell threshold and a larger smallest cell: fewer cell pixels, no small objects
    assert main(["segment", str(tmp_path / "stack.tif"), "-o", str(tmp_path / "s"), "--threshold", "0.9", "--min-size", "150", "-q"]) == 0
    strict = tifffile.imread(tmp_path / "s" / "stack_labels.tif")
    assert 0 < np.count_nonzero(strict) < np.count_nonzero(lab)
    sizes = np.bincount(strict[0].ravel())[1:]
    assert sizes[sizes > 0].min() >= 150


@pytest.mark.parametrize(
    "args,msg",
    [
        (["segment", "missing.tif", "-o", "OUT"], "no such file"),
        (["segment", "GOOD", "-o", "OUT", "--model", "no-such-model"], "no model named"),
        (["segment", "GOOD", "-o", "OUT", "--diameter", "big"], "--diameter"),
        (["segment", "BAD", "-o", "OUT"], "cannot read"),
        (["segment", "GOOD", "-o", "GOOD"], "is a file"),
        (["segment", "GOOD", "-o", "OUT", "--model", "BAD"], "not a napari-unet model"),
        (["segment", "GOOD", "-o", "OUT", "--threshold", "1.5"], "--threshold"),
        (["segment", "GOOD", "-o", "OUT", "--min-size", "-1"], "--min-size"),
    ],
)
def test_bad_input_one_line_and_nonzero_exit(tmp_path, capsys, args, msg, shipped_model):
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, np.zeros((32, 32), np.uint8))
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"this is not a tiff")
    subs = {"GOOD": str(good), "BAD": str(bad), "OUT": str(tmp_path / "out")}
    args = [subs.get(a, a) for a in args]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_train_then_segment_with_the_file(data_dir, tmp_path):
    src = data_dir / "bbbc039" / "train"
    imgs = sorted(p for p in src.glob("*.tif") if not p.stem.endswith("_labels"))[:3]
    model = tmp_path / "tiny.pt"
    rc = main(["train", "--images", *map(str, imgs), "--output", str(model), "--steps", "6",
               "--batch", "2", "--patch", "64", "--val-every", "3", "--val-fraction", "0.34"])
    assert rc == 0 and model.is_file()
    from napari_unet.core.models import load_model

    loaded = load_model(model)
    assert loaded.meta["name"] == "tiny" and loaded.meta["diameter"] > 10
    assert main(["segment", str(imgs[0]), "-o", str(tmp_path / "seg"), "--model", str(model), "-q"]) == 0
    assert (tmp_path / "seg" / f"{imgs[0].stem}_labels.tif").is_file()


def test_train_resumes_from_checkpoint(data_dir, tmp_path, capsys):
    imgs = sorted(p for p in (data_dir / "bbbc039" / "train").glob("*.tif") if not p.stem.endswith("_labels"))[:2]
    model = tmp_path / "r.pt"
    common = ["train", "--images", *map(str, imgs), "--output", str(model), "--batch", "2", "--patch", "64",
              "--val-every", "2", "--val-fraction", "0.5", "--ema", "0.9"]
    assert main(common + ["--steps", "6", "--stop-at", "4"]) == 0
    assert (tmp_path / "r.pt.ckpt").is_file()
    from napari_unet.core.models import load_model

    assert load_model(model).meta["training"]["steps"] == 4
    assert main(common + ["--steps", "6", "--resume"]) == 0
    assert "resuming from step 4" in capsys.readouterr().out

    assert load_model(model).meta["training"]["steps"] == 6
    assert main(["train", "--images", str(imgs[0]), "--output", str(tmp_path / "x.pt"), "--resume"]) == 1
