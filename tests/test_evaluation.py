"""Evaluation: the Otsu baseline on real data, pooled scores, and ``napari-unet evaluate``."""

import json

import numpy as np
import pytest
import tifffile

from napari_unet.core.baseline import blob_diameter, otsu_watershed
from napari_unet.core.data import find_pairs, read_image
from napari_unet.core.evaluation import evaluate_baseline, evaluate_model, evaluate_predictions
from napari_unet.testing import discs

VAL3 = ["IXMtest_A15_s5", "IXMtest_B21_s4", "IXMtest_C07_s5"]


def _cli(argv):
    """Run ``napari-unet evaluate`` through the main CLI; a user error is exit code 1."""
    from napari_unet import cli

    return cli.main(argv)


@pytest.fixture
def val3(data_dir):
    d = data_dir / "bbbc039" / "val"
    return [(d / f"{n}.tif", d / f"{n}_labels.tif") for n in VAL3]


# ---- baseline ------------------------------------------------------------------------
def test_baseline_on_real_nuclei(val3):
    res = evaluate_baseline(val3)
    # measured 0.899 F1@0.5, 0.894 pixel IoU on these three images
    assert res["f1"] > 0.85
    assert res["pixel_iou"] > 0.85
    assert res["n_images"] == 3 and res["mp_per_s"] > 0


def test_baseline_edge_cases():
    for img in (np.zeros((40, 50), np.uint16), np.full((40, 50), 7.0), np.full((40, 50), np.nan)):
        sem, inst = otsu_watershed(img)
        assert sem.shape == inst.shape == (40, 50)
        assert sem.dtype == np.uint8 and inst.dtype == np.uint16
        assert sem.max() == 0 and inst.max() == 0
    # two touching bright discs are split, the separate one is found
    lab = discs()
    rng = np.random.default_rng(0)
    img = (lab > 0) * 1000.0 + rng.normal(100, 10, lab.shape)
    sem, inst = otsu_watershed(img.astype(np.float32))
    assert inst.max() == 3
    assert evaluate_predictions([inst], [lab])["f1"] == 1.0
    with pytest.raises(ValueError, match="2D"):
        otsu_watershed(np.zeros((2, 3, 5, 5)))


def test_blob_diameter_is_the_area_weighted_size_of_the_bright_blobs():
    yy, xx = np.mgrid[:200, :200]
    img = np.zeros((200, 200), np.float32)
    for cy, cx in ((50, 50), (50, 150), (150, 100)):  # three separate discs of radius 15
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= 15**2] = 1.0
    assert abs(blob_diameter(img, sigma=0) - 30) < 1.5
    img[(yy - 50) ** 2 + (xx - 80) ** 2 <= 15**2] = 1.0  # touching the first: one larger blob
    assert blob_diameter(img, sigma=0) > 36
    assert blob_diameter(np.zeros((20, 20))) is None


# ---- pooled scores -------------------------------------------------------------------
def test_perfect_and_empty_predictions():
    lab = discs()
    perfect = evaluate_predictions([lab, lab], [lab, lab])
    for key in ("pixel_iou", "precision", "recall", "f1", "ap50", "mean_ap"):
        assert perfect[key] == pytest.approx(1.0)
    assert perfect["pixel_error"] == 0.0 and perfect["n_images"] == 2
    # renumbered ids are still a perfect match
    assert evaluate_predictions([np.where(lab > 0, 10 - lab, 0)], [lab])["f1"] == 1.0
    empty = evaluate_predictions([np.zeros_like(lab)], [lab])
    for key in ("pixel_iou", "precision", "recall", "f1", "ap50", "mean_ap"):
        assert empty[key] == 0.0
    assert empty["pixel_error"] == pytest.approx((lab > 0).mean())
    assert empty["n_pred"] == 0 and empty["n_true"] == 3


def test_scores_are_pooled_not_averaged():
    lab = discs()
    one = np.where(lab == 3, 3, 0)  # finds 1 of 3 objects
    res = evaluate_predictions([lab, one], [lab, lab])
    # pooled: 4 of 6 objects found, no false positives
    assert res["recall"] == pytest.approx(4 / 6)
    assert res["precision"] == 1.0
    assert res["f1"] == pytest.approx(2 * 4 / (4 + 6))
    cells, found = (lab > 0).sum(), (lab == 3).sum()
    assert res["pixel_iou"] == pytest.approx((cells + found) / (2 * cells))


def test_mismatched_inputs():
    with pytest.raises(ValueError, match="shape"):
        evaluate_predictions([np.zeros((4, 4))], [np.zeros((4, 5))])
    with pytest.raises(ValueError, match="2 predictions but 1"):
        evaluate_predictions([np.zeros((4, 4))] * 2, [np.zeros((4, 4))])


def test_evaluate_model_small_random(tmp_path, val3):
    """A (random) model goes through the whole path: read, segment, score, time."""
    from napari_unet.core.model import build_model
    from napari_unet.core.models import save_model

    crop_dir = tmp_path / "crops"
    crop_dir.mkdir()
    img_p, lab_p = val3[0]
    tifffile.imwrite(crop_dir / "a.tif", read_image(img_p)[:96, :128])
    tifffile.imwrite(crop_dir / "a_labels.tif", read_image(lab_p)[:96, :128])
    model = save_model(tmp_path / "tiny.pt", build_model("small"), {"name": "tiny"})
    res = evaluate_model(model, find_pairs([crop_dir]), precision="fp32")
    assert res["n_images"] == 1 and 0 <= res["f1"] <= 1 and res["mp_per_s"] > 0
    assert res["precision_mode"] == "fp32"


# ---- command line --------------------------------------------------------------------
@pytest.fixture
def labelled(tmp_path, val3):
    """Two real images with labels in the shared/data layout, cropped to keep tests fast."""
    d = tmp_path / "gt"
    d.mkdir()
    labs = {}
    for img_p, lab_p in val3[:2]:
        stem = img_p.stem
        tifffile.imwrite(d / f"{stem}.tif", read_image(img_p)[:256, :256])
        labs[stem] = read_image(lab_p)[:256, :256]
        tifffile.imwrite(d / f"{stem}_labels.tif", labs[stem])
    return d, labs


def test_cli_evaluate_prediction_folders(tmp_path, labelled, capsys):
    gt, labs = labelled
    perfect = tmp_path / "perfect"
    empty = tmp_path / "empty"
    perfect.mkdir()
    empty.mkdir()
    for stem, lab in labs.items():  # the names `napari-unet segment` writes
        tifffile.imwrite(perfect / f"{stem}_labels.tif", lab)
        tifffile.imwrite(perfect / f"{stem}_cells.tif", (lab > 0).astype(np.uint8))
        tifffile.imwrite(empty / f"{stem}.tif", np.zeros_like(lab))
    out_json = tmp_path / "scores.json"
    rc = _cli(["evaluate", str(perfect), str(empty), "--labels", str(gt), "--json", str(out_json)])
    assert rc == 0
    table = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in table.splitlines()[2:]}
    assert set(rows) == {str(perfect), str(empty), "otsu+watershed"}
    assert rows[str(perfect)][1:7] == ["2", "1.000", "1.000", "1.000", "1.000", "1.000"]
    assert rows[str(empty)][5] == "0.000"
    assert float(rows["otsu+watershed"][5]) > 0.8
    data = json.loads(out_json.read_text())
    assert [r["name"] for r in data["results"]] == [str(perfect), str(empty), "otsu+watershed"]
    assert data["results"][0]["f1"] == 1.0 and data["results"][0]["n_true"] > 10


def test_cli_evaluate_loose_files_and_label_files(tmp_path, labelled, capsys):
    gt, labs = labelled
    preds = []
    for i, lab in enumerate(labs.values()):
        p = tmp_path / f"pred{i}.tif"  # names unrelated to the labels: matched by order
        tifffile.imwrite(p, lab)
        preds.append(str(p))
    label_files = [str(gt / f"{stem}_labels.tif") for stem in labs]
    rc = _cli(["evaluate", *preds, "--labels", *label_files, "--no-baseline"])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[2].split()[1:7] == ["2", "1.000", "1.000", "1.000", "1.000", "1.000"]


def test_cli_evaluate_user_errors(tmp_path, labelled, capsys):
    gt, labs = labelled
    partial = tmp_path / "partial"
    partial.mkdir()
    stem = next(iter(labs))
    tifffile.imwrite(partial / f"{stem}_labels.tif", labs[stem])
    tifffile.imwrite(partial / "other_labels.tif", labs[stem])
    cases = [
        ([str(partial), "--labels", str(gt)], "no prediction for 1 of 2"),
        (["no-such-model", "--labels", str(gt)], "no such file, folder or model"),
        ([str(partial), "--labels", str(tmp_path / "missing")], "no such file or folder"),
        ([str(partial), "--labels", str(gt), "--diameter", "big"], "--diameter"),
        ([str(tmp_path / "x.pt"), "--labels", str(gt)], "x.pt"),
    ]
    for argv, msg in cases:
        rc = _cli(["evaluate", *argv])
        err = capsys.readouterr().err
        assert rc == 1, argv
        assert msg in err, (argv, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
