"""Models that read several channels (e.g. cytoplasm + nuclei, as Cellpose's): training,
segmentation, the command line and clear errors (issue 15, item 4)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from napari_unet.cli import main
from napari_unet.core.inference import Segmenter
from napari_unet.core.model import build_model, with_input_channels
from napari_unet.core.models import load_model, save_model
from napari_unet.core.pipeline import Input, segment_input
from napari_unet.testing import discs


def _nuclei_image(data_dir, side=256):
    img = tifffile.imread(sorted((data_dir / "bbbc039" / "val").glob("*[!s].tif"))[0])
    return img[:side, :side]


@pytest.fixture(scope="module")
def two_channel_nuclei(tmp_path_factory):
    """The shipped ``nuclei`` model widened to two channels, reading only the second."""
    one = load_model("nuclei")
    path = tmp_path_factory.mktemp("two") / "two.pt"
    save_model(path, with_input_channels(one.model, 2, reads=1), {**one.meta, "name": "two"})
    return str(path)


def test_widened_model_computes_the_one_channel_model_on_its_channel():
    torch.manual_seed(0)
    one = build_model("small").eval()
    two = with_input_channels(one, 3, reads=2).eval()
    x = torch.randn(2, 1, 32, 32)
    other = torch.randn(2, 2, 32, 32) * 5  # the other channels carry anything: read with weight 0
    with torch.no_grad():
        torch.testing.assert_close(two(torch.cat([other, x], 1)), one(x), atol=1e-4, rtol=1e-4)
    assert two.config.in_channels == 3
    with pytest.raises(ValueError, match="one-channel"):
        with_input_channels(two, 4)


def test_nuclei_as_one_channel_of_two_segment_as_the_image_alone(data_dir, two_channel_nuclei):
    """A two-channel model that reads the nuclei channel gives the one-channel model's
    labels, whatever the other channel holds: per-channel normalisation, rescaling, tiling
    and blocks all carry the channel axis."""
    img = _nuclei_image(data_dir)
    distractor = np.random.default_rng(0).integers(0, 4000, img.shape).astype(img.dtype)
    for block in (2048, 128):  # whole plane, then block by block
        alone = Segmenter("nuclei", precision="fp32", block=block).segment(img)
        both = Segmenter(two_channel_nuclei, precision="fp32", block=block).segment(np.stack([distractor, img]))
        assert both.instances.shape == img.shape
        assert alone.instances.max() > 10
        assert (both.semantic == alone.semantic).mean() > 0.999
        assert abs(int(both.instances.max()) - int(alone.instances.max())) <= 1


def test_two_channel_time_lapse_keeps_ids(data_dir, two_channel_nuclei):
    img = _nuclei_image(data_dir, 192)
    movie = np.stack([img, np.roll(img, 3, axis=1)])  # (T, Y, X), cells drift 3 px
    noise = np.random.default_rng(1).integers(0, 4000, movie.shape).astype(img.dtype)
    tcyx = np.stack([noise, movie], axis=1)
    res = segment_input(Segmenter(two_channel_nuclei, precision="fp32"), Input(tcyx, "TCYX"))
    assert res.axes == "TYX" and res.instances.shape == movie.shape
    assert any("channels 0, 1 of 2" in n for n in res.notes)
    a, b = res.instances
    ids = [i for i in np.unique(a) if i and (a == i).sum() > 50]
    kept = [i for i in ids if np.median(b[np.roll(a == i, 3, axis=1)]) == i]
    assert len(ids) > 10 and len(kept) >= 0.9 * len(ids)


def test_two_channel_errors_are_clear(two_channel_nuclei):
    seg = Segmenter(two_channel_nuclei, precision="fp32")
    with pytest.raises(ValueError, match="reads 2 channels"):
        seg.segment(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="reads 2 channels"):
        segment_input(seg, Input(np.zeros((3, 64, 64), np.uint8), "CYX", channel=1))
    with pytest.raises(ValueError, match="--channel 5 does not exist"):
        segment_input(seg, Input(np.zeros((3, 64, 64), np.uint8), "CYX", channel=(0, 5)))
    with pytest.raises(ValueError, match="volumes"):
        segment_input(seg, Input(np.zeros((4, 2, 64, 64), np.uint8), "ZCYX"))


def test_cli_trains_and_segments_with_two_channels(tmp_path, capsys):
    lab = discs()
    rng = np.random.default_rng(0)
    folder = tmp_path / "train"
    folder.mkdir()
    for k in range(2):
        cells = (lab > 0) * 200 + rng.normal(20, 5, lab.shape)
        chans = np.stack([rng.normal(100, 30, lab.shape), cells, cells[::-1]]).clip(0, 255).astype(np.uint8)
        tifffile.imwrite(folder / f"im{k}.tif", chans if k == 0 else np.moveaxis(chans, 0, -1))  # CYX and YXC
        tifffile.imwrite(folder / f"im{k}_labels.tif", lab.astype(np.uint16))
    model = tmp_path / "two.pt"
    assert main(["train", "--images", str(folder), "--output", str(model), "--channels", "1", "0", "--preset", "small",
                 "--steps", "4", "--batch", "2", "--patch", "64", "--val-every", "2", "--val-fraction", "0.5"]) == 0
    loaded = load_model(model)
    assert loaded.model.config.in_channels == 2 and loaded.meta["channels"] == [1, 0]

    img = folder / "im0.tif"
    out = tmp_path / "seg"
    assert main(["segment", str(img), "-o", str(out), "--model", str(model), "--axes", "CYX", "--channel", "1,0"]) == 0
    assert "channels 1, 0 of 3" in capsys.readouterr().out
    assert tifffile.imread(out / "im0_labels.tif").shape == lab.shape
    capsys.readouterr()
    # one channel for a two-channel model, two for a one-channel one, a plain 2D image: one line each
    tifffile.imwrite(tmp_path / "flat.tif", lab.astype(np.uint8))
    for args, msg in [
        ([str(img), "--model", str(model), "--axes", "CYX", "--channel", "1"], "reads 2 channels"),
        ([str(tmp_path / "flat.tif"), "--model", str(model)], "reads 2 channels"),
        ([str(img), "--model", "nuclei", "--axes", "CYX", "--channel", "1,0"], "reads one channel"),
        ([str(img), "--model", str(model), "--axes", "CYX", "--channel", "a,b"], "--channel takes channel numbers"),
    ]:
        assert main(["segment", *args, "-o", str(tmp_path / "bad"), "--fail-fast"]) == 1
        err = capsys.readouterr().err.strip()
        assert msg in err and "Traceback" not in err, err
    assert main(["train", "--images", str(folder), "--output", str(tmp_path / "x.pt"), "--channels", "0", "7",
                 "--steps", "1"]) == 1
    assert "--channels asks for [7]" in capsys.readouterr().err
