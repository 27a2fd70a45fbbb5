"""Forward/backward pairs for every layer and loss, vectorised with NumPy.

Each operation is a `*_forward(...) -> (out, cache)` and a `*_backward(dout, cache) -> grads` pair that sit
side by side. Images are NCHW. Convolution and pooling use im2col: a strided *view* of every window
(`sliding_window_view`, no copy), one matrix multiply for the convolution, and col2im as K*K
strided adds for the backward pass; pooling loops over the K*K window offsets only. No Python loop runs
over pixels or samples.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


# -- helpers ---------------------------------------------------------------------------------------------
def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, (int, np.integer)) else (int(value[0]), int(value[1]))


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """floor((size + 2*padding - dilation*(kernel-1) - 1) / stride) + 1, as torch computes it."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _pad(x: np.ndarray, padding: tuple[int, int], value: float = 0.0) -> np.ndarray:
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def windows(x: np.ndarray, kernel, stride=1, padding=0, dilation=1, pad_value: float = 0.0) -> np.ndarray:
    """All sliding windows of a padded input as a strided view (no copy).

    x: (N, C, H, W) -> (N, C, Ho, Wo, KH, KW), where [n, c, i, j] is the window whose top-left corner
    is at (i*stride, j*stride) of the padded input.
    """
    (kh, kw), (sh, sw), (dh, dw) = _pair(kernel), _pair(stride), _pair(dilation)
    xp = _pad(x, _pair(padding), pad_value)
    ho = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    wo = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    view = sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    return view[:, :, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw, ::dh, ::dw]


def _col2im(dwin: np.ndarray, padded_shape: tuple, stride, padding, dilation) -> np.ndarray:
    """Sum window gradients back onto the input: the adjoint of `windows`, as K*K strided adds.

    dwin: (N, C, Ho, Wo, KH, KW) -> dx: (N, C, H, W) (the padding is cut off again).
    """
    _, _, ho, wo, kh, kw = dwin.shape
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    dxp = np.zeros(padded_shape, dtype=dwin.dtype)
    for i in range(kh):
        for j in range(kw):
            top, left = i * dh, j * dw
            dxp[:, :, top : top + sh * (ho - 1) + 1 : sh, left : left + sw * (wo - 1) + 1 : sw] += dwin[..., i, j]
    return dxp[:, :, ph : dxp.shape[2] - ph, pw : dxp.shape[3] - pw]


# -- convolution -----------------------------------------------------------------------------------------
def conv2d_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, stride=1, padding=0,
                   dilation=1):
    """Cross-correlation, as torch.nn.functional.conv2d.

    x: (N, C, H, W), weight: (F, C, KH, KW), bias: (F,) or None -> out: (N, F, Ho, Wo).
    """
    n, c, h, w = x.shape
    f, _, kh, kw = weight.shape
    win = windows(x, (kh, kw), stride, padding, dilation)  # (N, C, Ho, Wo, KH, KW), a view
    ho, wo = win.shape[2:4]
    # The one im2col copy, (C*KH*KW, N*Ho*Wo) with output pixels along rows, so the whole batch is a single
    # large matrix multiply (many small per-sample products waste BLAS threads).
    cols = win.transpose(1, 4, 5, 0, 2, 3).reshape(c * kh * kw, n * ho * wo)
    out = weight.reshape(f, c * kh * kw) @ cols  # (F, N*Ho*Wo)
    if bias is not None:
        out += bias[:, None]
    out = out.reshape(f, n, ho, wo).transpose(1, 0, 2, 3)  # (N, F, Ho, Wo), a view
    padded = (n, c, h + 2 * _pair(padding)[0], w + 2 * _pair(padding)[1])
    return out, (cols, weight, bias is not None, padded, stride, padding, dilation)


def conv2d_backward(dout: np.ndarray, cache, need_dx: bool = True):
    """dout: (N, F, Ho, Wo) -> (dx (N, C, H, W) or None, dweight (F, C, KH, KW), dbias (F,) or None).

    need_dx=False skips the input gradient (a network's first layer does not need it).
    """
    cols, weight, has_bias, padded, stride, padding, dilation = cache
    n, f, ho, wo = dout.shape
    _, c, kh, kw = weight.shape
    dout_mat = dout.transpose(1, 0, 2, 3).reshape(f, n * ho * wo)  # (F, N*Ho*Wo)
    dweight = (dout_mat @ cols.T).reshape(weight.shape)
    dbias = dout_mat.sum(axis=1) if has_bias else None
    if not need_dx:
        return None, dweight, dbias
    dcols = weight.reshape(f, c * kh * kw).T @ dout_mat  # (C*KH*KW, N*Ho*Wo)
    dwin = dcols.reshape(c, kh, kw, n, ho, wo).transpose(3, 0, 4, 5, 1, 2)  # (N, C, Ho, Wo, KH, KW), a view
    dx = _col2im(dwin, padded, stride, padding, dilation)
    return dx, dweight, dbias


# -- pooling ---------------------------------------------------------------------------------------------
def max_pool2d_forward(x: np.ndarray, kernel_size, stride=None, padding=0):
    """x: (N, C, H, W) -> out: (N, C, Ho, Wo).

    A running np.maximum over the K*K window offsets, each offset a strided view of the whole batch.
    Which element won is not stored: backward finds it again by comparing with `out`.
    """
    kernel = _pair(kernel_size)
    stride = kernel if stride is None else _pair(stride)
    win = windows(x, kernel, stride, padding, pad_value=-np.inf)  # (N, C, Ho, Wo, KH, KW), a view
    kh, kw = kernel
    out = win[..., 0, 0].copy()
    for offset in range(1, kh * kw):
        np.maximum(out, win[..., offset // kw, offset % kw], out=out)
    return out, (win, out, kernel, stride, padding, x.shape)


def max_pool2d_backward(dout: np.ndarray, cache) -> np.ndarray:
    """dout: (N, C, Ho, Wo) -> dx: (N, C, H, W); each window's gradient goes to its max only.

    Ties go to the first maximum in row-major window order, as in torch: `taken` marks the windows
    whose maximum an earlier offset already claimed.
    """
    win, out, (kh, kw), (sh, sw), padding, shape = cache
    ho, wo = dout.shape[2:]
    ph, pw = _pair(padding)
    dxp = np.zeros((shape[0], shape[1], shape[2] + 2 * ph, shape[3] + 2 * pw), dtype=dout.dtype)
    taken = np.zeros(out.shape, dtype=bool)
    for offset in range(kh * kw):
        i, j = divmod(offset, kw)
        winner = win[..., i, j] == out
        if offset:
            winner &= ~taken
        taken |= winner
        target = dxp[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]  # a strided view
        if sh >= kh and sw >= kw:  # windows do not overlap: each input element gets at most one gradient
            np.copyto(target, dout, where=winner)
        else:
            target += np.where(winner, dout, 0)
    return dxp[:, :, ph : dxp.shape[2] - ph, pw : dxp.shape[3] - pw]


def avg_pool2d_forward(x: np.ndarray, kernel_size, stride=None, padding=0):
    """x: (N, C, H, W) -> (N, C, Ho, Wo); zero padding counts in the mean (torch's count_include_pad)."""
    kernel = _pair(kernel_size)
    stride = kernel if stride is None else _pair(stride)
    out = windows(x, kernel, stride, padding).mean(axis=(-2, -1))
    padded = (x.shape[0], x.shape[1], x.shape[2] + 2 * _pair(padding)[0], x.shape[3] + 2 * _pair(padding)[1])
    return out, (kernel, stride, padding, padded)


def avg_pool2d_backward(dout: np.ndarray, cache) -> np.ndarray:
    """dout: (N, C, Ho, Wo) -> dx: (N, C, H, W); each window shares its gradient equally."""
    (kh, kw), stride, padding, padded = cache
    share = dout / (kh * kw)
    dwin = np.broadcast_to(share[..., None, None], (*dout.shape, kh, kw))
    return _col2im(dwin, padded, stride, padding, 1)


def global_avg_pool_forward(x: np.ndarray):
    """AdaptiveAvgPool2d(1): x: (N, C, H, W) -> (N, C, 1, 1)."""
    return x.mean(axis=(2, 3), keepdims=True), x.shape


def global_avg_pool_backward(dout: np.ndarray, shape) -> np.ndarray:
    """dout: (N, C, 1, 1) -> dx: (N, C, H, W)."""
    return np.broadcast_to(dout / (shape[2] * shape[3]), shape).copy()


# -- fully connected -------------------------------------------------------------------------------------
def linear_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None):
    """x: (N, in), weight: (out, in), bias: (out,) -> (N, out) = x @ weight.T + bias."""
    out = x @ weight.T
    if bias is not None:
        out += bias
    return out, (x, weight, bias is not None)


def linear_backward(dout: np.ndarray, cache):
    """dout: (N, out) -> (dx (N, in), dweight (out, in), dbias (out,) or None)."""
    x, weight, has_bias = cache
    return dout @ weight, dout.T @ x, dout.sum(axis=0) if has_bias else None


# -- activations -----------------------------------------------------------------------------------------
def relu_forward(x: np.ndarray):
    """max(x, 0), any shape."""
    mask = x > 0
    return x * mask, mask


def relu_backward(dout: np.ndarray, mask) -> np.ndarray:
    return dout * mask


def sigmoid_forward(x: np.ndarray):
    """1 / (1 + exp(-x)), written with tanh so large |x| cannot overflow."""
    out = 0.5 * (np.tanh(0.5 * x) + 1.0)
    return out, out


def sigmoid_backward(dout: np.ndarray, out) -> np.ndarray:
    return dout * out * (1.0 - out)


def tanh_forward(x: np.ndarray):
    out = np.tanh(x)
    return out, out


def tanh_backward(dout: np.ndarray, out) -> np.ndarray:
    return dout * (1.0 - out * out)


def log_softmax_forward(x: np.ndarray):
    """x: (N, K) -> log softmax along the last axis, stable (the max is subtracted first)."""
    shifted = x - x.max(axis=-1, keepdims=True)
    out = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return out, out


def log_softmax_backward(dout: np.ndarray, out) -> np.ndarray:
    return dout - np.exp(out) * dout.sum(axis=-1, keepdims=True)


def softmax_forward(x: np.ndarray):
    """x: (N, K) -> probabilities along the last axis."""
    logp, _ = log_softmax_forward(x)
    out = np.exp(logp)
    return out, out


def softmax_backward(dout: np.ndarray, out) -> np.ndarray:
    return out * (dout - (dout * out).sum(axis=-1, keepdims=True))


# -- regularisation and normalisation --------------------------------------------------------------------
def dropout_forward(x: np.ndarray, p: float, training: bool, rng: np.random.Generator):
    """Inverted dropout: zero each element with probability p and scale the rest by 1/(1-p)."""
    if not training or p == 0.0:
        return x, None
    if p >= 1.0:
        mask = np.zeros_like(x)
    else:
        mask = (rng.random(x.shape) >= p).astype(x.dtype) / (1.0 - p)
    return x * mask, mask


def dropout_backward(dout: np.ndarray, mask) -> np.ndarray:
    return dout if mask is None else dout * mask


def batch_norm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, running_mean: np.ndarray,
                       running_var: np.ndarray, training: bool, momentum: float = 0.1, eps: float = 1e-5):
    """BatchNorm over (N, H, W) per channel. x: (N, C, H, W), gamma/beta/running_*: (C,).

    Training normalises with the batch's biased variance and updates the running statistics in place
    with the unbiased one, as torch does; eval uses the running statistics.
    """
    axes = (0, 2, 3)
    if training:
        mean = x.mean(axis=axes)
        var = x.var(axis=axes)
        count = x.size // x.shape[1]
        running_mean *= 1.0 - momentum
        running_mean += momentum * mean
        running_var *= 1.0 - momentum
        running_var += momentum * var * count / max(count - 1, 1)
    else:
        mean, var = running_mean, running_var
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mean[None, :, None, None]) * inv_std[None, :, None, None]
    out = x_hat * gamma[None, :, None, None] + beta[None, :, None, None]
    return out, (x_hat, gamma, inv_std, training)


def batch_norm_backward(dout: np.ndarray, cache):
    """dout: (N, C, H, W) -> (dx, dgamma (C,), dbeta (C,))."""
    x_hat, gamma, inv_std, training = cache
    axes = (0, 2, 3)
    dbeta = dout.sum(axis=axes)
    dgamma = (dout * x_hat).sum(axis=axes)
    scale = (gamma * inv_std)[None, :, None, None]
    if not training:
        return dout * scale, dgamma, dbeta
    count = dout.size // dout.shape[1]
    dx = scale * (dout - (dbeta / count)[None, :, None, None] - x_hat * (dgamma / count)[None, :, None, None])
    return dx, dgamma, dbeta


# -- losses ----------------------------------------------------------------------------------------------
def cross_entropy_forward(logits: np.ndarray, target: np.ndarray, label_smoothing: float = 0.0):
    """Mean cross-entropy of (N, K) logits against (N,) class indices, via a stable log-sum-exp.

    With label smoothing e the target is (1-e) one-hot + e/K uniform, as in torch.
    """
    n, k = logits.shape
    logp, _ = log_softmax_forward(logits)
    nll = -logp[np.arange(n), target]
    loss = nll.mean()
    if label_smoothing:
        loss = (1.0 - label_smoothing) * loss - label_smoothing * logp.mean(axis=1).mean()
    return loss, (logp, target, label_smoothing)


def cross_entropy_backward(dout: float, cache) -> np.ndarray:
    """-> dlogits (N, K) = (softmax - smoothed one-hot) / N * dout."""
    logp, target, eps = cache
    n, k = logp.shape
    grad = np.exp(logp)
    grad[np.arange(n), target] -= 1.0 - eps
    if eps:
        grad -= eps / k
    return grad * (dout / n)


def mse_forward(pred: np.ndarray, target: np.ndarray):
    """Mean squared error over all elements."""
    diff = pred - target
    return (diff * diff).mean(), diff


def mse_backward(dout: float, diff) -> np.ndarray:
    return diff * (2.0 * dout / diff.size)
