"""Optimizers with torch.optim's names, arguments and update rules: SGD, Adam, AdamW; L1/L2 penalties."""
from __future__ import annotations

from typing import Iterable

import numpy as np

from .nn import Parameter


class Optimizer:
    """Holds the parameters and one learning rate (`lr`, which a schedule may change between steps)."""

    def __init__(self, params: Iterable[Parameter], lr: float):
        self.params = list(params)
        self.lr = lr
        self.state: dict[int, dict] = {}

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        for index, p in enumerate(self.params):
            if p.grad is not None:
                self.update(p, p.grad, self.state.setdefault(index, {}))

    def update(self, p: Parameter, grad: np.ndarray, state: dict) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """v = momentum * v + (grad + weight_decay * w); w -= lr * v (nesterov: lr * (grad + momentum * v))."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False):
        super().__init__(params, lr)
        if nesterov and momentum <= 0:
            raise ValueError("SGD: nesterov momentum requires momentum > 0")
        self.momentum, self.weight_decay, self.nesterov = momentum, weight_decay, nesterov

    def update(self, p, grad, state):
        if self.weight_decay:
            grad = grad + self.weight_decay * p.data
        if self.momentum:
            if "velocity" not in state:
                state["velocity"] = grad.copy()  # torch starts the buffer at the first gradient
            else:
                state["velocity"] *= self.momentum
                state["velocity"] += grad
            velocity = state["velocity"]
            grad = grad + self.momentum * velocity if self.nesterov else velocity
        p.data -= self.lr * grad


class Adam(Optimizer):
    """Adam with bias correction; weight_decay adds an L2 term to the gradient (torch.optim.Adam)."""

    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, lr)
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay

    def update(self, p, grad, state):
        beta1, beta2 = self.betas
        if self.weight_decay and self.decoupled:
            p.data *= 1.0 - self.lr * self.weight_decay
        elif self.weight_decay:
            grad = grad + self.weight_decay * p.data
        if not state:
            state.update(step=0, m=np.zeros_like(p.data), v=np.zeros_like(p.data))
        state["step"] += 1
        m, v, t = state["m"], state["v"], state["step"]
        m *= beta1
        m += (1.0 - beta1) * grad
        v *= beta2
        v += (1.0 - beta2) * grad * grad
        step_size = self.lr / (1.0 - beta1 ** t)
        denom = np.sqrt(v) / np.sqrt(1.0 - beta2 ** t) + self.eps
        p.data -= step_size * m / denom


class AdamW(Adam):
    """Adam with decoupled weight decay: w *= 1 - lr * weight_decay before the Adam step."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


def add_penalty_grads(params: Iterable[Parameter], l1: float = 0.0, l2: float = 0.0) -> float:
    """Add the gradients of l1 * sum|w| + l2/2 * sum w^2 to each parameter's .grad; return the penalty."""
    penalty = 0.0
    for p in params:
        if p.grad is None:
            continue
        if l1:
            penalty += l1 * float(np.abs(p.data).sum())
            p.grad = p.grad + l1 * np.sign(p.data)
        if l2:
            penalty += 0.5 * l2 * float((p.data * p.data).sum())
            p.grad = p.grad + l2 * p.data
    return penalty
