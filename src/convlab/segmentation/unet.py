"""U-Net (Ronneberger et al. 2015): an encoder's feature maps at growing strides, and a decoder that grows the
deepest back to the input's size, joining each shallower map on the way (the skip connections).

The encoder is a plain conv stack (`plain_encoder`: the paper's, and the small `tiny-unet`) or a classifier's
feature layers (detection/backbones.py: torchvision:NAME with an ImageNet weights file, or a convlab run), tapped
at the last layer of each stride (2, 4, 8, 16, 32 for a torchvision classifier) by torchvision's
IntermediateLayerGetter, the way torchvision's own segmentation models tap theirs. The encoder sits under
`backbone.`, so freezing and fine-tuning find it as they find a classifier's feature layers.

The decoder resizes each map to its skip's size (bilinear) rather than doubling it, so any input size works, not
only multiples of 32; the class logits are resized to the input's size at the end, as torchvision's models do.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..detection.backbones import classifier_features
from ..errors import ConvlabError
from ..models.torchvision_models import adapt_first_conv

PROBE = 128  # side of the dummy image that measures the stride of each encoder layer


class ConvBlock(nn.Sequential):
    """Two 3x3 conv-BatchNorm-ReLU layers: (N, c_in, H, W) -> (N, c_out, H, W), U-Net's unit."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True), nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def plain_encoder(channels: int, widths: list[int]) -> nn.Sequential:
    """The paper's encoder: a ConvBlock per level, each level after the first max-pooled by 2 first, so level i
    is at stride 2**i with widths[i] channels."""
    levels = OrderedDict()
    c_in = channels
    for i, width in enumerate(widths):
        block = ConvBlock(c_in, width)
        levels[f"level{i}"] = block if i == 0 else nn.Sequential(nn.MaxPool2d(2), block)
        c_in = width
    return nn.Sequential(levels)


def find_taps(body: nn.Sequential, channels: int) -> list[tuple[str, int, int]]:
    """The layers whose outputs the decoder joins -> [(name, stride, output channels)], shallow first: the last
    layer of each stride, measured on a PROBE x PROBE dummy image."""
    x = torch.zeros(1, channels, PROBE, PROBE)
    last: dict[int, tuple[str, int, int]] = {}
    was_training = body.training
    body.eval()
    with torch.no_grad():
        for name, layer in body.named_children():
            x = layer(x)
            if x.dim() != 4:
                break
            stride = 2 ** round(math.log2(PROBE / x.shape[-1]))
            if any(s > stride for s in last):  # a layer that grows the map back: not an encoder's
                break
            last[stride] = (name, stride, int(x.shape[1]))
    body.train(was_training)
    if not last:
        raise ConvlabError(f"--backbone: {type(body).__name__} gives no feature maps for a U-Net to join")
    return [last[s] for s in sorted(last)]


class Decoder(nn.Module):
    """From the deepest map up: resize to the next skip's size, concatenate the skip, ConvBlock.

    skips: the encoder's channels at each tap, shallow first; widths: the channels of the block that joins
    each tap but the deepest (len(skips) - 1 of them). forward: the tapped maps, shallow first -> (N, widths[0],
    H0, W0) at the shallowest tap's size."""

    def __init__(self, skips: list[int], widths: list[int]):
        super().__init__()
        blocks = []
        c_in = skips[-1]
        for skip, width in zip(reversed(skips[:-1]), reversed(widths)):
            blocks.append(ConvBlock(c_in + skip, width))
            c_in = width
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = c_in

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for block, skip in zip(self.blocks, reversed(features[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return x


class UNet(nn.Module):
    """An encoder's layers (`body`, run in order), the decoder and a 1x1 conv to the classes.

    forward: (N, channels, H, W) -> logits (N, classes, H, W), for any H, W the encoder can take."""

    def __init__(self, body: nn.Sequential, channels: int, classes: int, widths: list[int] | None = None):
        super().__init__()
        from torchvision.models._utils import IntermediateLayerGetter  # lazy: start-up time

        taps = find_taps(body, channels)
        self.strides = [stride for _, stride, _ in taps]
        self.backbone = IntermediateLayerGetter(body, {name: str(i) for i, (name, _, _) in enumerate(taps)})
        skips = [c for _, _, c in taps]
        self.decoder = Decoder(skips, widths[:len(skips) - 1] if widths else [decoder_width(s) for s in self.strides])
        self.head = nn.Conv2d(self.decoder.out_channels, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.decoder(list(self.backbone(x).values())))
        if logits.shape[-2:] != x.shape[-2:]:  # the shallowest tap of a classifier is at stride 2
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits


def decoder_width(stride: int) -> int:
    """The decoder's channels where it joins a classifier's map at `stride`: 16 at stride 2 doubling to 128 at
    stride 16, half segmentation-models-pytorch's U-Net's at each stride (a quarter of its decoder's
    multiply-adds: the CPU is the budget here)."""
    return min(128, max(16, 8 * stride))


def backbone_unet(source: str, weights: str | None, classes: int, channels: int) -> tuple[UNet, str, tuple]:
    """A U-Net on the classifier `source` names (detection/backbones.py: torchvision:NAME, with `weights` its
    classifier's weights file, or a convlab classification run folder) -> (the U-Net, the spec that rebuilds
    its architecture, (mean, std) its encoder's weights expect for `channels` channels).

    A network trained on other channels than the data's gets its first conv rebuilt (the mean of its filters:
    models/torchvision_models.adapt_first_conv), so RGB ImageNet features read a grayscale scan."""
    features = classifier_features(source, weights)
    if features.channels != channels:
        adapt_first_conv(features.body, channels)
    return UNet(features.body, channels, classes), features.spec, channel_norm(features.mean, features.std, channels)


def channel_norm(mean: list[float], std: list[float], channels: int) -> tuple[list[float], list[float]]:
    """A normalization for `channels` channels from one for another count: the same, or the channels' average."""
    if len(mean) == channels:
        return list(mean), list(std)
    return [sum(mean) / len(mean)] * channels, [sum(std) / len(std)] * channels
