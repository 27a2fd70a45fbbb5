"""Segmentation losses: the soft Dice against a hand computation and finite differences (float64), cross-entropy
against torch's on the pixels that count, ignored pixels, the aux head's weight."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from convlab.errors import ConvlabError
from convlab.segmentation.losses import LOSSES, build_segmentation_loss, cross_entropy, soft_dice

IGNORE = 255


def _hand_case(extra_class: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Four pixels in a row, masks 0, 1, 1, ignored; P(class 1) = 0.25, 0.75, 0.5, 0.9 (logits = log p).

    Class 0: overlap 0.75, |P| = 0.75 + 0.25 + 0.5 = 1.5, |T| = 1 -> Dice 1.5 / 2.5 = 0.6.
    Class 1: overlap 0.75 + 0.5 = 1.25, |P| = 0.25 + 0.75 + 0.5 = 1.5, |T| = 2 -> Dice 2.5 / 3.5 = 5/7.
    Loss: 1 - (0.6 + 5/7) / 2 = 12/35. The ignored pixel counts nowhere. A third class that no mask holds
    and that gets (about) no probability is left out of the mean, so the loss is the same."""
    p1 = torch.tensor([0.25, 0.75, 0.5, 0.9], dtype=torch.float64)
    rows = [p1.new_tensor(1.0) - p1, p1] + ([torch.full_like(p1, 1e-300)] if extra_class else [])
    logits = torch.stack(rows).log().view(1, len(rows), 1, 4)
    return logits, torch.tensor([[[0, 1, 1, IGNORE]]])


@pytest.mark.parametrize("extra_class", [False, True])
def test_the_dice_loss_matches_a_hand_computation(extra_class):
    logits, mask = _hand_case(extra_class)
    assert soft_dice(logits, mask).item() == pytest.approx(12 / 35, abs=1e-12)


def test_the_dice_loss_is_zero_for_a_sure_right_answer_and_one_for_a_sure_wrong_one():
    mask = torch.tensor([[[0, 1], [2, 1]]])
    sure = F.one_hot(mask, 3).permute(0, 3, 1, 2).double() * 100
    assert soft_dice(sure, mask).item() == pytest.approx(0.0, abs=1e-12)
    assert soft_dice(sure, (mask + 1) % 3).item() == pytest.approx(1.0, abs=1e-12)


def test_the_dice_loss_passes_a_float64_gradient_check():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    mask = torch.randint(0, 3, (2, 4, 5))
    mask[0, 0, :3] = IGNORE
    assert torch.autograd.gradcheck(lambda x: soft_dice(x, mask), (logits,))


def test_the_dice_gradient_of_the_hand_case_by_finite_differences():
    """d loss / d logit of the ignored pixel is 0; elsewhere central differences agree with autograd."""
    logits, mask = _hand_case()
    logits.requires_grad_(True)
    soft_dice(logits, mask).backward()
    step = 1e-6
    for pixel in range(4):
        bumped = [logits.detach().clone() for _ in range(2)]
        bumped[0][0, 1, 0, pixel] += step
        bumped[1][0, 1, 0, pixel] -= step
        numeric = (soft_dice(bumped[0], mask) - soft_dice(bumped[1], mask)).item() / (2 * step)
        assert logits.grad[0, 1, 0, pixel].item() == pytest.approx(numeric, abs=1e-7)
    assert logits.grad[0, :, 0, 3].abs().max().item() == 0.0


def test_cross_entropy_is_torchs_over_the_pixels_that_count():
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    mask = torch.randint(0, 4, (2, 3, 3))
    mask[1, 2] = IGNORE
    kept = mask != IGNORE
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[kept], mask[kept])
    assert cross_entropy(logits, mask).item() == pytest.approx(expected.item(), abs=1e-12)


@pytest.mark.parametrize("name", list(LOSSES))
def test_a_batch_with_every_pixel_ignored_teaches_nothing(name):
    logits = torch.randn(1, 2, 2, 2, requires_grad=True)
    loss = build_segmentation_loss(name)(logits, torch.full((1, 2, 2), IGNORE))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad.abs().max().item() == 0.0


def test_dice_plus_ce_is_their_sum():
    logits, mask = _hand_case()
    expected = 12 / 35 + (-math.log(0.75) - math.log(0.75) - math.log(0.5)) / 3
    assert build_segmentation_loss("dice+ce")(logits, mask).item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("name", list(LOSSES))
def test_the_aux_heads_loss_is_added_at_its_weight(name):
    torch.manual_seed(2)
    out, aux = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    mask = torch.randint(0, 3, (2, 4, 4), dtype=torch.uint8)  # masks arrive as uint8 from the files
    loss, pixel_loss = build_segmentation_loss(name, aux_weight=0.4), LOSSES[name]
    expected = pixel_loss(out, mask.long(), IGNORE) + 0.4 * pixel_loss(aux, mask.long(), IGNORE)
    assert loss({"out": out, "aux": aux}, mask).item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss({"out": out, "aux": None}, mask).item() == pytest.approx(loss(out, mask).item(), rel=1e-6)


def test_an_unknown_loss_is_refused_with_the_known_ones():
    with pytest.raises(ConvlabError, match=r"--loss dice\+bce: no such segmentation loss. Did you mean dice\+ce"):
        build_segmentation_loss("dice+bce")
