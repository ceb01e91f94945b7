"""Multi-head self-attention with rotary position embeddings and chunk masks.

Position scheme: rotary embeddings (RoPE, Su et al. 2021). Every head splits
its ``d_h`` channels into ``d_h / 2`` pairs ``(x_i, x_{i + d_h/2})``; pair ``i``
of a query or key at absolute frame index ``p`` is rotated by the angle
``p * theta_i`` with ``theta_i = base^(-2i / d_h)``.  For a query at ``p`` and a
key at ``s``

    <R(p theta) q, R(s theta) k> = <q, R((s - p) theta) k>,

so attention scores depend on the relative offset ``s - p`` only, although
each vector is rotated once, by its own absolute index.  This is what makes
streaming exact and cheap: a cached key keeps its rotation forever (we cache
keys *after* rotation, at their absolute encoder-frame index), and a query
of a later chunk is rotated by its own absolute index.  Full-utterance and
chunk-by-chunk computations therefore perform the very same arithmetic per
(query, key) pair.

Masks are boolean with ``True`` = "may attend".  Masked scores are replaced
(not added to) by the most negative finite value of the dtype, so a row with
no allowed key yields a uniform (finite) distribution instead of NaN; such
rows only occur for padding queries, whose outputs are ignored.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

__all__ = [
    "pick_chunk_option",
    "chunk_attention_mask",
    "rotary_angles",
    "apply_rotary",
    "RotaryMultiheadAttention",
]


def chunk_attention_mask(
    num_frames: int,
    chunk_size: int,
    left_context: int,
    device: Optional[torch.device] = None,
) -> Tensor:
    """Chunk-wise attention mask.

    Frame ``q`` belongs to chunk ``c = q // K`` (``K = chunk_size``) and may
    attend to key ``s`` iff

        s < (c + 1) K                       (nothing beyond its own chunk)
        and (L < 0  or  s >= c K - L)       (at most L frames of left context)

    with ``L = left_context`` (``-1`` = unlimited).  ``chunk_size <= 0`` means
    full context (every entry ``True``; ``left_context`` is then ignored).

    Args:
      num_frames: T, number of encoder frames.
      chunk_size: K, chunk size in encoder frames.
      left_context: L, left context in encoder frames, ``-1`` = unlimited.
      device: device of the result.

    Returns:
      (T, T) bool tensor, ``mask[q, s]`` = query q may attend key s.
    """
    if left_context < -1:
        raise ValueError(f"chunk attention mask: left_context must be >= -1, got {left_context}")
    if chunk_size <= 0:
        return torch.ones(num_frames, num_frames, dtype=torch.bool, device=device)
    t = torch.arange(num_frames, device=device)
    chunk_start = (t // chunk_size) * chunk_size  # (T,)
    allowed = t[None, :] < (chunk_start + chunk_size)[:, None]
    if left_context >= 0:
        allowed &= t[None, :] >= (chunk_start - left_context)[:, None]
    return allowed


def rotary_angles(
    positions: Tensor, head_dim: int, base: float = 10000.0, float32_trig: bool = False
) -> tuple[Tensor, Tensor]:
    """cos / sin tables for rotary embeddings.

    Angles are computed in float64 (positions of long streams grow without
    bound, float32 would lose the fast-rotating pairs first).

    With ``float32_trig`` (used for ONNX export: some ONNX Runtime builds have
    no float64 Cos/Sin) the float64 angle is first reduced to ``[0, 2 pi)``,
    then cast to float32 and cos / sin are taken in float32; the tables then
    differ from the default ones by float32 rounding (~1e-7), whatever the
    position.

    Args:
      positions: (B, T) int64 absolute encoder-frame indices.
      head_dim: d_h, even.
      base: the rotary base (10000 as in RoPE).
      float32_trig: reduce in float64, evaluate cos / sin in float32.

    Returns:
      (cos, sin), each (B, 1, T, d_h / 2), float64 (float32 with
      ``float32_trig``), ready to broadcast over heads.
    """
    half = head_dim // 2
    inv_freq = base ** (-torch.arange(half, dtype=torch.float64, device=positions.device) * 2.0 / head_dim)
    angles = positions.to(torch.float64)[..., None] * inv_freq  # (B, T, d_h/2)
    if float32_trig:
        two_pi = 2.0 * math.pi
        angles = (angles - torch.floor(angles / two_pi) * two_pi).to(torch.float32)
    return angles.cos()[:, None], angles.sin()[:, None]


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs ``(x_i, x_{i + d_h/2})`` by the tabulated angles.

        y_i         = x_i cos(a_i) - x_{i+h} sin(a_i)
        y_{i + h}   = x_i sin(a_i) + x_{i+h} cos(a_i),   h = d_h / 2

    Args:
      x: (B, H, T, d_h).
      cos, sin: (B, 1, T, d_h / 2) (any float dtype; cast to x's dtype).

    Returns:
      (B, H, T, d_h), same dtype as x.
    """
    cos = cos.to(x.dtype)
    sin = sin.to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class RotaryMultiheadAttention(nn.Module):
    """Multi-head self-attention whose queries and keys carry rotary positions.

        Q, K, V = x W_q, x W_k, x W_v              (B, T, D) -> (B, H, T, d_h)
        Q, K    = RoPE(Q, pos), RoPE(K, pos)
        A       = softmax(mask(Q K^T / sqrt(d_h)))  (B, H, T_q, T_k)
        out     = concat_heads(A V) W_o             (B, T, D)

    Optional cached (already rotated) keys and values of earlier frames are
    prepended to this call's keys and values; the mask then covers
    ``T_k = C + T`` keys (cache first).
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, rotary_base: float = 10000.0) -> None:
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError(f"Conformer config: d_model={d_model} is not divisible by num_heads={num_heads}")
        head_dim = d_model // num_heads
        if head_dim % 2 != 0:
            raise ValueError(
                f"Conformer config: rotary embeddings need an even head dim (d_model / num_heads), got {head_dim}"
            )
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.rotary_base = rotary_base
        #: evaluate rotary cos / sin in float32 after a float64 range reduction (ONNX export only)
        self.float32_trig = False
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, H, T, d_h)."""
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def _merge(self, x: Tensor) -> Tensor:
        """(B, H, T, d_h) -> (B, T, D)."""
        b, _, t, _ = x.shape
        return x.transpose(1, 2).reshape(b, t, self.d_model)

    def forward(
        self,
        x: Tensor,
        positions: Tensor,
        allowed: Tensor,
        cached_keys: Optional[Tensor] = None,
        cached_values: Optional[Tensor] = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Attend from the T frames of ``x`` to the cache plus these frames.

        Args:
          x: (B, T, D) input (already layer-normalised by the caller).
          positions: (B, T) int64 absolute frame indices of x's frames.
          allowed: (B, T, C + T) or broadcastable bool mask, True = may attend.
          cached_keys: (B, C, D) rotated keys of earlier frames, or None (C = 0).
          cached_values: (B, C, D) values of earlier frames, or None.

        Returns:
          out: (B, T, D) attention output.
          keys: (B, T, D) this call's rotated keys (heads concatenated), to cache.
          values: (B, T, D) this call's values, to cache.
        """
        q, k, v = self.in_proj(x).chunk(3, dim=-1)
        cos, sin = rotary_angles(positions, self.head_dim, self.rotary_base, self.float32_trig)
        q = apply_rotary(self._split(q), cos, sin)
        k = apply_rotary(self._split(k), cos, sin)
        new_keys, new_values = self._merge(k), v
        if cached_keys is not None and cached_keys.size(1) > 0:
            if cached_values is None:
                raise ValueError("Conformer self-attention: cached_keys given without cached_values")
            k = torch.cat((self._split(cached_keys), k), dim=2)
            v = torch.cat((cached_values, v), dim=1)
        v = self._split(v)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (B, H, Tq, Tk)
        if allowed.dim() == 3:
            allowed = allowed[:, None]
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        weights = self.dropout(torch.softmax(scores, dim=-1))
        out = self.out_proj(self._merge(torch.matmul(weights, v)))
        return out, new_keys, new_values


def pick_chunk_option(value: Optional[int], options: tuple[int, ...], default: int, draw: bool) -> int:
    """One chunk setting (K or L, encoder frames) for a full forward of a causal encoder.

    A given ``value`` wins; else ``default`` when ``options`` is empty; else, with
    ``draw`` (training mode with dynamic chunks), a uniform draw from ``options``
    (global torch RNG, so resume reproduces it); else the first option.
    """
    if value is not None:
        return int(value)
    if not options:
        return default
    if draw and len(options) > 1:
        return options[int(torch.randint(len(options), (1,)).item())]
    return options[0]
