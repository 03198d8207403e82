import numpy as np
import pytest

from conftest import discs
from napari_unet.core.losses import BACKGROUND, BOUNDARY, INTERIOR, targets_from_instances
from napari_unet.core.metrics import instance_scores, summarize
from napari_unet.core.postprocess import instances_from_probs, remove_small


def _probs_from_targets(t):
    p = np.zeros((3,) + t.shape, np.float32)
    p[0][t == BACKGROUND] = 0.9
    p[1][t == INTERIOR] = 0.9
    p[2][t == BOUNDARY] = 0.9
    p += 0.05
    return p / p.sum(0)


def test_touching_discs_are_separated():
    lab = discs()
    t = targets_from_instances(lab)
    sem, inst = instances_from_probs(_probs_from_targets(t))
    assert inst.max() == 3
    np.testing.assert_array_equal(sem, lab > 0)
    r = summarize([instance_scores(inst, lab)])
    assert r["f1"] == 1.0 and r["mean_ap"] > 0.8


def test_semantic_alone_merges_touching_discs():
    lab = discs()
    p = np.stack([(lab == 0).astype(np.float32), (lab > 0).astype(np.float32)])
    _, inst = instances_from_probs(p)
    assert inst.max() == 2  # the two touching discs become one object without a boundary class


def test_empty_and_small():
    p = np.zeros((3, 20, 20), np.float32)
    p[0] = 1
    sem, inst = instances_from_probs(p)
    assert not sem.any() and not inst.any() and inst.dtype == np.uint16
    lab = np.zeros((10, 10), np.int32)
    lab[0, 0] = 5
    lab[5:9, 5:9] = 7
    out = remove_small(lab, 4)
    assert out.max() == 1 and (out > 0).sum() == 16


def test_min_distance_splits_touching_discs_without_a_boundary_gap():
    lab = discs(centers=((40, 40), (40, 62)), radius=12)
    p = np.full((3,) + lab.shape, 0.05, np.float32)
    p[0][lab == 0] = 0.9
    p[1][lab > 0] = 0.9  # interior everywhere: the boundary class missed the contact
    p /= p.sum(0)
    _, merged = instances_from_probs(p)
    assert merged.max() == 1
    _, split = instances_from_probs(p, min_distance=9)
    assert split.max() == 2
    r = summarize([instance_scores(split, lab)])
    assert r["f1"] == 1.0


def test_seed_depth_splits_at_a_neck_and_keeps_a_long_cell_whole():
    """h-maxima seeds (``seed_depth``): two touching discs whose interiors merge are split
    at the neck, while a long thin cell, which distance peaks a spacing apart cut into
    pieces, keeps its single ridge as one seed."""
    from napari_unet.core.postprocess import Postprocess

    lab = discs(shape=(96, 200), centers=((40, 40), (40, 62)), radius=12)
    lab[70:80, 10:190] = 3  # 10 px wide, 180 px long
    p = np.full((3,) + lab.shape, 0.05, np.float32)
    p[0][lab == 0] = 0.9
    p[1][lab > 0] = 0.9  # no boundary predicted anywhere
    p /= p.sum(0)
    deep = Postprocess.for_model({"seed_depth": 0.1}, diameter=24)
    assert deep.depth == pytest.approx(2.4)
    _, inst = deep(p)
    assert inst.max() == 3
    assert summarize([instance_scores(inst, lab)])["f1"] == 1.0
    _, spaced = Postprocess.for_model({}, diameter=24)(p)
    assert len(np.unique(spaced[75, 10:190])) > 1  # the spacing rule cuts the long cell
    # a region too shallow for any peak of that depth is still one cell
    _, shallow = instances_from_probs(p, depth=20.0, min_size=1)
    assert len(np.unique(shallow[lab == 3])) == 1 and shallow[75, 100] > 0


def test_iou_matrix_without_background():
    from napari_unet.core.metrics import iou_matrix

    two = np.ones((4, 4), np.int32)
    two[:, 2:] = 2
    iou = iou_matrix(two, np.ones((4, 4), np.int32))
    assert iou.shape == (2, 1)
    np.testing.assert_allclose(iou[:, 0], [0.5, 0.5])


def test_small_holes_inside_cells_are_filled_not_gaps_at_the_border():
    from napari_unet.core.postprocess import fill_small_holes, hole_area, seed_spacing

    mask = np.zeros((40, 40), bool)
    mask[5:30, 5:30] = True
    mask[10:13, 10:13] = False  # a 9 px speck inside the cell
    mask[15:25, 15:25] = False  # a 100 px hole
    mask[0:3, 0:40] = False
    filled = fill_small_holes(mask, 50)
    assert filled[10:13, 10:13].all() and not filled[15:25, 15:25].any()
    assert np.array_equal(fill_small_holes(mask, 0), mask)
    assert fill_small_holes(mask, 100)[15:25, 15:25].all()
    assert not fill_small_holes(mask, 10**6)[30:, :].any()  # background touching the border stays
    assert hole_area(20) == 100 and hole_area(None) == 0 and seed_spacing(20) == 8 and seed_spacing(None) is None


def test_model_settings_keep_long_thin_cells_whole_and_split_at_a_weak_contact():
    """Per-model post-processing (model metadata): distance-peak seeds cut a long thin cell
    into pieces; one seed per confident interior region keeps it whole, and a higher seed
    threshold separates two cells whose interior only weakens at their contact."""
    from napari_unet.core.postprocess import Postprocess

    lab = np.zeros((60, 200), np.int32)
    lab[25:35, 10:190] = 1  # a 10 px wide, 180 px long cell (diameter ~40 px by area)
    lab[5:20, 20:60] = 2
    lab[5:20, 60:100] = 3  # two cells side by side, no boundary predicted between them
    p = np.full((3,) + lab.shape, 0.02, np.float32)
    p[0][lab == 0] = 0.96
    p[1][lab > 0] = 0.96
    p[1][5:20, 58:62] = 0.6  # the interior is less sure at the contact
    p[0][5:20, 58:62] = 0.02
    p[2][5:20, 58:62] = 0.38
    p /= p.sum(0)

    default = Postprocess.for_model({}, diameter=40)
    assert default.min_distance == 16 and default.seed_threshold == 0.5
    _, inst = default(p)
    assert len(np.unique(inst[30, 10:190])) > 1  # the thin cell is cut into pieces

    thin = Postprocess.for_model({"seed_spacing": 0, "seed_threshold": 0.8, "min_size": 60}, diameter=40, scale=0.5)
    assert thin.min_distance is None and thin.min_size == 240  # model px -> image px
    _, inst = thin(p)
    r = summarize([instance_scores(inst, lab)])
    assert r["f1"] == 1.0 and inst.max() == 3


def test_prior_shift_threshold_recovers_the_images_cell_fraction():
    """A classifier trained on balanced classes, applied to an image that is 80 % cell:
    EM finds the 80 % from the unlabeled pixels, and the shifted threshold makes fewer errors."""
    from napari_unet.core.postprocess import prior_shift_threshold

    rng = np.random.default_rng(0)
    truth = rng.random(200_000) < 0.8
    x = rng.normal(np.where(truth, 1.0, -1.0), 1.0)
    p_cell = 1 / (1 + np.exp(-2 * x))  # the exact posterior under a 50/50 prior
    th, frac = prior_shift_threshold(p_cell, train_prior=0.5)
    assert abs(frac - 0.8) < 0.01
    assert th == pytest.approx(0.2, abs=0.01)
    err_shifted = np.mean((p_cell > th) != truth)
    err_plain = np.mean((p_cell > 0.5) != truth)
    assert err_shifted < err_plain - 0.01
    # half the shift in log-odds: logit(0.2) / 2 -> 1 / 3, from the same estimate
    th_half, frac_half = prior_shift_threshold(p_cell, train_prior=0.5, strength=0.5)
    assert frac_half == frac and th_half == pytest.approx(1 / (1 + np.sqrt(1 / th - 1)))
    assert th < th_half < 0.5 and th_half == pytest.approx(1 / 3, abs=0.01)
    assert prior_shift_threshold(p_cell, train_prior=0.5, strength=0.0)[0] == pytest.approx(0.5)
    # nothing to learn from: a model trained on the image's own prior keeps 0.5
    th_same, _ = prior_shift_threshold(np.full(1000, 0.5), train_prior=0.5)
    assert th_same == pytest.approx(0.5)
