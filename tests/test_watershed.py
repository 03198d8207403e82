"""The watershed in two halves (core/watershed.py): one call's labels (but for seeds tied at
exactly equal elevations), and the same labels whatever the threads."""

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.segmentation import watershed as flood

from napari_unet.core import watershed as split


def _case(seed: int, shape=(1100, 1000), n=900, radius=14):
    """Touching and overlapping discs (a mask of many components), elevation with ties."""
    rng = np.random.default_rng(seed)
    centres = np.ones(shape, bool)
    centres[rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)] = False
    mask = ndi.distance_transform_edt(centres) < radius
    dist = ndi.distance_transform_edt(mask)
    elevation = (-dist + rng.normal(0, 0.3, shape)).astype(np.float32)
    elevation[rng.random(shape) < 0.2] = 0.0  # ties, which the pixels' order breaks
    markers, _ = ndi.label(dist > radius * 0.6)
    return elevation, markers.astype(np.int32), mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_watershed_equals_one_call(seed):
    elevation, markers, mask = _case(seed)
    assert mask.size >= split.SPLIT_MIN_PIXELS
    comp, _ = ndi.label(mask)
    r = mask.shape[0] // 2
    assert (comp[r - 1][mask[r - 1] & mask[r]] > 0).any()  # components cross the middle row
    ref = flood(elevation, markers=markers, mask=mask)
    out = split.watershed(elevation, markers, mask, threads=2)
    assert out.dtype == ref.dtype and np.array_equal(out, ref)


def test_one_component_across_the_plane_and_small_planes():
    elevation, markers, mask = _case(3)
    mask[:, 500:520] = True  # one component from top to bottom: the lower part is all of it
    ref = flood(elevation, markers=markers, mask=mask)
    assert np.array_equal(split.watershed(elevation, markers, mask, threads=2), ref)
    small = (slice(0, 300), slice(0, 300))
    assert np.array_equal(split.watershed(elevation[small], markers[small], mask[small], threads=2),
                          flood(elevation[small], markers=markers[small], mask=mask[small]))


@pytest.mark.parametrize("seed", [0, 1])
def test_labels_do_not_depend_on_the_threads_even_with_tied_seeds(seed):
    """Coarse elevations (as saturated probabilities give) tie seeds, where one call and the
    halves may part; one thread and two give the same halves, and ``threads=0`` is one call."""
    elevation, markers, mask = _case(seed)
    elevation = np.round(elevation * 2) / 2
    one, two = split.watershed(elevation, markers, mask, threads=1), split.watershed(elevation, markers, mask, threads=2)
    np.testing.assert_array_equal(one, two)
    assert np.array_equal(split.watershed(elevation, markers, mask, threads=0), flood(elevation, markers=markers, mask=mask))
    ref = flood(elevation, markers=markers, mask=mask)
    assert np.mean(one == ref) > 0.999  # parts only where tied seeds meet
