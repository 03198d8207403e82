"""Per-cell measurements against hand-computed values (core/measure.py)."""

import csv

import numpy as np
import pytest

from napari_unet.core.measure import measure, write_csv
from napari_unet.testing import discs


def _shapes():
    lab = np.zeros((64, 96), np.int32)
    lab[5:15, 10:50] = 1  # a 10 x 40 rectangle
    lab[30:31, 60:61] = 2  # one pixel
    lab[40:60, 70:90] = 3  # a 20 x 20 square
    img = np.zeros(lab.shape, np.float32)
    img[lab == 1] = 2.0
    img[lab == 3] = np.arange(400, dtype=np.float32)  # mean 199.5, max 399
    return lab, img


def test_hand_computed_values():
    lab, img = _shapes()
    m = measure(lab, img)
    np.testing.assert_array_equal(m["label"], [1, 2, 3])
    np.testing.assert_array_equal(m["area"], [400, 1, 400])
    np.testing.assert_allclose(m["equivalent_diameter"], 2 * np.sqrt(np.array([400, 1, 400]) / np.pi))
    np.testing.assert_allclose(m["centroid_y"], [9.5, 30, 49.5])
    np.testing.assert_allclose(m["centroid_x"], [29.5, 60, 79.5])
    # a w x h rectangle's pixel coordinates have variances (w^2 - 1) / 12 and (h^2 - 1) / 12
    np.testing.assert_allclose(m["eccentricity"], [np.sqrt(1 - (10**2 - 1) / (40**2 - 1)), 0, 0], atol=1e-9)
    np.testing.assert_allclose(m["solidity"], [1, 1, 1])
    np.testing.assert_allclose(m["mean_intensity"], [2, 0, 199.5])
    np.testing.assert_allclose(m["max_intensity"], [2, 0, 399])
    np.testing.assert_allclose(m["integrated_intensity"], [800, 0, 79800])


def test_spacing_gives_physical_units():
    lab, img = _shapes()
    m = measure(lab, img, spacing=(0.5, 0.5))
    np.testing.assert_allclose(m["area"], [100, 0.25, 100])
    np.testing.assert_allclose(m["centroid_y"], [4.75, 15, 24.75])
    np.testing.assert_allclose(m["integrated_intensity"], [800, 0, 79800])  # a sum over pixels, whatever their size
    np.testing.assert_allclose(m["eccentricity"], measure(lab)["eccentricity"])  # a shape, not a length


def test_eccentricity_equals_scikit_image():
    from skimage.measure import regionprops_table

    rng = np.random.default_rng(0)
    lab = discs((128, 160), centers=[tuple(rng.integers(15, 110, 2)) for _ in range(12)], radius=9)
    lab[100:104, 5:60] = 50  # long and thin
    ref = regionprops_table(lab, properties=["label", "eccentricity"])
    np.testing.assert_allclose(measure(lab)["eccentricity"], ref["eccentricity"], atol=1e-6)


def test_csv_and_bad_input(tmp_path):
    lab, img = _shapes()
    path = write_csv(measure(lab, img), tmp_path / "m.csv")
    rows = list(csv.DictReader(path.open()))
    assert [r["label"] for r in rows] == ["1", "2", "3"] and float(rows[0]["area"]) == 400
    with pytest.raises(ValueError, match="does not match"):
        measure(lab, img[:10])
    assert len(measure(np.zeros((8, 8), np.int32))["label"]) == 0
