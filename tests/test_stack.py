"""Volumes and time-lapses: stitching, 3D segmentation, linking over time, tracks."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_unet.core.inference import Segmenter
from napari_unet.core.metrics import instance_scores, summarize
from napari_unet.core.model import UNet, UNetConfig
from napari_unet.core.models import save_model
from napari_unet.core.stack import (
    link_frames,
    match_overlaps,
    segment_stack,
    segment_timelapse,
    segment_volume,
    split_merged,
    stitch_planes,
    tracks_from_labels,
)

DATA = Path(__file__).parent / "data"


def disc_frame(shape, centres, radii, ids):
    """2D labels: discs ``ids`` at ``centres``; a pixel goes to the disc it is deepest in."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    best = np.full(shape, 1.0)
    lab = np.zeros(shape, np.int32)
    for (cy, cx), r, i in zip(centres, radii, ids):
        q = ((yy - cy) ** 2 + (xx - cx) ** 2) / r**2
        win = q < best
        best[win] = q[win]
        lab[win] = i
    return lab


def balls(shape, centres, radii, anisotropy=1.0):
    """3D labels of balls (centres in physical units, z steps of ``anisotropy``)."""
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(float)
    zz *= anisotropy
    best = np.full(shape, 1.0)
    lab = np.zeros(shape, np.int32)
    for i, ((cz, cy, cx), r) in enumerate(zip(centres, radii), 1):
        q = ((zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2) / r**2
        win = q < best
        best[win] = q[win]
        lab[win] = i
    return lab


# ---- matching, stitching, linking (no network) ------------------------------------------------
def test_match_overlaps_is_one_to_one_and_thresholded():
    a = disc_frame((40, 60), [(20, 15), (20, 45)], [8, 8], [3, 7])
    b = disc_frame((40, 60), [(21, 16), (20, 44)], [8, 8], [1, 2])
    assert match_overlaps(a, b, 0.1) == {1: 3, 2: 7}
    far = disc_frame((40, 60), [(20, 30)], [3], [5])
    assert match_overlaps(a, far, 0.1) == {}
    assert match_overlaps(a, np.zeros_like(a), 0.1) == {}


def test_stitch_planes_gives_a_ball_one_id_through_its_planes():
    # two touching balls side by side; each plane numbers its 2D objects in its own
    # (shuffled) way, as a 2D segmentation would
    truth = balls((12, 48, 64), [(10, 24, 20), (10, 24, 42)], [10, 11], anisotropy=2.0)
    rng = np.random.default_rng(0)
    planes = np.zeros_like(truth)
    for z in range(truth.shape[0]):
        ids = np.unique(truth[z])[1:]
        for i, p in zip(ids, rng.permutation(len(ids)) + 1 + 2 * z):
            planes[z][truth[z] == i] = p
    assert len(np.unique(planes[truth == 1])) > 1  # unstitched: a new id in every plane
    stitched = stitch_planes(planes)
    one = [np.unique(stitched[truth == i]) for i in (1, 2)]
    assert [len(u) for u in one] == [1, 1] and one[0][0] != one[1][0]
    assert stitched.max() == 2 and ((stitched > 0) == (truth > 0)).all()


def drifting_discs(frames=8, step=(1.5, 2.0)):
    """Labels of three touching discs drifting together, a fourth entering at frame 3;
    each frame numbers its objects at random. Returns (frames, truth with fixed ids)."""
    rng = np.random.default_rng(1)
    truth, shuffled = [], []
    for t in range(frames):
        dy, dx = step[0] * t, step[1] * t
        centres = [(30 + dy, 25 + dx), (30 + dy, 47 + dx), (50 + dy, 36 + dx)]
        radii, ids = [11, 11, 11], [1, 2, 3]
        if t >= 3:
            centres.append((20, 90))
            radii.append(9)
            ids.append(4)
        lab = disc_frame((96, 128), centres, radii, ids)
        truth.append(lab)
        perm = rng.permutation(len(ids)) + 10  # arbitrary ids, different every frame
        out = np.zeros_like(lab)
        for i, p in zip(ids, perm):
            out[lab == i] = p
        shuffled.append(out)
    return np.stack(shuffled), np.stack(truth)


def test_link_frames_keeps_ids_over_time():
    frames, truth = drifting_discs()
    linked = link_frames(frames)
    assert linked.shape == frames.shape and linked.dtype == np.uint16
    for i in (1, 2, 3, 4):
        ids = np.unique(linked[truth == i])
        assert len(ids) == 1, f"cell {i} changed id: {ids}"
    assert np.unique(linked[truth == 4])[0] == 4  # the newcomer gets a new id
    assert ((linked > 0) == (frames > 0)).all()


def test_link_frames_never_reuses_an_id():
    a = disc_frame((40, 80), [(20, 20)], [8], [1])
    b = disc_frame((40, 80), [(20, 60)], [8], [1])  # another cell, far away
    linked = link_frames(np.stack([a, b, a]))
    assert linked[0].max() == 1 and linked[1].max() == 2 and linked[2].max() == 3


def test_link_frames_3d_frames():
    f0 = balls((6, 32, 32), [(5, 12, 12), (5, 20, 22)], [5, 5])
    f1 = balls((6, 32, 32), [(5, 13, 13), (5, 21, 23)], [5, 5])
    f1 = np.where(f1 > 0, 3 - f1, 0)  # swapped ids
    linked = link_frames(np.stack([f0, f1]))
    assert (linked[1][f1 == 2] == 1).all() and (linked[1][f1 == 1] == 2).all()


def test_link_frames_rejects_bad_input():
    with pytest.raises(ValueError, match="integers"):
        link_frames(np.zeros((2, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"\(T, ...\)"):
        link_frames(np.zeros(5, np.int32))


def test_split_merges_keeps_two_tracks_through_a_merge():
    frames, truth = drifting_discs(frames=4)
    merged = frames.copy()
    both = (truth[2] == 1) | (truth[2] == 2)
    merged[2][both] = 99  # frame 2: the two touching discs come out as one object
    plain = link_frames(merged)
    assert len(np.unique(plain[3][truth[3] == 1])) == 1
    split = link_frames(merged, split_merges=True)
    for i in (1, 2, 3):
        ids, counts = np.unique(split[truth == i], return_counts=True)
        # one id per cell over all frames (the cut may miss a few pixels near the neck)
        assert counts.max() >= 0.97 * counts.sum(), (i, dict(zip(ids, counts)))
        assert np.unique(split[2][truth[2] == i], return_counts=True)[1].max() >= 0.9 * (truth[2] == i).sum()
    # without splitting, one of the two tracks ends at the merge
    assert len(np.unique(plain[truth == 1])) + len(np.unique(plain[truth == 2])) > 2


def test_split_merged_leaves_a_round_cell_whole():
    prev = disc_frame((60, 60), [(30, 30)], [14], [1])
    prev[:, 30:][prev[:, 30:] == 1] = 2  # the frame before cut one round cell in two
    cur = disc_frame((60, 60), [(30, 31)], [14], [1])
    out = split_merged(prev, cur)
    np.testing.assert_array_equal(out, cur)


def test_tracks_from_labels():
    frames, truth = drifting_discs(frames=5)
    tracks = tracks_from_labels(link_frames(frames))
    assert tracks.shape[1] == 4
    assert (np.diff(tracks[:, 0]) >= 0).all()  # sorted by track, then time
    first = tracks[tracks[:, 0] == tracks[0, 0]]
    assert (np.diff(first[:, 1]) == 1).all()
    # the centroid of the first-frame cell that track 1 starts with
    t0 = tracks[(tracks[:, 0] == 1) & (tracks[:, 1] == 0)][0]
    ys, xs = np.nonzero(link_frames(frames)[0] == 1)
    assert t0[2] == pytest.approx(ys.mean()) and t0[3] == pytest.approx(xs.mean())
    tracks3d = tracks_from_labels(np.stack([balls((4, 16, 16), [(2, 8, 8)], [3])] * 2))
    assert tracks3d.shape == (2, 5)


# ---- with a network ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sizeless_model(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("m") / "sizeless.pt"
    save_model(path, UNet(UNetConfig(depth=2, base_channels=4)), {"name": "sizeless"})
    return path


@pytest.mark.parametrize("method", ["orthogonal", "stitch", "planes"])
@pytest.mark.parametrize("which", ["tiny_model", "sizeless_model"])
def test_segment_volume_shapes_any_method(request, which, method):
    seg = Segmenter(str(request.getfixturevalue(which)), tile=64)
    vol = np.random.default_rng(0).random((3, 20, 24)).astype(np.float32)
    calls = []
    sem, inst = segment_volume(seg, vol, anisotropy=2.0, method=method, progress=lambda f, m: calls.append(f))
    assert sem.shape == inst.shape == vol.shape
    assert sem.dtype == np.uint8 and inst.dtype in (np.uint16, np.uint32)
    assert calls and calls[-1] == pytest.approx(1.0)


def test_side_slices_in_batches_match_the_tiled_answer(tiny_model, monkeypatch):
    """XZ/YZ slices go through the network in batches, each mirrored by ``gap`` pixels: a
    slice's answer does not depend on the others in its batch, equals the exact tiled
    answer when the gap covers the receptive radius, and differs without a gap."""
    from napari_unet.core import stack

    seg = Segmenter(str(tiny_model), tile=64, precision="fp32")  # exact equalities: no bf16 rounding
    rng = np.random.default_rng(0)
    a, b, c = (rng.random((6, 40)).astype(np.float32) * k for k in (1, 3, 0.1))
    pa = stack._side_views(seg, np.stack([a, b]), None, (0.0, 1.0), 2.0)
    pc = stack._side_views(seg, np.stack([a, c]), None, (0.0, 1.0), 2.0)
    assert pa.shape == (2, 2, 6, 40)
    np.testing.assert_allclose(pa[0], pc[0], atol=1e-5)
    assert np.abs(pa[1] - pc[1]).max() > 1e-5  # the second slice is its own
    radius = seg.model.receptive_radius()
    direct = stack._side_views(seg, np.stack([a, b]), None, (0.0, 1.0), 2.0, gap=radius)
    no_gap = stack._side_views(seg, np.stack([a, b]), None, (0.0, 1.0), 2.0, gap=0)
    monkeypatch.setattr(stack, "SIDE_DIRECT_PIXELS", 0)  # every slice alone, in exact tiles
    tiled = stack._side_views(seg, np.stack([a, b]), None, (0.0, 1.0), 2.0)
    np.testing.assert_allclose(direct, tiled, atol=1e-5)
    assert np.abs(no_gap - tiled).max() > 1e-5


def test_side_slices_between_the_computed_ones_are_interpolated(monkeypatch):
    """With a side stride of 4 the network runs on every 4th XZ / YZ slice (and the last);
    the slices between get the linear interpolation of their neighbours' answers."""
    from types import SimpleNamespace

    from napari_unet.core import stack

    class Fake:  # XY planes answer 0; a side slice answers its own values
        loaded = SimpleNamespace(scale=lambda d: 0.5)

        def probabilities(self, plane, diameter, limits):
            return np.zeros((3,) + plane.shape, np.float32)

    computed = []

    def side_views(seg, slices, *args, **kwargs):
        computed.append(len(slices))
        return np.stack([np.stack([s, s]) for s in slices]).astype(np.float32)

    monkeypatch.setattr(stack, "_side_views", side_views)
    assert stack.side_stride(Fake(), None) == 4
    nz, ny, nx = 3, 21, 18
    vol = np.broadcast_to(np.arange(ny, dtype=np.float32)[None, :, None], (nz, ny, nx)).copy()
    bg, inner = stack._volume_probs(Fake(), vol, None, None, 1.0, None)
    np.testing.assert_allclose(bg, 2 * vol / 3, atol=1e-5)  # (XY 0 + XZ y + YZ y) / 3
    np.testing.assert_allclose(inner, bg)
    assert sum(computed) == len(range(0, ny, 4)) + len(range(0, nx, 4)) + 1  # + the last YZ slice


def test_segment_volume_rejects_bad_input(tiny_model):
    seg = Segmenter(str(tiny_model), tile=64)
    with pytest.raises(ValueError, match="method"):
        segment_volume(seg, np.zeros((2, 8, 8)), method="magic")
    with pytest.raises(ValueError, match=r"\(Z, Y, X\)"):
        segment_volume(seg, np.zeros((8, 8)))
    with pytest.raises(ValueError, match="anisotropy"):
        segment_volume(seg, np.zeros((2, 8, 8)), anisotropy=0)


def test_segment_stack_shapes(tiny_model):
    seg = Segmenter(str(tiny_model), tile=64)
    rng = np.random.default_rng(0)
    for shape in [(2, 3, 20, 24), (3, 1, 20, 24), (1, 1, 20, 24)]:
        sem, inst, notes = segment_stack(seg, rng.random(shape).astype(np.float32), anisotropy=2.0)
        assert sem.shape == inst.shape == shape
    sem, inst = segment_timelapse(seg, rng.random((3, 20, 24)).astype(np.float32))
    assert inst.shape == (3, 20, 24)


def nuclei_volume(seed=0):
    """A small noisy volume: four touching balls, z steps of 3 px, as in benchmarks/volume.py."""
    from scipy import ndimage as ndi

    truth = balls((10, 64, 64), [(14, 22, 22), (14, 22, 44), (14, 44, 30), (16, 45, 52)], [12, 12, 12, 11], anisotropy=3.0)
    rng = np.random.default_rng(seed)
    img = ndi.gaussian_filter((truth > 0).astype(np.float32), (0.7, 1.5, 1.5)) * 0.9 + 0.08
    img = rng.poisson(img * 80) + rng.normal(100, 3, img.shape)
    return img.astype(np.float32), truth


def test_segment_volume_keeps_one_id_per_cell_through_the_planes(shipped_model):
    torch.set_num_threads(1)
    seg = Segmenter(shipped_model)
    img, truth = nuclei_volume()
    for method in ("orthogonal", "stitch"):
        _, inst = segment_volume(seg, img, anisotropy=3.0, diameter=24, method=method)
        res = summarize([instance_scores(inst, truth)])
        assert res["f1"] >= 0.85, (method, res)
        for i in range(1, 5):
            ids, counts = np.unique(inst[truth == i], return_counts=True)
            assert counts[ids > 0].max() >= 0.8 * counts.sum(), (method, i, dict(zip(ids, counts)))
    # the baseline without stitching cannot match any ball in 3D
    _, planes = segment_volume(seg, img, anisotropy=3.0, diameter=24, method="planes")
    assert summarize([instance_scores(planes, truth)])["f1"] < 0.5


def test_large_volume_is_segmented_in_blocks_with_cells_whole(shipped_model):
    """A volume over ``max_voxels`` goes in XY blocks at full depth; a cell across a block
    edge keeps one id, and the cells match the truth as the whole-volume path does."""
    from scipy import ndimage as ndi

    from napari_unet.core.blocks import block_grid

    torch.set_num_threads(1)
    centres = [(14, 48, x) for x in (40, 100, 160, 220, 280)] + [(14, 48 + 22, 160)]
    truth = balls((10, 112, 320), centres, [12] * 6, anisotropy=3.0)
    rng = np.random.default_rng(1)
    img = ndi.gaussian_filter((truth > 0).astype(np.float32), (0.7, 1.5, 1.5)) * 0.9 + 0.08
    img = (rng.poisson(img * 80) + rng.normal(100, 3, img.shape)).astype(np.float32)
    seg = Segmenter(shipped_model)
    max_voxels = 10 * 200 * 200  # blocks of 160 px with an 80 px halo (cells of 24 px)
    assert len(block_grid(112, 320, 160, 80)) == 2
    _, blocked = segment_volume(seg, img, anisotropy=3.0, diameter=24, max_voxels=max_voxels)
    _, whole = segment_volume(seg, img, anisotropy=3.0, diameter=24)
    f1 = summarize([instance_scores(blocked, truth)])["f1"]
    assert f1 >= 0.85 and f1 >= summarize([instance_scores(whole, truth)])["f1"] - 0.05
    for i in (3, 6):  # the two balls across the block edge at x = 160
        ids, counts = np.unique(blocked[truth == i], return_counts=True)
        assert counts[ids > 0].max() >= 0.8 * counts.sum(), (i, dict(zip(ids, counts)))
    assert len(np.unique(blocked)) - 1 == len(np.unique(whole)) - 1


def test_segment_timelapse_links_drifting_nuclei(shipped_model):
    from scipy import ndimage as ndi

    torch.set_num_threads(1)
    frames, truth = drifting_discs(frames=5)
    rng = np.random.default_rng(3)
    movie = np.stack([rng.poisson(ndi.gaussian_filter((t > 0).astype(np.float32), 1.5) * 80 + 6) for t in truth]).astype(np.float32)
    _, linked = segment_timelapse(Segmenter(shipped_model), movie, diameter=22)
    for i in (1, 2, 3, 4):
        ids, counts = np.unique(linked[truth == i], return_counts=True)
        assert counts[ids > 0].max() >= 0.85 * counts.sum(), (i, dict(zip(ids, counts)))


@pytest.mark.skipif(not (DATA / "img3d.tif").exists(), reason="tests/data/img3d.tif missing")
def test_stardist_example_volume(shipped_model):
    """StarDist's synthetic 3D example (BSD-3-Clause, tests/data/README.md): a floor well
    below what benchmarks/volume.py measures, so that a regression shows."""
    torch.set_num_threads(1)
    img = tifffile.imread(DATA / "img3d.tif")
    truth = tifffile.imread(DATA / "mask3d.tif")
    _, inst = segment_volume(Segmenter(shipped_model), img, anisotropy=2.0, diameter=15)
    res = summarize([instance_scores(inst, truth)])
    assert res["f1"] >= FLOOR_STARDIST, res


FLOOR_STARDIST = 0.15
