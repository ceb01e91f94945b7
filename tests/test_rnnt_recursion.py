"""mutual_information_recursion against a brute-force per-cell DP (float64).

The reference walks the lattice cell by cell with Python scalars (0-d
tensors, so autograd gives the reference gradients); the implementation
under test must match values, ``return_grad`` occupancies and autograd
gradients, for both recursion implementations (numba and anti-diagonal torch).
"""

from __future__ import annotations

import math

import pytest
import torch

from asr_kd.rnnt import mutual_information_recursion

IMPLS = ["numba", "torch"]


def reference_scores(px: torch.Tensor, py: torch.Tensor, boundary: torch.Tensor) -> torch.Tensor:
    """Brute-force recursion: p[s,t] = logadd(p[s-1,t] + px[s-1,t], p[s,t-1] + py[s,t-1])."""
    out = []
    for b in range(px.shape[0]):
        s_end, t_end = int(boundary[b, 2]), int(boundary[b, 3])
        p = {}
        for s in range(s_end + 1):
            for t in range(t_end + 1):
                if s == 0 and t == 0:
                    p[s, t] = px.new_zeros(())
                    continue
                terms = []
                if s > 0:
                    terms.append(p[s - 1, t] + px[b, s - 1, t])
                if t > 0:
                    terms.append(p[s, t - 1] + py[b, s, t - 1])
                p[s, t] = torch.logsumexp(torch.stack(terms), dim=0)
        out.append(p[s_end, t_end])
    return torch.stack(out)


def _random_case(batch: int, num_s: int, num_t: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    px = torch.randn(batch, num_s, num_t + 1, generator=g, dtype=dtype)
    py = torch.randn(batch, num_s + 1, num_t, generator=g, dtype=dtype)
    s_end = torch.randint(0, num_s + 1, (batch,), generator=g)
    t_end = torch.randint(1, num_t + 1, (batch,), generator=g)
    s_end[0], t_end[0] = num_s, num_t  # one full-size element per batch
    zeros = torch.zeros(batch, dtype=torch.int64)
    boundary = torch.stack([zeros, zeros, s_end, t_end], dim=1)
    return px, py, boundary


@pytest.fixture(params=IMPLS)
def impl(request, monkeypatch):
    monkeypatch.setenv("ASR_KD_RNNT_RECURSION", request.param)
    return request.param


@pytest.mark.parametrize("shape,seed",
                         [((3, 4, 6), 0), ((4, 5, 3), 1), ((2, 1, 7), 2), ((3, 6, 6), 3)])
def test_values_and_grads_match_brute_force(impl, shape, seed):
    px, py, boundary = _random_case(*shape, seed=seed)
    px.requires_grad_(True)
    py.requires_grad_(True)
    ref = reference_scores(px, py, boundary)
    ref_gx, ref_gy = torch.autograd.grad(ref.sum(), [px, py])

    scores, (gx, gy) = mutual_information_recursion(px, py, boundary, return_grad=True)
    torch.testing.assert_close(scores, ref.detach(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gx, ref_gx, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(gy, ref_gy, rtol=1e-9, atol=1e-10)

    # Autograd through the recursion with a non-uniform upstream gradient.
    weights = torch.arange(1.0, shape[0] + 1, dtype=torch.float64)
    scores = mutual_information_recursion(px, py, boundary)
    ag_x, ag_y = torch.autograd.grad((scores * weights).sum(), [px, py])
    torch.testing.assert_close(ag_x, ref_gx * weights.view(-1, 1, 1), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(ag_y, ref_gy * weights.view(-1, 1, 1), rtol=1e-9, atol=1e-10)


def test_boundary_none_means_full_region(impl):
    px, py, _ = _random_case(2, 3, 5, seed=4)
    full = torch.tensor([[0, 0, 3, 5]] * 2)
    torch.testing.assert_close(mutual_information_recursion(px, py),
                               reference_scores(px, py, full))


def test_gradcheck(impl):
    px, py, boundary = _random_case(2, 3, 4, seed=5)
    px.requires_grad_(True)
    py.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: mutual_information_recursion(a, b, boundary), (px, py))


def test_minus_inf_arcs_give_no_nan(impl):
    """RNN-T puts -inf at px[:, :, T_b]; -inf weights must give zero occupancy, not NaN."""
    px, py, boundary = _random_case(3, 4, 5, seed=6)
    for b in range(3):
        px[b, :, int(boundary[b, 3]):] = float("-inf")
    px[1, 0, 0] = float("-inf")
    px.requires_grad_(True)
    py.requires_grad_(True)
    scores, (gx, gy) = mutual_information_recursion(px, py, boundary, return_grad=True)
    assert torch.isfinite(scores).all()
    assert torch.isfinite(gx).all() and torch.isfinite(gy).all()
    for b in range(3):
        assert gx[b, :, int(boundary[b, 3]):].abs().max() == 0.0
    grads = torch.autograd.grad(mutual_information_recursion(px, py, boundary).sum(), [px, py])
    assert all(torch.isfinite(g).all() for g in grads)


def test_occupancy_sums(impl):
    """Every path has T_b blank arcs and S_b symbol arcs."""
    px, py, boundary = _random_case(4, 5, 6, seed=7)
    px = px.clone()
    for b in range(4):
        px[b, :, int(boundary[b, 3])] = float("-inf")
    _, (gx, gy) = mutual_information_recursion(px, py, boundary, return_grad=True)
    torch.testing.assert_close(gx.sum(dim=(1, 2)), boundary[:, 2].double())
    torch.testing.assert_close(gy.sum(dim=(1, 2)), boundary[:, 3].double())


def test_empty_symbol_axis(impl):
    """S = 0: the only path is T_b blanks."""
    px = torch.zeros(2, 0, 5, dtype=torch.float64)
    py = torch.randn(2, 1, 4, dtype=torch.float64)
    boundary = torch.tensor([[0, 0, 0, 4], [0, 0, 0, 2]])
    scores, (gx, gy) = mutual_information_recursion(px, py, boundary, return_grad=True)
    torch.testing.assert_close(scores, torch.stack([py[0, 0].sum(), py[1, 0, :2].sum()]))
    assert gx.shape == (2, 0, 5)
    torch.testing.assert_close(gy[1, 0], torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64))


def test_float32_close_to_float64(impl):
    px, py, boundary = _random_case(3, 8, 12, seed=8)
    s64, (gx64, _) = mutual_information_recursion(px, py, boundary, return_grad=True)
    s32, (gx32, _) = mutual_information_recursion(px.float(), py.float(), boundary,
                                                  return_grad=True)
    assert s32.dtype == torch.float32 and gx32.dtype == torch.float32
    torch.testing.assert_close(s32.double(), s64, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gx32.double(), gx64, rtol=1e-4, atol=1e-5)


def test_implementations_agree_on_larger_batch(monkeypatch):
    px, py, boundary = _random_case(5, 20, 40, seed=9)
    out = {}
    for name in IMPLS:
        monkeypatch.setenv("ASR_KD_RNNT_RECURSION", name)
        out[name] = mutual_information_recursion(px, py, boundary, return_grad=True)
    torch.testing.assert_close(out["numba"][0], out["torch"][0], rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(out["numba"][1][0], out["torch"][1][0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out["numba"][1][1], out["torch"][1][1], rtol=1e-9, atol=1e-12)


def test_large_magnitudes_stay_finite(impl):
    px, py, boundary = _random_case(2, 6, 9, seed=10)
    px, py = px * 300.0, py * 300.0
    scores, (gx, gy) = mutual_information_recursion(px.float(), py.float(), boundary,
                                                    return_grad=True)
    assert torch.isfinite(scores).all() and torch.isfinite(gx).all() and torch.isfinite(gy).all()
    # float32 sums of |scores| ~ 1e3 carry ~1e-4 relative error in the torch path.
    assert math.isclose(float(gy[0].sum()), 9.0, rel_tol=1e-3)
