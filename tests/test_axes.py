"""Named axes: parsing, guessing, TIFF metadata, and the (T, Z, C, Y, X) round trip."""

import numpy as np
import pytest
import tifffile

from napari_unet.core.axes import (
    anisotropy_from_tiff,
    axes_from_tiff,
    guess_axes,
    labels_axes,
    labels_from_tzyx,
    parse_axes,
    pick_channel,
    to_tzcyx,
)
from napari_unet.core.normalize import to_gray


@pytest.mark.parametrize(
    "text,shape,expected",
    [
        ("yx", (30, 40), "YX"),
        ("ZYX", (5, 30, 40), "ZYX"),
        ("t z c y x", (2, 3, 4, 30, 40), "TZCYX"),
        ("YXS", (30, 40, 3), "YXS"),
        ("xyz", (40, 30, 5), "XYZ"),
        ("C,Y,X", (2, 30, 40), "CYX"),
    ],
)
def test_parse_axes_accepts(text, shape, expected):
    assert parse_axes(text, shape) == expected


@pytest.mark.parametrize(
    "text,shape,words",
    [
        ("ZYX", (2, 30, 64, 64), ["--axes ZYX does not fit an image of shape (2, 30, 64, 64)", "3 axes for 4 dimensions"]),
        ("TZCYX", (30, 64, 64), ["5 axes for 3 dimensions"]),
        ("ZQX", (5, 30, 40), ["unknown axis 'Q'"]),
        ("ZZYX", (2, 5, 30, 40), ["Z given more than once"]),
        ("TZC", (2, 5, 30), ["needs both Y and X", "Y and X missing"]),
        ("ZYX ", (2, 30, 40, 3), ["3 axes for 4 dimensions"]),
        ("YXS", (30, 40, 2), ["S (RGB samples) needs 3 or 4", "use C"]),
        ("", (30, 40), ["--axes is empty"]),
    ],
)
def test_parse_axes_rejects_with_a_clear_message(text, shape, words):
    with pytest.raises(ValueError) as err:
        parse_axes(text, shape)
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_parse_axes_names_the_option():
    with pytest.raises(ValueError, match=r"^axes ZYX does not fit"):
        parse_axes("ZYX", (2, 3, 30, 40), option="axes")


@pytest.mark.parametrize(
    "shape,expected",
    [
        ((64, 64), "YX"),
        ((64, 64, 3), "YXS"),
        ((64, 64, 4), "YXS"),
        ((520, 696, 2), "YXC"),  # channel-last, not 520 planes of 696 x 2
        ((520, 696, 3), "YXS"),
        ((3, 64, 64), "ZYX"),  # planes, not channels: nothing dropped unless told
        ((7, 64, 64), "ZYX"),
        ((30, 64, 64), "ZYX"),
        ((2, 30, 64, 64), "CZYX"),
        ((30, 2, 64, 64), "ZCYX"),
        ((10, 30, 64, 64), "TZYX"),
        ((12, 64, 64, 2), "ZYXC"),
        ((12, 64, 64, 3), "ZYXS"),
        ((5, 30, 2, 64, 64), "TZCYX"),
        ((5, 2, 30, 64, 64), "TCZYX"),
    ],
)
def test_guess_axes(shape, expected):
    axes = guess_axes(shape)
    assert axes == expected
    assert parse_axes(axes, shape) == axes  # every guess is valid


def test_guess_axes_rgb_flag_and_errors():
    assert guess_axes((64, 64, 3), rgb=False) == "YXC"
    assert guess_axes((64, 64, 3), rgb=True) == "YXS"
    with pytest.raises(ValueError, match="3 or 4"):
        guess_axes((64, 64, 5), rgb=True)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        guess_axes((64,))
    with pytest.raises(ValueError, match="give them"):
        guess_axes((2, 3, 4, 5, 64, 64))


@pytest.mark.parametrize("axes", ["YX", "ZYX", "YXZ", "TYX", "XYT", "TZYX", "ZTXY"])
def test_to_tzcyx_round_trip_without_channels(axes):
    rng = np.random.default_rng(0)
    sizes = {"T": 3, "Z": 4, "Y": 9, "X": 11}
    image = rng.integers(0, 1000, [sizes[a] for a in axes]).astype(np.uint16)
    data, info = to_tzcyx(image, axes)
    assert data.shape == tuple(sizes[a] if a in axes else 1 for a in "TZ") + (1, 9, 11)
    assert data.dtype == image.dtype and np.shares_memory(data, image)  # a view, no copy
    assert info.labels_axes == labels_axes(axes) == axes and info.labels_shape == image.shape
    back = labels_from_tzyx(data[:, :, 0], axes)
    np.testing.assert_array_equal(back, image)


@pytest.mark.parametrize("axes", ["CYX", "YXC", "ZCYX", "CZYX", "TZCYX", "ZYXC"])
def test_to_tzcyx_with_channels(axes):
    rng = np.random.default_rng(1)
    sizes = {"T": 2, "Z": 3, "C": 2, "Y": 8, "X": 10}
    image = rng.random([sizes[a] for a in axes]).astype(np.float32)
    data, info = to_tzcyx(image, axes)
    assert data.shape[2:] == (2, 8, 10)
    assert info.labels_axes == axes.replace("C", "")
    one = pick_channel(data, 1)
    expected = np.take(image, 1, axis=axes.index("C"))
    np.testing.assert_array_equal(labels_from_tzyx(one, axes), expected)
    assert info.labels_shape == expected.shape


def test_to_tzcyx_rgb_becomes_one_gray_channel():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (20, 30, 3)).astype(np.uint8)
    data, info = to_tzcyx(image, "YXS")
    assert data.shape == (1, 1, 1, 20, 30) and info.rgb and info.labels_axes == "YX"
    np.testing.assert_allclose(data[0, 0, 0], to_gray(image))
    # colour first (SYX) gives the same
    data2, _ = to_tzcyx(np.moveaxis(image, -1, 0), "SYX")
    np.testing.assert_allclose(data2, data)


def test_pick_channel_errors():
    data, _ = to_tzcyx(np.zeros((3, 20, 30)), "CYX")
    with pytest.raises(ValueError, match="has 3 channels.*--channel 0..2"):
        pick_channel(data)
    with pytest.raises(ValueError, match="--channel 5 does not exist"):
        pick_channel(data, 5)
    single, _ = to_tzcyx(np.zeros((20, 30)), "YX")
    assert pick_channel(single).shape == (1, 1, 20, 30)


def test_labels_from_tzyx_rejects_lost_axes():
    with pytest.raises(ValueError, match="along T"):
        labels_from_tzyx(np.zeros((2, 1, 5, 5)), "ZYX")


def test_imagej_tiff_axes_and_anisotropy(tmp_path):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.zeros((4, 30, 40), np.uint16), imagej=True,
                     metadata={"axes": "ZYX", "spacing": 3.0}, resolution=(1, 1))
    assert axes_from_tiff(path) == "ZYX"
    assert anisotropy_from_tiff(path) == pytest.approx(3.0)
    # pixel 0.5 units wide (2 px per unit), planes 1.5 units apart: 3 pixels
    path2 = tmp_path / "stack2.tif"
    tifffile.imwrite(path2, np.zeros((4, 30, 40), np.uint16), imagej=True,
                     metadata={"axes": "ZYX", "spacing": 1.5, "unit": "um"}, resolution=(2.0, 2.0))
    assert anisotropy_from_tiff(path2) == pytest.approx(3.0)


def test_imagej_hyperstack_and_ome_tiff(tmp_path):
    ij = tmp_path / "hyper.tif"
    tifffile.imwrite(ij, np.zeros((3, 2, 30, 40), np.uint16), imagej=True, metadata={"axes": "ZCYX"})
    assert axes_from_tiff(ij) == "ZCYX"
    assert anisotropy_from_tiff(ij) is None  # no spacing
    ome = tmp_path / "movie.ome.tif"
    tifffile.imwrite(ome, np.zeros((2, 4, 30, 40), np.uint16), ome=True,
                     metadata={"axes": "TZYX", "PhysicalSizeZ": 2.0, "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    assert axes_from_tiff(ome) == "TZYX"
    assert anisotropy_from_tiff(ome) == pytest.approx(4.0)


def test_tiff_without_axis_metadata_falls_back_to_a_guess(tmp_path):
    path = tmp_path / "two_channels.tif"
    tifffile.imwrite(path, np.zeros((52, 69, 2), np.uint16))  # tifffile calls it QYX
    assert axes_from_tiff(path) is None
    assert guess_axes(tifffile.imread(path).shape) == "YXC"
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((30, 40, 3), np.uint8), photometric="rgb")
    assert axes_from_tiff(rgb) == "YXS"
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((30, 40), np.uint16))
    assert axes_from_tiff(plain) == "YX"
    assert anisotropy_from_tiff(plain) is None
    not_tiff = tmp_path / "x.tif"
    not_tiff.write_text("not a tiff")
    assert axes_from_tiff(not_tiff) is None and anisotropy_from_tiff(not_tiff) is None
