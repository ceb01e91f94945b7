"""Lattice arc weights ``(px, py)`` for the transducer losses.

All builders return, for the recursion of :mod:`.mutual_information`,

* ``px`` (B, S, T+1): ``px[b, s, t]`` = log-prob of emitting symbol
  ``symbols[b, s]`` at frame ``t`` from lattice node ``(s, t)``;
  ``px[b, :, t] = -inf`` for ``t >= T_b`` (no symbol after the last frame);
* ``py`` (B, S+1, T): ``py[b, s, t]`` = log-prob of the termination symbol
  (blank) at node ``(s, t)``, which moves to frame ``t + 1``.

Speed notes (the recursion is cheap; this is where the time goes):

* :class:`JointLogprobs` (simple/smoothed losses) never materialises
  (B, T, S+1, V): the joint normaliser ``log sum_v exp(am[t,v] + lm[s,v])``
  is one batched matmul of max-shifted exponentials, the symbol and blank
  scores are gathers on (B, T, V) and (B, S+1, V) -- never on an expanded 4-D
  view, whose backward would allocate (B, S, T, V) -- and the backward builds
  both input gradients in place in its two matmul outputs.
* :class:`GatherLogSoftmax` (pruned and full losses) turns joiner logits
  (N, K, V) into the two per-node log-probs needed, storing only the per-node
  log-sum-exp; its backward writes the logits gradient in one pass (softmax
  times the negated occupancy, plus the occupancy at the gathered ids), chunk
  by chunk on CPU so that scratch memory stays in cache.
* Exponents are clamped so that no subnormal float reaches a matmul or the
  gradients (:func:`exp_floor`): subnormal arithmetic is many times slower.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

_NEG_INF = float("-inf")


def finish_px(px_valid: Tensor, t_end: Tensor, delay_penalty: float) -> Tensor:
    """Append the end column and apply k2's ``delay_penalty``.

    px_valid: (B, S, T) emission log-probs at frames ``0..T-1``.
    t_end: (B,) int64 ``T_b`` on px's device.
    With ``delay_penalty > 0`` (k2 ignores values <= 0), every emission at frame
    ``t`` gains ``delay_penalty * ((T_b - 1) / 2 - t)``: early emissions are
    rewarded, late ones penalised, and the mean over an utterance's frames is 0.
    Returns px (B, S, T+1) with ``-inf`` at ``t >= T_b``.
    """
    num_b, num_s, num_t = px_valid.shape
    t_idx = torch.arange(num_t + 1, device=px_valid.device)
    if delay_penalty > 0.0:
        offset = (t_end.to(px_valid.dtype) - 1.0) / 2.0
        penalty = (offset.view(num_b, 1) - t_idx[:num_t].to(px_valid.dtype)) * delay_penalty
        px_valid = px_valid + penalty.unsqueeze(1)
    end_col = px_valid.new_full((num_b, num_s, 1), _NEG_INF)
    px = torch.cat((px_valid, end_col), dim=2)
    beyond = t_idx.view(1, 1, -1) >= t_end.view(-1, 1, 1)
    return px.masked_fill(beyond, _NEG_INF)


def exp_floor(dtype: torch.dtype) -> float:
    """Lower clamp for exponents so ``exp`` never returns a subnormal number.

    Subnormal floats make later CPU arithmetic on them (matmuls included)
    many times slower.  Clamping ``x - max`` at this floor changes a
    probability of at most ``exp(floor)`` (1e-35 in float32, 1e-304 in
    float64) -- invisible next to the row maximum's contribution of 1.
    """
    return -80.0 if dtype == torch.float32 else -700.0


class JointLogprobs(torch.autograd.Function):
    """Symbol and blank log-probs of the additive joiner, one fused backward.

    Forward, with ``N[b, s, t] = log sum_v exp(lm[b, s, v] + am[b, t, v])``::

        px[b, s, t] = am[b, t, y_s] + lm[b, s, y_s] - N[b, s, t]      (B, S, T)
        py[b, s, t] = am[b, t, blank] + lm[b, s, blank] - N[b, s, t]  (B, S+1, T)

    ``N`` is one matmul: ``M = exp(lm - lm_max) @ exp(am - am_max)^T + tiny``
    (k2 adds ``finfo.tiny`` too), ``N = log M + lm_max + am_max^T`` with the
    row maxima treated as constants (``N`` does not depend on them).

    Backward, with ``G = -(gpx padded to S+1 rows) - gpy`` and ``P = G / M``::

        dlm = exp(lm - lm_max) * (P @ exp(am - am_max))   + one-hot terms
        dam = exp(am - am_max) * (P^T @ exp(lm - lm_max)) + one-hot terms

    where the one-hot terms put ``sum_t gpx`` / ``sum_s gpx`` on the symbol ids
    and ``sum gpy`` on the blank.  Each gradient is built in place in its
    matmul output -- no (B, T, V) zero buffers, no extra accumulation passes --
    and subnormal values are kept out of the matmuls (see :func:`exp_floor`).
    """

    @staticmethod
    def forward(ctx, lm: Tensor, am: Tensor, symbols: Tensor, blank: int
                ) -> Tuple[Tensor, Tensor]:
        num_b, num_t, _ = am.shape
        num_s = symbols.shape[1]
        floor = exp_floor(am.dtype)
        am_max = am.amax(dim=2, keepdim=True)
        lm_max = lm.amax(dim=2, keepdim=True)
        am_e = torch.sub(am, am_max).clamp_min_(floor).exp_()
        lm_e = torch.sub(lm, lm_max).clamp_min_(floor).exp_()
        mat = torch.matmul(lm_e, am_e.transpose(1, 2)).add_(torch.finfo(am.dtype).tiny)
        norm = mat.log().add_(lm_max).add_(am_max.transpose(1, 2))  # (B, S+1, T)
        sym_t = symbols.unsqueeze(1).expand(num_b, num_t, num_s)
        px = am.gather(2, sym_t).transpose(1, 2) + lm[:, :num_s].gather(2, symbols.unsqueeze(2))
        px.sub_(norm[:, :num_s])
        py = norm.neg_().add_(am[:, :, blank].unsqueeze(1)).add_(lm[:, :, blank].unsqueeze(2))
        ctx.save_for_backward(lm_e, am_e, mat, symbols)
        ctx.blank = blank
        return px, py

    @staticmethod
    @once_differentiable
    def backward(ctx, gpx: Optional[Tensor], gpy: Optional[Tensor]):
        lm_e, am_e, mat, symbols = ctx.saved_tensors
        num_b, num_s1, num_t = mat.shape
        num_s = num_s1 - 1
        gpx = gpx if gpx is not None else mat.new_zeros((num_b, num_s, num_t))
        gpy = gpy if gpy is not None else mat.new_zeros((num_b, num_s1, num_t))
        p = gpy.neg()
        p[:, :num_s] -= gpx
        p.div_(mat)
        p.masked_fill_(p.abs() < torch.finfo(p.dtype).tiny, 0.0)
        g_lm = g_am = None
        if ctx.needs_input_grad[0]:
            g_lm = torch.matmul(p, am_e).mul_(lm_e)
            g_lm[:, :num_s].scatter_add_(2, symbols.unsqueeze(2), gpx.sum(dim=2, keepdim=True))
            g_lm[:, :, ctx.blank] += gpy.sum(dim=2)
        if ctx.needs_input_grad[1]:
            g_am = torch.matmul(p.transpose(1, 2).contiguous(), lm_e).mul_(am_e)
            sym_t = symbols.unsqueeze(1).expand(num_b, num_t, num_s)
            g_am.scatter_add_(2, sym_t, gpx.transpose(1, 2))
            g_am[:, :, ctx.blank] += gpy.sum(dim=1)
        return g_lm, g_am, None, None


def simple_logprobs(
    lm: Tensor, am: Tensor, symbols: Tensor, termination_symbol: int,
    lm_only_scale: float = 0.0, am_only_scale: float = 0.0,
) -> Tuple[Tensor, Tensor]:
    """Emission/blank log-probs of the additive joiner ``am[t] + lm[s]``.

    lm (B, S+1, V), am (B, T, V), symbols (B, S) valid ids.
    Returns ``px_valid`` (B, S, T) and ``py`` (B, S+1, T).

    With non-zero scales the result is k2's *smoothed* interpolation::

        c * log p_joint + lm_only_scale * log p_lm + am_only_scale * log p_am,
        c = 1 - lm_only_scale - am_only_scale

    where ``p_lm(v | s) = softmax(lm[s])`` and ``p_am(v | t) ∝ exp(am[t, v]) u(v)``
    with ``u`` the LM posterior averaged over every batch element and every
    position 0..S (padding included, as k2 does) plus ``finfo.tiny``.  k2
    replaces a zero scale by 1e-20 to dodge ``0 * -inf``; we never form
    ``-inf`` here, so a zero scale simply drops its term (a difference of
    order 1e-20).
    """
    num_b, num_t, vocab = am.shape
    num_s = lm.shape[1] - 1
    tiny = torch.finfo(am.dtype).tiny
    px, py = JointLogprobs.apply(lm, am, symbols, termination_symbol)
    combined = 1.0 - lm_only_scale - am_only_scale
    if combined != 1.0:
        px = px * combined
        py = py * combined
    if lm_only_scale != 0.0:
        lm_lse = torch.logsumexp(lm, dim=2, keepdim=True)  # (B, S+1, 1)
        px_lm = lm[:, :num_s].gather(2, symbols.unsqueeze(2))  # (B, S, 1)
        py_lm = lm[:, :, termination_symbol].unsqueeze(2)  # (B, S+1, 1)
        px = px + (px_lm - lm_lse[:, :num_s]) * lm_only_scale
        py = py + (py_lm - lm_lse) * lm_only_scale
    if am_only_scale != 0.0:
        unigram = torch.softmax(lm, dim=2).mean(dim=(0, 1)) + tiny  # (V,)
        am_max = am.detach().amax(dim=2)
        am_norm = torch.matmul((am - am_max.unsqueeze(2)).exp(), unigram).log() + am_max
        log_uni = unigram.log()
        am_norm = am_norm.unsqueeze(1)  # (B, 1, T)
        px_am = am.gather(2, symbols.unsqueeze(1).expand(num_b, num_t, num_s)).transpose(1, 2)
        py_am = am[:, :, termination_symbol].unsqueeze(1)  # (B, 1, T)
        px = px + (px_am + log_uni[symbols].unsqueeze(2) - am_norm) * am_only_scale
        py = py + (py_am + log_uni[termination_symbol] - am_norm) * am_only_scale
    return px, py


class GatherLogSoftmax(torch.autograd.Function):
    """Per-node symbol and blank log-probs from raw logits, one fused backward.

    Forward: logits (N, K, V), ids (N, K) int64, blank int ->
    ``x[n, k] = logits[n, k, ids[n, k]] - lse[n, k]`` and
    ``y[n, k] = logits[n, k, blank] - lse[n, k]``, ``lse = logsumexp_v logits``.
    Backward: ``dL/dlogits = onehot(ids) gx + onehot(blank) gy
    - softmax(logits) (gx + gy)``, built in place in the returned gradient.
    Saves ``logits`` (the caller's tensor, not a copy) and ``lse`` (N, K).
    """

    @staticmethod
    def forward(ctx, logits: Tensor, ids: Tensor, blank: int) -> Tuple[Tensor, Tensor]:
        lse = _chunked_logsumexp(logits)
        x = logits.gather(2, ids.unsqueeze(2)).squeeze(2) - lse
        y = logits[:, :, blank] - lse
        ctx.save_for_backward(logits, ids, lse)
        ctx.blank = blank
        return x, y

    @staticmethod
    @once_differentiable
    def backward(ctx, gx: Optional[Tensor], gy: Optional[Tensor]):
        logits, ids, lse = ctx.saved_tensors
        if gx is None:
            gx = torch.zeros_like(lse)
        if gy is None:
            gy = torch.zeros_like(lse)
        weight = (gx + gy).neg_().unsqueeze(2)
        grad = torch.empty_like(logits)
        floor = exp_floor(logits.dtype)
        rows = _chunk_rows(logits)
        for start in range(0, logits.shape[0], rows):
            end = start + rows
            part = grad[start:end]
            torch.sub(logits[start:end], lse[start:end].unsqueeze(2), out=part)
            part.clamp_min_(floor).exp_().mul_(weight[start:end])
        grad.scatter_add_(2, ids.unsqueeze(2), gx.unsqueeze(2))
        grad[:, :, ctx.blank] += gy
        return grad, None, None


def _chunked_logsumexp(logits: Tensor) -> Tensor:
    """``logsumexp`` over the last axis of (N, K, V), chunk by chunk on CPU.

    One cache-sized scratch buffer is reused for ``exp(x - max)`` of every
    chunk, instead of the full-size temporaries ``torch.logsumexp`` allocates
    (fresh memory costs a page fault per 4 KiB on first touch).
    """
    if logits.device.type != "cpu":
        return torch.logsumexp(logits, dim=2)
    rows = _chunk_rows(logits)
    floor = exp_floor(logits.dtype)
    maxes = logits.amax(dim=2)  # (N, K)
    sums = torch.empty_like(maxes)
    scratch = logits.new_empty((min(rows, logits.shape[0]),) + tuple(logits.shape[1:]))
    for start in range(0, logits.shape[0], rows):
        end = min(start + rows, logits.shape[0])
        buf = scratch[: end - start]
        torch.sub(logits[start:end], maxes[start:end].unsqueeze(2), out=buf)
        buf.clamp_min_(floor).exp_()
        torch.sum(buf, dim=2, out=sums[start:end])
    return sums.log_().add_(maxes)


def _chunk_rows(logits: Tensor) -> int:
    """Rows of (N, K, V) per chunk so a chunk is ~2**18 elements (cache-sized).

    Working chunk by chunk keeps temporaries in cache and avoids allocating
    (and page-faulting) full-size scratch buffers; on GPUs one chunk is enough.
    """
    if logits.device.type != "cpu":
        return max(1, logits.shape[0])
    per_row = max(1, logits.shape[1] * logits.shape[2])
    return max(1, (1 << 18) // per_row)


def joint_logprobs(logits: Tensor, symbols: Tensor, termination_symbol: int
                   ) -> Tuple[Tensor, Tensor]:
    """Full joiner output (B, T, S+1, V) -> ``px_valid`` (B, S, T), ``py`` (B, S+1, T)."""
    num_b, num_t, num_s1, vocab = logits.shape
    num_s = num_s1 - 1
    ext = torch.cat((symbols, symbols.new_full((num_b, 1), termination_symbol)), dim=1)
    ids = ext.unsqueeze(1).expand(num_b, num_t, num_s1).reshape(num_b * num_t, num_s1)
    x, y = GatherLogSoftmax.apply(logits.reshape(num_b * num_t, num_s1, vocab), ids,
                                  termination_symbol)
    x = x.view(num_b, num_t, num_s1)[:, :, :num_s].transpose(1, 2)
    y = y.view(num_b, num_t, num_s1).transpose(1, 2)
    return x, y


def pruned_logprobs(logits: Tensor, symbols: Tensor, ranges: Tensor, termination_symbol: int
                    ) -> Tuple[Tensor, Tensor]:
    """Pruned joiner output (B, T, R, V) -> ``px_valid`` (B, S, T), ``py`` (B, S+1, T).

    ``logits[b, t, r]`` belongs to lattice node ``(ranges[b, t, r], t)``; nodes
    outside a frame's range get ``-inf`` arcs (they lie on no kept path).
    """
    num_b, num_t, num_r, vocab = logits.shape
    num_s = symbols.shape[1]
    ext = torch.cat((symbols, symbols.new_full((num_b, 1), termination_symbol)), dim=1)
    ids = ext.gather(1, ranges.reshape(num_b, num_t * num_r))
    x, y = GatherLogSoftmax.apply(logits.reshape(num_b * num_t, num_r, vocab),
                                  ids.view(num_b * num_t, num_r), termination_symbol)
    full = logits.new_full((num_b, num_t, num_s + 1), _NEG_INF)
    px = full.scatter(2, ranges, x.view(num_b, num_t, num_r))[:, :, :num_s].transpose(1, 2)
    py = full.scatter(2, ranges, y.view(num_b, num_t, num_r)).transpose(1, 2)
    return px, py
