"""Zipformer attention: compact relative positions, shared attention weights, SelfAttention, NonlinAttention.

Facts from icefall's zipformer recipe (``zipformer.py``, as of commit
36e0420c; Yao et al. 2024); the code is our own.

Relative positions.  A query at frame i and a key at frame j have offset
delta = i - j.  ``compact_rel_pos_table`` embeds each integer delta as

    xc    = c sign(delta) (ln(|delta| + c) - ln c),       c = sqrt(pos_dim)
    theta = atan(xc / Lf),                                Lf = length_factor pos_dim / (2 pi)
    e     = [cos(theta), sin(theta), cos(2 theta), sin(2 theta), ..., cos(n theta), 1],  n = pos_dim / 2

(the last column, sin(n theta), is replaced by the constant 1, a bias).
Large offsets are compressed logarithmically, so far-away frames share
nearly the same embedding.  The table is a pure function of delta: the full
forward (delta in [-(T-1), T-1]) and a streaming chunk (delta in
[-(C-1), L + C - 1] with L cached frames) compute identical rows.

Attention weights (computed once per layer, shared by three modules):

    [q | k | p] = x W_in            q, k: (H, qhd) per frame, p: (H, phd)
    score[h, i, j] = q_h(i) . k_h(j) + p_h(i) . (W_pos e(i - j))_h
    A = softmax_j(mask(score))      (B, H, T_q, T_k)

There is no 1/sqrt(qhd) factor: W_in's initial scale (qhd^-0.25) takes its
place at initialisation.  Masked scores are replaced by the dtype's most
negative finite value, so masked keys get exactly zero weight and a query
with no allowed key (padding only) gets finite uniform weights.

* ``SelfAttention``: out = W_o concat_h(A_h (x W_v)_h)   (values H x vhd).
* ``NonlinAttention`` (head 0's weights only): [s | x | y] = x W_in
  (3 h wide, h = 3d/4); x <- x tanh(s); x <- A_0 x; x <- x y; out = W_o x.

Streaming caches (per layer, batch-first): the keys k of the last L frames
(B, L, H qhd), the NonlinAttention's tanh-gated x (B, L, 3d/4) and the
values of the two SelfAttentions (B, L, H vhd).

Skipped (training-time regularisers): Balancer, Whiten, the positional-score
skip, the score penalty and the const-attention replacement.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from asr_kd.models.zipformer.scaling import scaled_linear

__all__ = [
    "compact_rel_pos_table",
    "CompactRelPositionalEncoding",
    "relative_index",
    "RelPositionAttentionWeights",
    "SelfAttention",
    "NonlinAttention",
]


def compact_rel_pos_table(deltas: Tensor, pos_dim: int, length_factor: float = 1.0) -> Tensor:
    """Embeddings of relative offsets (formula: module docstring).

    Args:
      deltas: (P,) float offsets (query frame minus key frame).
      pos_dim: embedding width (even).
      length_factor: Lf = length_factor pos_dim / (2 pi).

    Returns:
      (P, pos_dim), deltas' dtype.
    """
    c = math.sqrt(pos_dim)
    compressed = c * torch.sign(deltas) * (torch.log(deltas.abs() + c) - math.log(c))
    theta = torch.atan(compressed / (length_factor * pos_dim / (2.0 * math.pi)))  # (P,)
    k = torch.arange(1, pos_dim // 2 + 1, dtype=deltas.dtype, device=deltas.device)
    angles = theta[:, None] * k[None, :]  # (P, pos_dim / 2)
    table = torch.stack((angles.cos(), angles.sin()), dim=-1).reshape(deltas.size(0), pos_dim)
    table[:, -1] = 1.0
    return table


class CompactRelPositionalEncoding(nn.Module):
    """Table of ``compact_rel_pos_table`` rows for a contiguous range of offsets, with dropout."""

    def __init__(self, pos_dim: int, dropout: float = 0.0, length_factor: float = 1.0) -> None:
        super().__init__()
        self.pos_dim = pos_dim
        self.length_factor = length_factor
        self.dropout = nn.Dropout(dropout)

    def forward(self, min_delta: int, max_delta: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """(max_delta - min_delta + 1, pos_dim): row r embeds offset min_delta + r."""
        deltas = torch.arange(min_delta, max_delta + 1, device=device).to(dtype)
        return self.dropout(compact_rel_pos_table(deltas, self.pos_dim, self.length_factor))


def relative_index(num_queries: int, num_cached: int, device: torch.device) -> tuple[Tensor, int, int]:
    """Row of the positional table for every (query, key) pair.

    Queries are frames 0 .. Tq - 1 of this call; keys are the ``num_cached``
    earlier frames followed by the queries' own frames, i.e. frames
    -Lc .. Tq - 1.  delta = i - j ranges over [-(Tq - 1), Tq - 1 + Lc].

    Returns:
      index: (Tq, Lc + Tq) int64, delta - min_delta.
      min_delta, max_delta: the table's range.
    """
    q = torch.arange(num_queries, device=device)
    k = torch.arange(-num_cached, num_queries, device=device)
    min_delta = -(num_queries - 1)
    return q[:, None] - k[None, :] - min_delta, min_delta, num_queries - 1 + num_cached


class RelPositionAttentionWeights(nn.Module):
    """Multi-head attention weights with relative positional scores (math: module docstring)."""

    def __init__(self, dim: int, num_heads: int, query_head_dim: int, pos_head_dim: int, pos_dim: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.query_head_dim = query_head_dim
        self.pos_head_dim = pos_head_dim
        self.in_proj = scaled_linear(dim, (2 * query_head_dim + pos_head_dim) * num_heads,
                                     initial_scale=query_head_dim ** -0.25)
        self.linear_pos = scaled_linear(pos_dim, num_heads * pos_head_dim, bias=False, initial_scale=0.05)

    @property
    def key_dim(self) -> int:
        """Width of a cached key frame, H qhd."""
        return self.num_heads * self.query_head_dim

    def forward(
        self,
        x: Tensor,
        pos_table: Tensor,
        rel_index: Tensor,
        allowed: Tensor,
        cached_keys: Optional[Tensor] = None,
    ) -> tuple[Tensor, Tensor]:
        """Attention weights of this call's frames over the cache plus these frames.

        Args:
          x: (B, Tq, d).
          pos_table: (P, pos_dim) positional embeddings (``CompactRelPositionalEncoding``).
          rel_index: (Tq, Tk) int64 table row of each (query, key) pair.
          allowed: bool, broadcastable to (B, Tq, Tk); True = may attend.
          cached_keys: (B, Lc, H qhd) keys of the Lc earlier frames, or None.

        Returns:
          weights: (B, H, Tq, Tk), Tk = Lc + Tq; rows sum to 1.
          keys: (B, Tq, H qhd) this call's keys (to cache).
        """
        b, tq, _ = x.shape
        h, qd, pd = self.num_heads, self.query_head_dim, self.pos_head_dim
        proj = self.in_proj(x)
        q, k, p = proj.split((h * qd, h * qd, h * pd), dim=-1)
        new_keys = k
        if cached_keys is not None and cached_keys.size(1) > 0:
            k = torch.cat((cached_keys.to(k.dtype), k), dim=1)
        tk = k.size(1)
        q = q.reshape(b, tq, h, qd).transpose(1, 2)  # (B, H, Tq, qhd)
        k = k.reshape(b, tk, h, qd).permute(0, 2, 3, 1)  # (B, H, qhd, Tk)
        scores = torch.matmul(q, k)  # (B, H, Tq, Tk)
        pe = self.linear_pos(pos_table)  # (P, H phd)
        pe = pe.reshape(-1, h, pd).permute(1, 2, 0)  # (H, phd, P)
        p = p.reshape(b, tq, h, pd).transpose(1, 2)  # (B, H, Tq, phd)
        pos_scores = torch.matmul(p, pe)  # (B, H, Tq, P)
        if rel_index.shape != (tq, tk):
            raise ValueError(f"zipformer: rel_index must be {(tq, tk)}, got {tuple(rel_index.shape)}")
        pos_scores = torch.gather(pos_scores, 3, rel_index.expand(b, h, tq, tk))
        scores = scores + pos_scores
        if allowed.dim() == 3:
            allowed = allowed[:, None]
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        return torch.softmax(scores, dim=-1), new_keys


class SelfAttention(nn.Module):
    """Weighted sum of per-head values: (B, Tq, d) -> (B, Tq, d), values cached for streaming."""

    def __init__(self, dim: int, num_heads: int, value_head_dim: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.value_head_dim = value_head_dim
        self.in_proj = nn.Linear(dim, num_heads * value_head_dim)
        self.out_proj = scaled_linear(num_heads * value_head_dim, dim, initial_scale=0.05)

    @property
    def value_dim(self) -> int:
        """Width of a cached value frame, H vhd."""
        return self.num_heads * self.value_head_dim

    def forward(self, x: Tensor, weights: Tensor, cached_values: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """x (B, Tq, d), weights (B, H, Tq, Tk), cached_values (B, Lc, H vhd) -> (out (B, Tq, d), values (B, Tq, H vhd))."""
        b, tq, _ = x.shape
        v = self.in_proj(x)
        new_values = v
        if cached_values is not None and cached_values.size(1) > 0:
            v = torch.cat((cached_values.to(v.dtype), v), dim=1)
        v = v.reshape(b, v.size(1), self.num_heads, self.value_head_dim).transpose(1, 2)  # (B, H, Tk, vhd)
        out = torch.matmul(weights, v)  # (B, H, Tq, vhd)
        out = out.transpose(1, 2).reshape(b, tq, self.value_dim)
        return self.out_proj(out), new_values


class NonlinAttention(nn.Module):
    """Gated attention with one head's weights (math: module docstring); hidden h = 3d/4."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.in_proj = nn.Linear(dim, 3 * hidden_dim)
        self.out_proj = scaled_linear(hidden_dim, dim, initial_scale=0.05)

    def forward(self, x: Tensor, weights: Tensor, cached: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """x (B, Tq, d), weights (B, Tq, Tk) (head 0), cached (B, Lc, h) -> (out (B, Tq, d), gated (B, Tq, h))."""
        s, v, y = self.in_proj(x).chunk(3, dim=-1)
        v = v * torch.tanh(s)
        new_cache = v
        if cached is not None and cached.size(1) > 0:
            v = torch.cat((cached.to(v.dtype), v), dim=1)
        out = torch.matmul(weights, v) * y  # (B, Tq, h)
        return self.out_proj(out), new_cache
