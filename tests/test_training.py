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
