"""Tests of asr_kd.distill.lead: the teacher's first-label frame and the lead-in mask, against loops."""

import math

import torch

from asr_kd import rnnt
from asr_kd.distill import first_label_frames, lead_mask, output_kd_loss


def _lattice(seed: int = 0, s_lens=(3, 0, 2), t_lens=(9, 6, 7), vocab: int = 6, prune: int = 3):
    """A random simple lattice: (px_grad, ranges, boundary) with one label-free utterance."""
    g = torch.Generator().manual_seed(seed)
    batch, s_max, t_max = len(s_lens), max(s_lens), max(t_lens)
    am = torch.randn(batch, t_max, vocab, generator=g, dtype=torch.float64)
    am[:, :3, 0] += 4.0  # a lead-in: blank is likely on the first frames
    lm = torch.randn(batch, s_max + 1, vocab, generator=g, dtype=torch.float64)
    symbols = torch.randint(1, vocab, (batch, s_max), generator=g)
    boundary = torch.zeros(batch, 4, dtype=torch.int64)
    boundary[:, 2], boundary[:, 3] = torch.tensor(s_lens), torch.tensor(t_lens)
    _, (px_grad, py_grad) = rnnt.rnnt_loss_smoothed(
        lm=lm, am=am, symbols=symbols, termination_symbol=0, boundary=boundary, reduction="sum", return_grad=True)
    ranges = rnnt.get_rnnt_prune_ranges(px_grad, py_grad, boundary, prune)
    return px_grad, ranges, boundary


def test_first_label_frame_is_the_median_of_the_teacher_occupancy() -> None:
    px_grad, _, boundary = _lattice()
    t1 = first_label_frames(px_grad, boundary)
    for b in range(boundary.size(0)):
        s_b, t_b = int(boundary[b, 2]), int(boundary[b, 3])
        if s_b == 0:
            assert t1[b] == 0
            continue
        occ = px_grad[b, 0, :t_b].tolist()
        assert math.isclose(sum(occ), 1.0, rel_tol=1e-9)  # the first label is emitted exactly once
        total, expected = 0.0, None
        for t, p in enumerate(occ):
            total += p
            if total >= 0.5:
                expected = t
                break
        assert int(t1[b]) == expected


def test_mask_drops_only_unemitted_nodes_before_the_first_label() -> None:
    px_grad, ranges, boundary = _lattice(seed=3)
    keep = lead_mask(px_grad, ranges, boundary)
    t1 = first_label_frames(px_grad, boundary)
    assert keep.shape == ranges.shape and keep.dtype == torch.float32
    for b, t, r in torch.cartesian_prod(*(torch.arange(n) for n in ranges.shape)).tolist():
        dropped = int(ranges[b, t, r]) == 0 and t < int(t1[b])
        assert keep[b, t, r] == (0.0 if dropped else 1.0), (b, t, r)
    assert (keep == 0).any()  # the lattice has a lead-in to drop
    assert (keep[1] == 1).all()  # the utterance without labels keeps every node


def test_masked_kl_equals_the_kl_of_the_kept_nodes() -> None:
    px_grad, ranges, boundary = _lattice(seed=5)
    keep = lead_mask(px_grad, ranges, boundary)
    g = torch.Generator().manual_seed(7)
    shape = (*ranges.shape, 6)
    student, teacher = torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g,
                                                                                     dtype=torch.float64)
    got = output_kd_loss(student, teacher, ranges, boundary, smoothing="none", occupancy=keep)
    expected = 0.0
    for b, t, r in torch.cartesian_prod(*(torch.arange(n) for n in ranges.shape)).tolist():
        valid = t < int(boundary[b, 3]) and int(ranges[b, t, r]) <= int(boundary[b, 2])
        if valid and keep[b, t, r] == 1:
            q, log_p = teacher[b, t, r].softmax(-1), student[b, t, r].log_softmax(-1)
            expected += float((q * (q.log() - log_p)).sum())
    assert math.isclose(float(got), expected, rel_tol=1e-9)
