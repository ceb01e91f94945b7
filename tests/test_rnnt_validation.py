"""Every invalid input listed in docs/losses.md ("Conventions") raises a ValueError naming the problem."""

from __future__ import annotations

import pytest
import torch

from asr_kd.rnnt import (
    do_rnnt_pruning, get_rnnt_prune_ranges, mutual_information_recursion, rnnt_loss,
    rnnt_loss_pruned, rnnt_loss_simple, rnnt_loss_smoothed,
)

B, T, S, V = 2, 6, 3, 5


def _inputs():
    g = torch.Generator().manual_seed(0)
    am = torch.randn(B, T, V, generator=g)
    lm = torch.randn(B, S + 1, V, generator=g)
    symbols = torch.tensor([[1, 2, 3], [4, 1, 0]])
    boundary = torch.tensor([[0, 0, 3, 6], [0, 0, 2, 4]])
    return am, lm, symbols, boundary


def _simple(**kw):
    am, lm, symbols, boundary = _inputs()
    args = dict(lm=lm, am=am, symbols=symbols, termination_symbol=0, boundary=boundary)
    args.update(kw)
    return rnnt_loss_simple(**args)


def _full(**kw):
    am, lm, symbols, boundary = _inputs()
    args = dict(logits=am.unsqueeze(2) + lm.unsqueeze(1), symbols=symbols,
                termination_symbol=0, boundary=boundary)
    args.update(kw)
    return rnnt_loss(**args)


def _pruned(**kw):
    am, lm, symbols, boundary = _inputs()
    ranges = torch.arange(2).expand(B, T, 2).clone()
    ranges[:, 2:] += 1
    ranges[:, 4:] += 1
    args = dict(logits=torch.randn(B, T, 2, V), symbols=symbols, ranges=ranges,
                termination_symbol=0, boundary=boundary)
    args.update(kw)
    return rnnt_loss_pruned(**args)


@pytest.mark.parametrize("loss", [_simple, _full, _pruned])
@pytest.mark.parametrize("boundary,match", [
    (torch.tensor([[1, 0, 3, 6], [0, 0, 2, 4]]), "non-zero begin"),
    (torch.tensor([[0, 2, 3, 6], [0, 0, 2, 4]]), "non-zero begin"),
    (torch.tensor([[0, 0, 3, 6], [0, 0, 2, 0]]), "T_b < 1"),
    (torch.tensor([[0, 0, 4, 6], [0, 0, 2, 4]]), "S_b > S"),
    (torch.tensor([[0, 0, 3, 7], [0, 0, 2, 4]]), "T_b > T"),
    (torch.tensor([[0, 0, 3, 6]]), "boundary has shape"),
])
def test_bad_boundary(loss, boundary, match):
    with pytest.raises(ValueError, match=match):
        loss(boundary=boundary)


@pytest.mark.parametrize("loss", [_simple, _full, _pruned])
@pytest.mark.parametrize("bad_id", [-1, V, 99])
def test_symbol_out_of_vocabulary(loss, bad_id):
    symbols = torch.tensor([[1, bad_id, 3], [4, 1, 0]])
    with pytest.raises(ValueError, match=r"symbols\[0, 1\].*outside \[0, 5\)"):
        loss(symbols=symbols)


def test_padding_symbols_past_s_b_are_ignored():
    symbols = torch.tensor([[1, 2, 3], [4, 1, -1]])  # row 1 has S_b = 2
    assert torch.isfinite(_simple(symbols=symbols))
    assert torch.isfinite(_full(symbols=symbols))
    assert torch.isfinite(_pruned(symbols=symbols))


@pytest.mark.parametrize("loss", [_simple, _full, _pruned])
def test_rnnt_type_other_than_regular(loss):
    for rnnt_type in ("modified", "constrained"):
        with pytest.raises(ValueError, match="rnnt_type"):
            loss(rnnt_type=rnnt_type)


def test_smoothed_rnnt_type_and_reduction():
    am, lm, symbols, boundary = _inputs()
    with pytest.raises(ValueError, match="rnnt_type"):
        rnnt_loss_smoothed(lm, am, symbols, 0, rnnt_type="modified")
    with pytest.raises(ValueError, match="reduction"):
        rnnt_loss_smoothed(lm, am, symbols, 0, reduction="avg")


@pytest.mark.parametrize("kw,match", [
    (dict(am=torch.randn(B, T)), "am must have 3 dimensions"),
    (dict(lm=torch.randn(B, S + 1, V + 1)), "lm has shape"),
    (dict(lm=torch.randn(B + 1, S + 1, V)), "lm has shape"),
    (dict(symbols=torch.zeros(B, S + 1, dtype=torch.int64)), "symbols has shape"),
    (dict(symbols=torch.zeros(B, S)), "integer"),
    (dict(am=torch.randn(B, T, V, dtype=torch.float16)), "float32 or float64"),
    (dict(termination_symbol=V), "termination_symbol"),
    (dict(reduction="avg"), "reduction"),
])
def test_bad_shapes_and_types_simple(kw, match):
    with pytest.raises(ValueError, match=match):
        _simple(**kw)


@pytest.mark.parametrize("kw,match", [
    (dict(logits=torch.randn(B, T, V)), "logits must have 4 dimensions"),
    (dict(symbols=torch.zeros(B, S - 1, dtype=torch.int64)), "symbols has shape"),
])
def test_bad_shapes_full(kw, match):
    with pytest.raises(ValueError, match=match):
        _full(**kw)


@pytest.mark.parametrize("kw,match", [
    (dict(ranges=torch.zeros(B, T, 3, dtype=torch.int64)), "ranges has shape"),
    (dict(ranges=torch.full((B, T, 2), 3, dtype=torch.int64)), "ranges must hold"),
    (dict(ranges=torch.zeros(B, T, 2, dtype=torch.int64)), "ranges must hold"),
    (dict(logits=torch.randn(B, T, S + 2, V)), "positions per frame"),
])
def test_bad_ranges_pruned(kw, match):
    with pytest.raises(ValueError, match=match):
        _pruned(**kw)


def test_recursion_shapes():
    px = torch.randn(B, S, T + 1)
    py = torch.randn(B, S + 1, T)
    with pytest.raises(ValueError, match="T\\+1"):
        mutual_information_recursion(px[:, :, :T], py)  # the "modified" layout
    with pytest.raises(ValueError, match="py has shape"):
        mutual_information_recursion(px, py[:, :S])
    with pytest.raises(ValueError, match="px must have 3 dimensions"):
        mutual_information_recursion(px[0], py)
    with pytest.raises(ValueError, match="dtype"):
        mutual_information_recursion(px, py.double())
    with pytest.raises(ValueError, match="non-zero begin"):
        mutual_information_recursion(px, py, torch.tensor([[0, 1, 3, 6], [0, 0, 2, 4]]))


def test_prune_ranges_s_range_below_two():
    _, _, _, boundary = _inputs()
    px_grad = torch.rand(B, S, T + 1)
    py_grad = torch.rand(B, S + 1, T)
    for s_range in (1, 0, -3):
        with pytest.raises(ValueError, match="s_range"):
            get_rnnt_prune_ranges(px_grad, py_grad, boundary, s_range)
    with pytest.raises(ValueError, match="boundary is required"):
        get_rnnt_prune_ranges(px_grad, py_grad, None, 3)
    with pytest.raises(ValueError, match="py_grad"):
        get_rnnt_prune_ranges(px_grad, py_grad[:, :, :-1], boundary, 3)


def test_do_rnnt_pruning_shapes():
    am, lm, _, _ = _inputs()
    ranges = torch.zeros(B, T, 2, dtype=torch.int64)
    with pytest.raises(ValueError, match="disagree"):
        do_rnnt_pruning(am[:, :-1], lm, ranges)
    with pytest.raises(ValueError, match=r"\[0, S\]"):
        do_rnnt_pruning(am, lm, ranges + S + 1)
