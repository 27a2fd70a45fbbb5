"""scratch_optimizer: each --optimizer name gets its own scratch optimizer; unknown names are refused."""
from __future__ import annotations

import numpy as np
import pytest

from convlab import scratch
from convlab.config import OptimConfig
from convlab.errors import ConvlabError
from convlab.training.optim import OPTIMIZERS
from convlab.training.scratch_engine import SCRATCH_OPTIMIZERS, scratch_optimizer


def _params():
    return [scratch.nn.Parameter(np.ones(3, dtype=np.float32))]


@pytest.mark.parametrize("name, kind", [("sgd", scratch.optim.SGD), ("adam", scratch.optim.Adam),
                                        ("adamw", scratch.optim.AdamW)])
def test_each_name_builds_its_own_optimizer_with_the_config(name, kind):
    optimizer = scratch_optimizer(_params(), OptimConfig(optimizer=name, lr=0.02, weight_decay=0.1))
    assert type(optimizer) is kind
    assert optimizer.lr == 0.02 and optimizer.weight_decay == 0.1


def test_sgd_gets_momentum_and_nesterov():
    optimizer = scratch_optimizer(_params(), OptimConfig(optimizer="sgd", momentum=0.8))
    assert optimizer.momentum == 0.8 and optimizer.nesterov is True


def test_the_scratch_engine_offers_the_torch_engine_names():
    assert sorted(SCRATCH_OPTIMIZERS) == sorted(OPTIMIZERS)


def test_an_unknown_name_is_refused_naming_the_option_and_the_choices():
    with pytest.raises(ConvlabError) as caught:
        scratch_optimizer(_params(), OptimConfig(optimizer="rmsprop"))
    message = str(caught.value)
    assert message.startswith("--optimizer rmsprop:")
    assert "sgd, adam, adamw" in message and "\n" not in message
