"""The tutorials' CNNs (tiny-cnn, mnist-cnn, lenet, small-cnn, resnet8, resnet20), sized from the data.

The classic stacks are written as layer specs and built by tracking the feature-map size, so they fit
any input: a 'valid' convolution whose input is smaller than its kernel pads to keep the size, and a
pooling whose input is smaller than its window is left out. On 28x28 and 32x32 inputs nothing is
adapted and the networks are exactly the texts' (mnist-cnn has 34,826 parameters on MNIST).

One reordering: where the texts write Conv -> ReLU -> MaxPool, the module runs Conv -> MaxPool -> ReLU.
Max pooling commutes with any non-decreasing function (max(relu(x)) = relu(max(x))), so outputs and
gradients are the same, but the ReLU and its backward touch a quarter of the values: a small-cnn
training step on a 2-core CPU ran 1.2-1.6x faster (the profile in docs/speed.md).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .registry import register_model


@dataclass(frozen=True)
class Conv:
    out_channels: int
    kernel: int
    padding: int = 0


@dataclass(frozen=True)
class Pool:
    size: int = 2


class ConvNet(nn.Module):
    """features (conv/pool stack) -> classifier (flatten + fully connected layers)."""

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential):
        super().__init__()
        self.features = features
        self.classifier = classifier

    def forward(self, x):
        return self.classifier(self.features(x))


def build_convnet(specs: list, hidden: list[int], in_channels: int, num_classes: int,
                  image_size: tuple[int, int], dropout: float) -> ConvNet:
    """Build conv/pool specs then `hidden` fully connected widths, tracking (C, H, W)."""
    channels, (height, width) = in_channels, image_size
    layers: list[nn.Module] = []
    for spec in specs:
        if isinstance(spec, Conv):
            padding = spec.padding
            if min(height, width) + 2 * padding < spec.kernel:
                padding = spec.kernel // 2  # too small for a 'valid' conv: keep the size instead
            layers += [nn.Conv2d(channels, spec.out_channels, spec.kernel, padding=padding), nn.ReLU(inplace=True)]
            channels = spec.out_channels
            height = height + 2 * padding - spec.kernel + 1
            width = width + 2 * padding - spec.kernel + 1
        elif isinstance(spec, Pool):
            if min(height, width) < spec.size:
                continue  # nothing left to pool
            pool = nn.MaxPool2d(spec.size)
            if len(layers) >= 2 and isinstance(layers[-2], nn.Conv2d) and isinstance(layers[-1], nn.ReLU):
                layers.insert(len(layers) - 1, pool)  # conv -> pool -> relu: see the module docstring
            else:
                layers.append(pool)
            height, width = height // spec.size, width // spec.size
    classifier: list[nn.Module] = [nn.Flatten()]  # (N, C, H, W) -> (N, C*H*W)
    features_out = channels * height * width
    for hidden_width in hidden:
        classifier += _dense(features_out, hidden_width, dropout) + [nn.ReLU(inplace=True)]
        features_out = hidden_width
    classifier += _dense(features_out, num_classes, dropout)
    return ConvNet(nn.Sequential(*layers), nn.Sequential(*classifier))


def _dense(in_features: int, out_features: int, dropout: float) -> list[nn.Module]:
    return ([nn.Dropout(dropout)] if dropout > 0 else []) + [nn.Linear(in_features, out_features)]


@register_model("tiny-cnn", "Conv(32,3x3,ReLU) -> MaxPool 2 -> Flatten -> Dense(classes): the first Keras example")
def tiny_cnn(in_channels, num_classes, image_size, dropout):
    return build_convnet([Conv(32, 3), Pool(2)], [], in_channels, num_classes, image_size, dropout)


@register_model("mnist-cnn", "Conv(32,3x3) -> MaxPool -> Conv(64,3x3) -> MaxPool -> Flatten -> Dense: "
                             "the classic Keras MNIST convnet")
def mnist_cnn(in_channels, num_classes, image_size, dropout):
    return build_convnet([Conv(32, 3), Pool(2), Conv(64, 3), Pool(2)], [], in_channels, num_classes,
                         image_size, dropout)


@register_model("lenet", "Conv(6,5x5) -> Pool -> Conv(16,5x5) -> Pool -> FC120 -> FC84 -> FC: "
                         "the PyTorch CIFAR-10 tutorial net")
def lenet(in_channels, num_classes, image_size, dropout):
    return build_convnet([Conv(6, 5), Pool(2), Conv(16, 5), Pool(2)], [120, 84], in_channels, num_classes,
                         image_size, dropout)


@register_model("small-cnn", "Conv(16,3x3,pad 1) -> Pool -> Conv(32,3x3,pad 1) -> Pool -> FC128 -> FC: "
                             "the PyTorch MNIST example")
def small_cnn(in_channels, num_classes, image_size, dropout):
    return build_convnet([Conv(16, 3, 1), Pool(2), Conv(32, 3, 1), Pool(2)], [128], in_channels, num_classes,
                         image_size, dropout)


class ResNet8(nn.Module):
    """A CIFAR-style ResNet (He et al. 2016, section 4.2): 3x3 stem, three stages of `blocks` BasicBlocks (16, 32,
    64 channels), GAP, FC. blocks=1 is resnet8, 3 is the paper's ResNet-20 (6n+2 layers).

    Module names follow torchvision's ResNet (conv1, bn1, layer1..3, fc) so weights and freezing
    rules carry over.
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0, widths=(16, 32, 64),
                 blocks: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(widths[0], widths[0], stride=1, blocks=blocks)
        self.layer2 = self._stage(widths[0], widths[1], stride=2, blocks=blocks)
        self.layer3 = self._stage(widths[1], widths[2], stride=2, blocks=blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(widths[2], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _stage(inplanes: int, planes: int, stride: int, blocks: int = 1) -> nn.Sequential:
        from torchvision.models.resnet import BasicBlock  # here, not at the top: torchvision costs ~3 s to import

        downsample = None
        if stride != 1 or inplanes != planes:  # 1x1 projection when the shape changes
            downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes))
        return nn.Sequential(BasicBlock(inplanes, planes, stride=stride, downsample=downsample),
                             *[BasicBlock(planes, planes) for _ in range(blocks - 1)])

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.avgpool(x).flatten(1)  # (N, 64, 1, 1) -> (N, 64)
        return self.fc(self.dropout(x))


@register_model("resnet8", "3x3 stem -> 3 stages of one BasicBlock (16/32/64) -> global avg pool -> FC: "
                           "residual blocks that train on a CPU")
def resnet8(in_channels, num_classes, image_size, dropout):
    return ResNet8(in_channels, num_classes, dropout)


@register_model("resnet20", "resnet8 with three BasicBlocks a stage: He et al.'s CIFAR ResNet-20, 2.7x resnet8's "
                            "compute; the CPU model that passes 85% on CIFAR-10")
def resnet20(in_channels, num_classes, image_size, dropout):
    return ResNet8(in_channels, num_classes, dropout, blocks=3)
