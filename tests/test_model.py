import pytest
import torch

from napari_unet.core.model import PRESETS, UNet, UNetConfig, build_model


@pytest.mark.parametrize("depth,base", [(1, 4), (2, 4), (3, 8)])
def test_shapes_and_backward(depth, base):
    net = UNet(UNetConfig(depth=depth, base_channels=base))
    x = torch.randn(2, 1, 64, 32, requires_grad=True)
    y = net(x)
    assert y.shape == (2, 3, 64, 32)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in net.parameters())


def test_invalid_input_gives_clear_error():
    net = UNet(UNetConfig(depth=3, base_channels=4))
    with pytest.raises(ValueError, match="multiple of 8"):
        net(torch.zeros(1, 1, 60, 64))
    with pytest.raises(ValueError, match="input channel"):
        net(torch.zeros(1, 2, 64, 64))
    with pytest.raises(ValueError, match="B, C, H, W"):
        net(torch.zeros(1, 64, 64))
    with pytest.raises(ValueError):
        UNetConfig(padding="circular")


def test_paper_preset_geometry():
    cfg = PRESETS["ronneberger2015"]
    net = UNet(cfg)
    # Ronneberger et al. 2015, Fig. 1: a 572x572 tile gives a 388x388 output map
    assert net.output_size(572) == 388
    assert net.shrink() == 92
    assert net.output_size(570) is None
    small = UNet(UNetConfig(depth=2, base_channels=4, padding="valid", norm="none"))
    n = next(n for n in range(40, 100) if small.output_size(n))
    out = small(torch.zeros(1, 1, n, n))
    assert out.shape[-1] == small.output_size(n) == n - 2 * small.shrink()


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_receptive_radius_bounds_true_receptive_field(depth):
    """The analytic radius used for exact tiling covers every input pixel that matters."""
    torch.manual_seed(0)
    net = UNet(UNetConfig(depth=depth, base_channels=4)).eval()
    n = 2 * 8 * 2**depth
    x = torch.randn(1, 1, n, n, requires_grad=True)
    c = n // 2
    net(x)[0, 1, c, c].backward()
    ys, xs = torch.nonzero(x.grad[0, 0].abs() > 0, as_tuple=True)
    reach = max((ys - c).abs().max().item(), (xs - c).abs().max().item())
    assert reach <= net.receptive_radius()
    assert reach >= net.receptive_radius() - 2 * 2**depth  # and the bound is not loose


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_aligned_radius_bounds_the_reach_of_every_offset_on_the_pooling_grid(depth):
    """Tiles start on the pooling grid; a pixel at offset k in its pooling window is k px
    further from its tile's top edge and (2**depth - 1 - k) px from its bottom one. With
    positive weights (no cancellation) the gradient's support is the true reach: it never
    passes the aligned radius, which is tight from 2 poolings on and below the
    unaligned receptive radius."""
    torch.manual_seed(0)
    net = UNet(UNetConfig(depth=depth, base_channels=2, norm="none")).eval()
    for p in net.parameters():
        torch.nn.init.uniform_(p, 0.1, 0.3)
    m = net.multiple
    n = 2 * (-(-net.receptive_radius() // m) * m) + 4 * m
    base = n // 2 // m * m
    x = torch.ones(1, 1, n, n, requires_grad=True)
    y = net(x)
    worst = 0
    for k in range(m):
        x.grad = None
        y[0, 0, base + k, base + k].backward(retain_graph=True)
        ys, xs = torch.nonzero(x.grad[0, 0] != 0, as_tuple=True)
        for pos in (ys, xs):
            worst = max(worst, base + k - pos.min().item() - k, pos.max().item() - base - k - (m - 1 - k))
    assert worst <= net.aligned_radius() <= net.receptive_radius()
    if depth >= 2:
        assert worst == net.aligned_radius() < net.receptive_radius()


def test_build_model_presets():
    assert build_model().config == PRESETS["default"]
    assert build_model({"depth": 2, "base_channels": 4}).config.depth == 2
    with pytest.raises(ValueError, match="unknown preset"):
        build_model("nope")


def test_folded_batchnorm_gives_the_same_output():
    import torch

    from napari_unet.core.model import build_model, fold_batchnorm

    torch.manual_seed(0)
    net = build_model("default")
    net.train()
    with torch.no_grad():  # non-trivial running statistics
        for _ in range(3):
            net(torch.randn(2, 1, 64, 64) * 3 + 1)
    net.eval()
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the original is untouched
    x = torch.randn(1, 1, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("preset", ["default", "medium", "ronneberger2015"])
def test_encode_is_the_bottleneck_of_a_whole_forward_pass(preset):
    torch.manual_seed(0)
    net = build_model(preset).eval()
    seen = []
    hook = net.bottom.register_forward_hook(lambda _m, _i, out: seen.append(out))
    side = 188 if preset == "ronneberger2015" else 64  # a valid size for unpadded convolutions
    x = torch.randn(1, 1, side, side)
    with torch.no_grad():
        net(x)
        hook.remove()
        enc = net.encode(x)
    assert enc.shape == seen[0].shape
    torch.testing.assert_close(enc, seen[0])
    with pytest.raises(ValueError, match="input channel"):
        net.encode(torch.randn(1, 2, side, side))


@pytest.mark.parametrize("preset", ["default", "ronneberger2015"])
def test_inference_forward_without_the_concatenation_equals_training_forward(preset):
    """Without gradients the decoder skips the concatenated copy (its first convolution
    split in two); with them it concatenates. Same numbers, batch norm folded or not, for
    padded and unpadded (cropped skip) networks."""
    import torch

    from napari_unet.core.model import build_model, fold_batchnorm

    torch.manual_seed(0)
    net = build_model(preset if preset == "default" else {"depth": 2, "base_channels": 4, "padding": "valid", "norm": "none"})
    n = 96 if preset == "default" else 92  # valid sizes of each
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net(torch.randn(2, 1, n, n) * 3 + 1)
    net.eval()
    x = torch.randn(2, 1, n, n)
    with torch.enable_grad():
        reference = net(x).detach()
    for model in (net, fold_batchnorm(net)):
        with torch.inference_mode():
            torch.testing.assert_close(model(x), reference, rtol=1e-4, atol=1e-4)
    # the two paths really differ: a decoder that drops the up-sampled half fails this
    dec = net.dec[-1][0]
    with torch.no_grad():
        dec.weight[:, dec.weight.shape[1] // 2 :] *= 2
        changed = net(x)
    assert (changed - reference).abs().max() > 1e-3


def test_a_tiny_file_cannot_declare_a_huge_network(tmp_path):
    import pytest
    import torch

    from napari_unet.core.models import FORMAT, load_model

    path = tmp_path / "bomb.pt"
    torch.save({"format": FORMAT, "config": {"depth": 6, "base_channels": 64}, "meta": {}, "state_dict": {}}, path)
    assert path.stat().st_size < 4096
    # the check runs on the meta device before the network is built (2.2 GB if it were)
    with pytest.raises(ValueError, match="do not match its declared architecture"):
        load_model(path)
    torch.save({"format": FORMAT, "config": {"depth": 3, "base_channels": 400}, "meta": {}, "state_dict": {}}, path)
    with pytest.raises(ValueError, match="implausibly large"):
        load_model(path)
