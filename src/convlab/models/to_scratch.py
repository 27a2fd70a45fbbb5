"""Moving models between the engines: a torch model's scratch twin, and weights in both directions.

The scratch twin is built module by module under the same names, so its state_dict keys are exactly
the torch model's; a run folder's model.safetensors therefore serves both engines.
"""
from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn as tnn

from .. import scratch
from ..errors import ConvlabError
from ..scratch import nn as snn
from . import presets


def to_scratch(model: tnn.Module, dtype=np.float32) -> snn.Module:
    """The scratch equivalent of a torch model built from supported layers, with its weights copied."""
    twin = _convert(model, "model")
    twin.to(dtype)
    load_torch_state(twin, model.state_dict())
    twin.train(model.training)
    return twin


def load_torch_state(twin: snn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy a torch state dict (tensors) into a scratch model, keeping the scratch model's dtypes."""
    twin.load_state_dict({k: v.detach().cpu().numpy() for k, v in state.items()})


def torch_state(twin: snn.Module) -> dict[str, torch.Tensor]:
    """A scratch model's state dict as torch tensors under the same keys (float32, ready for safetensors)."""
    out = {}
    for key, value in twin.state_dict().items():
        array = np.ascontiguousarray(value)
        if np.issubdtype(array.dtype, np.floating):
            array = array.astype(np.float32)
        out[key] = torch.from_numpy(array.copy())
    return out


def _convert(module: tnn.Module, path: str) -> snn.Module:
    kind = type(module)
    if kind is presets.ConvNet:
        return scratch.models.ConvNet(_convert(module.features, path + ".features"),
                                      _convert(module.classifier, path + ".classifier"))
    if kind is presets.ResNet8:
        widths = (module.layer1[0].conv1.out_channels, module.layer2[0].conv1.out_channels,
                  module.layer3[0].conv1.out_channels)
        dropout = module.dropout.p if isinstance(module.dropout, tnn.Dropout) else 0.0
        return scratch.models.ResNet8(module.conv1.in_channels, module.fc.out_features, dropout, widths,
                                      blocks=len(module.layer1))
    if kind is tnn.Sequential:
        return snn.Sequential(*[_convert(child, f"{path}.{name}") for name, child in module.named_children()])
    if kind is _torchvision_basic_block():
        downsample = _convert(module.downsample, path + ".downsample") if module.downsample is not None else None
        return snn.BasicBlock(module.conv1.in_channels, module.conv1.out_channels, module.stride, downsample)
    if kind is tnn.Conv2d:
        if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise _unsupported(path, module)
        return snn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                          module.padding, module.dilation, bias=module.bias is not None)
    if kind is tnn.Linear:
        return snn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
    if kind is tnn.BatchNorm2d:
        if not (module.affine and module.track_running_stats) or module.momentum is None:
            raise _unsupported(path, module)
        return snn.BatchNorm2d(module.num_features, module.eps, module.momentum)
    if kind is tnn.MaxPool2d:
        if module.ceil_mode or module.dilation not in (1, (1, 1)):
            raise _unsupported(path, module)
        return snn.MaxPool2d(module.kernel_size, module.stride, module.padding)
    if kind is tnn.AvgPool2d:
        if module.ceil_mode or not module.count_include_pad or module.divisor_override:
            raise _unsupported(path, module)
        return snn.AvgPool2d(module.kernel_size, module.stride, module.padding)
    if kind is tnn.AdaptiveAvgPool2d and module.output_size in (1, (1, 1)):
        return snn.AdaptiveAvgPool2d(1)
    if kind is tnn.Flatten and (module.start_dim, module.end_dim) == (1, -1):
        return snn.Flatten()
    if kind is tnn.Dropout:
        return snn.Dropout(module.p)
    simple = {tnn.ReLU: snn.ReLU, tnn.Sigmoid: snn.Sigmoid, tnn.Tanh: snn.Tanh, tnn.Identity: snn.Identity}
    if kind in simple:
        return simple[kind]()
    raise _unsupported(path, module)


def _torchvision_basic_block() -> type | None:
    """torchvision's BasicBlock if torchvision is loaded; a model holding one has loaded it, so no import here."""
    resnet = sys.modules.get("torchvision.models.resnet")
    return getattr(resnet, "BasicBlock", None)


def _unsupported(path: str, module: tnn.Module) -> ConvlabError:
    return ConvlabError(f"the scratch engine has no equivalent of {path} ({module!r}); use --engine torch, or a "
                        f"preset (tiny-cnn, mnist-cnn, lenet, small-cnn, resnet8, resnet20) with --engine scratch")
