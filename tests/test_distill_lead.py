"""Tests of asr_kd.distill.lead: the lead-in mask against a loop, and the masked KL against a brute-force sum."""

import math

import torch

from asr_kd import rnnt
from asr_kd.distill import lead_mask, output_kd_loss


def _case(seed: int = 0, s_lens=(3, 0, 2), t_lens=(9, 6, 7), vocab: int = 6, prune: int = 3):
    """Pruned ranges of a random simple lattice (one utterance without labels) and its boundary."""
    g = torch.Generator().manual_seed(seed)
    batch, s_max, t_max = len(s_lens), max(s_lens), max(t_lens)
    am = torch.randn(batch, t_max, vocab, generator=g, dtype=torch.float64)
    am[:, :3, 0] += 4.0  # blank likely on the first frames: the ranges stay at u = 0 for a while
    lm = torch.randn(batch, s_max + 1, vocab, generator=g, dtype=torch.float64)
    symbols = torch.randint(1, vocab, (batch, s_max), generator=g)
    boundary = torch.zeros(batch, 4, dtype=torch.int64)
    boundary[:, 2], boundary[:, 3] = torch.tensor(s_lens), torch.tensor(t_lens)
    _, (px_grad, py_grad) = rnnt.rnnt_loss_smoothed(
        lm=lm, am=am, symbols=symbols, termination_symbol=0, boundary=boundary, reduction="sum", return_grad=True)
    return rnnt.get_rnnt_prune_ranges(px_grad, py_grad, boundary, prune), boundary


def test_mask_drops_the_unemitted_nodes_of_utterances_with_labels() -> None:
    ranges, boundary = _case(seed=3)
    keep = lead_mask(ranges, boundary)
    assert keep.shape == ranges.shape and keep.dtype == torch.float32
    for b, t, r in torch.cartesian_prod(*(torch.arange(n) for n in ranges.shape)).tolist():
        dropped = int(ranges[b, t, r]) == 0 and int(boundary[b, 2]) > 0
        assert keep[b, t, r] == (0.0 if dropped else 1.0), (b, t, r)
    assert (keep == 0).any() and (keep == 1).any()
    assert (keep[1] == 1).all()  # the utterance without labels keeps every node


def test_masked_kl_equals_the_kl_of_the_kept_nodes() -> None:
    ranges, boundary = _case(seed=5)
    keep = lead_mask(ranges, boundary)
    g = torch.Generator().manual_seed(7)
    shape = (*ranges.shape, 6)
    student = torch.randn(shape, generator=g, dtype=torch.float64)
    teacher = torch.randn(shape, generator=g, dtype=torch.float64)
    got = output_kd_loss(student, teacher, ranges, boundary, smoothing="none", occupancy=keep)
    expected = 0.0
    for b, t, r in torch.cartesian_prod(*(torch.arange(n) for n in ranges.shape)).tolist():
        valid = t < int(boundary[b, 3]) and int(ranges[b, t, r]) <= int(boundary[b, 2])
        if valid and keep[b, t, r] == 1:
            q, log_p = teacher[b, t, r].softmax(-1), student[b, t, r].log_softmax(-1)
            expected += float((q * (q.log() - log_p)).sum())
    assert math.isclose(float(got), expected, rel_tol=1e-9)
