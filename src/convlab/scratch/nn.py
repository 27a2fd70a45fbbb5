"""Layers named as in torch.nn, with torch's constructor arguments, parameter names and default init.

Contract: `y = layer(x)` runs the forward pass and keeps what the backward pass needs;
`dx = layer.backward(dy)` returns the input gradient and *adds* into each parameter's `.grad`
(call `zero_grad()` between steps, as in torch). `state_dict()` keys match torch's exactly, so one
state dict loads into both engines.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Iterator

import numpy as np

from . import functional as F

DEFAULT_DTYPE = np.float32
_rng = np.random.default_rng(0)  # like torch's default generator; manual_seed() resets it


def manual_seed(seed: int) -> None:
    """Seed the generator behind weight initialisation and dropout."""
    global _rng
    _rng = np.random.default_rng(seed)


def _uniform(shape, bound: float, dtype) -> np.ndarray:
    return _rng.uniform(-bound, bound, size=shape).astype(dtype)


def _rng_normal(shape) -> np.ndarray:
    return _rng.standard_normal(shape)


class Parameter:
    """A trainable array: `.data` (the values) and `.grad` (same shape, or None before backward)."""

    def __init__(self, data: np.ndarray):
        self.data = data
        self.grad: np.ndarray | None = None

    @property
    def shape(self):
        return self.data.shape

    def accumulate(self, grad: np.ndarray) -> None:
        self.grad = grad.astype(self.data.dtype, copy=False) if self.grad is None else self.grad + grad

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class: holds parameters, buffers and child modules in definition order, as torch.nn.Module."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, value: np.ndarray) -> None:
        self._buffers[name] = value
        object.__setattr__(self, name, value)

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    # -- traversal -------------------------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator["Module"]:
        return (m for _, m in self.named_modules())

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        for path, module in self.named_modules():
            for name, param in module._parameters.items():
                yield (f"{path}.{name}" if path else name), param

    def parameters(self) -> Iterator[Parameter]:
        return (p for _, p in self.named_parameters())

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> "Module":
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def to(self, dtype) -> "Module":
        """Cast parameters and floating buffers to `dtype` (e.g. np.float64 for parity checks)."""
        for module in self.modules():
            for name, p in module._parameters.items():
                p.data = p.data.astype(dtype)
                p.grad = None
            for name, b in list(module._buffers.items()):
                if np.issubdtype(b.dtype, np.floating):
                    module.register_buffer(name, b.astype(dtype))
        return self

    # -- state dict ------------------------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Parameters and buffers under torch's key names, e.g. features.0.weight, bn1.running_mean."""
        state = OrderedDict()
        for path, module in self.named_modules():
            prefix = f"{path}." if path else ""
            for name, p in module._parameters.items():
                state[prefix + name] = p.data
            for name, b in module._buffers.items():
                state[prefix + name] = b
        return state

    def load_state_dict(self, state: dict) -> None:
        """Copy arrays in by key; the keys and shapes must match exactly."""
        own = self.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(f"state dict mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for path, module in self.named_modules():
            prefix = f"{path}." if path else ""
            for name, p in module._parameters.items():
                value = np.asarray(state[prefix + name])
                if value.shape != p.data.shape:
                    raise ValueError(f"{prefix + name}: shape {value.shape}, expected {p.data.shape}")
                p.data = value.astype(p.data.dtype, copy=True)
            for name, b in list(module._buffers.items()):
                value = np.asarray(state[prefix + name])
                if value.shape != b.shape:
                    raise ValueError(f"{prefix + name}: shape {value.shape}, expected {b.shape}")
                module.register_buffer(name, value.astype(b.dtype, copy=True))

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"


# -- layers with parameters ------------------------------------------------------------------------------
class Conv2d(Module):
    """2-D cross-correlation. Input (N, C_in, H, W) -> (N, C_out, Ho, Wo); weight (C_out, C_in, KH, KW)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 bias: bool = True, dtype=None):
        super().__init__()
        dtype = dtype or DEFAULT_DTYPE
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = F._pair(kernel_size), F._pair(stride)
        self.padding, self.dilation = F._pair(padding), F._pair(dilation)
        fan_in = in_channels * self.kernel_size[0] * self.kernel_size[1]
        bound = 1.0 / math.sqrt(fan_in)  # torch's kaiming_uniform_(a=sqrt(5)) works out to this
        self.weight = Parameter(_uniform((out_channels, in_channels, *self.kernel_size), bound, dtype))
        self.bias = Parameter(_uniform((out_channels,), bound, dtype)) if bias else None
        self.needs_input_grad = True  # False for a network's first layer: backward then returns None

    def forward(self, x):
        bias = self.bias.data if self.bias is not None else None
        out, self._cache = F.conv2d_forward(x, self.weight.data, bias, self.stride, self.padding, self.dilation)
        return out

    def backward(self, dout):
        dx, dw, db = F.conv2d_backward(dout, self._cache, self.needs_input_grad)
        self.weight.accumulate(dw)
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}")


class Linear(Module):
    """y = x @ weight.T + bias. Input (N, in_features) -> (N, out_features); weight (out, in)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=None):
        super().__init__()
        dtype = dtype or DEFAULT_DTYPE
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight = Parameter(_uniform((out_features, in_features), bound, dtype))
        self.bias = Parameter(_uniform((out_features,), bound, dtype)) if bias else None

    def forward(self, x):
        bias = self.bias.data if self.bias is not None else None
        out, self._cache = F.linear_forward(x, self.weight.data, bias)
        return out

    def backward(self, dout):
        dx, dw, db = F.linear_backward(dout, self._cache)
        self.weight.accumulate(dw)
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}"


class BatchNorm2d(Module):
    """Per-channel normalisation with learned scale/shift (weight, bias) and running statistics."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, dtype=None):
        super().__init__()
        dtype = dtype or DEFAULT_DTYPE
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = Parameter(np.ones(num_features, dtype=dtype))
        self.bias = Parameter(np.zeros(num_features, dtype=dtype))
        self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
        self.register_buffer("running_var", np.ones(num_features, dtype=dtype))
        self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))

    def forward(self, x):
        if self.training:
            self.register_buffer("num_batches_tracked", self.num_batches_tracked + 1)
        out, self._cache = F.batch_norm_forward(x, self.weight.data, self.bias.data, self.running_mean,
                                                self.running_var, self.training, self.momentum, self.eps)
        return out

    def backward(self, dout):
        dx, dgamma, dbeta = F.batch_norm_backward(dout, self._cache)
        self.weight.accumulate(dgamma)
        self.bias.accumulate(dbeta)
        return dx

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


# -- layers without parameters ---------------------------------------------------------------------------
class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride or kernel_size, padding

    def forward(self, x):
        out, self._cache = F.max_pool2d_forward(x, self.kernel_size, self.stride, self.padding)
        return out

    def backward(self, dout):
        return F.max_pool2d_backward(dout, self._cache)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride or kernel_size, padding

    def forward(self, x):
        out, self._cache = F.avg_pool2d_forward(x, self.kernel_size, self.stride, self.padding)
        return out

    def backward(self, dout):
        return F.avg_pool2d_backward(dout, self._cache)


class AdaptiveAvgPool2d(Module):
    """Only the global case, output_size 1 (or (1, 1)): (N, C, H, W) -> (N, C, 1, 1)."""

    def __init__(self, output_size=1):
        super().__init__()
        if F._pair(output_size) != (1, 1):
            raise ValueError(f"AdaptiveAvgPool2d: only output_size=1 is implemented, got {output_size!r}")
        self.output_size = output_size

    def forward(self, x):
        out, self._cache = F.global_avg_pool_forward(x)
        return out

    def backward(self, dout):
        return F.global_avg_pool_backward(dout, self._cache)


class _Activation(Module):
    forward_fn = backward_fn = None

    def __init__(self, inplace: bool = False):  # `inplace` is accepted for torch's signature; arrays are not shared
        super().__init__()

    def forward(self, x):
        out, self._cache = type(self).forward_fn(x)
        return out

    def backward(self, dout):
        return type(self).backward_fn(dout, self._cache)


class ReLU(_Activation):
    forward_fn, backward_fn = F.relu_forward, F.relu_backward


class Sigmoid(_Activation):
    forward_fn, backward_fn = F.sigmoid_forward, F.sigmoid_backward


class Tanh(_Activation):
    forward_fn, backward_fn = F.tanh_forward, F.tanh_backward


class Identity(Module):
    def forward(self, x):
        return x

    def backward(self, dout):
        return dout


class Flatten(Module):
    """(N, C, H, W) -> (N, C*H*W) (start_dim=1, end_dim=-1)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        if (start_dim, end_dim) != (1, -1):
            raise ValueError("Flatten: only start_dim=1, end_dim=-1 is implemented")

    def forward(self, x):
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape(self._shape)


class Dropout(Module):
    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        self.p = p

    def forward(self, x):
        out, self._mask = F.dropout_forward(x, self.p, self.training, _rng)
        return out

    def backward(self, dout):
        return F.dropout_backward(dout, self._mask)


# -- containers and blocks -------------------------------------------------------------------------------
class Sequential(Module):
    """Children named "0", "1", ...; forward runs them in order, backward in reverse."""

    def __init__(self, *layers: Module):
        super().__init__()
        for index, layer in enumerate(layers):
            setattr(self, str(index), layer)

    def __getitem__(self, index: int) -> Module:
        return list(self._modules.values())[index]

    def __len__(self) -> int:
        return len(self._modules)

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x

    def backward(self, dout):
        for layer in reversed(self._modules.values()):
            dout = layer.backward(dout)
        return dout


class BasicBlock(Module):
    """The ResNet basic block: y = relu(F(x) + shortcut(x)), F = conv3x3-bn-relu-conv3x3-bn.

    As torchvision's BasicBlock (same names: conv1, bn1, conv2, bn2, downsample). The shortcut is the
    identity, or `downsample`; when the shape changes and no downsample is given, a 1x1 projection
    (conv + batch norm) is built.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Module | None = None, dtype=None):
        super().__init__()
        self.conv1 = Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False, dtype=dtype)
        self.bn1 = BatchNorm2d(planes, dtype=dtype)
        self.relu = ReLU(inplace=True)
        self.conv2 = Conv2d(planes, planes, 3, padding=1, bias=False, dtype=dtype)
        self.bn2 = BatchNorm2d(planes, dtype=dtype)
        if downsample is None and (stride != 1 or inplanes != planes):
            downsample = Sequential(Conv2d(inplanes, planes, 1, stride=stride, bias=False, dtype=dtype),
                                    BatchNorm2d(planes, dtype=dtype))
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = self.downsample(x) if self.downsample is not None else x
        self._mask = (out + shortcut) > 0  # the final ReLU's mask
        return (out + shortcut) * self._mask

    def backward(self, dout):
        dsum = dout * self._mask  # the sum feeds both branches: each gets the whole gradient
        dbranch = self.bn2.backward(dsum)
        dbranch = self.relu.backward(self.conv2.backward(dbranch))
        dbranch = self.conv1.backward(self.bn1.backward(dbranch))
        dshort = self.downsample.backward(dsum) if self.downsample is not None else dsum
        return dbranch + dshort


# -- losses ----------------------------------------------------------------------------------------------
class CrossEntropyLoss(Module):
    """loss = criterion(logits (N, K), target (N,) int); `backward()` returns dlogits."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def __call__(self, logits, target):
        return self.forward(logits, target)

    def forward(self, logits, target):
        loss, self._cache = F.cross_entropy_forward(logits, np.asarray(target), self.label_smoothing)
        return loss

    def backward(self, dout: float = 1.0):
        return F.cross_entropy_backward(dout, self._cache)


class MSELoss(Module):
    """Mean squared error; `backward()` returns dpred."""

    def __call__(self, pred, target):
        return self.forward(pred, target)

    def forward(self, pred, target):
        loss, self._cache = F.mse_forward(pred, target)
        return loss

    def backward(self, dout: float = 1.0):
        return F.mse_backward(dout, self._cache)
