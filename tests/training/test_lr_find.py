"""The learning-rate finder's parts: the exponential ramp, fastai's smoothing and its two suggestion rules, checked
by hand and on a synthetic loss curve whose descending part is known."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from convlab.errors import ConvlabError
from convlab.training.lr_find import Finding, Ramp, run_ramp, smooth, steepest, valley


def test_the_ramp_multiplies_the_rate_by_one_factor_per_step():
    # 1e-7 to 10 in 9 rates is 8 steps of one decade each: 1e-7, 1e-6, ..., 10
    assert Ramp(1e-7, 10.0, 9).rates() == pytest.approx([10.0 ** k for k in range(-7, 2)], rel=1e-12)
    rates = Ramp().rates()  # fastai's defaults: 100 rates from 1e-7 to 10
    assert len(rates) == 100 and rates[0] == pytest.approx(1e-7) and rates[-1] == pytest.approx(10.0)
    assert np.diff(np.log(rates)) == pytest.approx(np.full(99, math.log(1e8) / 99))


def test_smoothing_is_the_debiased_moving_average():
    # beta 0.5 by hand: averages 0.5, 1.25, 2.125 over 1 - 0.5^i = 0.5, 0.75, 0.875
    assert smooth([1.0, 2.0, 3.0], beta=0.5) == pytest.approx([1.0, 1.25 / 0.75, 2.125 / 0.875])
    assert smooth([2.3] * 50) == pytest.approx([2.3] * 50)  # debiased: a constant loss stays itself


def test_valley_is_the_middle_of_the_longest_decreasing_run():
    # longest strictly decreasing subsequence ending at each point: 1 2 1 3 4 1 5 1; the longest (5) ends at
    # index 6 and starts 4 points earlier, at 2; its length 4 in thirds: 2 + int(4/3) + int(4/6) = 3
    assert valley([5, 4, 6, 3, 2, 7, 1, 8]) == 3


def test_steepest_is_the_most_negative_slope_against_log_rate():
    # slopes per ln(10): -0.5, -1.5, -0.1: the second segment, which starts at rate 10
    assert steepest([1, 10, 100, 1000], [3.0, 2.5, 1.0, 0.9]) == 1


def synthetic_curve(rates):
    """A range test's loss against log10(rate): a noisy plateau at 2.3, a fall of 1.5 centred at 1e-3, a minimum
    near 1e-1, then divergence."""
    x = np.log10(rates)
    noise = np.random.default_rng(0).normal(0, 0.01, len(x))
    return 2.3 - 1.5 / (1 + np.exp(-3 * (x + 3))) + 4 * np.clip(x + 1, 0, None) ** 2 + noise


@pytest.mark.parametrize("smoothed", [False, True])
def test_both_suggestions_lie_on_the_descending_part(smoothed):
    rates = Ramp().rates()
    losses = synthetic_curve(rates)
    finding = Finding(Ramp(), list(rates), list(losses))
    if smoothed:  # as the finder sees it: smoothed, the ends trimmed
        found = finding.suggestions()
    else:
        found = {"valley": rates[valley(losses)], "steepest": rates[steepest(rates, losses)]}
    curve = finding.smoothed if smoothed else losses
    lowest = rates[int(np.argmin(curve))]
    started = rates[np.argmax(curve < 2.3 - 0.1)]  # the fall has begun: 0.1 below the plateau
    for name, lr in found.items():
        assert started <= lr < lowest, (name, lr, started, lowest)
        here = np.interp(np.log(lr), np.log(rates), curve)
        assert 2.3 - 1.5 < here < 2.3 - 0.1, (name, lr, here)  # below the plateau, above the bottom
    if smoothed:  # the moving average lags the curve: its fall is steepest a little later
        assert 1e-3 <= found["steepest"] < 1e-2
    else:
        assert found["steepest"] == pytest.approx(1e-3, rel=0.25)  # the fall is steepest at 1e-3


def test_a_curve_that_diverges_at_once_has_no_suggestion():
    finding = Finding(Ramp(), [1e-7, 2e-7, 4e-7], [1.0, 9.0, 90.0], stopped_early=True)
    with pytest.raises(ConvlabError, match="too early to suggest a rate; lower --end-lr"):
        finding.suggestions()


@pytest.mark.parametrize("ramp, flag", [(Ramp(steps=0), "--steps"), (Ramp(steps=5000), "--steps"),
                                        (Ramp(start=0.0), "--start-lr"), (Ramp(start=1.0, end=0.5), "--end-lr")])
def test_a_range_it_cannot_run_is_refused_by_flag(ramp, flag):
    with pytest.raises(ConvlabError, match=f"invalid value for {flag}"):
        ramp.check()


class TwoWeights(nn.Module):
    """Two parameters whose loss a + b + 100 has gradient 1 each: plain SGD moves each by exactly its rate."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.b = nn.Parameter(torch.zeros((), dtype=torch.float64))


def linear_step(model, batch, loss_fn):
    return model.a + model.b + 100.0, 1, None


def test_the_ramp_sets_every_group_at_its_ratio_and_steps_once_per_rate():
    model, ramp = TwoWeights(), Ramp(1e-3, 1.0, 12)
    # a fine-tune's groups: the head at the rate, the backbone at a tenth of it
    optimizer = torch.optim.SGD([{"params": [model.a], "lr": 0.5}, {"params": [model.b], "lr": 0.05}], lr=0.5)
    seen = []
    finding = run_ramp(model, [None] * 5, optimizer, None, linear_step, ramp,
                       on_step=lambda i, lr, loss: seen.append([g["lr"] for g in optimizer.param_groups]))
    rates = ramp.rates()
    assert finding.lrs == pytest.approx(rates) and not finding.stopped_early  # 12 steps over a loader of 5
    assert np.array(seen) == pytest.approx(np.stack([rates, rates / 10], axis=1))
    with torch.no_grad():  # each SGD step moved a by its rate and b by a tenth: the sums, by hand
        assert float(model.a) == pytest.approx(-rates.sum(), rel=1e-12)
        assert float(model.b) == pytest.approx(-rates.sum() / 10, rel=1e-12)
    assert finding.losses[0] == 100.0 and finding.losses[1] == pytest.approx(100 - rates[0] * 1.1)


def test_the_ramp_stops_once_the_smoothed_loss_passes_four_times_its_minimum():
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(64)  # noise: the loss never reaches 0
    model = nn.Linear(4, 1)

    def step(model, batch, loss_fn):
        return loss_fn(model(batch[0]).squeeze(1), batch[1]), len(batch[1]), None

    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    finding = run_ramp(model, [(x, y)], optimizer, nn.MSELoss(), step, Ramp(1e-4, 100.0, 200))
    assert finding.stopped_early and len(finding.lrs) < 200  # plain SGD on least squares diverges past lr ~1
    smoothed = finding.smoothed
    assert smoothed[-1] > 4 * smoothed.min() or not np.isfinite(smoothed[-1])
    assert all(smoothed[i] <= 4 * smoothed[:i + 1].min() for i in range(len(smoothed) - 1))  # not one step later
