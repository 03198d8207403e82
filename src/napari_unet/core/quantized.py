"""The network in 8-bit integers for CPU inference (``precision="int8"``).

On a CPU, a U-Net's convolutions run about twice as fast in int8 as in bfloat16
(PyTorch's ``x86`` quantized engine; ``benchmarks/int8.py``). Every tensor the int8
network stores needs a range, measured once on training images (:func:`calibrate`) and
kept in the model file's metadata (``meta["int8"]``, written by
``scripts/calibrate_int8.py``): a file without it runs in bfloat16 or float32 as before.

The network is :class:`~.model.UNet` computed in the same order (:func:`walk`), with two
rewrites that int8 kernels need: each 2x2 up-convolution is a 1x1 convolution to four
times the channels followed by a pixel shuffle (PyTorch's quantized transposed
convolution gives wrong answers on this build), and the decoder's first convolution over
the concatenated maps is two convolutions, over the skip and the up-sampled maps, added
(a quantized concatenation requantises both inputs). ``tests/test_quantized.py`` checks
that the rewrite computes the network's function in float (on any CPU) and that int8
stays close to the float network.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .model import UNet

# PyTorch announces (2.13) that quantized tensors will move out of its core: nothing a user
# of this plugin can act on, and :func:`available` answers False once they are gone
warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel")

#: activations use all 8 bits (0..255): :func:`available` asks for VNNI, whose int8 dot
#: products do not saturate (without it, PyTorch's ``x86`` default keeps 7 bits, which cost
#: dsb2018/val about 0.004 F1 and 0.01 mean AP here)
QMAX = 255


def available() -> bool:
    """Whether int8 runs well here: PyTorch's ``x86`` quantized engine on a CPU with
    AVX-512 VNNI (Intel since Cascade Lake and Ice Lake, AMD since Zen 4)."""
    try:
        if "x86" not in torch.backends.quantized.supported_engines or not torch.cpu._is_vnni_supported():
            return False
        import importlib

        for module in ("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized"):  # what Int8UNet is built of
            importlib.import_module(module)
        return hasattr(torch, "quantize_per_channel")
    except Exception:  # noqa: BLE001 - builds without quantization, older or later torch
        return False


def supported(net: UNet) -> bool:
    """Whether ``net`` (batch norms folded) can run in int8: padded convolutions, 2D."""
    c = net.config
    return c.padding == "same" and not getattr(c, "regression", 0)


def _convs(block: nn.Sequential) -> list[nn.Conv2d]:
    return [m for m in block if isinstance(m, nn.Conv2d)]


def walk(net: UNet, x: torch.Tensor, record=None) -> torch.Tensor:
    """``net(x)`` (batch norms folded) computed in the int8 network's order and pieces;
    ``record(name, tensor)`` sees every tensor that network stores (for :func:`calibrate`)."""
    rec = record or (lambda name, t: t)
    x = rec("input", x)
    skips = []
    for i, block in enumerate(net.down):
        c1, c2 = _convs(block)
        x = rec(f"down{i}.0", F.relu(c1(x)))
        x = rec(f"down{i}.1", F.relu(c2(x)))
        skips.append(x)
        x = F.max_pool2d(x, 2)
    c1, c2 = _convs(net.bottom)
    x = rec("bottom.0", F.relu(c1(x)))
    x = rec("bottom.1", F.relu(c2(x)))
    for i, (up, dec) in enumerate(zip(net.up, net.dec)):
        y = rec(f"up{i}", up(x))
        skip = skips.pop()
        c1, c2 = _convs(dec)
        c = skip.shape[1]
        a = rec(f"dec{i}.skip", F.conv2d(skip, c1.weight[:, :c], c1.bias, padding=1))
        b = rec(f"dec{i}.up", F.conv2d(y, c1.weight[:, c:], None, padding=1))
        x = rec(f"dec{i}.0", F.relu(a + b))
        x = rec(f"dec{i}.1", F.relu(c2(x)))
    return rec("head", net.head(x))


def recorder(ranges: dict[str, list[float]]):
    """A ``record`` for :func:`walk` that widens ``ranges[name]`` (``[lo, hi]``) to each
    tensor's extremes."""

    def record(name, t):
        lo, hi = float(t.min()), float(t.max())
        old = ranges.get(name)
        ranges[name] = [min(lo, old[0]), max(hi, old[1])] if old else [lo, hi]
        return t

    return record


def calibrate(net: UNet, batches) -> dict[str, list[float]]:
    """The range ``[lo, hi]`` of every stored tensor over ``batches`` (normalised
    ``(N, C, H, W)`` arrays or tensors) for the float network ``net``: its extremes. (Ranges
    cut at the 0.01 % quantiles of each tile's values lost dsb2018/val 0.04 F1: some of its
    images reach beyond what the training images did.)"""
    ranges: dict[str, list[float]] = {}
    record = recorder(ranges)
    net = net.float().eval()
    with torch.inference_mode():
        for b in batches:
            walk(net, torch.as_tensor(b, dtype=torch.float32), record)
    return ranges


def _qparams(lo: float, hi: float) -> tuple[float, int]:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-8) / QMAX
    return scale, int(min(max(round(-lo / scale), 0), QMAX))


def _qweight(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8 weights (PyTorch's default for convolutions)."""
    w = w.detach().float().contiguous()
    scale = (w.abs().amax(dim=(1, 2, 3)) / 127.5).clamp_min(1e-12).double()
    return torch.quantize_per_channel(w, scale, torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8)


class Int8UNet(nn.Module):
    """A folded :class:`~.model.UNet` as int8 convolutions, for CPU inference.

    Takes and returns float tensors like the network (logits); ``net`` stays attached
    for its geometry (``config``, ``multiple``, margins), which tiling reads."""

    def __init__(self, net: UNet, ranges: dict[str, list[float]]):
        super().__init__()
        import torch.ao.nn.intrinsic.quantized as nniq
        import torch.ao.nn.quantized as nnq

        names = _names(net)
        missing = [k for k in names if k not in ranges]
        if missing:
            raise ValueError(f"the int8 calibration lacks {len(missing)} of the network's tensors (e.g. {missing[0]!r})")
        ranges = {k: _checked_range(k, ranges[k]) for k in names}
        self.net = net

        def conv(weight, bias, name, relu=False):
            k = weight.shape[-1]
            m = (nniq.ConvReLU2d if relu else nnq.Conv2d)(weight.shape[1], weight.shape[0], k, padding=k // 2)
            m.set_weight_bias(_qweight(weight), None if bias is None else bias.detach().float())
            m.scale, m.zero_point = _qparams(*ranges[name])
            return m

        def block(b, prefix):
            c1, c2 = _convs(b)
            return nn.ModuleList([conv(c1.weight, c1.bias, f"{prefix}.0", True), conv(c2.weight, c2.bias, f"{prefix}.1", True)])

        self.input_q = _qparams(*ranges["input"])
        self.down = nn.ModuleList([block(b, f"down{i}") for i, b in enumerate(net.down)])
        self.bottom = block(net.bottom, "bottom")
        self.up, self.skip, self.fromup, self.add, self.dec = (nn.ModuleList() for _ in range(5))
        for i, (up, dec) in enumerate(zip(net.up, net.dec)):
            self.up.append(conv(*up_as_conv(up), f"up{i}"))
            c1 = _convs(dec)[0]
            c = c1.weight.shape[1] // 2
            self.skip.append(conv(c1.weight[:, :c], c1.bias, f"dec{i}.skip"))
            self.fromup.append(conv(c1.weight[:, c:], None, f"dec{i}.up"))
            add = nnq.QFunctional()
            add.scale, add.zero_point = _qparams(*ranges[f"dec{i}.0"])
            self.add.append(add)
            c2 = _convs(dec)[1]
            self.dec.append(conv(c2.weight, c2.bias, f"dec{i}.1", True))
        self.head = conv(net.head.weight, net.head.bias, "head")

    # geometry, as the float network's
    @property
    def config(self):
        return self.net.config

    @property
    def multiple(self) -> int:
        return self.net.multiple

    def shrink(self) -> int:
        return self.net.shrink()

    def aligned_radius(self) -> int:
        return self.net.aligned_radius()

    def _encoder(self, x: torch.Tensor, skips: list) -> torch.Tensor:
        self.net.check_input(x)
        x = torch.quantize_per_tensor(x.float().contiguous(), *self.input_q, torch.quint8)
        for c1, c2 in self.down:
            x = c2(c1(x))
            skips.append(x)
            x = F.max_pool2d(x, 2)
        return self.bottom[1](self.bottom[0](x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The bottleneck's output in float, as :meth:`.model.UNet.encode` (what a gate reads)."""
        return self._encoder(x, []).dequantize()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list = []
        x = self._encoder(x, skips)
        for up, skip, fromup, add, dec in zip(self.up, self.skip, self.fromup, self.add, self.dec):
            x = dec(add.add_relu(skip(skips.pop()), fromup(_shuffle(up(x)))))
        return self.head(x).dequantize()


def up_as_conv(up: nn.ConvTranspose2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of the 1x1 convolution whose output, through :func:`_shuffle`, is
    ``up(x)`` for a 2x2, stride-2 transposed convolution: ``out[o, 2y+a, 2x+b] = sum_i
    w[i, o, a, b] x[i, y, x] + bias[o]``, so output channel ``(2a + b) * C + o`` holds
    ``w[:, o, a, b]`` (``C`` output channels)."""
    cin, cout = up.weight.shape[:2]
    w = up.weight.detach().permute(2, 3, 1, 0).reshape(4 * cout, cin, 1, 1)
    return w, up.bias.detach().repeat(4)


def _checked_range(name: str, r) -> tuple[float, float]:
    """A stored ``[lo, hi]`` as two finite floats (a model file is data, not trusted)."""
    try:
        lo, hi = (float(v) for v in r)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"the int8 range of {name!r} is not two numbers") from None
    if not (abs(lo) < 1e6 and abs(hi) < 1e6 and lo <= hi):
        raise ValueError(f"the int8 range of {name!r} ({lo:g} .. {hi:g}) is not a finite interval")
    return lo, hi


def _shuffle(y: torch.Tensor) -> torch.Tensor:
    """``(N, 4C, H, W)`` -> ``(N, C, 2H, 2W)``, channel ``(2a + b) * C + c`` to pixel
    ``(2y + a, 2x + b)``, in the channels-last memory the quantized convolutions read and
    write: one copy, of runs of ``2C`` contiguous bytes (pixel ``(2y + a, 2x)`` and its
    right neighbour). The order ``4c + 2a + b`` moved single bytes: 8x slower, 15 of a
    bbbc039 image's 250 ms."""
    n, c4, h, w = y.shape
    nhwc = y.permute(0, 2, 3, 1).reshape(n, h, w, 2, c4 // 2).permute(0, 1, 3, 2, 4)
    return nhwc.reshape(n, 2 * h, 2 * w, c4 // 4).permute(0, 3, 1, 2)


def _names(net: UNet) -> list[str]:
    names: list[str] = []
    walk_names = lambda name, t: names.append(name) or t  # noqa: E731
    with torch.inference_mode():
        walk(net, torch.zeros((1, net.config.in_channels, net.multiple, net.multiple)), walk_names)
    return names
