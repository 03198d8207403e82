"""Blocks of a large plane that share their halos' probabilities (core.bands)."""

import numpy as np
import pytest
import torch

from napari_unet.core.bands import _reflect, rolling_probabilities
from napari_unet.core.model import UNet, UNetConfig
from napari_unet.core.tiling import predict_batch, predict_image


def test_reflect_matches_numpys_reflect_padding():
    a = np.arange(7)
    for p in (0, 1, 3, 6):
        assert (a[_reflect(np.arange(-p, 7 + p), 7)] == np.pad(a, (p, p), mode="reflect")).all()


@pytest.mark.parametrize(
    "shape, size, halo, tile",
    [
        ((300, 420), 128, 32, 64),  # three bands of four blocks
        ((270, 200), 128, 32, 64),  # the last band shorter than the strip it shares
        ((257, 190), 96, 48, 80),  # sides off the pooling grid, halo = size / 2
        ((2, 100, 100), 64, 16, 48),  # a two-channel plane
    ],
)
def test_every_blocks_probabilities_equal_one_whole_plane_pass(shape, size, halo, tile):
    torch.manual_seed(0)
    channels = shape[0] if len(shape) == 3 else 1
    net = UNet(UNetConfig(in_channels=channels, depth=2, base_channels=4)).eval()
    img = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    whole = predict_image(net, img, tile=tile)
    calls = []

    def predict(batch):
        calls.append(batch.shape[-2] * batch.shape[-1])
        return predict_batch(net, batch)

    seen = np.zeros(shape[-2:], int)
    blocks = 0
    for b, probs in rolling_probabilities(img, size, halo, lambda x: x, predict, tile, net.aligned_radius(), 32,
                                          net.multiple, whole.shape[0]):
        np.testing.assert_allclose(probs, whole[(slice(None), *b.read)], atol=1e-5)
        seen[b.core] += 1
        blocks += 1
    assert blocks > 1 and (seen == 1).all()  # every pixel in one block's core
    # the halos are not predicted again: fewer network pixels than predicting each read region
    from napari_unet.core.blocks import block_grid
    from napari_unet.core.tiling import plan_tiles

    def cost(region):
        geom = plan_tiles(region, net, tile, border=32)
        return len(geom) * geom.tile_size[0] * geom.tile_size[1]

    separate = sum(cost((b.Y1 - b.Y0, b.X1 - b.X0)) for b in block_grid(*shape[-2:], size, halo))
    assert sum(calls) < 0.9 * separate


def test_a_halo_larger_than_half_a_block_is_refused():
    with pytest.raises(ValueError, match="halo <= size / 2"):
        next(rolling_probabilities(np.zeros((64, 64)), 32, 32, lambda x: x, lambda x: x, 32, 8, 8, 8, 3))
