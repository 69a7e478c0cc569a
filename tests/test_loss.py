import math

import numpy as np
import torch

from faceage.core.ages import age_interval, combine, expected_age, softmax
from faceage.train.loss import age_loss


def test_dex_expectation_hand_computed():
    logits = torch.full((1, 101), -1e9)
    logits[0, 20], logits[0, 30] = 0.0, math.log(3.0)  # p(20) = 1/4, p(30) = 3/4
    assert abs(expected_age(softmax(logits.numpy().astype(np.float64)))[0] - 27.5) < 1e-6


def test_joint_loss_hand_computed():
    logits = torch.zeros(2, 101)
    logits[0, 10] = math.log(101.0)  # p(10) = 101 / (100 + 101)
    reg = torch.tensor([12.0, 50.0])
    age = torch.tensor([10, 40])
    ce0 = -math.log(101.0 / 201.0)
    ce1 = -math.log(1.0 / 101.0)
    expected = (ce0 + ce1) / 2 + 0.1 * (2.0 + 10.0) / 2
    assert abs(age_loss(logits, reg, age, 0.1).item() - expected) < 1e-5
    assert abs(age_loss(logits, reg, age, 0.0).item() - (ce0 + ce1) / 2) < 1e-5


def test_ages_over_100_are_clamped_for_the_classifier_only():
    logits = torch.zeros(1, 101)
    reg = torch.tensor([110.0])
    loss = age_loss(logits, reg, torch.tensor([116]), 0.1)
    assert abs(loss.item() - (math.log(101.0) + 0.1 * 6.0)) < 1e-5


def test_label_distribution_loss_prefers_neighbouring_ages():
    age = torch.tensor([30])
    near, far = torch.zeros(1, 101), torch.zeros(1, 101)
    near[0, 31] = 5.0
    far[0, 60] = 5.0
    reg = torch.tensor([30.0])
    assert age_loss(near, reg, age, 0.1, label_sigma=2.0) < age_loss(far, reg, age, 0.1, label_sigma=2.0)


def test_interval_and_combine():
    probs = np.zeros((1, 101))
    probs[0, 40:50] = 0.1  # uniform over 40..49 -> ages 39.5..49.5
    lo, hi = age_interval(probs, 0.8)[0]
    assert abs(lo - 40.5) < 1e-9 and abs(hi - 48.5) < 1e-9
    logits = np.log(probs + 1e-300)
    assert abs(combine(logits, np.array([50.0]), "mean")[0] - (44.5 + 50) / 2) < 1e-6
    assert combine(logits, np.array([50.0]), "reg")[0] == 50.0


def test_label_spread_grows_with_age():
    """With a slope the target for a 70-year-old is wider than for a 7-year-old: a guess 3 years
    off costs the child more than the old person, relative to a guess on the age."""
    def cost(age: int, guess: int) -> float:
        logits = torch.zeros(1, 101)
        logits[0, guess] = 8.0
        return age_loss(logits, torch.tensor([float(age)]), torch.tensor([age]), 0.0,
                        label_sigma=0.5, label_sigma_slope=0.1).item()
    child = cost(7, 10) - cost(7, 7)
    old = cost(70, 73) - cost(70, 70)
    assert child > 2 * old > 0


def test_mean_variance_terms_hand_computed():
    logits = torch.full((1, 101), -1e9)
    logits[0, 20], logits[0, 30] = 0.0, 0.0  # p(20) = p(30) = 1/2: mean 25, variance 25
    age = torch.tensor([20])
    base = age_loss(logits, torch.tensor([20.0]), age, 0.0)
    with_mv = age_loss(logits, torch.tensor([20.0]), age, 0.0, mean_weight=0.2, var_weight=0.05)
    assert abs((with_mv - base).item() - (0.2 * 0.5 * 25.0 + 0.05 * 25.0)) < 1e-4


def test_mean_term_pulls_the_expectation_to_the_true_age():
    """Cross-entropy alone is indifferent to where the rest of the mass sits; the mean term is not."""
    logits = torch.zeros(1, 101, requires_grad=True)
    age = torch.tensor([15])
    age_loss(logits, torch.tensor([15.0]), age, 0.0, mean_weight=1.0).backward()
    grad = logits.grad[0]
    assert grad[:15].mean() < 0 < grad[16:].mean()  # descent raises the young classes, lowers the old


def test_distill_loss_is_the_kl_divergence_scaled_by_the_squared_temperature():
    from faceage.train.loss import distill_loss

    teacher = torch.tensor([[0.0, math.log(3.0)]])  # p = (1/4, 3/4)
    student = torch.zeros(1, 2)  # q = (1/2, 1/2)
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert abs(distill_loss(student, teacher).item() - kl) < 1e-6
    assert distill_loss(teacher, teacher).item() < 1e-7
    # at T = 2 both are softened: p = softmax(teacher / 2), and the divergence is multiplied by 4
    p = torch.softmax(teacher / 2, -1)[0]
    kl2 = float((p * (p / 0.5).log()).sum())
    assert abs(distill_loss(student, teacher, 2.0).item() - 4 * kl2) < 1e-6


def test_median_estimate_is_the_half_quantile_of_the_interval_reading():
    from faceage.core.ages import median_age

    p = np.zeros((1, 101))
    p[0, 20], p[0, 30] = 0.25, 0.75  # half the mass is reached a third of the way into class 30
    assert abs(median_age(p)[0] - (29.5 + 0.25 / 0.75)) < 1e-9
    assert abs(combine(np.log(p + 1e-300), np.array([0.0]), "median")[0] - median_age(p)[0]) < 1e-6
    rng = np.random.default_rng(0)
    probs = softmax(rng.normal(0, 3, (50, 101)))
    assert np.allclose(median_age(probs), age_interval(probs, 0.0)[:, 0], atol=1e-9)
    # a tail toward the middle moves the median less than the expectation
    tail = np.zeros((1, 101))
    tail[0, 15], tail[0, 35] = 0.7, 0.3
    assert abs(median_age(tail)[0] - 15) < 1 < abs(expected_age(tail)[0] - 15)


def test_distilled_loss_mixes_the_distribution_terms_and_keeps_the_regression_whole():
    from faceage.train.loss import distill_loss, distilled_loss

    torch.manual_seed(0)
    logits, teacher = torch.randn(4, 101), torch.randn(4, 101)
    reg, age = torch.tensor([20.0, 30.0, 40.0, 50.0], requires_grad=True), torch.tensor([25, 30, 35, 60])
    reg_term = 0.1 * (reg - age).abs().mean()
    full = distilled_loss(logits, reg, age, teacher, 1.0, 2.0, reg_weight=0.1, label_sigma=1.0)
    assert torch.allclose(full, distill_loss(logits, teacher, 2.0) + reg_term)
    full.backward()
    assert reg.grad.abs().sum() > 0  # all weight on the teacher still trains the regression neuron
    half = distilled_loss(logits, reg, age, teacher, 0.5, reg_weight=0.1, label_sigma=1.0)
    hard = age_loss(logits, reg, age, reg_weight=0.0, label_sigma=1.0)
    assert torch.allclose(half, 0.5 * hard + 0.5 * distill_loss(logits, teacher) + reg_term)


def test_scores_share_one_distribution():
    """Scores computes the softmax once; the ages read from it equal those combine() computes on its own."""
    from faceage.core.scoring import Scores

    logits = np.random.default_rng(4).normal(0, 3, (5, 101)).astype(np.float32)
    reg = np.linspace(10, 60, 5).astype(np.float32)
    s = Scores(logits, reg, "dex", 1.3)
    assert s.probs is s.probs and not s.probs.flags.writeable
    np.testing.assert_array_equal(s.probs, softmax(logits.astype(np.float64)))
    for how in ("dex", "mean", "median", "reg"):
        np.testing.assert_array_equal(s.ages(how), combine(logits, reg, how))
    np.testing.assert_array_equal(s.interval(), age_interval(softmax(logits.astype(np.float64) / 1.3)))
