"""The mutual-information recursion vectorised over anti-diagonals (any device).

Cell ``(s, t)`` of the ``(S+1) x (T+1)`` lattice depends only on cells of the
previous anti-diagonal ``d - 1`` (``d = s + t``), so a whole diagonal -- for
all batch elements at once -- is one vector step.  The lattice is stored
*skewed*, diagonal-major: ``X[d, b, s] = x[b, s, d - s]``, so a diagonal is a
contiguous ``(B, S+1)`` slab and both predecessors of ``(s, t)`` sit on slab
``d - 1`` at rows ``s`` (the ``py`` arc) and ``s - 1`` (the ``px`` arc)::

    A[d, :, s] = logadd(A[d-1, :, s]   + PY[d, :, s],      # from (s,   t-1)
                        A[d-1, :, s-1] + PX[d, :, s])      # from (s-1, t)

where ``PX[d, b, s] = px[b, s-1, d-s]`` and ``PY[d, b, s] = py[b, s, d-1-s]``
are the skewed arc weights *into* cell ``(s, d-s)``.  Arcs that leave a batch
element's region ``s <= S_b, t <= T_b`` are set to ``-inf`` before skewing,
so no per-step masking is needed.  The backward pass runs the same sweep in
reverse for ``beta`` (log-sum of paths from a cell to ``(S_b, T_b)``) and
forms the occupancies in closed form, ``exp(alpha + arc + beta - score)``:
no autograd through ``logaddexp``, hence no NaN from ``-inf`` operands.

Cost: ``S + T`` steps of three small kernels each.  On CPU the numba kernel
(:mod:`asr_kd.rnnt.mi_numba`) is faster; this code is the CUDA path and the
fallback when numba is missing.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

_NEG_INF = float("-inf")


def _skew(src: Tensor, num_diag: int, offset: int) -> Tensor:
    """``out[b, r, r + c + offset] = src[b, r, c]``; other entries ``-inf``.

    src: (B, R, W) with ``R - 1 + W - 1 + offset <= num_diag - 1``.
    Returns (B, R, num_diag).
    """
    num_b, num_r, width = src.shape
    out = src.new_full((num_b, num_r, num_diag), _NEG_INF)
    if src.numel() == 0:
        return out
    view = out.as_strided(
        (num_b, num_r, width), (num_r * num_diag, num_diag + 1, 1), offset
    )
    view.copy_(src)
    return out


def _unskew(src: Tensor, width: int, offset: int) -> Tensor:
    """Inverse of :func:`_skew`: ``out[b, r, c] = src[b, r, r + c + offset]``."""
    num_b, num_r, num_diag = src.shape
    src = src.contiguous()
    if num_b * num_r * width == 0:
        return src.new_zeros((num_b, num_r, width))
    return src.as_strided(
        (num_b, num_r, width), (num_r * num_diag, num_diag + 1, 1), offset
    ).clone()


def region_masks(
    s_end: Tensor, t_end: Tensor, num_s: int, num_t: int, device: torch.device
) -> Tuple[Tensor, Tensor]:
    """Boolean masks of the arcs inside each region.

    px arc (s, t) -> (s+1, t) is inside iff ``s < S_b and t <= T_b``;
    py arc (s, t) -> (s, t+1) is inside iff ``s <= S_b and t < T_b``.
    Returns (B, S, T+1) and (B, S+1, T).
    """
    s_idx = torch.arange(num_s + 1, device=device).view(1, -1, 1)
    t_idx = torch.arange(num_t + 1, device=device).view(1, 1, -1)
    sb = s_end.view(-1, 1, 1)
    tb = t_end.view(-1, 1, 1)
    x_mask = (s_idx[:, :num_s] < sb) & (t_idx <= tb)
    y_mask = (s_idx <= sb) & (t_idx[:, :, :num_t] < tb)
    return x_mask, y_mask


class TorchRecursionState:
    """What the backward pass needs: skewed arcs, alpha, region ends, scores."""

    def __init__(self, pxs: Tensor, pys: Tensor, alpha: Tensor, s_end: Tensor,
                 t_end: Tensor, scores: Tensor, num_t: int) -> None:
        self.pxs, self.pys, self.alpha = pxs, pys, alpha
        self.s_end, self.t_end, self.scores, self.num_t = s_end, t_end, scores, num_t


def mi_forward_torch(px: Tensor, py: Tensor, s_end: Tensor, t_end: Tensor
                     ) -> Tuple[Tensor, TorchRecursionState]:
    """Scores (B,) and the saved state; px (B,S,T+1), py (B,S+1,T), ends (B,)."""
    num_b, num_s, width = px.shape
    num_t = width - 1
    num_diag = num_s + num_t + 1
    x_mask, y_mask = region_masks(s_end, t_end, num_s, num_t, px.device)
    pxm = px.detach().masked_fill(~x_mask, _NEG_INF)
    pym = py.detach().masked_fill(~y_mask, _NEG_INF)
    # Row s of the padded px holds the arcs *into* row s (from row s - 1).
    pxp = torch.cat((pxm.new_full((num_b, 1, width), _NEG_INF), pxm), dim=1)
    pxs = _skew(pxp, num_diag, 0).permute(2, 0, 1).contiguous()  # (D, B, S+1)
    pys = _skew(pym, num_diag, 1).permute(2, 0, 1).contiguous()  # (D, B, S+1)

    alpha = px.new_full((num_diag, num_b, num_s + 1), _NEG_INF)
    alpha[0, :, 0] = 0.0
    tmp = px.new_empty((num_b, num_s))
    for d in range(1, num_diag):
        prev = alpha[d - 1]
        cur = alpha[d]
        torch.add(prev, pys[d], out=cur)
        if num_s > 0:
            torch.add(prev[:, :-1], pxs[d, :, 1:], out=tmp)
            torch.logaddexp(cur[:, 1:], tmp, out=cur[:, 1:])
    b_idx = torch.arange(num_b, device=px.device)
    scores = alpha[s_end + t_end, b_idx, s_end]
    return scores, TorchRecursionState(pxs, pys, alpha, s_end, t_end, scores, num_t)


def mi_backward_torch(state: TorchRecursionState) -> Tuple[Tensor, Tensor]:
    """Arc occupancies ``(px_grad (B,S,T+1), py_grad (B,S+1,T))``."""
    pxs, pys, alpha = state.pxs, state.pys, state.alpha
    num_diag, num_b, num_s1 = alpha.shape
    num_s, num_t = num_s1 - 1, state.num_t
    device = alpha.device
    b_idx = torch.arange(num_b, device=device)
    final = torch.full_like(alpha, _NEG_INF)
    final[state.s_end + state.t_end, b_idx, state.s_end] = 0.0

    beta = torch.full_like(alpha, _NEG_INF)
    beta[num_diag - 1] = final[num_diag - 1]
    tmp_y = alpha.new_empty((num_b, num_s1))
    tmp_x = alpha.new_empty((num_b, num_s))
    for d in range(num_diag - 2, -1, -1):
        nxt = beta[d + 1]
        cur = beta[d]
        torch.add(nxt, pys[d + 1], out=tmp_y)
        if num_s > 0:
            torch.add(nxt[:, 1:], pxs[d + 1, :, 1:], out=tmp_x)
            torch.logaddexp(tmp_y[:, :-1], tmp_x, out=tmp_y[:, :-1])
        torch.maximum(tmp_y, final[d], out=cur)

    ok = torch.isfinite(state.scores)
    total = torch.where(ok, state.scores, torch.zeros_like(state.scores)).view(1, -1, 1)
    keep = ok.to(alpha.dtype).view(1, -1, 1)
    # Skewed occupancies of the arcs *into* diagonal d = 1 .. D-1.
    occ_y = torch.exp(alpha[:-1] + pys[1:] + beta[1:] - total) * keep
    occ_x = torch.zeros_like(occ_y)
    if num_s > 0:
        occ_x[:, :, 1:] = torch.exp(alpha[:-1, :, :-1] + pxs[1:, :, 1:]
                                    + beta[1:, :, 1:] - total) * keep
    zero_diag = alpha.new_zeros((1, num_b, num_s1))
    occ_x = torch.cat((zero_diag, occ_x), dim=0).permute(1, 2, 0)  # (B, S+1, D)
    occ_y = torch.cat((zero_diag, occ_y), dim=0).permute(1, 2, 0)
    px_grad = _unskew(occ_x, num_t + 1, 0)[:, 1:, :].contiguous()
    py_grad = _unskew(occ_y, num_t, 1)
    # Flush subnormal occupancies to 0: they slow later CPU float ops badly.
    tiny = torch.finfo(alpha.dtype).tiny
    return px_grad.masked_fill_(px_grad < tiny, 0.0), py_grad.masked_fill_(py_grad < tiny, 0.0)
