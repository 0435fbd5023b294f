"""DINOLoss against the DINO cross-entropy worked out by hand in numpy on a tiny fixed input.

Caron et al. 2021: for every teacher (global) view g and every student view v != g,
H(P_t, P_s) = -sum_k P_t[k] log P_s[k], with P_t = softmax((t - centre) / tau_t) and
log P_s = log_softmax(s / tau_s); the loss is the mean of H over the batch and over those
pairs. The centre then moves to m * centre + (1 - m) * mean of the teacher outputs.
"""

import numpy as np
import pytest
import torch

from cmrtrain.dino import DINOLoss

OUT_DIM, BATCH, N_CROPS, N_GLOBAL = 5, 2, 4, 2


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(x):
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def by_hand(student, teacher, centre, tau_t, tau_s):
    """student [N_CROPS, BATCH, OUT_DIM], teacher [N_GLOBAL, BATCH, OUT_DIM] (float64)."""
    terms = []
    for g in range(N_GLOBAL):
        p_t = softmax((teacher[g] - centre) / tau_t)
        for v in range(N_CROPS):
            if v == g:
                continue
            log_p_s = log_softmax(student[v] / tau_s)
            terms.append(np.mean(-(p_t * log_p_s).sum(axis=-1)))
    assert len(terms) == N_GLOBAL * (N_CROPS - 1)
    return float(np.mean(terms))


def test_dino_loss_matches_the_cross_entropy_computed_by_hand():
    rng = np.random.default_rng(2024)
    student = rng.normal(size=(N_CROPS, BATCH, OUT_DIM))
    teacher = rng.normal(size=(N_GLOBAL, BATCH, OUT_DIM))
    # Make the same-view pair matter: global student view 0 agrees with teacher view 0 strongly.
    student[0] = 3 * teacher[0]
    centre = np.array([0.3, -0.2, 0.1, 0.0, -0.4])
    loss_fn = DINOLoss(OUT_DIM, N_CROPS, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_epochs=3,
                       student_temp=0.1, center_momentum=0.9, n_global=N_GLOBAL)
    loss_fn.center.copy_(torch.tensor(centre[None], dtype=torch.float32))

    # Epoch 1 of a 3-epoch warm-up: tau_t half-way from 0.04 to 0.07.
    got = loss_fn(torch.tensor(student.reshape(-1, OUT_DIM), dtype=torch.float32),
                  torch.tensor(teacher.reshape(-1, OUT_DIM), dtype=torch.float32), epoch=1).item()

    assert got == pytest.approx(by_hand(student, teacher, centre, 0.055, 0.1), rel=1e-4)
    # Not the same number without the centring.
    assert got != pytest.approx(by_hand(student, teacher, np.zeros(OUT_DIM), 0.055, 0.1), rel=1e-3)
    # The centre moved towards the teacher's batch mean.
    expected_centre = 0.9 * centre + 0.1 * teacher.reshape(-1, OUT_DIM).mean(axis=0)
    assert loss_fn.center.numpy()[0] == pytest.approx(expected_centre, abs=1e-6)


def test_the_same_view_pair_is_left_out():
    rng = np.random.default_rng(7)
    student = rng.normal(size=(N_CROPS, BATCH, OUT_DIM))
    teacher = rng.normal(size=(N_GLOBAL, BATCH, OUT_DIM))
    loss_fn = DINOLoss(OUT_DIM, N_CROPS, warmup_epochs=1, teacher_temp=0.07, student_temp=0.1, n_global=N_GLOBAL)
    got = loss_fn(torch.tensor(student.reshape(-1, OUT_DIM), dtype=torch.float32),
                  torch.tensor(teacher.reshape(-1, OUT_DIM), dtype=torch.float32), epoch=5).item()
    with_same = []
    for g in range(N_GLOBAL):
        p_t = softmax(teacher[g] / 0.07)
        for v in range(N_CROPS):
            with_same.append(np.mean(-(p_t * log_softmax(student[v] / 0.1)).sum(axis=-1)))
    assert got == pytest.approx(by_hand(student, teacher, np.zeros(OUT_DIM), 0.07, 0.1), rel=1e-4)
    assert got != pytest.approx(float(np.mean(with_same)), rel=1e-3)
