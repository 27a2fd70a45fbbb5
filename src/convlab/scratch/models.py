"""The presets' model classes for the scratch engine, with the torch presets' module names.

The layer stacks are the same objects as in torch.nn (Sequential of Conv2d, ReLU, MaxPool2d, ...);
only the two classes with their own forward pass need a scratch twin: ConvNet and ResNet8.
"""
from __future__ import annotations

import math

from . import nn
from .nn import _rng_normal


class ConvNet(nn.Module):
    """features (conv/pool stack) -> classifier (flatten + fully connected layers)."""

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential):
        super().__init__()
        self.features = features
        self.classifier = classifier

    def forward(self, x):
        return self.classifier(self.features(x))

    def backward(self, dout):
        return self.features.backward(self.classifier.backward(dout))


class ResNet8(nn.Module):
    """3x3 stem (conv1, bn1, relu) -> layer1..3 (`blocks` BasicBlocks each) -> avgpool -> flatten -> dropout -> fc."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0, widths=(16, 32, 64), dtype=None,
                 blocks: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False, dtype=dtype)
        self.bn1 = nn.BatchNorm2d(widths[0], dtype=dtype)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(widths[0], widths[0], 1, blocks, dtype)
        self.layer2 = self._stage(widths[0], widths[1], 2, blocks, dtype)
        self.layer3 = self._stage(widths[1], widths[2], 2, blocks, dtype)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(widths[2], num_classes, dtype=dtype)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):  # kaiming_normal_(mode="fan_out", nonlinearity="relu")
                out_channels, _, kh, kw = module.weight.shape
                std = math.sqrt(2.0 / (out_channels * kh * kw))
                module.weight.data = (_rng_normal(module.weight.shape) * std).astype(module.weight.data.dtype)

    @staticmethod
    def _stage(inplanes: int, planes: int, stride: int, blocks: int, dtype) -> nn.Sequential:
        return nn.Sequential(nn.BasicBlock(inplanes, planes, stride, dtype=dtype),
                             *[nn.BasicBlock(planes, planes, 1, dtype=dtype) for _ in range(blocks - 1)])

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.flatten(self.avgpool(x))  # (N, 64, 1, 1) -> (N, 64)
        return self.fc(self.dropout(x))

    def backward(self, dout):
        d = self.avgpool.backward(self.flatten.backward(self.dropout.backward(self.fc.backward(dout))))
        d = self.layer1.backward(self.layer2.backward(self.layer3.backward(d)))
        return self.conv1.backward(self.bn1.backward(self.relu.backward(d)))
