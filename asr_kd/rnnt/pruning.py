"""Pruning bounds for the pruned RNN-T loss: ``get_rnnt_prune_ranges`` and
``do_rnnt_pruning`` (k2's API and semantics, our implementation).

The pruned loss evaluates the joiner only on ``R`` consecutive lattice
positions per frame, ``ranges[b, t] = s_begin[b, t] + [0, 1, ..., R-1]``.
``s_begin`` is picked from the arc occupancies of a cheap loss (usually
:func:`rnnt_loss_smoothed` with ``return_grad=True``):

1. score every window ``[s, s + R)`` at frame ``t`` by::

       W[s, t] = sum_{k = s}^{s+R-1} py_grad[k, t]  -  px_grad[s-1, t]

   the blank occupancy inside the window minus the occupancy of the symbol
   arc that enters the window from below at the same frame (a path taking it
   spent part of frame ``t`` below the window).  ``W`` lower-bounds the
   probability that the frame-``t`` part of the alignment lies in the window;
   ``s_begin[t] = argmax_s W[s, t]`` (first maximum on ties);
2. frames ``t >= T_b - 1`` use ``max(S_b - R + 1, 0)`` so that the last valid
   frame's window ends at ``S_b`` (the final blank is taken at ``(S_b, T_b-1)``);
3. make ``s_begin`` non-decreasing (suffix minimum), then enforce
   ``s_begin[t+1] - s_begin[t] <= R - 1`` (no position skipped) and
   ``s_begin[0] = 0``: with ``x[t] = (R-1) t - s_begin[t]``, take the suffix
   minimum of ``x``, clamp it at 0 and map back.  The result keeps every
   property above, and ``s_begin + R - 1 <= S``.

Step 3 can reach ``S_b`` at ``T_b - 1`` only if ``T_b (R - 1) >= S_b``; as in
k2, a smaller ``s_range`` is raised to ``max_b ceil(S_b / T_b) + 1`` with a
warning.  ``s_range`` above ``S + 1`` is clamped to ``S + 1`` (nothing pruned).
"""

from __future__ import annotations

import math
import warnings
from typing import Tuple

import torch
from torch import Tensor

from .backend import k2_or_none
from .validation import check_boundary, check_float, check_index_tensor, check_same, check_shape


def _suffix_min(x: Tensor) -> Tensor:
    """``out[..., t] = min(x[..., t:])`` along the last axis."""
    return torch.flip(torch.cummin(torch.flip(x, dims=(-1,)), dim=-1).values, dims=(-1,))


def _window_starts(px_grad: Tensor, py_grad: Tensor, s_range: int) -> Tensor:
    """``argmax_s W[s, t]`` (B, T) for windows of ``s_range`` positions (step 1)."""
    num_b, num_s1, num_t = py_grad.shape
    zeros = py_grad.new_zeros((num_b, 1, num_t))
    csum = torch.cat((zeros, torch.cumsum(py_grad, dim=1)), dim=1)  # (B, S+2, T)
    n_win = num_s1 - s_range + 1
    blank_mass = csum[:, s_range:s_range + n_win] - csum[:, :n_win]  # (B, n_win, T)
    entering = torch.cat((zeros, px_grad[:, : n_win - 1, :num_t]), dim=1)  # (B, n_win, T)
    return torch.argmax(blank_mass - entering, dim=1)


def _constrain(s_begin: Tensor, s_range: int) -> Tensor:
    """Step 3: monotone, steps below ``s_range``, starting at 0."""
    num_t = s_begin.shape[1]
    s_begin = _suffix_min(s_begin)
    ramp = (s_range - 1) * torch.arange(num_t, device=s_begin.device)
    x = torch.clamp(_suffix_min(ramp - s_begin), min=0)
    return ramp - x


def get_rnnt_prune_ranges(
    px_grad: Tensor,
    py_grad: Tensor,
    boundary: Tensor,
    s_range: int,
) -> Tensor:
    """Per-frame lattice positions to keep, from the occupancies of a cheap loss.

    Args:
      px_grad: (B, S, T+1) symbol-arc occupancies (``return_grad=True`` of
        :func:`rnnt_loss_smoothed` / :func:`rnnt_loss_simple`).
      py_grad: (B, S+1, T) blank-arc occupancies.
      boundary: (B, 4) int64 rows ``[0, 0, S_b, T_b]`` (required).
      s_range: positions kept per frame, ``>= 2``.  Raised with a warning to
        ``max_b ceil(S_b / T_b) + 1`` if smaller; clamped to ``S + 1``.

    Returns:
      ranges (B, T, R) int64 with ``R`` the effective ``s_range``:
      ``ranges[b, t, r] = ranges[b, t, 0] + r``; ``ranges[b, :, 0]`` starts at
      0, never decreases and steps by less than ``R``; the range of frame
      ``T_b - 1`` contains ``S_b``.  Positions above ``S_b`` are padding.
    """
    fn = "get_rnnt_prune_ranges"
    if isinstance(s_range, bool) or not isinstance(s_range, int):
        raise ValueError(f"{fn}: s_range must be an int, got {s_range!r}")
    if s_range < 2:
        raise ValueError(
            f"{fn}: s_range={s_range} < 2; the regular transducer needs at least 2 "
            "positions per frame or no path survives pruning"
        )
    k2 = k2_or_none()
    if k2 is not None:
        return k2.get_rnnt_prune_ranges(px_grad, py_grad, boundary, s_range)
    check_float(fn, "px_grad", px_grad, 3)
    check_float(fn, "py_grad", py_grad, 3)
    check_same(fn, "px_grad", px_grad, py_grad=py_grad)
    num_b, num_s, width = px_grad.shape
    num_t = py_grad.shape[2]
    if width != num_t + 1:
        raise ValueError(
            f"{fn}: px_grad has shape {tuple(px_grad.shape)} and py_grad "
            f"{tuple(py_grad.shape)}; expected (B, S, T+1) and (B, S+1, T)"
        )
    check_shape(fn, "py_grad", py_grad, (num_b, num_s + 1, num_t), "(B, S+1, T)")
    if boundary is None:
        raise ValueError(f"{fn}: boundary is required (rows [0, 0, S_b, T_b])")
    boundary, s_end, t_end = check_boundary(fn, boundary, num_b, num_s, num_t, px_grad.device)

    needed = 2
    if num_b > 0:
        needed = max(2, max(math.ceil(s / t) + 1 for s, t in zip(s_end.tolist(), t_end.tolist())))
    if s_range < needed:
        warnings.warn(
            f"{fn}: s_range={s_range} cannot reach S_b within T_b frames for every "
            f"utterance; using s_range={needed}",
            stacklevel=2,
        )
        s_range = needed
    s_range = min(s_range, num_s + 1)

    device = px_grad.device
    if s_range == num_s + 1 or num_b == 0:
        s_begin = torch.zeros((num_b, num_t), dtype=torch.int64, device=device)
    else:
        s_begin = _window_starts(px_grad.detach(), py_grad.detach(), s_range)
        t_idx = torch.arange(num_t, device=device).view(1, num_t)
        sb = boundary[:, 2].view(num_b, 1)
        tb = boundary[:, 3].view(num_b, 1)
        tail = torch.clamp(sb - s_range + 1, min=0)
        s_begin = torch.where(t_idx < tb - 1, s_begin, tail)
        s_begin = _constrain(s_begin, s_range)
    steps = torch.arange(s_range, device=device).view(1, 1, s_range)
    return s_begin.unsqueeze(2) + steps


def do_rnnt_pruning(am: Tensor, lm: Tensor, ranges: Tensor) -> Tuple[Tensor, Tensor]:
    """Expand encoder and decoder outputs onto the pruned lattice nodes.

    Args:
      am: (B, T, C) encoder-side joiner input.
      lm: (B, S+1, C) decoder-side joiner input.
      ranges: (B, T, R) int64 positions from :func:`get_rnnt_prune_ranges`.

    Returns:
      ``am_pruned`` (B, T, R, C) -- a broadcast view of ``am`` -- and
      ``lm_pruned`` (B, T, R, C) with ``lm_pruned[b, t, r] = lm[b, ranges[b, t, r]]``.
      The gather is an ``index_select`` on the flattened ``lm``, whose backward
      is an ``index_add`` into (B, S+1, C) rather than into a (B, T, S+1, C)
      buffer.
    """
    fn = "do_rnnt_pruning"
    k2 = k2_or_none()
    if k2 is not None:
        return k2.do_rnnt_pruning(am, lm, ranges)
    check_float(fn, "am", am, 3)
    check_float(fn, "lm", lm, 3)
    check_same(fn, "am", am, lm=lm)
    ranges = check_index_tensor(fn, "ranges", ranges, 3)
    num_b, num_t, num_r = ranges.shape
    if am.shape[:2] != (num_b, num_t) or lm.shape[0] != num_b:
        raise ValueError(
            f"{fn}: am {tuple(am.shape)}, lm {tuple(lm.shape)} and ranges "
            f"{tuple(ranges.shape)} disagree; expected am (B, T, C), lm (B, S+1, C), "
            "ranges (B, T, R)"
        )
    num_s1, dim = lm.shape[1], lm.shape[2]
    if ranges.device != lm.device:
        raise ValueError(f"{fn}: ranges is on {ranges.device} but lm is on {lm.device}")
    if ranges.numel() > 0 and bool(((ranges < 0) | (ranges >= num_s1)).any()):
        raise ValueError(f"{fn}: ranges must lie in [0, S] = [0, {num_s1 - 1}]")
    am_pruned = am.unsqueeze(2).expand(num_b, num_t, num_r, am.shape[2])
    offsets = (torch.arange(num_b, device=lm.device) * num_s1).view(num_b, 1, 1)
    flat = (ranges + offsets).reshape(-1)
    lm_pruned = lm.reshape(num_b * num_s1, dim).index_select(0, flat)
    return am_pruned, lm_pruned.view(num_b, num_t, num_r, dim)
