"""get_rnnt_prune_ranges and do_rnnt_pruning: the ranges contract (k2's, stated in docs/losses.md).

``ranges[b, :, 0]`` starts at 0, never decreases and steps by less than R; the
R positions of a frame are consecutive; the range of frame T_b - 1 contains S_b.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from asr_kd.rnnt import (
    do_rnnt_pruning, get_rnnt_prune_ranges, rnnt_loss, rnnt_loss_pruned, rnnt_loss_smoothed,
)

BLANK = 0


def _occupancies(batch, num_t, num_s, vocab, seed, s_ends, t_ends, sharp=1.0):
    g = torch.Generator().manual_seed(seed)
    am = torch.randn(batch, num_t, vocab, generator=g) * sharp
    lm = torch.randn(batch, num_s + 1, vocab, generator=g) * sharp
    symbols = torch.randint(1, vocab, (batch, num_s), generator=g)
    boundary = torch.tensor([[0, 0, s, t] for s, t in zip(s_ends, t_ends)])
    _, (px_grad, py_grad) = rnnt_loss_smoothed(lm, am, symbols, BLANK, 0.25, 0.0, boundary,
                                               return_grad=True)
    return am, lm, symbols, boundary, px_grad, py_grad


def assert_ranges_contract(ranges, boundary, num_s):
    """Start 0, non-decreasing, steps < R, last valid frame covers S_b."""
    num_b, num_t, num_r = ranges.shape
    assert ranges.dtype == torch.int64
    assert torch.equal(ranges, ranges[..., :1] + torch.arange(num_r))
    assert int(ranges.min()) >= 0 and int(ranges.max()) <= num_s
    begin = ranges[..., 0]
    assert (begin[:, 0] == 0).all()
    steps = begin[:, 1:] - begin[:, :-1]
    assert (steps >= 0).all() and (steps < num_r).all()
    for b in range(num_b):
        s_end, t_end = int(boundary[b, 2]), int(boundary[b, 3])
        assert s_end in ranges[b, t_end - 1].tolist()


CONFIGS = [
    # batch, T, S, V, seed, S_b, T_b, s_range
    (4, 20, 8, 10, 0, [8, 5, 0, 8], [20, 12, 3, 9], 3),
    (3, 15, 6, 7, 1, [6, 6, 2], [15, 6, 15], 2),
    (2, 30, 12, 9, 2, [12, 10], [30, 25], 4),
    (3, 12, 9, 8, 3, [9, 1, 4], [12, 12, 4], 5),
]


@pytest.mark.parametrize("batch,num_t,num_s,vocab,seed,s_ends,t_ends,s_range", CONFIGS)
@pytest.mark.parametrize("sharp", [1.0, 6.0])
def test_ranges_satisfy_contract(batch, num_t, num_s, vocab, seed, s_ends, t_ends, s_range,
                                 sharp):
    *_, boundary, px_grad, py_grad = _occupancies(batch, num_t, num_s, vocab, seed, s_ends,
                                                  t_ends, sharp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, s_range)
    assert ranges.shape[:2] == (batch, num_t) and ranges.shape[2] >= s_range
    assert_ranges_contract(ranges, boundary, num_s)


def _peaked_model(num_t, emit_frames, symbols, vocab):
    """am/lm whose posterior is one alignment: symbol k is emitted at emit_frames[k]."""
    am = torch.full((1, num_t, vocab), -8.0)
    am[0, :, BLANK] = 8.0
    for k, t in enumerate(emit_frames):
        am[0, t, symbols[k]] = 8.0
    lm = torch.zeros(1, len(symbols) + 1, vocab)
    return am, lm, torch.tensor([symbols])


@pytest.mark.parametrize("s_range,emit_frames", [
    (2, [1, 4, 5, 7, 10, 11, 15]),  # at most one symbol per frame
    (3, [1, 4, 4, 7, 10, 10, 15]),  # two symbols on frames 4 and 10
])
def test_ranges_follow_a_peaked_alignment(s_range, emit_frames):
    """The kept nodes hold the dominant path, so pruned NLL ~= full NLL."""
    am, lm, symbols = _peaked_model(18, emit_frames, [3, 5, 2, 7, 1, 4, 6], vocab=9)
    boundary = torch.tensor([[0, 0, 7, 18]])
    _, (px_grad, py_grad) = rnnt_loss_smoothed(lm, am, symbols, BLANK, 0.0, 0.0, boundary,
                                               return_grad=True)
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, s_range)
    assert_ranges_contract(ranges, boundary, 7)
    # Node (s, t) of the dominant path: s = symbols emitted before frame t (+ those at t).
    for t in range(18):
        before = sum(1 for f in emit_frames if f < t)
        upto = sum(1 for f in emit_frames if f <= t)
        kept = set(ranges[0, t].tolist())
        assert set(range(before, upto + 1)) <= kept, (t, kept)
    am_p, lm_p = do_rnnt_pruning(am, lm, ranges)
    pruned = rnnt_loss_pruned(am_p + lm_p, symbols, ranges, BLANK, boundary, reduction="none")
    full = rnnt_loss(am.unsqueeze(2) + lm.unsqueeze(1), symbols, BLANK, boundary,
                     reduction="none")
    assert float(pruned - full) < 1e-3


def test_small_s_range_is_raised_with_warning():
    *_, boundary, px_grad, py_grad = _occupancies(2, 5, 10, 6, 5, [10, 3], [5, 5])
    with pytest.warns(UserWarning, match="s_range=2"):
        ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, 2)
    assert ranges.shape[-1] == 3  # ceil(10 / 5) + 1
    assert_ranges_contract(ranges, boundary, 10)


def test_s_range_clamped_to_s_plus_one():
    *_, boundary, px_grad, py_grad = _occupancies(2, 6, 3, 5, 6, [3, 1], [6, 4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, 10)
    assert ranges.shape == (2, 6, 4)
    assert torch.equal(ranges, torch.arange(4).expand(2, 6, 4))


def test_empty_symbol_sequences():
    """S = 0: one position per frame, the all-blank lattice."""
    am = torch.randn(2, 4, 5)
    lm = torch.randn(2, 1, 5)
    symbols = torch.zeros(2, 0, dtype=torch.int64)
    boundary = torch.tensor([[0, 0, 0, 4], [0, 0, 0, 2]])
    _, (px_grad, py_grad) = rnnt_loss_smoothed(lm, am, symbols, BLANK, boundary=boundary,
                                               return_grad=True)
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, 5)
    assert ranges.shape == (2, 4, 1) and int(ranges.abs().sum()) == 0
    am_p, lm_p = do_rnnt_pruning(am, lm, ranges)
    pruned = rnnt_loss_pruned(am_p + lm_p, symbols, ranges, BLANK, boundary, reduction="none")
    logp = torch.log_softmax(am + lm, dim=-1)[..., BLANK]
    torch.testing.assert_close(pruned, torch.stack([-logp[0].sum(), -logp[1, :2].sum()]))


def test_do_rnnt_pruning_gathers_and_back_propagates():
    g = torch.Generator().manual_seed(7)
    am = torch.randn(2, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    lm = torch.randn(2, 4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    begin = torch.tensor([[0, 0, 1, 1, 2], [0, 1, 1, 2, 2]])
    ranges = begin.unsqueeze(-1) + torch.arange(2)
    am_p, lm_p = do_rnnt_pruning(am, lm, ranges)
    assert am_p.shape == (2, 5, 2, 3) and lm_p.shape == (2, 5, 2, 6)
    for b in range(2):
        for t in range(5):
            for r in range(2):
                assert torch.equal(am_p[b, t, r], am[b, t])
                assert torch.equal(lm_p[b, t, r], lm[b, ranges[b, t, r]])
    weights_a = torch.randn(am_p.shape, generator=g, dtype=torch.float64)
    weights_l = torch.randn(lm_p.shape, generator=g, dtype=torch.float64)
    got = torch.autograd.grad((am_p * weights_a).sum() + (lm_p * weights_l).sum(), [am, lm])
    lm_ref = lm.unsqueeze(1).expand(2, 5, 4, 6).gather(
        2, ranges.unsqueeze(-1).expand(2, 5, 2, 6))
    ref = torch.autograd.grad(
        (am.unsqueeze(2).expand(2, 5, 2, 3) * weights_a).sum() + (lm_ref * weights_l).sum(),
        [am, lm])
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b)
