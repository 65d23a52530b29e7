import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ccdseg.errors import ConfigError
from ccdseg.nn.losses import (
    LOSSES,
    class_counts,
    class_weights,
    class_weights_from_counts,
    dice_loss,
    distillation_loss,
    focal_loss,
    make_loss,
    weighted_cross_entropy,
)


def batch(seed=0, shape=(2, 4, 6, 5)):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=generator)
    labels = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=generator)
    labels[0, :2, :3] = 255
    labels[1, 4, 1] = 255
    return logits, labels


def test_class_weights_for_a_known_label_array():
    labels = np.array([[0, 0, 0, 1], [1, 3, 255, 255]], dtype=np.uint8)
    assert class_counts(labels).tolist() == [3, 2, 0, 1]
    # N = 6 labelled pixels, 3 classes present: w = 6 / (3 n_c)
    np.testing.assert_allclose(class_weights(labels), [2 / 3, 1.0, 0.0, 2.0])
    counts = class_counts(labels[:1]) + class_counts(labels[1:])
    np.testing.assert_allclose(class_weights_from_counts(counts), class_weights(labels))
    weights = class_weights(labels)
    assert np.sum(weights * class_counts(labels)) / 6 == pytest.approx(1.0)  # pixel-averaged weight
    with pytest.raises(ValueError, match="no labelled pixels"):
        class_weights(np.full((2, 2), 255))
    with pytest.raises(ValueError, match="labels must be 0-3"):
        class_counts([0, 4])


def test_cross_entropy_by_hand_and_against_torch():
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, -1.0]]).reshape(2, 4, 1, 1)
    labels = torch.tensor([0, 3]).reshape(2, 1, 1)
    z0 = 3 + math.exp(2)
    z1 = 1 + math.e + 1 + math.exp(-1)
    nll = [-(2 - math.log(z0)), -(-1 - math.log(z1))]
    assert weighted_cross_entropy(logits, labels).item() == pytest.approx(sum(nll) / 2, rel=1e-6)
    w = [0.5, 1.0, 1.0, 3.0]
    expected = (0.5 * nll[0] + 3.0 * nll[1]) / 3.5
    assert weighted_cross_entropy(logits, labels, w).item() == pytest.approx(expected, rel=1e-6)

    logits, labels = batch()
    weights = torch.tensor([0.3, 1.0, 2.0, 4.0])
    reference = F.cross_entropy(logits, labels, weight=weights, ignore_index=255)
    assert torch.allclose(weighted_cross_entropy(logits, labels, weights), reference)
    assert torch.allclose(make_loss("ce", weights.numpy())(logits, labels.to(torch.uint8)), reference)


def test_focal_with_gamma_zero_equals_cross_entropy_and_focuses_otherwise():
    logits, labels = batch(seed=1)
    weights = [0.3, 1.0, 2.0, 4.0]
    for w in (None, weights):
        assert torch.allclose(focal_loss(logits, labels, 0.0, w), weighted_cross_entropy(logits, labels, w))
    # one pixel, p_true = 0.9: focal = -(0.1)**2 log 0.9
    logit = torch.tensor([math.log(0.9), math.log(0.1 / 3)] + [math.log(0.1 / 3)] * 2).reshape(1, 4, 1, 1)
    value = focal_loss(logit, torch.zeros(1, 1, 1, dtype=torch.long), gamma=2.0).item()
    assert value == pytest.approx(-(0.1 ** 2) * math.log(0.9), rel=1e-5)


def test_dice_perfect_prediction_is_zero_and_wrong_prediction_is_large():
    _, labels = batch(seed=2)
    target = torch.where(labels == 255, 0, labels)
    perfect = 30.0 * F.one_hot(target, 4).permute(0, 3, 1, 2).float()
    assert dice_loss(perfect, labels).item() < 1e-3
    wrong = 30.0 * F.one_hot((target + 1) % 4, 4).permute(0, 3, 1, 2).float()
    assert dice_loss(wrong, labels).item() > 0.95
    # by hand: 2 pixels of class 0, predicted uniformly: p = 1/4 everywhere
    uniform = torch.zeros(1, 4, 1, 2)
    labels0 = torch.zeros(1, 1, 2, dtype=torch.long)
    dice_0 = (2 * 0.5 + 1) / (0.5 + 2 + 1)
    dice_other = 1 / (0.5 + 1)
    expected = 1 - (dice_0 + 3 * dice_other) / 4
    assert dice_loss(uniform, labels0).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", LOSSES)
def test_ignored_pixels_do_not_affect_any_loss(name):
    logits, labels = batch(seed=3)
    loss = make_loss(name, weights=[0.5, 1.0, 2.0, 3.0], gamma=2.0)
    ignored = labels == 255
    logits = logits.requires_grad_()
    value = loss(logits, labels)
    value.backward()
    assert torch.all(logits.grad.permute(0, 2, 3, 1)[ignored] == 0)
    changed = logits.detach().clone()
    changed.permute(0, 2, 3, 1)[ignored] = 100.0
    assert torch.allclose(loss(changed, labels), value)
    # the same as the loss over the labelled pixels alone
    kept = logits.detach().permute(0, 2, 3, 1)[~ignored]
    alone = loss(kept.T.reshape(1, 4, -1, 1), labels[~ignored].reshape(1, -1, 1))
    assert torch.allclose(alone, value)
    assert loss(logits, torch.full_like(labels, 255)).item() == 0.0


def test_ce_plus_dice_is_the_sum_and_bad_options_are_rejected():
    logits, labels = batch(seed=4)
    total = make_loss("ce+dice")(logits, labels)
    assert torch.allclose(total, weighted_cross_entropy(logits, labels) + dice_loss(logits, labels))
    with pytest.raises(ConfigError, match="'lovasz'"):
        make_loss("lovasz")
    with pytest.raises(ConfigError, match="weights"):
        make_loss("ce", weights=[1.0, -1.0, 1.0, 1.0])
    with pytest.raises(ConfigError, match="gamma"):
        make_loss("focal", gamma=-1)


def test_bf16_logits_are_computed_in_float32():
    logits, labels = batch(seed=5)
    value = weighted_cross_entropy(logits.to(torch.bfloat16), labels)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(weighted_cross_entropy(logits, labels).item(), rel=0.02)


def test_distillation_loss_is_the_kl_divergence_from_the_teacher():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    assert distillation_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)
    expected = F.kl_div(F.log_softmax(student, 1), F.log_softmax(teacher, 1), log_target=True,
                        reduction="none").sum(1).mean()
    assert distillation_loss(student, teacher).item() == pytest.approx(expected.item(), rel=1e-6)
    assert distillation_loss(student, teacher).item() > 0
