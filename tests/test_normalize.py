import numpy as np
import pytest

from napari_unet.core.normalize import normalize, percentiles


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64])
def test_dtypes_map_to_unit_range(dtype):
    rng = np.random.default_rng(0)
    img = (rng.random((64, 64)) * 100).astype(dtype)
    out = normalize(img)
    assert out.dtype == np.float32
    assert -0.1 < out.min() and out.max() < 1.1
    assert np.percentile(out, 50) == pytest.approx(0.5, abs=0.1)


def test_bool_constant_nan_and_inf():
    b = np.zeros((20, 20), bool)
    b[5:10] = True
    assert set(np.unique(normalize(b))) <= {0.0, 1.0}
    assert not normalize(np.full((8, 8), 7, np.uint16)).any()
    img = np.arange(100, dtype=np.float32).reshape(10, 10)
    img[0, 0] = np.nan
    img[1, 1] = np.inf
    out = normalize(img)
    assert np.isfinite(out).all()
    assert out[0, 0] == 0
    assert not normalize(np.full((4, 4), np.nan)).any()


def test_input_is_not_modified_and_limits():
    img = np.arange(100, dtype=np.float32).reshape(10, 10)
    before = img.copy()
    out = normalize(img, limits=(0, 99))
    np.testing.assert_array_equal(img, before)
    assert out[-1, -1] == pytest.approx(1.0)


def test_large_image_percentiles_subsample():
    img = np.tile(np.arange(3000, dtype=np.uint16), (3000, 1))
    lo, hi = percentiles(img, 1, 99)
    assert lo == pytest.approx(30, abs=5) and hi == pytest.approx(2970, abs=5)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.uint32, np.float32])
def test_percentiles_of_integer_images_are_numpys(dtype):
    """Integer images are counted in a histogram instead of sorted: the same numbers as
    ``np.percentile`` exactly, offsets, negative values and tiny images included."""
    rng = np.random.default_rng(3)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "ui" else None
    for n, lo, hi in ((1, 0, 5), (7, 0, 3), (999, 0, 4095), (5000, 100, 60000), (321, -300, 300)):
        if info is not None:
            lo, hi = max(lo, info.min), min(hi, info.max)
        img = rng.integers(lo, hi + 1, n).astype(dtype)
        for q in ((1.0, 99.8), (0.0, 100.0), (37.3, 62.1)):
            ref = tuple(float(v) for v in np.percentile(img.astype(np.float32), q))
            assert percentiles(img, *q) == ref, (dtype, n, q)


def test_percentiles_of_integers_beyond_float32s_are_those_of_its_float32_copy():
    """Above 2**24 float32 rounds integers: the limits stay those of the float32 copy, as
    before the histogram (the review's case: a median 16777220, not 16777219)."""
    img = np.array([16777217, 16777219, 16777221], np.int32)
    assert percentiles(img, 50, 100) == tuple(float(v) for v in np.percentile(img.astype(np.float32), (50, 100)))
    assert percentiles(img, 50, 100)[0] == 16777220.0
