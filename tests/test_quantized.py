"""int8 inference (core/quantized.py): the rewritten network, its calibration, and the
Segmenter's choice of it."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_unet.core import quantized
from napari_unet.core.inference import Segmenter, resolve_precision
from napari_unet.core.model import UNet, fold_batchnorm
from napari_unet.core.models import load_model
from napari_unet.testing import discs

needs_int8 = pytest.mark.skipif(not quantized.available(), reason="no x86 quantized engine with VNNI here")


def _random_net(**kw) -> UNet:
    torch.manual_seed(0)
    net = UNet(**kw)
    for m in net.modules():  # batch norms with statistics of their own, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return fold_batchnorm(net.eval())


@pytest.mark.parametrize("kw", [dict(depth=3, base_channels=16), dict(depth=4, base_channels=8), dict(depth=2, base_channels=8, norm="none")])
def test_walk_is_the_network(kw):
    net = _random_net(**kw)
    x = torch.rand(2, 1, 64, 80)
    names = []
    with torch.inference_mode():
        out = quantized.walk(net, x, lambda n, t: names.append(n) or t)
        assert torch.allclose(out, net(x), atol=1e-5)
    depth = kw["depth"]
    assert len(names) == 1 + 2 * depth + 2 + 5 * depth + 1 and len(set(names)) == len(names)


def test_up_convolution_as_1x1_convolution_and_shuffle():
    """The rewrite Int8UNet runs its up-convolutions in, computed in float (any CPU)."""
    torch.manual_seed(0)
    up = torch.nn.ConvTranspose2d(12, 5, 2, stride=2)
    x = torch.rand(2, 12, 7, 9)
    w, b = quantized.up_as_conv(up)
    with torch.inference_mode():
        y = quantized._shuffle(torch.nn.functional.conv2d(x.contiguous(memory_format=torch.channels_last), w, b))
        assert y.shape == (2, 5, 14, 18)
        assert torch.allclose(y, up(x), atol=1e-5)


def test_odd_int8_metadata_is_refused():
    net = _random_net(depth=2, base_channels=8)
    ranges = quantized.calibrate(net, [np.zeros((1, 1, 32, 32), np.float32)])
    for bad in ([0, 10**400], [0, float("inf")], [3, 1], "ab", [1]):
        with pytest.raises(ValueError, match="int8 range"):
            quantized.Int8UNet(net, {**ranges, "dec0.up": bad})


def _synthetic(n=3, shape=(128, 160)):
    rng = np.random.default_rng(0)
    imgs = []
    for k in range(n):
        img = discs(shape, centers=((40, 40 + 8 * k), (40, 70 + 8 * k), (90, 110)), radius=14).astype(np.float32)
        imgs.append(img * 0.8 + rng.normal(0, 0.05, shape).astype(np.float32))
    return np.stack(imgs)[:, None]


@needs_int8
def test_int8_network_is_close_to_the_float_one():
    net = _random_net(depth=3, base_channels=16, out_channels=3)
    x = _synthetic()
    ranges = quantized.calibrate(net, [x])
    q = quantized.Int8UNet(net, ranges)
    with torch.inference_mode():
        pf = torch.softmax(net(torch.from_numpy(x)), 1)
        pq = torch.softmax(q(torch.from_numpy(x)), 1)
    assert pq.shape == pf.shape
    assert float((pq - pf).abs().mean()) < 0.01
    assert float((pq.argmax(1) == pf.argmax(1)).float().mean()) > 0.98
    # geometry is the float network's: tiling reads it
    assert q.multiple == net.multiple and q.aligned_radius() == net.aligned_radius() and q.config is net.config


@needs_int8
def test_int8_encoder_and_the_gate_that_reads_it(data_dir, monkeypatch):
    """``Int8UNet.encode`` is the float encoder's bottleneck within int8 error; the gate
    takes the int8 score far from its margin and the float one near it."""
    from napari_unet.core import inference, size
    from napari_unet.core.data import read_image

    net = _random_net(depth=3, base_channels=16, out_channels=3)
    x = torch.from_numpy(_synthetic())
    q = quantized.Int8UNet(net, quantized.calibrate(net, [x.numpy()]))
    with torch.inference_mode():
        ef, eq = net.encode(x), q.encode(x)
    assert eq.shape == ef.shape and eq.dtype == torch.float32
    assert float(torch.nn.functional.cosine_similarity(ef.flatten(), eq.flatten(), dim=0)) > 0.99

    seg = Segmenter("generalist")
    gate = seg.loaded.meta["delegate"]
    img = read_image(sorted((data_dir / "bbbc039" / "val").glob("IXM*[0-9].tif"))[0])
    crop = seg.normalized(size.central(img), seg.limits(img))
    fast, slow = size.style_score(seg.net, gate, crop), size.style_score(seg.model, gate, crop, inference.bf16_supported())
    assert fast != slow and abs(fast - slow) < 0.2 and fast < gate["margin"] - inference.GATE_INT8_GUARD
    assert seg.gate_score(img) == fast  # far below the margin: the int8 score
    monkeypatch.setattr(inference, "GATE_INT8_GUARD", 10.0)  # as if near it: the float encoder decides
    assert seg.gate_score(img) == slow


def test_int8_needs_every_range():
    net = _random_net(depth=2, base_channels=8)
    ranges = quantized.calibrate(net, [_synthetic()[:, :, :64, :64]])
    ranges.pop("dec0.up")
    with pytest.raises(ValueError, match="lacks 1"):
        quantized.Int8UNet(net, ranges)


def test_precision_choice():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu, int8=True) == "int8"
    assert resolve_precision("int8", cpu, int8=True) == "int8"
    float_choice = resolve_precision("auto", cpu)
    assert float_choice in ("bf16", "fp32")
    assert resolve_precision("int8", cpu, int8=False) == float_choice  # an uncalibrated model runs as auto
    assert resolve_precision("bf16", cpu, int8=True) == "bf16"
    with pytest.raises(ValueError, match="precision must be"):
        resolve_precision("int4", cpu)


def test_a_model_file_with_odd_int8_metadata_runs_in_float(shipped_model):
    loaded = load_model(shipped_model)
    loaded.meta["int8"] = {"ranges": {"input": [0, 10**400]}}
    seg = Segmenter(loaded)
    assert seg.precision in ("bf16", "fp32") and seg.net is seg.model


def test_training_refuses_int8():
    from napari_unet.core.training import Sample, TrainConfig, Trainer

    lab = (discs((64, 64), centers=((20, 20), (44, 44)), radius=8) > 0).astype(np.int32)
    smp = Sample(lab.astype(np.float32), instances=lab)
    with pytest.raises(ValueError, match="int8 is for segmentation only"):
        Trainer(_random_net(depth=2, base_channels=8), [smp], config=TrainConfig(precision="int8"))


def test_an_uncalibrated_model_runs_in_float(shipped_model):
    loaded = load_model(shipped_model)
    loaded.meta.pop("int8", None)
    seg = Segmenter(loaded)
    assert seg.precision in ("bf16", "fp32") and seg.net is seg.model


@needs_int8
def test_shipped_models_run_in_int8_with_the_float_answers(data_dir):
    """Each shipped model carries its calibration; int8 and bfloat16 segment a real image alike."""
    from napari_unet.core.data import read_image
    from napari_unet.core.metrics import instance_scores

    cases = {"generalist": "bbbc039", "nuclei": "bbbc039", "cells": "usiigaci"}
    for name, subset in cases.items():
        lab = sorted((data_dir / subset / "val").glob("*_labels.tif"))[0]
        img = read_image(lab.with_name(lab.name.replace("_labels", "")))
        fast, ref = Segmenter(name), Segmenter(name, precision=resolve_precision("auto", torch.device("cpu")))
        assert fast.precision == "int8" and isinstance(fast.net, quantized.Int8UNet), name
        a, b = fast.segment(img).instances, ref.segment(img).instances
        agree = instance_scores(a, b)  # the float answer taken as the truth
        f1 = 2 * agree["tp"][0.5] / max(1, agree["n_pred"] + agree["n_true"])
        assert f1 > 0.95, (name, f1)
        assert np.mean((a > 0) == (b > 0)) > 0.98, name
    assert "int8" not in load_model("tissue").meta  # int8 lost on colour images: it stays in float
    assert Segmenter("tissue", precision="int8").precision in ("bf16", "fp32")


@needs_int8
def test_calibration_script_adds_ranges_and_keeps_the_weights(tmp_path, data_dir):
    out = tmp_path / "nuclei_int8.pt"
    script = Path(__file__).resolve().parents[1] / "scripts" / "calibrate_int8.py"
    src = load_model("nuclei")
    src.meta.pop("int8", None)
    from napari_unet.core.models import save_model

    plain = save_model(tmp_path / "plain.pt", src.model, src.meta, half=True)
    r = subprocess.run([sys.executable, "-W", "ignore", str(script), str(plain), f"{data_dir / 'bbbc039' / 'val'}:15",
                        "--output", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    new, old = load_model(out), load_model(plain)
    ranges = new.meta["int8"]["ranges"]
    assert new.meta["int8"]["count"] == 2 and set(ranges) >= {"input", "head", "dec0.0"}
    assert ranges["input"][1] > ranges["input"][0] and ranges["down0.0"][0] == 0  # after a ReLU
    for k, v in old.model.state_dict().items():
        assert torch.equal(v, new.model.state_dict()[k]), k
    assert Segmenter(out).precision == "int8"
