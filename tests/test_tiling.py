import numpy as np
import pytest
import torch

from napari_unet.core.model import UNet, UNetConfig
from napari_unet.core.tiling import TileGeometry, plan_tiles, predict_tiled


def _predictor(net):
    def run(batch):
        with torch.inference_mode():
            return torch.softmax(net(torch.from_numpy(batch)), 1).numpy()
    return run


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(1)
    n = UNet(UNetConfig(depth=2, base_channels=4)).eval()
    # non-trivial batch-norm statistics so that eval mode is not an identity
    for m in n.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return n


@pytest.mark.parametrize("border", [None, 0, 8])
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (17, 5), (37, 64), (100, 83), (130, 129)])
def test_tiled_equals_whole_image(net, shape, border):
    """Tiles give the whole-image answer whether the image's edges are mirrored by the
    whole margin (None), by less, or not at all (0: the network's zero padding)."""
    rng = np.random.default_rng(0)
    img = rng.random((1,) + shape, dtype=np.float32)
    whole = plan_tiles(shape, net, tile=10**6, border=border)
    assert len(whole) == 1
    tiled = plan_tiles(shape, net, tile=16, border=border)
    ref = predict_tiled(img, _predictor(net), whole, 3)
    out = predict_tiled(img, _predictor(net), tiled, 3, batch_size=3)
    assert out.shape == (3,) + shape
    if max(shape) > 16:
        assert len(tiled) > 1
    np.testing.assert_allclose(out, ref, atol=1e-5)
    np.testing.assert_allclose(out.sum(0), 1, atol=1e-5)


def test_border_sets_what_a_small_image_costs(net):
    """With border 0 a one-tile image is predicted at its own (grid-rounded) size, and its
    edges differ from the mirrored answer while its centre does not."""
    from napari_unet.core.tiling import predict_image

    g0 = plan_tiles((37, 64), net, tile=10**6, border=0)
    gm = plan_tiles((37, 64), net, tile=10**6)
    ey, ex = g0.extent
    assert ey - 37 < net.multiple and ex == 64
    assert g0.tile_size == (ey, ex) and gm.tile_size == (ey + 2 * gm.margin, ex + 2 * gm.margin)
    img = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    zero = predict_image(net, img, border=0)
    mirrored = predict_image(net, img, border=gm.margin)
    assert np.abs(zero - mirrored)[:, :2].max() > 1e-4


def test_small_margin_blends_without_seams(net):
    rng = np.random.default_rng(0)
    img = rng.random((1, 90, 90), dtype=np.float32)
    ref = predict_tiled(img, _predictor(net), plan_tiles(img.shape[1:], net, tile=10**6), 3)
    geom = plan_tiles(img.shape[1:], net, tile=32, margin=4, blend=4)
    out = predict_tiled(img, _predictor(net), geom, 3)
    assert len(geom) > 1
    err = np.abs(out - ref)
    assert err.mean() < 0.05  # approximate by design, but close


def test_tile_origins_are_aligned_and_cover():
    g = TileGeometry((1000, 333), core=128, margin=20, multiple=8)
    assert g.margin % 8 == 0
    cover = np.zeros((g.extent[0], g.extent[1]), bool)
    for y, x in g:
        assert y % 8 == 0 and x % 8 == 0
        cover[y : y + g.core[0], x : x + g.core[1]] = True
    assert cover.all()


def test_progress_and_errors(net):
    img = np.zeros((1, 40, 40), np.float32)
    seen = []
    geom = plan_tiles((40, 40), net, tile=16)
    predict_tiled(img, _predictor(net), geom, 3, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] == len(geom)
    with pytest.raises(ValueError):
        predict_tiled(img, _predictor(net), plan_tiles((41, 40), net), 3)
    with pytest.raises(ValueError):
        TileGeometry((0, 5), 16, 0, 8)
