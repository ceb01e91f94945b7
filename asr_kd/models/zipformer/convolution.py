"""Zipformer convolution module, with a chunk-causal depthwise convolution for streaming.

Facts from icefall's zipformer recipe (``zipformer.py`` ConvolutionModule,
``scaling.py`` ChunkCausalDepthwiseConv1d; as of commit 36e0420c; Yao et al.
2024); the code is our own.

ConvolutionModule, (B, T, d) -> (B, T, d):

    [x | s] = W_in u            (d -> 2d)
    x = x sigmoid(s)            padding frames then set to 0
    x = DepthwiseConv_k(x)      plain (non-causal) or chunk-causal
    out = W_out SwooshR(x)      (W_out initial scale 0.05)

ChunkCausalDepthwiseConv1d (kernel k odd, r = k // 2), on (B, C, T):

    y = causal(x) + chunk(x) * (1 + E)

* causal(x)_t = sum_{j=0}^{r} a_j x_{t-r+j}: kernel r + 1, left context r
  only (zeros before the stream, the cache in streaming);
* chunk(x)_t = sum_{j=-r}^{r} b_j x_{t+j} restricted to t's own chunk
  (frames outside it read as 0), so nothing beyond the chunk is seen;
* E (C, T) = left_edge[c, p] + right_edge[c, k - 1 - q] where p is t's
  index from its chunk's start and q its distance to the chunk's last frame
  (each term is 0 when its index is >= k): a learnt (2, C, k) tensor,
  initialised to 0, that lets the chunk part re-weight frames near chunk edges
  (where its window is truncated).

Chunk grid: with chunk size c > 0 (frames at the stack's rate) chunk m spans
frames [m c, (m + 1) c), the last one right-padded with zeros, even when c
exceeds the sequence (icefall shrinks the chunk to the sequence then; a grid
that never depends on the length keeps the full forward equal to streaming
and independent of batch padding).  With c <= 0 (full context) each
utterance is one chunk ending at its own last valid frame (``lens``), again
so that batch padding does not move the right edge.

Streaming: the cache is the last r inputs of the causal part; the chunk part
runs on the current chunk alone.  A streaming call is therefore the full
forward restricted to one chunk, given the cache.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asr_kd.models.zipformer.scaling import scaled_linear, swoosh_r

__all__ = ["ChunkCausalDepthwiseConv1d", "ConvolutionModule"]


class ChunkCausalDepthwiseConv1d(nn.Module):
    """Depthwise conv that sees the past (causal part) and its own chunk (chunk part); math: module docstring."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"zipformer: chunk-causal conv kernel must be odd, got {kernel_size}")
        self.kernel_size = kernel_size
        self.context = kernel_size // 2
        self.causal_conv = nn.Conv1d(channels, channels, self.context + 1, groups=channels)
        self.chunkwise_conv = nn.Conv1d(channels, channels, kernel_size, groups=channels, padding=self.context)
        self.chunkwise_conv_scale = nn.Parameter(torch.zeros(2, channels, kernel_size))

    def _edge_scale(self, from_start: Tensor, to_end: Tensor) -> Tensor:
        """1 + E for frames at index ``from_start`` in their chunk and ``to_end`` frames before its last.

        Both (..., T) int64 (broadcastable); returns (..., C, T).
        """
        k = self.kernel_size
        left, right = self.chunkwise_conv_scale[0], self.chunkwise_conv_scale[1]  # (C, k)
        li = from_start.clamp(0, k - 1)
        ri = (k - 1 - to_end).clamp(0, k - 1)
        lval = left[:, li] * (from_start < k).to(left.dtype)  # (C, ..., T)
        rval = right[:, ri] * ((to_end >= 0) & (to_end < k)).to(right.dtype)
        e = lval + rval
        if e.dim() == 3:  # (C, B, T) -> (B, C, T)
            e = e.transpose(0, 1)
        return 1.0 + e

    def forward(
        self,
        x: Tensor,
        chunk_size: int,
        lens: Optional[Tensor] = None,
        cache: Optional[Tensor] = None,
    ) -> tuple[Tensor, Tensor]:
        """Apply the conv.

        Args:
          x: (B, C, T), padding frames already zeroed.
          chunk_size: chunk length at this rate; <= 0 = one chunk per utterance.
          lens: (B,) valid frames, needed when chunk_size <= 0 (right edge).
          cache: (B, C, r) the r inputs before x (None = zeros).

        Returns:
          y: (B, C, T).
          new_cache: (B, C, r), the last r inputs (cache included).
        """
        b, c, t = x.shape
        r = self.context
        if cache is None:
            cache = x.new_zeros(b, c, r)
        elif tuple(cache.shape) != (b, c, r):
            raise ValueError(f"zipformer: conv cache must be {(b, c, r)}, got {tuple(cache.shape)}")
        padded = torch.cat((cache.to(x.dtype), x), dim=2)
        causal = self.causal_conv(padded)
        new_cache = padded[:, :, padded.size(2) - r :]
        pos = torch.arange(t, device=x.device)
        if chunk_size <= 0:
            if lens is None:
                lens = torch.full((b,), t, dtype=torch.int64, device=x.device)
            chunk = self.chunkwise_conv(x)
            scale = self._edge_scale(pos[None, :], lens[:, None].to(pos.device) - 1 - pos[None, :])
        else:
            n = (t + chunk_size - 1) // chunk_size  # ceil, ONNX-traceable (see stack.py)
            xp = F.pad(x, (0, n * chunk_size - t)).reshape(b, c, n, chunk_size)
            xp = xp.permute(0, 2, 1, 3).reshape(b * n, c, chunk_size)
            chunk = self.chunkwise_conv(xp).reshape(b, n, c, chunk_size).permute(0, 2, 1, 3)
            chunk = chunk.reshape(b, c, n * chunk_size)[:, :, :t]
            p = pos % chunk_size
            scale = self._edge_scale(p, chunk_size - 1 - p)
        return causal + chunk * scale, new_cache


class ConvolutionModule(nn.Module):
    """Gated depthwise-conv module (math: module docstring); (B, T, d) -> (B, T, d)."""

    def __init__(self, dim: int, kernel_size: int, causal: bool) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"zipformer: conv kernel must be odd, got {kernel_size}")
        self.causal = causal
        self.kernel_size = kernel_size
        self.in_proj = nn.Linear(dim, 2 * dim)
        if causal:
            self.depthwise: nn.Module = ChunkCausalDepthwiseConv1d(dim, kernel_size)
        else:
            self.depthwise = nn.Conv1d(dim, dim, kernel_size, groups=dim, padding=kernel_size // 2)
        self.out_proj = scaled_linear(dim, dim, initial_scale=0.05)

    @property
    def cache_frames(self) -> int:
        """Cached depthwise inputs in streaming: k // 2."""
        return self.kernel_size // 2

    def forward(
        self,
        x: Tensor,
        frame_valid: Tensor,
        chunk_size: int = -1,
        lens: Optional[Tensor] = None,
        cache: Optional[Tensor] = None,
    ) -> tuple[Tensor, Optional[Tensor]]:
        """Apply the module.

        Args:
          x: (B, T, d).
          frame_valid: (B, T) bool; invalid frames are zeroed before the conv.
          chunk_size: chunk length at this rate (causal only; <= 0 = full context).
          lens: (B,) valid frames (causal, full context).
          cache: (B, d, k // 2) streaming cache (causal only).

        Returns:
          out: (B, T, d).
          new_cache: (B, d, k // 2) (causal), None (non-causal).
        """
        u, s = self.in_proj(x).chunk(2, dim=-1)
        u = (u * torch.sigmoid(s)).masked_fill(~frame_valid[..., None], 0.0).transpose(1, 2)  # (B, d, T)
        new_cache: Optional[Tensor] = None
        if self.causal:
            u, new_cache = self.depthwise(u, chunk_size, lens, cache)
        else:
            if cache is not None:
                raise RuntimeError("zipformer: a non-causal convolution module cannot stream")
            u = self.depthwise(u)
        return self.out_proj(swoosh_r(u.transpose(1, 2))), new_cache
