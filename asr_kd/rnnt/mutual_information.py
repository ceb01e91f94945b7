"""``mutual_information_recursion`` -- the lattice recursion behind every loss.

For each batch element ``b`` with region ``[0, 0, S_b, T_b]`` (from
``boundary``; ``[0, 0, S, T]`` when it is ``None``)::

    p[b, 0, 0] = 0
    p[b, s, t] = logadd(p[b, s-1, t] + px[b, s-1, t],
                        p[b, s, t-1] + py[b, s, t-1])
    score[b]   = p[b, S_b, T_b]

over ``0 <= s <= S_b``, ``0 <= t <= T_b``, terms with negative indexes being
absent.  ``px`` (B, S, T+1) weighs the arc that consumes one ``x`` item
(an RNN-T symbol), ``py`` (B, S+1, T) the arc that consumes one ``y`` item
(an RNN-T frame, i.e. blank).  The score is *not* negated.

The gradient of ``score[b]`` with respect to an arc weight is that arc's
occupancy (the posterior probability that a path uses it); with
``return_grad=True`` these are returned as ``(px_grad, py_grad)``, exactly
what ``torch.autograd.grad(scores.sum(), [px, py])`` would give.  The backward
pass reuses them, so it is exact and costs one reverse sweep.

Implementation: numba on CPU (float64 internally), the anti-diagonal torch
code elsewhere; ``ASR_KD_RNNT_RECURSION`` overrides (see :mod:`.backend`).
"""

from __future__ import annotations

from typing import List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import mi_numba, mi_torch
from .backend import k2_or_none, recursion_impl_request
from .validation import check_boundary, check_float, check_same, check_shape

_FN = "mutual_information_recursion"


def choose_impl(device: torch.device) -> str:
    """``"numba"`` or ``"torch"`` for tensors on ``device``.

    numba only runs on CPU tensors; other devices always use the anti-diagonal
    torch code, whatever ``ASR_KD_RNNT_RECURSION`` asks for.
    """
    request = recursion_impl_request()
    if device.type != "cpu" or not mi_numba.AVAILABLE:
        return "torch"
    return "torch" if request == "torch" else "numba"


class _Recursion(torch.autograd.Function):
    """Autograd wrapper: forward gives scores, backward scales the occupancies."""

    @staticmethod
    def forward(ctx, px: Tensor, py: Tensor, s_end: Tensor, t_end: Tensor,
                impl: str, grads_out: Optional[List[Tensor]]) -> Tensor:
        need_occ = grads_out is not None or ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        if impl == "numba":
            scores, state = _numba_forward(px, py, s_end, t_end)
        else:
            dev = px.device
            scores, tstate = mi_torch.mi_forward_torch(px, py, s_end.to(dev), t_end.to(dev))
            state = ("torch", tstate)
        ctx.dtype = px.dtype
        ctx.occ = None
        ctx.state = state if need_occ else None
        if grads_out is not None:
            ctx.occ = _occupancies(state, px.dtype, px.device)
            ctx.state = None
            grads_out.extend(ctx.occ)
        return scores

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_scores: Tensor):
        occ = ctx.occ if ctx.occ is not None else _occupancies(
            ctx.state, ctx.dtype, grad_scores.device)
        px_occ, py_occ = occ
        g = grad_scores.to(ctx.dtype).view(-1, 1, 1)
        gx = px_occ * g if ctx.needs_input_grad[0] else None
        gy = py_occ * g if ctx.needs_input_grad[1] else None
        return gx, gy, None, None, None, None


def _to_grid(x: Tensor) -> Tensor:
    """(B, S, W) any float dtype -> contiguous float64 (S, W, B), one copy."""
    out = torch.empty((x.shape[1], x.shape[2], x.shape[0]), dtype=torch.float64)
    return out.copy_(x.detach().permute(1, 2, 0))


def _from_grid(g: Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(S, W, B) float64 -> contiguous (B, S, W) of ``dtype`` on ``device``."""
    out = torch.empty((g.shape[2], g.shape[0], g.shape[1]), dtype=dtype)
    return out.copy_(g.permute(2, 0, 1)).to(device)


def _numba_forward(px: Tensor, py: Tensor, s_end: Tensor, t_end: Tensor):
    """Scores (B,) and backward state via the numba kernel (float64, batch innermost)."""
    pxg, pyg = _to_grid(px), _to_grid(py)
    alpha = mi_numba.run_alpha(pxg.numpy(), pyg.numpy())
    sb = s_end.numpy().astype(np.int64)
    tb = t_end.numpy().astype(np.int64)
    scores64 = torch.from_numpy(alpha[sb, tb, np.arange(px.shape[0])])
    return scores64.to(px.dtype), ("numba", pxg, pyg, sb, tb, alpha)


def _occupancies(state, dtype: torch.dtype, device: torch.device) -> Tuple[Tensor, Tensor]:
    """Run the backward sweep of whichever implementation produced ``state``."""
    if state[0] == "torch":
        gx, gy = mi_torch.mi_backward_torch(state[1])
        return gx.to(dtype), gy.to(dtype)
    # Occupancies below the smallest normal number of ``dtype`` become 0:
    # subnormal gradients slow every later CPU op on them (matmuls included).
    _, pxg, pyg, sb, tb, alpha = state
    floor = float(torch.finfo(dtype).tiny)
    gx, gy = mi_numba.run_occupancies(pxg.numpy(), pyg.numpy(), alpha, sb, tb, floor)
    return (_from_grid(torch.from_numpy(gx), dtype, device),
            _from_grid(torch.from_numpy(gy), dtype, device))


def recursion_with_ends(
    px: Tensor, py: Tensor, s_end: Tensor, t_end: Tensor, return_grad: bool = False,
) -> Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]]]:
    """The recursion on already-validated inputs; ``s_end``/``t_end`` host int64 (B,)."""
    impl = choose_impl(px.device)
    grads: Optional[List[Tensor]] = [] if return_grad else None
    scores = _Recursion.apply(px, py, s_end, t_end, impl, grads)
    if return_grad:
        return scores, (grads[0], grads[1])
    return scores


def mutual_information_recursion(
    px: Tensor,
    py: Tensor,
    boundary: Optional[Tensor] = None,
    return_grad: bool = False,
) -> Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]]]:
    """Total log-scores of the lattice defined by ``px`` and ``py`` (k2's API).

    Args:
      px: (B, S, T+1) float32/float64; ``px[b, s, t]`` is the log-weight of
        the arc ``(s, t) -> (s+1, t)``.  For RNN-T, ``px[b, :, T_b]`` is
        ``-inf`` (no symbol after the last frame); ``-inf`` entries are fine.
      py: (B, S+1, T), same dtype/device; ``py[b, s, t]`` weighs ``(s, t) -> (s, t+1)``.
      boundary: optional (B, 4) int64 rows ``[0, 0, S_b, T_b]`` with
        ``0 <= S_b <= S`` and ``1 <= T_b <= T``; ``None`` means ``[0, 0, S, T]``.
      return_grad: also return the arc occupancies ``(px_grad, py_grad)``,
        shaped like ``px`` and ``py`` (zero outside each region).

    Returns:
      ``scores`` (B,), or ``(scores, (px_grad, py_grad))``.  Differentiable
      with respect to ``px`` and ``py`` (first order).
    """
    k2 = k2_or_none()
    if k2 is not None:
        return k2.mutual_information_recursion(px, py, boundary=boundary, return_grad=return_grad)
    check_float(_FN, "px", px, 3)
    check_float(_FN, "py", py, 3)
    check_same(_FN, "px", px, py=py)
    num_b, num_s, width = px.shape
    num_t = py.shape[-1]
    if width != num_t + 1:
        raise ValueError(
            f"{_FN}: px has shape {tuple(px.shape)} and py {tuple(py.shape)}; the regular "
            "recursion needs px (B, S, T+1) with py (B, S+1, T)"
        )
    check_shape(_FN, "py", py, (num_b, num_s + 1, num_t), "(B, S+1, T)")
    _, s_end, t_end = check_boundary(_FN, boundary, num_b, num_s, num_t, px.device)
    return recursion_with_ends(px, py, s_end, t_end, return_grad)
