"""Every forward/backward pair against torch in float64 (values and all gradients), and against the loops."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from convlab.scratch import functional as F
from convlab.scratch import reference

from scratch_parity import assert_close, torch_run

CONV_GRID = [(k, s, p, d) for k, s, p, d in itertools.product((1, 2, 3), (1, 2), (0, 1, 2), (1, 2))
             if not (d == 2 and k == 1)]


@pytest.mark.parametrize("kernel, stride, padding, dilation", CONV_GRID)
@pytest.mark.parametrize("shape", [(2, 3, 7, 6), (1, 2, 5, 5)])
def test_conv2d_matches_torch(rng, shape, kernel, stride, padding, dilation):
    x = rng.standard_normal(shape)
    w = rng.standard_normal((4, shape[1], kernel, kernel))
    b = rng.standard_normal(4)
    out, cache = F.conv2d_forward(x, w, b, stride, padding, dilation)
    expected, dout, (dx_t, dw_t, db_t) = torch_run(
        lambda x_, w_, b_: TF.conv2d(x_, w_, b_, stride, padding, dilation), x, w, b)
    dx, dw, db = F.conv2d_backward(dout, cache)
    assert_close(out, expected, what="out")
    assert_close(dx, dx_t, what="dx")
    assert_close(dw, dw_t, what="dweight")
    assert_close(db, db_t, what="dbias")


def test_conv2d_rectangular_kernel_without_bias(rng):
    x, w = rng.standard_normal((2, 2, 6, 7)), rng.standard_normal((3, 2, 2, 3))
    out, cache = F.conv2d_forward(x, w, None, (2, 1), (1, 0))
    expected, dout, (dx_t, dw_t) = torch_run(lambda x_, w_: TF.conv2d(x_, w_, None, (2, 1), (1, 0)), x, w)
    dx, dw, db = F.conv2d_backward(dout, cache)
    assert db is None
    assert_close(out, expected)
    assert_close(dx, dx_t)
    assert_close(dw, dw_t)


@pytest.mark.parametrize("kernel, stride, padding", [(2, None, 0), (2, 1, 0), (3, 2, 1), (3, 1, 1), (2, 2, 1),
                                                     (3, 3, 0)])
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pooling_matches_torch(rng, mode, kernel, stride, padding):
    x = rng.standard_normal((2, 3, 7, 8))
    forward, backward = ((F.max_pool2d_forward, F.max_pool2d_backward) if mode == "max"
                         else (F.avg_pool2d_forward, F.avg_pool2d_backward))
    torch_fn = TF.max_pool2d if mode == "max" else TF.avg_pool2d
    out, cache = forward(x, kernel, stride, padding)
    expected, dout, (dx_t,) = torch_run(lambda x_: torch_fn(x_, kernel, stride, padding), x)
    assert_close(out, expected, what="out")
    assert_close(backward(dout, cache), dx_t, what="dx")


def test_max_pool_ties_go_to_the_first_maximum_as_in_torch():
    x = np.zeros((1, 1, 4, 4))  # all ties, as after a ReLU
    out, cache = F.max_pool2d_forward(x, 2)
    expected, dout, (dx_t,) = torch_run(lambda x_: TF.max_pool2d(x_, 2), x)
    np.testing.assert_array_equal(F.max_pool2d_backward(dout, cache), dx_t)


@pytest.mark.parametrize("kernel, stride, padding, dilation", [(3, 1, 0, 1), (3, 2, 1, 1), (2, 1, 2, 2), (1, 3, 0, 1)])
def test_fast_conv_equals_the_nested_loops(rng, kernel, stride, padding, dilation):
    x, w, b = rng.standard_normal((2, 2, 6, 5)), rng.standard_normal((3, 2, kernel, kernel)), rng.standard_normal(3)
    fast, _ = F.conv2d_forward(x, w, b, stride, padding, dilation)
    assert_close(fast, reference.conv2d(x, w, b, stride, padding, dilation))


@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 0), (3, 1, 1), (3, 2, 0), (2, 1, 1)])
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_fast_pooling_equals_the_nested_loops(rng, mode, kernel, stride, padding):
    x = rng.standard_normal((2, 2, 6, 7))
    forward = F.max_pool2d_forward if mode == "max" else F.avg_pool2d_forward
    fast, _ = forward(x, kernel, stride, padding)
    assert_close(fast, reference.pool2d(x, kernel, stride, padding, mode))


def test_global_average_pool(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    out, cache = F.global_avg_pool_forward(x)
    expected, dout, (dx_t,) = torch_run(lambda x_: TF.adaptive_avg_pool2d(x_, 1), x)
    assert_close(out, expected)
    assert_close(F.global_avg_pool_backward(dout, cache), dx_t)


@pytest.mark.parametrize("bias", [True, False])
def test_linear(rng, bias):
    x, w, b = rng.standard_normal((5, 7)), rng.standard_normal((3, 7)), rng.standard_normal(3)
    out, cache = F.linear_forward(x, w, b if bias else None)
    if bias:
        expected, dout, (dx_t, dw_t, db_t) = torch_run(TF.linear, x, w, b)
    else:
        expected, dout, (dx_t, dw_t) = torch_run(TF.linear, x, w)
    dx, dw, db = F.linear_backward(dout, cache)
    assert_close(out, expected)
    assert_close(dx, dx_t)
    assert_close(dw, dw_t)
    if bias:
        assert_close(db, db_t)


@pytest.mark.parametrize("name, torch_fn", [
    ("relu", torch.relu), ("sigmoid", torch.sigmoid), ("tanh", torch.tanh),
    ("softmax", lambda t: torch.softmax(t, -1)), ("log_softmax", lambda t: torch.log_softmax(t, -1)),
])
def test_activations(rng, name, torch_fn):
    x = rng.standard_normal((4, 6)) * 5
    out, cache = getattr(F, f"{name}_forward")(x)
    expected, dout, (dx_t,) = torch_run(torch_fn, x)
    assert_close(out, expected, what="out")
    assert_close(getattr(F, f"{name}_backward")(dout, cache), dx_t, what="dx")


def test_sigmoid_and_log_softmax_are_stable_for_huge_inputs():
    x = np.array([[1000.0, -1000.0, 0.0]])
    assert np.isfinite(F.sigmoid_forward(x)[0]).all()
    assert_close(F.log_softmax_forward(x)[0], torch.log_softmax(torch.tensor(x), -1).numpy())


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm(rng, training):
    x = rng.standard_normal((4, 3, 5, 5)) * 2 + 1
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    mean, var = rng.standard_normal(3), rng.random(3) + 0.5
    t_mean, t_var = torch.tensor(mean), torch.tensor(var)
    out, cache = F.batch_norm_forward(x, gamma, beta, mean, var, training, 0.1, 1e-5)
    expected, dout, (dx_t, dg_t, db_t) = torch_run(
        lambda x_, g_, b_: TF.batch_norm(x_, t_mean, t_var, g_, b_, training, 0.1, 1e-5), x, gamma, beta)
    dx, dgamma, dbeta = F.batch_norm_backward(dout, cache)
    assert_close(out, expected, what="out")
    assert_close(dx, dx_t, what="dx")
    assert_close(dgamma, dg_t, what="dgamma")
    assert_close(dbeta, db_t, what="dbeta")
    assert_close(mean, t_mean.numpy(), what="running_mean")
    assert_close(var, t_var.numpy(), what="running_var")


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy(rng, smoothing):
    logits, target = rng.standard_normal((6, 5)) * 3, rng.integers(0, 5, 6)
    loss, cache = F.cross_entropy_forward(logits, target, smoothing)
    expected, dout, (dl_t,) = torch_run(
        lambda z: TF.cross_entropy(z, torch.tensor(target), label_smoothing=smoothing), logits, dout=np.array(1.0))
    assert_close(loss, expected)
    assert_close(F.cross_entropy_backward(1.0, cache), dl_t)


def test_mse(rng):
    pred, target = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    loss, cache = F.mse_forward(pred, target)
    expected, _, (dp_t,) = torch_run(lambda p: TF.mse_loss(p, torch.tensor(target)), pred, dout=np.array(1.0))
    assert_close(loss, expected)
    assert_close(F.mse_backward(1.0, cache), dp_t)


def test_dropout_scales_kept_units_and_routes_gradients_through_them(rng):
    x = rng.standard_normal((200, 50))
    out, mask = F.dropout_forward(x, 0.3, True, np.random.default_rng(1))
    kept = mask != 0
    assert 0.65 < kept.mean() < 0.75
    np.testing.assert_allclose(out[kept], x[kept] / 0.7)
    assert (out[~kept] == 0).all()
    dout = rng.standard_normal(x.shape)
    np.testing.assert_allclose(F.dropout_backward(dout, mask), dout * mask)
    same, _ = F.dropout_forward(x, 0.3, False, np.random.default_rng(1))
    assert same is x  # eval: the identity
