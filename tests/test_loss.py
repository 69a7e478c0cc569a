import math

import numpy as np
import torch

from faceage.ages import age_interval, combine, expected_age, softmax
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
