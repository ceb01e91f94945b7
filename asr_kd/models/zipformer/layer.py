"""One Zipformer encoder layer (icefall's ``Zipformer2EncoderLayer``; as of commit 36e0420c; Yao et al. 2024).

Forward, (B, T, d) -> (B, T, d); ``+=`` is a residual add; src = the input:

    A   = AttentionWeights(x, positions, masks)      once, (B, H, T, Tk)
    x  += FF1(x)                                     hidden 3F/4
    x  += NonlinAttention(x, A[:, 0])                head 0 only
    x  += SelfAttention1(x, A)
    x  += Conv1(x)
    x  += FF2(x)                                     hidden F
    x   = bypass_mid(src, x)                         src + (x - src) s_mid
    x  += SelfAttention2(x, A)                       the same weights
    x  += Conv2(x)
    x  += FF3(x)                                     hidden 5F/4
    x   = BiasNorm(x)
    x   = bypass(src, x)                             src + (x - src) s

FF(x) = W2 Dropout(SwooshL(W1 x)) with W2's initial scale 0.1.

Streaming caches of a layer (batch-first; sherpa-onnx's order and meaning):
``key`` (B, L, H qhd), ``nonlin_attn`` (B, L, 3d/4), ``val1`` / ``val2``
(B, L, H vhd), ``conv1`` / ``conv2`` (B, d, k // 2); L = this stack's left
context in its own frames.  The attention caches keep the last L frames of
[cache, chunk].

Skipped from the recipe (training-time only): per-sequence module skipping
(attention/conv/ff skip rates), layer-drop in the bypass, balancers, whiten,
and the unused ``bypass_scale`` parameter.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from asr_kd.models.zipformer.attention import NonlinAttention, RelPositionAttentionWeights, SelfAttention
from asr_kd.models.zipformer.convolution import ConvolutionModule
from asr_kd.models.zipformer.scaling import BiasNorm, Bypass, scaled_linear, swoosh_l

__all__ = ["FeedForward", "ZipformerLayer", "LAYER_CACHE_NAMES"]

#: per-layer streaming caches, in sherpa-onnx's order
LAYER_CACHE_NAMES: tuple[str, ...] = ("key", "nonlin_attn", "val1", "val2", "conv1", "conv2")


class FeedForward(nn.Module):
    """``W2 Dropout(SwooshL(W1 x))``: (B, T, d) -> (B, T, d); W2 initial scale 0.1."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_proj = nn.Linear(dim, hidden_dim)
        self.out_proj = scaled_linear(hidden_dim, dim, initial_scale=0.1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_proj(self.dropout(swoosh_l(self.in_proj(x))))


def _keep_last(old: Tensor, new: Tensor) -> Tensor:
    """Concatenate along time (dim 1) and keep the last ``old.size(1)`` frames (0 allowed)."""
    both = torch.cat((old.to(new.dtype), new), dim=1)
    return both[:, both.size(1) - old.size(1) :]


class ZipformerLayer(nn.Module):
    """Zipformer encoder layer; forward order and caches: module docstring."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        feedforward_dim: int,
        cnn_kernel: int,
        query_head_dim: int,
        value_head_dim: int,
        pos_head_dim: int,
        pos_dim: int,
        causal: bool,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.self_attn_weights = RelPositionAttentionWeights(dim, num_heads, query_head_dim, pos_head_dim, pos_dim)
        self.self_attn1 = SelfAttention(dim, num_heads, value_head_dim)
        self.self_attn2 = SelfAttention(dim, num_heads, value_head_dim)
        self.nonlin_attention = NonlinAttention(dim, 3 * dim // 4)
        self.feed_forward1 = FeedForward(dim, 3 * feedforward_dim // 4, dropout)
        self.feed_forward2 = FeedForward(dim, feedforward_dim, dropout)
        self.feed_forward3 = FeedForward(dim, 5 * feedforward_dim // 4, dropout)
        self.conv_module1 = ConvolutionModule(dim, cnn_kernel, causal)
        self.conv_module2 = ConvolutionModule(dim, cnn_kernel, causal)
        self.norm = BiasNorm(dim)
        self.bypass_mid = Bypass(dim)
        self.bypass = Bypass(dim)

    def forward(
        self,
        x: Tensor,
        pos_table: Tensor,
        rel_index: Tensor,
        allowed: Tensor,
        frame_valid: Tensor,
        chunk_size: int,
        lens: Tensor,
        cache: Optional[dict[str, Tensor]] = None,
    ) -> tuple[Tensor, Optional[dict[str, Tensor]]]:
        """Apply the layer.

        Args:
          x: (B, T, d).
          pos_table: (P, pos_dim) positional embeddings of the offsets in ``rel_index``.
          rel_index: (T, Tk) row of pos_table per (query, key); Tk = Lc + T.
          allowed: bool broadcastable to (B, T, Tk); True = may attend.
          frame_valid: (B, T) bool, real (non-padding) frames.
          chunk_size: chunk length at this rate (<= 0 = full context).
          lens: (B,) valid frames of x (full-context chunk-causal conv edge).
          cache: streaming caches (``LAYER_CACHE_NAMES``; shapes in the
            module docstring), or None for the full forward.

        Returns:
          (B, T, d) output and the new caches (None when ``cache`` is None).
        """
        c = cache or {}
        src = x
        weights, keys = self.self_attn_weights(x, pos_table, rel_index, allowed, c.get("key"))
        x = x + self.feed_forward1(x)
        na, nonlin = self.nonlin_attention(x, weights[:, 0], c.get("nonlin_attn"))
        x = x + na
        sa, val1 = self.self_attn1(x, weights, c.get("val1"))
        x = x + sa
        cv, conv1 = self.conv_module1(x, frame_valid, chunk_size, lens, c.get("conv1"))
        x = x + cv
        x = x + self.feed_forward2(x)
        x = self.bypass_mid(src, x)
        sa, val2 = self.self_attn2(x, weights, c.get("val2"))
        x = x + sa
        cv, conv2 = self.conv_module2(x, frame_valid, chunk_size, lens, c.get("conv2"))
        x = x + cv
        x = x + self.feed_forward3(x)
        x = self.bypass(src, self.norm(x))
        if cache is None:
            return x, None
        assert conv1 is not None and conv2 is not None
        new_cache = {
            "key": _keep_last(cache["key"], keys),
            "nonlin_attn": _keep_last(cache["nonlin_attn"], nonlin),
            "val1": _keep_last(cache["val1"], val1),
            "val2": _keep_last(cache["val2"], val2),
            "conv1": conv1,
            "conv2": conv2,
        }
        return x, new_cache
