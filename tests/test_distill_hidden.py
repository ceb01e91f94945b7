"""Tests of asr_kd.distill.hidden_mse_loss."""

import pytest
import torch

from asr_kd.distill import hidden_mse_loss


def _brute_force(student, teacher, lengths):
    total, count = 0.0, 0
    for b in range(student.shape[0]):
        for t in range(int(lengths[b])):
            for d in range(student.shape[2]):
                total += (float(student[b, t, d]) - float(teacher[b, t, d])) ** 2
                count += 1
    return total / count


def test_matches_brute_force_and_ignores_padding():
    student = torch.randn(3, 7, 5, requires_grad=True)
    teacher = torch.randn(3, 7, 5, requires_grad=True)
    lengths = torch.tensor([7, 3, 5])
    loss = hidden_mse_loss(student, teacher, lengths)
    assert loss.dim() == 0
    assert abs(loss.item() - _brute_force(student.detach(), teacher.detach(), lengths)) < 1e-5

    # Garbage in padded frames changes nothing and gets no gradient.
    s2 = student.detach().clone()
    t2 = teacher.detach().clone()
    s2[1, 3:] = float("nan")
    t2[2, 5:] = float("inf")
    s2.requires_grad_(True)
    loss2 = hidden_mse_loss(s2, t2, lengths)
    assert torch.equal(loss2, hidden_mse_loss(student.detach(), teacher.detach(), lengths))
    loss2.backward()
    assert torch.isfinite(s2.grad).all()
    assert bool((s2.grad[1, 3:] == 0).all()) and bool((s2.grad[2, 5:] == 0).all())

    # The teacher never receives gradient.
    loss.backward()
    assert teacher.grad is None
    assert student.grad is not None


def test_gradient_is_2_diff_over_count():
    student = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 4, 3, dtype=torch.float64)
    lengths = torch.tensor([4, 2])
    hidden_mse_loss(student, teacher, lengths).backward()
    count = (4 + 2) * 3
    expected = 2 * (student.detach() - teacher) / count
    expected[1, 2:] = 0
    torch.testing.assert_close(student.grad, expected)


@pytest.mark.parametrize(
    "student,teacher,lengths",
    [
        (torch.randn(2, 4, 3), torch.randn(2, 4, 5), torch.tensor([4, 4])),
        (torch.randn(2, 4), torch.randn(2, 4), torch.tensor([4, 4])),
        (torch.randn(2, 4, 3), torch.randn(2, 4, 3), torch.tensor([4, 5])),
        (torch.randn(2, 4, 3), torch.randn(2, 4, 3), torch.tensor([4])),
        (torch.randn(2, 4, 3), torch.randn(2, 4, 3), torch.tensor([0, 0])),
        (torch.randn(2, 4, 3), torch.randn(2, 4, 3), torch.tensor([4.0, 4.0])),
    ],
)
def test_bad_inputs_raise(student, teacher, lengths):
    with pytest.raises(ValueError):
        hidden_mse_loss(student, teacher, lengths)
