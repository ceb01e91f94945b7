"""Backend selection (k2 vs ours) and CUDA parity of our implementation."""

from __future__ import annotations

import sys
import types

import pytest
import torch

import asr_kd.rnnt as rnnt
from asr_kd.rnnt import backend

NAMES = [
    "mutual_information_recursion", "rnnt_loss_simple", "rnnt_loss_smoothed",
    "get_rnnt_prune_ranges", "do_rnnt_pruning", "rnnt_loss_pruned", "rnnt_loss",
]


@pytest.fixture
def fake_k2(monkeypatch):
    """A stand-in ``k2`` module whose functions record their calls."""
    module = types.ModuleType("k2")
    module.calls = []

    def make(name):
        def fn(*args, **kwargs):
            module.calls.append((name, args, kwargs))
            return f"k2.{name}"
        return fn

    for name in NAMES:
        setattr(module, name, make(name))
    monkeypatch.setitem(sys.modules, "k2", module)
    backend.reset_backend_cache()
    yield module
    backend.reset_backend_cache()


def _args():
    am = torch.randn(2, 5, 4)
    lm = torch.randn(2, 3, 4)
    symbols = torch.tensor([[1, 2], [3, 1]])
    boundary = torch.tensor([[0, 0, 2, 5], [0, 0, 1, 3]])
    return am, lm, symbols, boundary


def test_k2_is_used_when_importable(fake_k2, monkeypatch):
    monkeypatch.delenv(backend.BACKEND_ENV, raising=False)
    assert rnnt.rnnt_backend() == "k2"
    am, lm, symbols, boundary = _args()
    out = rnnt.rnnt_loss_smoothed(lm, am, symbols, 0, 0.25, 0.0, boundary, return_grad=True)
    assert out == "k2.rnnt_loss_smoothed"
    name, _, kwargs = fake_k2.calls[-1]
    assert kwargs["lm_only_scale"] == 0.25 and kwargs["am_only_scale"] == 0.0
    assert kwargs["return_grad"] is True and kwargs["rnnt_type"] == "regular"
    ranges = torch.zeros(2, 5, 2, dtype=torch.int64)
    assert rnnt.rnnt_loss_simple(lm, am, symbols, 0) == "k2.rnnt_loss_simple"
    assert rnnt.rnnt_loss(am.unsqueeze(2) + lm.unsqueeze(1), symbols, 0) == "k2.rnnt_loss"
    assert rnnt.do_rnnt_pruning(am, lm, ranges) == "k2.do_rnnt_pruning"
    assert rnnt.rnnt_loss_pruned(torch.randn(2, 5, 2, 4), symbols, ranges, 0) == \
        "k2.rnnt_loss_pruned"
    assert rnnt.get_rnnt_prune_ranges(torch.rand(2, 2, 6), torch.rand(2, 3, 5), boundary, 2) \
        == "k2.get_rnnt_prune_ranges"
    assert rnnt.mutual_information_recursion(torch.rand(2, 2, 6), torch.rand(2, 3, 5)) == \
        "k2.mutual_information_recursion"


def test_env_torch_forces_our_implementation(fake_k2, monkeypatch):
    monkeypatch.setenv(backend.BACKEND_ENV, "torch")
    assert rnnt.rnnt_backend() == "torch"
    am, lm, symbols, boundary = _args()
    loss = rnnt.rnnt_loss_simple(lm, am, symbols, 0, boundary)
    assert isinstance(loss, torch.Tensor) and not fake_k2.calls


def test_our_implementation_without_k2(monkeypatch):
    monkeypatch.delenv(backend.BACKEND_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "k2", None)  # makes ``import k2`` fail
    backend.reset_backend_cache()
    try:
        assert rnnt.rnnt_backend() == "torch"
        am, lm, symbols, boundary = _args()
        assert isinstance(rnnt.rnnt_loss_simple(lm, am, symbols, 0, boundary), torch.Tensor)
    finally:
        backend.reset_backend_cache()


def test_invalid_options_are_rejected_before_delegation(fake_k2, monkeypatch):
    monkeypatch.delenv(backend.BACKEND_ENV, raising=False)
    am, lm, symbols, _ = _args()
    with pytest.raises(ValueError, match="rnnt_type"):
        rnnt.rnnt_loss_simple(lm, am, symbols, 0, rnnt_type="modified")
    with pytest.raises(ValueError, match="s_range"):
        rnnt.get_rnnt_prune_ranges(torch.rand(2, 2, 6), torch.rand(2, 3, 5), None, 1)


def test_bad_recursion_env(monkeypatch):
    monkeypatch.setenv(backend.RECURSION_ENV, "cuda-graphs")
    am, lm, symbols, boundary = _args()
    with pytest.raises(ValueError, match=backend.RECURSION_ENV):
        rnnt.rnnt_loss_simple(lm, am, symbols, 0, boundary)


def _pipeline(am, lm, symbols, boundary, delay_penalty=0.0):
    """smoothed -> ranges -> pruning -> additive joiner -> pruned, plus the full loss."""
    simple, (px_grad, py_grad) = rnnt.rnnt_loss_smoothed(
        lm, am, symbols, 0, 0.25, 0.0, boundary, delay_penalty=delay_penalty,
        reduction="sum", return_grad=True)
    ranges = rnnt.get_rnnt_prune_ranges(px_grad, py_grad, boundary, 3)
    am_p, lm_p = rnnt.do_rnnt_pruning(am, lm, ranges)
    pruned = rnnt.rnnt_loss_pruned(am_p + lm_p, symbols, ranges, 0, boundary,
                                   delay_penalty=delay_penalty, reduction="none")
    full = rnnt.rnnt_loss(am.unsqueeze(2) + lm.unsqueeze(1), symbols, 0, boundary,
                          reduction="none")
    grads = torch.autograd.grad(0.5 * simple + pruned.sum() + full.sum(), [am, lm])
    return simple, px_grad, py_grad, ranges, pruned, full, grads


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(dtype):
    g = torch.Generator().manual_seed(0)
    batch, num_t, num_s, vocab = 4, 30, 8, 12
    am = torch.randn(batch, num_t, vocab, generator=g, dtype=dtype)
    lm = torch.randn(batch, num_s + 1, vocab, generator=g, dtype=dtype)
    symbols = torch.randint(1, vocab, (batch, num_s), generator=g)
    boundary = torch.tensor([[0, 0, 8, 30], [0, 0, 5, 21], [0, 0, 0, 4], [0, 0, 8, 12]])
    cpu = _pipeline(am.clone().requires_grad_(), lm.clone().requires_grad_(), symbols,
                    boundary, delay_penalty=0.1)
    dev = torch.device("cuda")
    gpu = _pipeline(am.to(dev).requires_grad_(), lm.to(dev).requires_grad_(), symbols.to(dev),
                    boundary.to(dev), delay_penalty=0.1)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-9)
    for c, d in zip(cpu[:3] + cpu[4:6], gpu[:3] + gpu[4:6]):
        torch.testing.assert_close(d.cpu(), c, **tol)
    assert torch.equal(cpu[3], gpu[3].cpu())
    for c, d in zip(cpu[6], gpu[6]):
        assert torch.isfinite(d).all()
        torch.testing.assert_close(d.cpu(), c, **tol)


def test_cuda_recursion_path_matches_numba_on_cpu(monkeypatch):
    """The anti-diagonal torch recursion (the CUDA path) gives the numba results."""
    g = torch.Generator().manual_seed(1)
    am = torch.randn(3, 20, 9, generator=g, dtype=torch.float64)
    lm = torch.randn(3, 7, 9, generator=g, dtype=torch.float64)
    symbols = torch.randint(1, 9, (3, 6), generator=g)
    boundary = torch.tensor([[0, 0, 6, 20], [0, 0, 2, 11], [0, 0, 6, 6]])
    out = {}
    for impl in ("numba", "torch"):
        monkeypatch.setenv(backend.RECURSION_ENV, impl)
        out[impl] = _pipeline(am.clone().requires_grad_(), lm.clone().requires_grad_(),
                              symbols, boundary, delay_penalty=0.2)
    a, b = out["numba"], out["torch"]
    assert torch.equal(a[3], b[3])
    for x, y in zip(a[:3] + a[4:6] + a[6], b[:3] + b[4:6] + b[6]):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-9)
