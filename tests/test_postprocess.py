import numpy as np
import pytest

from napari_unet.core.losses import BACKGROUND, BOUNDARY, INTERIOR, targets_from_instances
from napari_unet.core.metrics import instance_scores, summarize
from napari_unet.core.postprocess import instances_from_probs, remove_small
from napari_unet.testing import discs


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


# ---- fast path: the same labels as the former region-by-region implementation ----------


def _blobs(rng, shape, diagonal_contacts=False):
    """Random smooth blobs; with ``diagonal_contacts``, face-disconnected regions that touch
    across corners (which h_maxima region by region never sees as neighbours)."""
    from scipy import ndimage as ndi

    sigma = rng.uniform(1.0, 3.0) if len(shape) == 2 else 1.0
    x = ndi.gaussian_filter(rng.random(shape), sigma) > rng.uniform(0.47, 0.53)
    if diagonal_contacts:
        x &= (np.indices(shape).sum(0) % 2 == 0) | (rng.random(shape) > 0.3)
    return x


def _distance_maps(mask):
    """The smoothed distance map the post-processing uses, the raw one (sqrt-of-integer
    plateaus and ties) and a flat one (every pixel of a region equally high)."""
    from scipy import ndimage as ndi

    edt = ndi.distance_transform_edt(mask).astype(np.float32)
    return [ndi.gaussian_filter(edt, 1.0), edt, np.where(mask, np.float32(1.5), np.float32(0))]


def test_fast_distance_transform_matches_scipy():
    from scipy import ndimage as ndi

    from napari_unet.core.seeds import _edt

    rng = np.random.default_rng(0)
    masks = [rng.random(shape) > p for p in (0.02, 0.3, 0.7, 0.999)
             for shape in ((1, 9), (9, 1), (1, 1), (2, 2), (50, 37), (64, 300))]
    masks += [_blobs(rng, (120, 90)), _blobs(rng, (80, 80), diagonal_contacts=True), discs() > 0]
    for bg in ([(0, 5)], [(150, 0), (299, 199)]):  # background only at an edge or two corners
        m = np.ones((300, 200), bool)
        for yx in bg:
            m[yx] = False
        masks.append(m)
    masks += [np.ones((5, 6), bool), np.zeros((5, 6), bool)]
    for m in masks:
        np.testing.assert_array_equal(_edt(m), ndi.distance_transform_edt(m).astype(np.float32))
        assert _edt(m).dtype == np.float32


@pytest.mark.parametrize("seed", range(6))
def test_fast_h_maxima_seeds_match_the_region_by_region_reference(seed):
    """Whole-image h-maxima give the seeds ``h_maxima`` gives region by region, numbering
    included: plateaus and float ties, regions touching across corners, regions too shallow
    for any peak (one seed as a whole), 2D and 3D (``core.stack`` uses the same function)."""
    from scipy import ndimage as ndi

    from napari_unet.core.seeds import _deep_peaks, _deep_peaks_reference

    rng = np.random.default_rng(seed)
    shape = [(60, 80), (7, 300), (120, 90), (1, 50), (40, 1), (16, 24, 20)][seed]
    mask = _blobs(rng, shape, diagonal_contacts=seed % 2 == 0)
    comp, n = ndi.label(mask)
    assert n > 1 or shape[0] == 1 or shape[1] == 1
    for dist in _distance_maps(mask):
        for depth in (0.5, 1.0, 1.5, 2.5, 7.0):
            ref = _deep_peaks_reference(dist, comp, depth)
            np.testing.assert_array_equal(_deep_peaks(dist, comp, depth), ref)
            np.testing.assert_array_equal(_deep_peaks(dist, comp, depth, np.flatnonzero(comp)), ref)


def test_fast_h_maxima_keep_h_maximas_float32_tolerance():
    """h_maxima takes ``dist - reconstruction`` in float32: a pixel whose residue rounds to
    the depth counts as a peak (found on a real bbbc039 map, where a float64 residue
    dropped it)."""
    from scipy import ndimage as ndi

    from napari_unet.core.seeds import _deep_peaks, _deep_peaks_reference

    d = np.zeros((5, 6), np.float32)
    d[1:4, 1:5] = 5.0
    d[2, 2], d[2, 3] = np.float32("10.11214"), np.float32("10.11212")
    comp, _ = ndi.label(d > 0)
    ref = _deep_peaks_reference(d, comp, 1.9796)
    assert ref[2, 2] == ref[2, 3] == 1 and ref.sum() == 2
    np.testing.assert_array_equal(_deep_peaks(d, comp, 1.9796), ref)


def test_fast_distance_peaks_drop_peaks_at_the_image_minimum():
    """peak_local_max's threshold is the image's minimum: a plateau at that height far from
    the higher part of its region gives no peak."""
    from napari_unet.core.seeds import _distance_peaks, _distance_peaks_reference

    d = np.ones((5, 60), np.float32)
    d[2, 30:58] = 2.0
    comp = np.zeros(d.shape, np.int32)
    comp[2, 2:58] = 1
    ref = _distance_peaks_reference(d, comp, 3)
    assert ref[2, :30].max() == 0 and ref.max() == 10
    np.testing.assert_array_equal(_distance_peaks(d, comp, 3), ref)


@pytest.mark.parametrize("seed", range(5))
def test_fast_distance_peaks_match_peak_local_max(seed):
    from scipy import ndimage as ndi

    from napari_unet.core.seeds import _distance_peaks, _distance_peaks_reference

    rng = np.random.default_rng(10 + seed)
    shape = [(60, 80), (7, 300), (120, 90), (1, 50), (40, 1)][seed]
    mask = _blobs(rng, shape, diagonal_contacts=seed % 2 == 0)
    comp, _ = ndi.label(mask)
    for dist in _distance_maps(mask):
        for spacing in (1, 2, 3, 6, 15):
            np.testing.assert_array_equal(_distance_peaks(dist, comp, spacing), _distance_peaks_reference(dist, comp, spacing))


@pytest.mark.parametrize("mode", ["depth", "spacing", "regions"])
def test_fast_instances_match_the_reference_on_touching_discs(mode):
    from napari_unet.core.postprocess import _instances_from_probs_reference

    lab = discs(shape=(96, 200), centers=((40, 40), (40, 62), (70, 100), (30, 150), (52, 160)), radius=12)
    lab[80:90, 10:190] = 6  # a long thin cell
    p = _probs_from_targets(targets_from_instances(lab))
    p[1][40:45, 45:60] = 0.9  # interiors of the two first discs meet: no boundary there
    kw = {"depth": dict(depth=2.4), "spacing": dict(min_distance=9), "regions": {}}[mode]
    for extra in (dict(max_hole=0, min_size=15), dict(max_hole=100, min_size=1, seed_threshold=0.3)):
        sem, inst = instances_from_probs(p, **kw, **extra)
        sem_ref, inst_ref = _instances_from_probs_reference(p, **kw, **extra)
        np.testing.assert_array_equal(sem, sem_ref)
        np.testing.assert_array_equal(inst, inst_ref)
        assert inst.dtype == inst_ref.dtype and inst.max() >= 5


@pytest.fixture(scope="module")
def real_probabilities(data_dir):
    """Probabilities of the shipped models on crops of real val images: ``nuclei`` on two
    256 x 256 bbbc039 crops, ``cells`` on two 384 x 384 usiigaci crops (at its own scale)."""
    from napari_unet.core.data import read_image
    from napari_unet.core.inference import Segmenter

    out = []
    for model, name, side in (("nuclei", "bbbc039", 256), ("cells", "usiigaci", 384)):
        files = sorted(p for p in (data_dir / name / "val").glob("*.tif") if not p.stem.endswith("_labels"))[:2]
        if not files:
            pytest.skip(f"no {name}/val images")
        seg = Segmenter(model)
        for f in files:
            img = read_image(f).astype(np.float32)
            out.append((f"{model}:{f.name}", seg.settings(), seg.loaded.image_diameter, seg.probabilities(img[:side, :side])))
    return out


def test_fast_path_matches_the_reference_on_real_probabilities(real_probabilities):
    """The shipped models' probabilities on real images, post-processed in each seed mode
    with each model's settings: fast and reference labels are identical; so are the seeds
    alone at several depths and spacings, on looser interiors too (more merged regions)."""
    import dataclasses

    from scipy import ndimage as ndi

    from napari_unet.core.postprocess import _instances_from_probs_reference, seed_spacing
    from napari_unet.core.seeds import _deep_peaks, _deep_peaks_reference, _distance_peaks, _distance_peaks_reference, _edt

    for name, shipped, diameter, probs in real_probabilities:
        modes = [dataclasses.replace(shipped, min_distance=None, depth=0.07 * diameter),
                 dataclasses.replace(shipped, min_distance=None, depth=None),
                 dataclasses.replace(shipped, min_distance=seed_spacing(diameter), depth=None)]
        for post in modes:
            kw = dict(threshold=post.threshold, seed_threshold=post.seed_threshold, min_size=post.min_size,
                      min_distance=post.min_distance, max_hole=post.max_hole, depth=post.depth)
            sem, inst = instances_from_probs(probs, **kw)
            sem_ref, inst_ref = _instances_from_probs_reference(probs, **kw)
            np.testing.assert_array_equal(sem, sem_ref, err_msg=name)
            np.testing.assert_array_equal(inst, inst_ref, err_msg=f"{name} {post}")
            assert inst.dtype == inst_ref.dtype and inst.max() > 0
        for seed_threshold in (shipped.seed_threshold, 0.5):
            inner = (probs[1] > seed_threshold) & (probs[0] < 0.5)
            comp, _ = ndi.label(inner)
            edt = _edt(inner)
            np.testing.assert_array_equal(edt, ndi.distance_transform_edt(inner).astype(np.float32))
            dist = ndi.gaussian_filter(edt, 1.0)
            for depth in (0.5, 0.03 * diameter, 0.07 * diameter, 0.15 * diameter):
                np.testing.assert_array_equal(_deep_peaks(dist, comp, depth), _deep_peaks_reference(dist, comp, depth),
                                              err_msg=f"{name} depth {depth}")
            for spacing in (2, seed_spacing(diameter, 0.2), seed_spacing(diameter)):
                np.testing.assert_array_equal(_distance_peaks(dist, comp, spacing),
                                              _distance_peaks_reference(dist, comp, spacing),
                                              err_msg=f"{name} spacing {spacing}")
