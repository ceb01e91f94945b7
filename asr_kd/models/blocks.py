"""Conformer building blocks: feed-forward, convolution module, Conformer block.

Every module here is *frame-local* or *causal* when asked to be, which is what
lets ``ConformerEncoder.streaming_forward`` reproduce the masked
full-utterance forward exactly:

* feed-forward and LayerNorm act on each frame separately;
* the convolution module normalises with LayerNorm (per frame), not
  BatchNorm (batch statistics would couple frames and utterances), and its
  depthwise convolution is causal (left padding only) in causal mode, with
  the last ``kernel - 1`` inputs as its streaming state;
* self-attention (``attention.py``) sees only what the mask allows.

Padding frames (``frame_valid == False``) are zeroed before the depthwise
convolution, so in full-context mode the outputs of an utterance do not
depend on how much batch padding follows it.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asr_kd.models.attention import RotaryMultiheadAttention

__all__ = ["FeedForward", "ConvModule", "ConformerBlock"]


class FeedForward(nn.Module):
    """Pre-norm position-wise feed-forward: ``W2 drop(SiLU(W1 LN(x)))``; (B,T,D)->(B,T,D)."""

    def __init__(self, d_model: int, ff_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, ff_dim)
        self.linear2 = nn.Linear(ff_dim, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.linear2(self.dropout(F.silu(self.linear1(self.norm(x))))))


class ConvModule(nn.Module):
    """Conformer convolution module (pre-norm), LayerNorm instead of BatchNorm.

        h = GLU(W_a LN(x))                         (B, T, D)   pointwise, D -> 2D -> D
        h = DepthwiseConv_k(h)                     causal: y_t = sum_{j=0}^{k-1} w_j h_{t-k+1+j}
                                                   else:   y_t = sum_{j} w_j h_{t-(k-1)/2+j}
        out = drop(W_b SiLU(LN(h)))                (B, T, D)

    Frames outside the sequence read as zeros.  In causal mode the state is
    the last ``k - 1`` frames of ``h`` (what the next call would read as left
    padding): (B, D, k - 1).
    """

    def __init__(self, d_model: int, kernel_size: int, causal: bool, dropout: float = 0.0) -> None:
        super().__init__()
        if kernel_size < 1 or (not causal and kernel_size % 2 == 0):
            raise ValueError(
                f"Conformer config: conv_kernel must be >= 1 (and odd when not causal), got {kernel_size}"
            )
        self.causal = causal
        self.kernel_size = kernel_size
        self.norm_in = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, groups=d_model)
        self.norm_mid = nn.LayerNorm(d_model)
        self.pointwise_out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, frame_valid: Tensor, cache: Optional[Tensor] = None
    ) -> tuple[Tensor, Tensor]:
        """Apply the module.

        Args:
          x: (B, T, D).
          frame_valid: (B, T) bool; invalid (padding) frames are zeroed before
            the depthwise convolution.
          cache: (B, D, k - 1) left context of the depthwise convolution
            (causal mode only); None = zeros (start of the utterance).

        Returns:
          out: (B, T, D).
          new_cache: (B, D, k - 1), the last k - 1 depthwise inputs (causal
            mode; in non-causal mode an empty (B, D, 0) tensor).
        """
        h = F.glu(self.pointwise_in(self.norm_in(x)), dim=-1)
        h = h.masked_fill(~frame_valid[..., None], 0.0).transpose(1, 2)  # (B, D, T)
        pad = self.kernel_size - 1
        if self.causal:
            if cache is None:
                cache = h.new_zeros(h.size(0), h.size(1), pad)
            elif cache.shape != (h.size(0), h.size(1), pad):
                raise ValueError(
                    f"Conformer streaming state: conv cache must be {(h.size(0), h.size(1), pad)}, "
                    f"got {tuple(cache.shape)}"
                )
            h = torch.cat((cache, h), dim=2)
            new_cache = h[:, :, h.size(2) - pad :]
        else:
            if cache is not None:
                raise RuntimeError(
                    "Conformer config: causal=False, so the convolution module cannot stream (got a conv cache)"
                )
            h = F.pad(h, (pad // 2, pad // 2))
            new_cache = h.new_zeros(h.size(0), h.size(1), 0)
        h = self.depthwise(h).transpose(1, 2)  # (B, T, D)
        out = self.dropout(self.pointwise_out(F.silu(self.norm_mid(h))))
        return out, new_cache


class ConformerBlock(nn.Module):
    """Macaron Conformer block (Gulati et al. 2020), pure pre-norm residuals:

        x = x + 1/2 FF1(x)
        x = x + drop(MHSA(LN(x)))           rotary positions, masked
        x = x + Conv(x)
        x = x + 1/2 FF2(x)

    Unlike the paper's block there is no LayerNorm on the block output; the
    encoder normalises once, after its last block. Why: measured here, a
    per-block output LayerNorm stopped the encoder from learning at all in
    the first hundreds of updates (a 6-layer encoder could not fit a
    synthetic task where every token is a fixed feature pattern, which the
    front end alone fits in 75 updates; without the per-block norm the same
    encoder fits it as fast). The residual stream of a pre-norm network
    keeps the input's time-varying part; a per-block normalisation rescales
    it against the sub-layers' constant (bias) outputs at every block.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        ff_dim: int,
        conv_kernel: int,
        causal: bool,
        dropout: float = 0.0,
        rotary_base: float = 10000.0,
    ) -> None:
        super().__init__()
        self.ff1 = FeedForward(d_model, ff_dim, dropout)
        self.norm_attn = nn.LayerNorm(d_model)
        self.attn = RotaryMultiheadAttention(d_model, num_heads, dropout, rotary_base)
        self.attn_dropout = nn.Dropout(dropout)
        self.conv = ConvModule(d_model, conv_kernel, causal, dropout)
        self.ff2 = FeedForward(d_model, ff_dim, dropout)

    def forward(
        self,
        x: Tensor,
        positions: Tensor,
        allowed: Tensor,
        frame_valid: Tensor,
        cached_keys: Optional[Tensor] = None,
        cached_values: Optional[Tensor] = None,
        conv_cache: Optional[Tensor] = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One block over T frames (a whole utterance or one chunk).

        Args:
          x: (B, T, D).
          positions: (B, T) int64 absolute encoder-frame indices.
          allowed: (B, T, C + T) (or broadcastable) bool attention mask over
            [cached keys, this call's keys].
          frame_valid: (B, T) bool, False at padding frames.
          cached_keys / cached_values: (B, C, D) or None.
          conv_cache: (B, D, k - 1) or None.

        Returns:
          (y (B, T, D), keys (B, T, D), values (B, T, D), new conv cache).
        """
        x = x + 0.5 * self.ff1(x)
        a, keys, values = self.attn(self.norm_attn(x), positions, allowed, cached_keys, cached_values)
        x = x + self.attn_dropout(a)
        c, new_conv = self.conv(x, frame_valid, conv_cache)
        x = x + c
        x = x + 0.5 * self.ff2(x)
        return x, keys, values, new_conv
