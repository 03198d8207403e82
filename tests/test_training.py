"""The training loop's choice of the weights it keeps (tiny model, synthetic discs)."""

import numpy as np
import pytest
import torch

from napari_unet.core.model import build_model
from napari_unet.core.training import Sample, TrainConfig, Trainer
from napari_unet.testing import discs


def _trainer(scores, **cfg):
    """A trainer validating after every step with a scripted sequence of scores; it
    records the weights at every validation."""
    lab = discs()
    img = (lab > 0).astype(np.float32) + 0.1 * np.random.default_rng(0).standard_normal(lab.shape).astype(np.float32)
    smp = Sample(img, instances=lab)
    seen = []
    it = iter(scores)

    def score_fn(model, samples):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(it)

    torch.manual_seed(0)
    conf = TrainConfig(patch=32, batch=2, steps=len(scores) - 1, val_every=1, warmup=1, lr=1e-2, **cfg)
    return Trainer(build_model("small"), [smp], [smp], conf, score_fn=score_fn, device="cpu"), seen


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_best_weights_are_kept_by_default():
    trainer, seen = _trainer([0.5, 0.8, 0.78, 0.7, 0.76])
    list(trainer.run())
    assert trainer.best_score == 0.8 and trainer.top_score == 0.8
    assert _same(trainer.model.state_dict(), seen[1])


def test_keep_within_prefers_later_weights_that_score_about_as_well():
    trainer, seen = _trainer([0.5, 0.8, 0.78, 0.7, 0.76], keep_within=0.05)
    list(trainer.run())
    # 0.78 and 0.76 are within 0.05 of the top score 0.8, 0.70 is not: the last of them wins
    assert trainer.best_score == 0.76 and trainer.top_score == 0.8
    assert _same(trainer.model.state_dict(), seen[4])
    assert not _same(seen[4], seen[1])


def test_keep_within_never_keeps_weights_below_the_starting_ones():
    trainer, seen = _trainer([0.8, 0.79, 0.78], keep_within=0.05)
    list(trainer.run())
    assert trainer.best_score == 0.8 and _same(trainer.model.state_dict(), seen[0])


def test_moving_average_is_validated_and_kept():
    trainer, seen = _trainer([0.5, 0.6, 0.7, 0.9], ema=0.5)
    raw = []
    for _ in trainer.run():
        raw.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
    avg = trainer.eval_model()
    assert avg is not trainer.model
    # what was scored at the last validation is the average, not the raw weights of that step
    assert _same(seen[-1], avg.state_dict()) and not _same(seen[-1], raw[-1])
    # the average of step k: d * average of step k-1 + (1 - d) * raw weights of step k, with
    # the decay warming up as (1 + k) / (10 + k) towards 0.5
    k = len(seen) - 1
    d = min(0.5, (1 + k) / (10 + k))
    w = "head.weight"
    assert torch.allclose(seen[-1][w], d * seen[-2][w] + (1 - d) * raw[-1][w], atol=1e-6)
    assert _same(trainer.model.state_dict(), seen[-1])  # the best (last) average is kept


def test_bad_moving_average_decay():
    with pytest.raises(ValueError, match="ema"):
        _trainer([0.5], ema=1.5)


def test_moving_average_survives_a_resume():
    import io

    trainer, _ = _trainer([0.5, 0.6, 0.7, 0.8], ema=0.9)
    list(trainer.run())
    buf = io.BytesIO()
    torch.save(trainer.checkpoint(), buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)  # a checkpoint loads without running code
    again, _ = _trainer([0.5, 0.6, 0.7, 0.8], ema=0.9)
    again.resume(ckpt)
    list(again.run())  # nothing left to train: the average is restored, not restarted
    assert again.eval_model() is not again.model
    assert _same(again.eval_model().state_dict(), trainer.eval_model().state_dict())
    assert int(again._ema.n_averaged) == int(trainer._ema.n_averaged) == 4


@pytest.mark.parametrize("preset", ["default", "small", "medium", "large", "ronneberger2015"])
def test_every_preset_trains_and_segments(preset, tmp_path):
    """Each advertised architecture, the paper's unpadded one included, trains (its targets
    cropped to the output of a valid input size) and segments any image size."""
    import tifffile

    from napari_unet.cli import main
    from napari_unet.core.inference import Segmenter
    from napari_unet.core.model import PRESETS

    assert preset in PRESETS
    lab = discs((96, 128))
    img = (lab > 0) * 200.0 + np.random.default_rng(0).normal(20, 5, lab.shape)
    d = tmp_path / "data"
    d.mkdir()
    for k in range(2):
        tifffile.imwrite(d / f"im{k}.tif", img.astype(np.float32))
        tifffile.imwrite(d / f"im{k}_labels.tif", lab.astype(np.uint16))
    out = tmp_path / f"{preset}.pt"
    assert main(["train", "--images", str(d), "--output", str(out), "--preset", preset, "--steps", "2",
                 "--batch", "1", "--patch", "128", "--val-every", "2", "--threads", "2"]) == 0
    res = Segmenter(str(out), precision="fp32").segment(img[:77, :101])
    assert res.semantic.shape == res.instances.shape == (77, 101)


def test_distance_head_trains_and_seeds_touching_discs(tmp_path):
    """The distance-head alternative to the 3-class output: targets, the training loss,
    the predicted map in [0, 1] beside class probabilities, and seeds from its peaks."""
    from napari_unet.core.losses import distance_targets
    from napari_unet.core.model import with_distance_head
    from napari_unet.core.postprocess import instances_from_probs
    from napari_unet.core.tiling import predict_batch

    lab = discs()
    d = distance_targets(lab)
    assert d[lab == 0].max() == 0 and 0 < d[lab > 0].min() and d.max() == pytest.approx(1.0)
    for i in (1, 2, 3):  # each cell peaks at 1 near its own centre
        assert d[lab == i].max() == pytest.approx(1.0)
    assert d[40, 40] > 0.9 and d[40, 51] < 0.3  # centre vs the neck between the touching discs

    # seeds from the map: the two touching discs come apart (one seed region alone would not)
    probs = np.stack([(lab == 0).astype(np.float32), (lab > 0) * 0.9, (lab > 0) * 0.1, d]).astype(np.float32)
    _, inst = instances_from_probs(probs, distance_depth=0.2, min_size=10)
    assert inst.max() == 3 and inst[40, 40] != inst[40, 62]
    for i in (1, 2, 3):
        ids, counts = np.unique(inst[lab == i], return_counts=True)
        assert counts.max() >= 0.95 * counts.sum(), (i, dict(zip(ids, counts)))
    _, one_seed_each_region = instances_from_probs(probs[:3], seed_threshold=0.5, min_size=10)
    assert one_seed_each_region.max() == 2

    torch.manual_seed(0)
    base = build_model("small")
    net = with_distance_head(base)
    assert net.config.out_channels == 4 and net.config.regression == 1 and net.config.classes == 3
    x = torch.randn(1, 1, 32, 32)
    base.eval(), net.eval()
    with torch.no_grad():
        assert torch.allclose(net(x)[:, :3], base(x), atol=1e-5)  # the classes keep their weights
    img = (lab > 0).astype(np.float32) + 0.1 * np.random.default_rng(0).standard_normal(lab.shape).astype(np.float32)
    smp = Sample(img, instances=lab)
    conf = TrainConfig(patch=32, batch=2, steps=3, val_every=3, warmup=1, lr=1e-2, loss="distance")
    trainer = Trainer(net, [smp], [], conf, device="cpu")
    history = list(trainer.run())
    assert trainer.step == 3 and all(np.isfinite(p.loss) for p in history)
    net.eval()
    p = predict_batch(net, img[None, None, :32, :32])
    assert p.shape == (1, 4, 32, 32)
    np.testing.assert_allclose(p[0, :3].sum(axis=0), 1.0, atol=1e-5)
    assert 0 <= p[0, 3].min() and p[0, 3].max() <= 1
    with pytest.raises(ValueError, match="distance head"):
        Trainer(build_model("small"), [smp], [], conf)


def test_slow_validation_is_spaced_to_a_share_of_the_run(monkeypatch):
    """Validations asked every few seconds take at most about MAX_VAL_SHARE of a run: a
    slow one is repeated less often (a slow CPU keeps its training steps)."""
    import time

    from napari_unet.core import training

    lab = discs()
    smp = Sample((lab > 0).astype(np.float32), instances=lab)
    cost = 0.15

    def slow_score(model, samples):
        time.sleep(cost)
        return 0.5

    def run(share):
        monkeypatch.setattr(training, "MAX_VAL_SHARE", share)
        conf = TrainConfig(patch=32, batch=2, steps=10**6, val_every=10**9, val_every_s=0.01, warmup=1, time_budget=1.5)
        trainer = Trainer(build_model("small"), [smp], [smp], conf, score_fn=slow_score, device="cpu")
        history = list(trainer.run())
        return sum(1 for p in history[1:] if p.val_score is not None and not np.isnan(p.val_score)), trainer.step

    n_spaced, steps_spaced = run(0.15)
    n_every, steps_every = run(1.0)  # a share of 1: validate as often as asked
    assert n_spaced <= 1.5 * 0.15 / cost + 2  # about one every cost / share seconds (plus the last)
    assert n_every >= 2 * n_spaced and steps_spaced > steps_every


def test_region_probabilities_on_the_cpu_come_from_a_folded_channels_last_copy(monkeypatch):
    """predict_probs runs a copy with folded batch norms in channels_last, on a crop
    aligned to the image's pooling grid: the probabilities of the whole image, from the
    model itself, which is left unchanged."""
    from napari_unet.core import model as model_module
    from napari_unet.core.tiling import predict_image
    from napari_unet.core.training import predict_probs

    torch.manual_seed(0)
    net = build_model("small")
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # statistics away from the identity
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    r = max(net.receptive_radius(), net.shrink())
    y0, x0 = r + 3, r + 5  # the context starts off the pooling grid: the crop must be aligned
    img = np.random.default_rng(1).random((1, 2 * r + 60, 2 * r + 50)).astype(np.float32)
    copies = []
    fold = model_module.fold_batchnorm
    monkeypatch.setattr(model_module, "fold_batchnorm", lambda m: copies.append(fold(m)) or copies[-1])
    fast = predict_probs(net, img, (y0, y0 + 40, x0, x0 + 30), precision="fp32")  # (bf16 would round)
    assert len(copies) == 1 and copies[0].down[1][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not net.down[1][0].weight.is_contiguous(memory_format=torch.channels_last)
    plain = predict_image(net, img[0], tile=1024)[:, y0 : y0 + 40, x0 : x0 + 30]
    np.testing.assert_allclose(fast, plain, atol=1e-4)
    assert _same(before, net.state_dict()) and not any(isinstance(m, torch.nn.Identity) for m in net.modules())
    assert next(net.parameters()).is_contiguous()


def test_channels_last_training_takes_the_same_steps_and_saves_contiguous_weights(tmp_path):
    """``channels_last`` (fine-tuning's setting) trains the network in channels-last memory:
    the same loss curve as contiguous memory within bfloat16/fp32 kernel differences, and
    the saved file's tensors are contiguous (loaded as any other)."""
    from napari_unet.core.models import load_model, save_model

    losses, models = {}, {}
    for cl in (False, True):
        trainer, _ = _trainer([0.1] * 6, channels_last=cl, precision="fp32")
        seen = []
        for p in trainer.run():
            seen.append(p.loss)
        losses[cl], models[cl] = [x for x in seen if x == x], trainer.model
    def a_conv(model):  # a 3x3 convolution over several channels (one channel is both layouts)
        return next(p for p in model.parameters() if p.ndim == 4 and p.shape[1] > 1 and p.shape[-1] > 1)

    assert a_conv(models[True]).is_contiguous(memory_format=torch.channels_last)
    assert not a_conv(models[False]).is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-3)
    path = save_model(tmp_path / "m.pt", models[True])
    state = torch.load(path, weights_only=True)["state_dict"]
    assert all(v.is_contiguous() for v in state.values())
    assert all(torch.equal(load_model(str(path)).model.state_dict()[k], v.float()) for k, v in models[True].state_dict().items() if v.is_floating_point())
