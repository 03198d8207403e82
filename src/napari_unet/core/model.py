"""A configurable 2D U-Net (Ronneberger et al., MICCAI 2015).

The network maps ``(B, C_in, H, W)`` images to ``(B, C_out, H', W')`` class logits.
With ``padding="same"`` (the default) ``H' == H`` and ``H, W`` must be multiples of
``2**depth``; with ``padding="valid"`` (the paper's unpadded convolutions) the output is
smaller than the input by :meth:`UNet.shrink` pixels on every side.

The default output classes are ``0 = background``, ``1 = cell interior`` and
``2 = cell boundary`` (the "3-class U-Net" that separates touching cells).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["UNetConfig", "UNet", "PRESETS", "build_model", "fold_batchnorm", "with_distance_head", "with_input_channels"]


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 1
    out_channels: int = 3
    depth: int = 3  # number of 2x2 max-poolings
    base_channels: int = 16
    padding: str = "same"  # "same" or "valid"
    norm: str = "batch"  # "batch" or "none"
    regression: int = 0  # the last outputs that are regressed values in [0, 1] (sigmoid), not classes

    def __post_init__(self):
        if self.padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {self.padding!r}")
        if self.norm not in ("batch", "none"):
            raise ValueError(f"norm must be 'batch' or 'none', got {self.norm!r}")
        if not 1 <= self.depth <= 6:
            raise ValueError(f"depth must be between 1 and 6, got {self.depth}")
        if self.base_channels < 1 or self.in_channels < 1 or self.out_channels < 1:
            raise ValueError("channel counts must be positive")
        if self.base_channels > 128 or self.in_channels > 16 or self.out_channels > 16:
            raise ValueError("channel counts are implausibly large (base <= 128, in/out <= 16)")
        if not 0 <= self.regression < self.out_channels:
            raise ValueError(f"regression outputs must be fewer than the outputs, got {self.regression} of {self.out_channels}")

    @property
    def classes(self) -> int:
        """The number of class outputs (softmax), before the regression outputs."""
        return self.out_channels - self.regression

    def to_dict(self) -> dict:
        return asdict(self)


#: Named architectures. ``ronneberger2015`` is the paper's network (4 poolings, 64 base
#: channels, unpadded convolutions, no normalisation): 31 M parameters, too slow to be the
#: default on a laptop CPU but available for users with time or a GPU.
PRESETS: dict[str, UNetConfig] = {
    "default": UNetConfig(depth=3, base_channels=16),
    "small": UNetConfig(depth=3, base_channels=8),
    "medium": UNetConfig(depth=4, base_channels=16),
    "large": UNetConfig(depth=4, base_channels=32),
    "ronneberger2015": UNetConfig(depth=4, base_channels=64, padding="valid", norm="none"),
}


def _block(cin: int, cout: int, padding: int, norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c_in in (cin, cout):
        layers.append(nn.Conv2d(c_in, cout, 3, padding=padding, bias=not norm))
        if norm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _center_crop(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    dy = (x.shape[-2] - h) // 2
    dx = (x.shape[-1] - w) // 2
    return x[..., dy : dy + h, dx : dx + w]


class UNet(nn.Module):
    """U-Net with ``depth`` poolings and ``base_channels`` features at full resolution."""

    def __init__(self, config: UNetConfig | None = None, **kwargs):
        super().__init__()
        self.config = config if config is not None else UNetConfig(**kwargs)
        c = self.config
        pad = 1 if c.padding == "same" else 0
        norm = c.norm == "batch"
        chans = [c.base_channels * 2**i for i in range(c.depth + 1)]
        self.down = nn.ModuleList()
        cin = c.in_channels
        for ch in chans[:-1]:
            self.down.append(_block(cin, ch, pad, norm))
            cin = ch
        self.pool = nn.MaxPool2d(2)
        self.bottom = _block(chans[-2], chans[-1], pad, norm)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in reversed(range(c.depth)):
            self.up.append(nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2))
            self.dec.append(_block(2 * chans[i], chans[i], pad, norm))
        self.head = nn.Conv2d(chans[0], c.out_channels, 1)

    # ---- geometry -------------------------------------------------------------------
    @property
    def multiple(self) -> int:
        """Input sizes of a ``same`` network must be multiples of this."""
        return 2**self.config.depth

    def output_size(self, n: int) -> int | None:
        """Output size for an input of size ``n`` along one axis, ``None`` if invalid."""
        if self.config.padding == "same":
            return n if n > 0 and n % self.multiple == 0 else None
        for _ in range(self.config.depth):
            n -= 4
            if n <= 0 or n % 2:
                return None
            n //= 2
        n -= 4
        if n <= 0:
            return None
        for _ in range(self.config.depth):
            n = n * 2 - 4
        return n if n > 0 else None

    def shrink(self) -> int:
        """Pixels lost on each side by unpadded convolutions (0 for ``same``)."""
        if self.config.padding == "same":
            return 0
        d = self.config.depth
        return 2 * (2**d - 1) + 2 * 2**d + 2 * (2**d - 1)

    def receptive_radius(self) -> int:
        """Upper bound on how far (in pixels) the receptive field reaches on each side.

        Every 3x3 convolution at level ``l`` adds ``2**l``; each pooling and each 2x2
        up-convolution adds ``2**l`` on one side. ``tests/test_model.py`` checks this
        bound against the true receptive field measured with gradients.
        """
        d = self.config.depth
        return 6 * (2**d - 1) + 2 * 2**d

    def aligned_radius(self) -> int:
        """How far an output can look when the input starts on the pooling grid, as every
        tile does (:mod:`.tiling`): ``6 * 2**depth - 2`` px for a padded network (94 px
        instead of :meth:`receptive_radius`'s 122 for 4 poolings, 46 instead of 58 for 3).
        A pixel at offset ``k`` within its pooling window reaches ``k`` px further back but
        is also ``k`` px further from its tile's edge, so the bound per side is the reach at
        offset 0. ``tests/test_model.py`` measures it with gradients at every offset."""
        if self.config.padding != "same":
            return self.receptive_radius()
        return min(self.receptive_radius(), 6 * 2**self.config.depth - 2)

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(f"expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
        if x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected {self.config.in_channels} input channel(s), got {x.shape[1]}"
            )
        for n in x.shape[-2:]:
            if self.output_size(int(n)) is None:
                hint = (
                    f"a multiple of {self.multiple}"
                    if self.config.padding == "same"
                    else "a valid size for unpadded convolutions (see UNet.output_size)"
                )
                raise ValueError(f"input size {tuple(x.shape[-2:])} is invalid: need {hint}")

    # ---- forward --------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The bottleneck's output: the encoder half of :meth:`forward`, without the decoder
        (what :func:`.size.style_vectors` reads; about half the cost of a whole pass)."""
        self.check_input(x)
        for block in self.down:
            x = self.pool(block(x))
        return self.bottom(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, dec in zip(self.up, self.dec):
            x = up(x)
            skip = skips.pop()  # freed once used: at full resolution only its own skip is alive
            if skip.shape[-2:] != x.shape[-2:]:
                skip = _center_crop(skip, x.shape[-2], x.shape[-1])
            if torch.is_grad_enabled():
                x = dec(torch.cat([skip, x], dim=1))
                continue
            # inference: the same function without the concatenated copy. The first
            # convolution is split into its halves over the skip and the up-sampled maps,
            # each freed once used: at full resolution the peak holds three maps of the
            # base channels instead of four plus the concatenation (a 1120 px tile's forward
            # pass: about 384 -> 322 MB at its peak; tests/test_model.py checks the equality)
            conv, c = dec[0], skip.shape[1]
            y = F.conv2d(skip, conv.weight[:, :c], conv.bias, conv.stride, conv.padding)
            del skip
            y += F.conv2d(x, conv.weight[:, c:], None, conv.stride, conv.padding)
            del x
            x = dec[1:](y)
            del y
        return self.head(x)


def fold_batchnorm(model: UNet) -> UNet:
    """A copy of ``model`` for inference with every batch norm folded into the convolution
    before it (``torch.nn.utils.fuse_conv_bn_eval``): the same function, one layer less per
    convolution. ``model`` itself is not changed."""
    import copy

    from torch.nn.utils import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    for seq in folded.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                seq[i] = fuse_conv_bn_eval(conv, bn)
                seq[i + 1] = nn.Identity()
    return folded


def build_model(config: UNetConfig | dict | str | None = None) -> UNet:
    """A U-Net from a config, a dict of config fields or a preset name."""
    if config is None:
        config = PRESETS["default"]
    elif isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"unknown preset {config!r}; choose one of {sorted(PRESETS)}")
        config = PRESETS[config]
    elif isinstance(config, dict):
        config = UNetConfig(**config)
    return UNet(config)


def with_distance_head(model: UNet) -> UNet:
    """A copy of ``model`` with one more output, a distance head (a regressed value in
    [0, 1], :func:`.losses.distance_targets`), after its classes; the class outputs keep
    their weights and the new output starts at zero."""
    import dataclasses

    c = model.config
    out = UNet(dataclasses.replace(c, out_channels=c.out_channels + 1, regression=c.regression + 1))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    out.load_state_dict(state, strict=False)
    with torch.no_grad():
        out.head.weight.zero_()
        out.head.bias.zero_()
        out.head.weight[: c.out_channels] = model.head.weight
        out.head.bias[: c.out_channels] = model.head.bias
    return out


def with_input_channels(model: UNet, n: int, reads: int = 0) -> UNet:
    """A copy of a one-channel ``model`` that reads ``n`` channels: input channel ``reads``
    gets the original first convolution's weights and the others start at zero, so the
    copy computes exactly what ``model`` computes on that channel, then learns to use the
    others by training (e.g. a cytoplasm + nuclei model from a one-channel base)."""
    import dataclasses

    c = model.config
    if c.in_channels != 1:
        raise ValueError(f"only a one-channel model can be widened, this one reads {c.in_channels}")
    if not 0 <= reads < n:
        raise ValueError(f"reads must be one of the {n} channels, got {reads}")
    out = UNet(dataclasses.replace(c, in_channels=n))
    first = "down.0.0.weight"
    state = {k: v for k, v in model.state_dict().items() if k != first}
    out.load_state_dict(state, strict=False)
    with torch.no_grad():
        w = out.down[0][0].weight
        w.zero_()
        w[:, reads : reads + 1] = model.state_dict()[first]
    return out
