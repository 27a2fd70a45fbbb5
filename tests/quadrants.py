"""The constructed data of the attribution tests: one quadrant of the image decides the class."""
from __future__ import annotations

import numpy as np
import torch


def bar_data(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """16x16 noise with one bar in a random quadrant, horizontal for class 0 and vertical for class 1,
    and a distractor dot in another quadrant for both classes: only the bar's quadrant decides."""
    images = rng.normal(0.0, 0.3, (n, 1, 16, 16))
    labels = rng.integers(0, 2, n)
    quadrants = rng.integers(0, 4, n)
    for i in range(n):
        y, x = 8 * (quadrants[i] // 2) + rng.integers(0, 3), 8 * (quadrants[i] % 2) + rng.integers(0, 3)
        if labels[i] == 0:
            images[i, 0, y + 2, x:x + 5] += 2.0
        else:
            images[i, 0, y:y + 5, x + 2] += 2.0
        other = (quadrants[i] + rng.integers(1, 4)) % 4
        dy, dx = 8 * (other // 2) + rng.integers(1, 6), 8 * (other % 2) + rng.integers(1, 6)
        images[i, 0, dy:dy + 2, dx:dx + 2] += 2.0
    return torch.tensor(images, dtype=torch.float32), torch.tensor(labels), quadrants


def train_bar_model(rng: np.random.Generator, n: int = 512, epochs: int = 6) -> torch.nn.Module:
    """small-cnn trained on `n` images of bar_data (seeded by torch.manual_seed(0) and `rng`), in eval mode."""
    from convlab.models.registry import create_model

    torch.manual_seed(0)
    x, y, _ = bar_data(n, rng)
    model = create_model("small-cnn", 1, 2, (16, 16))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for start in range(0, n, 32):
            loss = torch.nn.functional.cross_entropy(model(x[start:start + 32]), y[start:start + 32])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()
