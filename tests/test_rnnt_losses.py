"""Transducer losses against a brute-force Graves-style DP (float64).

The reference works on per-node log-probabilities ``logp[t, s, v]`` (frame t,
s symbols emitted) built directly from the definitions -- log_softmax of the
joiner output, or k2's smoothed interpolation -- and walks the lattice cell
by cell::

    alpha(0, 0) = 0
    alpha(t, s) = logadd(alpha(t-1, s) + logp[t-1, s, blank],
                         alpha(t, s-1) + logp[t, s-1, y_s] + penalty(t))
    NLL = -(alpha(T_b - 1, S_b) + logp[T_b - 1, S_b, blank])

with ``penalty(t) = delay_penalty * ((T_b - 1) / 2 - t)`` (k2's definition)
and, for the pruned loss, arcs only out of nodes kept by ``ranges``.
"""

from __future__ import annotations

import pytest
import torch

from asr_kd.rnnt import (
    do_rnnt_pruning, get_rnnt_prune_ranges, rnnt_loss, rnnt_loss_pruned, rnnt_loss_simple,
    rnnt_loss_smoothed,
)

BLANK = 0
F64 = torch.float64


def reference_nll(logp, symbols, s_end, t_end, delay_penalty=0.0, kept=None):
    """Brute-force NLL of one utterance; logp (T, S+1, V), kept (T, S+1) bool or None."""
    alpha = {(0, 0): logp.new_zeros(())}

    def ok(t, s):
        return kept is None or bool(kept[t, s])

    for t in range(t_end):
        for s in range(s_end + 1):
            if (t, s) == (0, 0):
                continue
            terms = []
            if t > 0 and (t - 1, s) in alpha and ok(t - 1, s):
                terms.append(alpha[t - 1, s] + logp[t - 1, s, BLANK])
            if s > 0 and (t, s - 1) in alpha and ok(t, s - 1):
                bonus = delay_penalty * ((t_end - 1) / 2 - t)
                terms.append(alpha[t, s - 1] + logp[t, s - 1, int(symbols[s - 1])] + bonus)
            if terms:
                alpha[t, s] = torch.logsumexp(torch.stack(terms), dim=0)
    assert ok(t_end - 1, s_end)
    return -(alpha[t_end - 1, s_end] + logp[t_end - 1, s_end, BLANK])


def reference_batch(logp_fn, symbols, boundary, **kw):
    """(B,) reference NLLs; ``logp_fn(b)`` gives utterance b's (T, S+1, V) log-probs."""
    return torch.stack([
        reference_nll(logp_fn(b), symbols[b], int(boundary[b, 2]), int(boundary[b, 3]), **kw)
        for b in range(symbols.shape[0])
    ])


def smoothed_logp(lm, am, lm_scale, am_scale):
    """k2's smoothed per-node log-probs, (B, T, S+1, V), from the definitions."""
    joint = torch.log_softmax(am.unsqueeze(2) + lm.unsqueeze(1), dim=-1)
    lm_only = torch.log_softmax(lm, dim=-1).unsqueeze(1)
    unigram = torch.softmax(lm, dim=-1).mean(dim=(0, 1)) + torch.finfo(lm.dtype).tiny
    am_only = torch.log_softmax(am + unigram.log(), dim=-1).unsqueeze(2)
    return (1 - lm_scale - am_scale) * joint + lm_scale * lm_only + am_scale * am_only


def make_batch(batch, num_t, num_s, vocab, seed, dtype=F64, s_ends=None, t_ends=None):
    """Random am/lm/symbols with a ragged boundary (first row full size)."""
    g = torch.Generator().manual_seed(seed)
    am = torch.randn(batch, num_t, vocab, generator=g, dtype=dtype)
    lm = torch.randn(batch, num_s + 1, vocab, generator=g, dtype=dtype)
    symbols = torch.randint(1, vocab, (batch, num_s), generator=g)
    if s_ends is None:
        s_ends = [num_s] + torch.randint(0, num_s + 1, (batch - 1,), generator=g).tolist()
    if t_ends is None:
        t_ends = [num_t] + torch.randint(1, num_t + 1, (batch - 1,), generator=g).tolist()
    boundary = torch.tensor([[0, 0, s, t] for s, t in zip(s_ends, t_ends)])
    for b, s in enumerate(s_ends):
        symbols[b, s:] = -1  # padding must be ignored
    return am.requires_grad_(True), lm.requires_grad_(True), symbols, boundary


CASES = [(3, 6, 4, 7, 0), (4, 5, 3, 5, 1), (2, 8, 5, 6, 2)]


@pytest.mark.parametrize("batch,num_t,num_s,vocab,seed", CASES)
def test_simple_matches_reference(batch, num_t, num_s, vocab, seed):
    am, lm, symbols, boundary = make_batch(batch, num_t, num_s, vocab, seed)
    logp = torch.log_softmax(am.unsqueeze(2) + lm.unsqueeze(1), dim=-1)
    ref = reference_batch(lambda b: logp[b], symbols, boundary)
    got = rnnt_loss_simple(lm, am, symbols, BLANK, boundary, reduction="none")
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    ref_g = torch.autograd.grad(ref.sum(), [am, lm])
    got_g = torch.autograd.grad(got.sum(), [am, lm])
    for a, b in zip(got_g, ref_g):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("scales", [(0.25, 0.0), (0.1, 0.1), (0.0, 0.3)])
@pytest.mark.parametrize("batch,num_t,num_s,vocab,seed", CASES[:2])
def test_smoothed_matches_reference(scales, batch, num_t, num_s, vocab, seed):
    am, lm, symbols, boundary = make_batch(batch, num_t, num_s, vocab, seed)
    logp = smoothed_logp(lm, am, *scales)
    ref = reference_batch(lambda b: logp[b], symbols, boundary)
    got = rnnt_loss_smoothed(lm, am, symbols, BLANK, lm_only_scale=scales[0],
                             am_only_scale=scales[1], boundary=boundary, reduction="none")
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    ref_g = torch.autograd.grad(ref.sum(), [am, lm])
    got_g = torch.autograd.grad(got.sum(), [am, lm])
    for a, b in zip(got_g, ref_g):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("batch,num_t,num_s,vocab,seed", CASES)
def test_full_loss_matches_reference(batch, num_t, num_s, vocab, seed):
    g = torch.Generator().manual_seed(seed + 100)
    _, _, symbols, boundary = make_batch(batch, num_t, num_s, vocab, seed)
    logits = torch.randn(batch, num_t, num_s + 1, vocab, generator=g, dtype=F64,
                         requires_grad=True)
    logp = torch.log_softmax(logits, dim=-1)
    ref = reference_batch(lambda b: logp[b], symbols, boundary)
    got = rnnt_loss(logits, symbols, BLANK, boundary, reduction="none")
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    (ref_g,) = torch.autograd.grad(ref.sum(), [logits])
    (got_g,) = torch.autograd.grad(got.sum(), [logits])
    torch.testing.assert_close(got_g, ref_g, rtol=1e-8, atol=1e-10)


def test_smoothed_zero_scales_equals_simple_equals_full():
    am, lm, symbols, boundary = make_batch(4, 7, 4, 6, seed=3)
    smoothed = rnnt_loss_smoothed(lm, am, symbols, BLANK, 0.0, 0.0, boundary, reduction="none")
    simple = rnnt_loss_simple(lm, am, symbols, BLANK, boundary, reduction="none")
    full = rnnt_loss(am.unsqueeze(2) + lm.unsqueeze(1), symbols, BLANK, boundary,
                     reduction="none")
    torch.testing.assert_close(smoothed, simple, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(simple, full, rtol=1e-10, atol=1e-10)


def test_reductions_and_return_grad():
    am, lm, symbols, boundary = make_batch(3, 6, 3, 5, seed=4)
    none = rnnt_loss_simple(lm, am, symbols, BLANK, boundary, reduction="none")
    torch.testing.assert_close(rnnt_loss_simple(lm, am, symbols, BLANK, boundary), none.mean())
    torch.testing.assert_close(
        rnnt_loss_simple(lm, am, symbols, BLANK, boundary, reduction="sum"), none.sum())
    loss, (px_grad, py_grad) = rnnt_loss_smoothed(
        lm, am, symbols, BLANK, 0.0, 0.0, boundary, reduction="sum", return_grad=True)
    torch.testing.assert_close(loss, none.sum())
    assert px_grad.shape == (3, 3, 7) and py_grad.shape == (3, 4, 6)
    # Occupancies: each path emits S_b symbols and T_b blanks; none after T_b.
    torch.testing.assert_close(px_grad.sum(dim=(1, 2)), boundary[:, 2].to(F64))
    torch.testing.assert_close(py_grad.sum(dim=(1, 2)), boundary[:, 3].to(F64))
    for b in range(3):
        assert px_grad[b, :, int(boundary[b, 3]):].abs().max() == 0


def test_all_blank_path_when_no_symbols():
    am, lm, symbols, _ = make_batch(2, 5, 3, 4, seed=5)
    boundary = torch.tensor([[0, 0, 0, 5], [0, 0, 0, 3]])
    got = rnnt_loss_simple(lm, am, symbols, BLANK, boundary, reduction="none")
    logp = torch.log_softmax(am.unsqueeze(2) + lm.unsqueeze(1), dim=-1)
    want = torch.stack([-logp[0, :5, 0, BLANK].sum(), -logp[1, :3, 0, BLANK].sum()])
    torch.testing.assert_close(got, want)
    full = rnnt_loss(am.unsqueeze(2) + lm.unsqueeze(1), symbols, BLANK, boundary,
                     reduction="none")
    torch.testing.assert_close(full, want)
    # S = 0 overall (empty symbol tensor) works too.
    empty = torch.zeros(2, 0, dtype=torch.int64)
    got0 = rnnt_loss_simple(lm[:, :1], am, empty, BLANK, boundary, reduction="none")
    torch.testing.assert_close(got0, want)


@pytest.mark.parametrize("penalty", [0.3, 1.5])
def test_delay_penalty_matches_k2_definition(penalty):
    am, lm, symbols, boundary = make_batch(3, 7, 4, 6, seed=6)
    logp = torch.log_softmax(am.unsqueeze(2) + lm.unsqueeze(1), dim=-1)
    ref = reference_batch(lambda b: logp[b], symbols, boundary, delay_penalty=penalty)
    got = rnnt_loss_simple(lm, am, symbols, BLANK, boundary, delay_penalty=penalty,
                           reduction="none")
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    full = rnnt_loss(am.unsqueeze(2) + lm.unsqueeze(1), symbols, BLANK, boundary,
                     delay_penalty=penalty, reduction="none")
    torch.testing.assert_close(full, ref, rtol=1e-10, atol=1e-10)
    smoothed = rnnt_loss_smoothed(lm, am, symbols, BLANK, 0.0, 0.0, boundary,
                                  delay_penalty=penalty, reduction="none")
    torch.testing.assert_close(smoothed, ref, rtol=1e-10, atol=1e-10)
    # k2 applies the penalty only when it is > 0.
    plain = rnnt_loss_simple(lm, am, symbols, BLANK, boundary, reduction="none")
    negative = rnnt_loss_simple(lm, am, symbols, BLANK, boundary, delay_penalty=-penalty,
                                reduction="none")
    torch.testing.assert_close(negative, plain)


def test_delay_penalty_without_boundary_uses_full_length():
    am, lm, symbols, _ = make_batch(2, 6, 3, 5, seed=7, s_ends=[3, 3], t_ends=[6, 6])
    logp = torch.log_softmax(am.unsqueeze(2) + lm.unsqueeze(1), dim=-1)
    full_b = torch.tensor([[0, 0, 3, 6]] * 2)
    ref = reference_batch(lambda b: logp[b], symbols, full_b, delay_penalty=0.7)
    got = rnnt_loss_simple(lm, am, symbols, BLANK, delay_penalty=0.7, reduction="none")
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def _pruned_setup(seed, s_range, batch=3, num_t=8, num_s=5, vocab=6):
    s_ends = [num_s, num_s - 2, 1, 0][:batch]
    t_ends = [num_t, num_t - 1, num_t - 3, 2][:batch]
    am, lm, symbols, boundary = make_batch(batch, num_t, num_s, vocab, seed, s_ends=s_ends,
                                           t_ends=t_ends)
    _, (px_grad, py_grad) = rnnt_loss_smoothed(
        lm.detach(), am.detach(), symbols, BLANK, 0.25, 0.0, boundary, return_grad=True)
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, s_range)
    return am, lm, symbols, boundary, ranges


@pytest.mark.parametrize("seed,s_range", [(8, 2), (9, 3), (10, 4)])
def test_pruned_matches_reference_on_kept_nodes(seed, s_range):
    am, lm, symbols, boundary, ranges = _pruned_setup(seed, s_range)
    am_p, lm_p = do_rnnt_pruning(am, lm, ranges)
    logits = am_p + lm_p  # (B, T, R, V)
    num_b, num_t, num_r, vocab = logits.shape
    num_s = symbols.shape[1]
    logp_pruned = torch.log_softmax(logits, dim=-1)

    def node_logp(b):
        full = logits.new_full((num_t, num_s + 1, vocab), float("nan"))
        index = ranges[b].unsqueeze(-1).expand(num_t, num_r, vocab)
        return full.scatter(1, index, logp_pruned[b])

    kept = torch.zeros(num_b, num_t, num_s + 1, dtype=torch.bool)
    kept.scatter_(2, ranges, True)
    ref = torch.stack([
        reference_nll(node_logp(b), symbols[b], int(boundary[b, 2]), int(boundary[b, 3]),
                      kept=kept[b], delay_penalty=0.2)
        for b in range(num_b)
    ])
    got = rnnt_loss_pruned(logits, symbols, ranges, BLANK, boundary, delay_penalty=0.2,
                           reduction="none")
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    ref_g = torch.autograd.grad(ref.sum(), [am, lm], retain_graph=True)
    got_g = torch.autograd.grad(got.sum(), [am, lm])
    for a, b in zip(got_g, ref_g):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("seed", [11, 12])
def test_pruned_equals_full_when_nothing_is_pruned(seed):
    am, lm, symbols, boundary, ranges = _pruned_setup(seed, s_range=6)  # S + 1 = 6
    assert ranges.shape[-1] == 6
    am_p, lm_p = do_rnnt_pruning(am, lm, ranges)
    pruned = rnnt_loss_pruned(am_p + lm_p, symbols, ranges, BLANK, boundary, reduction="none")
    full = rnnt_loss(am.unsqueeze(2) + lm.unsqueeze(1), symbols, BLANK, boundary,
                     reduction="none")
    torch.testing.assert_close(pruned, full, rtol=1e-10, atol=1e-10)
    g_p = torch.autograd.grad(pruned.sum(), [am, lm])
    g_f = torch.autograd.grad(full.sum(), [am, lm])
    for a, b in zip(g_p, g_f):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("seed,s_range", [(13, 2), (14, 3)])
def test_pruned_nll_not_below_full_nll(seed, s_range):
    am, lm, symbols, boundary, ranges = _pruned_setup(seed, s_range, batch=4, num_t=10, num_s=6)
    am_p, lm_p = do_rnnt_pruning(am, lm, ranges)
    pruned = rnnt_loss_pruned(am_p + lm_p, symbols, ranges, BLANK, boundary, reduction="none")
    full = rnnt_loss(am.unsqueeze(2) + lm.unsqueeze(1), symbols, BLANK, boundary,
                     reduction="none")
    assert torch.isfinite(pruned).all()
    assert (pruned >= full - 1e-10).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_nan_or_inf_in_values_and_grads(dtype):
    """Ragged batch with large logits, S_b = 0 rows and short T_b, float32 and float64."""
    am, lm, symbols, boundary = make_batch(
        4, 9, 5, 8, seed=15, dtype=dtype, s_ends=[5, 0, 2, 5], t_ends=[9, 1, 3, 5])
    with torch.no_grad():
        am.mul_(40.0)
        lm.mul_(40.0)
    simple, (px_grad, py_grad) = rnnt_loss_smoothed(
        lm, am, symbols, BLANK, 0.25, 0.0, boundary, reduction="sum", return_grad=True)
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, 3)
    am_p, lm_p = do_rnnt_pruning(am, lm, ranges)
    pruned = rnnt_loss_pruned(am_p + lm_p, symbols, ranges, BLANK, boundary, reduction="sum")
    full = rnnt_loss(am.unsqueeze(2) + lm.unsqueeze(1), symbols, BLANK, boundary,
                     delay_penalty=0.1, reduction="sum")
    for value in (simple, pruned, full, px_grad, py_grad):
        assert torch.isfinite(value).all()
    grads = torch.autograd.grad(0.5 * simple + pruned + full, [am, lm])
    assert all(torch.isfinite(g).all() for g in grads)


def test_float32_matches_float64():
    am, lm, symbols, boundary = make_batch(3, 12, 6, 10, seed=16)
    l64 = rnnt_loss_smoothed(lm, am, symbols, BLANK, boundary=boundary, reduction="none")
    l32 = rnnt_loss_smoothed(lm.float(), am.float(), symbols, BLANK, boundary=boundary,
                             reduction="none")
    assert l32.dtype == torch.float32
    torch.testing.assert_close(l32.double(), l64, rtol=1e-5, atol=1e-4)
