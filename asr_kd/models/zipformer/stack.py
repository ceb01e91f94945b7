"""A Zipformer stack: layers at a reduced frame rate, with SimpleDownsample / SimpleUpsample around them.

Facts from icefall's zipformer recipe (``zipformer.py`` Zipformer2Encoder,
DownsampledZipformer2Encoder, SimpleDownsample, SimpleUpsample; as of
commit 36e0420c; Yao et al. 2024); the code is our own.

Stack i with factor ds, on the 50 Hz stream x (B, T50, d_i):

    y   = SimpleDownsample_ds(x)           (B, ceil(T50 / ds), d_i)
    y   = layers(y)                         at 50 / ds Hz
    y   = repeat each frame ds times, crop to T50
    out = x + (y - x) s                     per-channel ``out_combiner`` (a Bypass)

(ds = 1: out = layers(x), no combiner.)  SimpleDownsample groups frames
[m ds, (m + 1) ds) and takes their weighted sum with weights softmax(b), b a
learnt length-ds vector shared over channels (no projection).  The recipe
right-pads by repeating the last frame; here every frame at or beyond an
utterance's length is replaced by the utterance's last valid frame first
(the same rule applied per utterance), so a group that straddles the end of
an utterance does not depend on batch padding or on a streaming chunk's
padded tail.

Masks at the stack's rate (ds divides the 50 Hz chunk C50 = 2K and left
context L50 = 2L): frame m in chunk c = m // (C50 / ds) attends frames
[c C50/ds - L50/ds, (c + 1) C50/ds), intersected with the valid frames --
exactly the 50 Hz mask sliced [::ds, ::ds].

Streaming: a call receives C50 frames at 50 Hz (a whole chunk, so groups
never straddle chunks), the per-layer caches of L50 / ds frames and the
stream's offset; cached slots older than the stream's start are masked.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from asr_kd.models.attention import chunk_attention_mask
from asr_kd.models.zipformer.attention import CompactRelPositionalEncoding, relative_index
from asr_kd.models.zipformer.layer import ZipformerLayer
from asr_kd.models.zipformer.scaling import Bypass

__all__ = ["SimpleDownsample", "simple_upsample", "fill_beyond_length", "convert_num_channels", "ZipformerStack"]


def fill_beyond_length(x: Tensor, lens: Optional[Tensor], length: int) -> Tensor:
    """Extend/overwrite (B, T, C) to ``length`` frames: frame t -> frame min(t, lens - 1, T - 1).

    Frames at or beyond an utterance's length repeat its last valid frame
    (lens None = all T frames valid); lens 0 repeats frame 0.
    """
    b, t, c = x.shape
    idx = torch.arange(length, device=x.device)[None, :].expand(b, length)
    last = torch.full((b,), t, dtype=torch.int64, device=x.device) if lens is None else lens.clamp(max=t)
    idx = torch.minimum(idx, (last - 1).clamp(min=0)[:, None])
    return torch.gather(x, 1, idx[..., None].expand(b, length, c))


class SimpleDownsample(nn.Module):
    """Weighted sum over groups of ``factor`` frames: (B, T, C) -> (B, ceil(T / factor), C)."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.bias = nn.Parameter(torch.zeros(factor))

    def forward(self, x: Tensor, lens: Optional[Tensor] = None) -> Tensor:
        """x (B, T, C); lens (B,) valid frames (frames beyond repeat the last valid one)."""
        b, t, c = x.shape
        n = (t + self.factor - 1) // self.factor  # ceil; not -(-t // f): ONNX traces // on sizes as truncation
        x = fill_beyond_length(x, lens, n * self.factor).reshape(b, n, self.factor, c)
        weights = torch.softmax(self.bias, dim=0).to(x.dtype)
        return (x * weights[:, None]).sum(dim=2)


def simple_upsample(x: Tensor, factor: int, length: int) -> Tensor:
    """Repeat each frame ``factor`` times and crop: (B, T, C) -> (B, length, C)."""
    return x.repeat_interleave(factor, dim=1)[:, :length]


def convert_num_channels(x: Tensor, dim: int) -> Tensor:
    """Truncate or zero-pad the last dim of x to ``dim`` (between stacks of different widths)."""
    c = x.size(-1)
    if c == dim:
        return x
    if c > dim:
        return x[..., :dim]
    return torch.cat((x, x.new_zeros(*x.shape[:-1], dim - c)), dim=-1)


def _ceil_div(a: Tensor, b: int) -> Tensor:
    return torch.div(a + (b - 1), b, rounding_mode="floor")


class ZipformerStack(nn.Module):
    """Layers of one stack at rate 50 / ds Hz, resampled around them (math: module docstring)."""

    def __init__(
        self,
        dim: int,
        downsampling_factor: int,
        num_layers: int,
        num_heads: int,
        feedforward_dim: int,
        cnn_kernel: int,
        query_head_dim: int,
        value_head_dim: int,
        pos_head_dim: int,
        pos_dim: int,
        causal: bool,
        dropout: float = 0.0,
        pos_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.downsampling_factor = downsampling_factor
        self.encoder_pos = CompactRelPositionalEncoding(pos_dim, pos_dropout)
        self.layers = nn.ModuleList(
            ZipformerLayer(dim, num_heads, feedforward_dim, cnn_kernel, query_head_dim, value_head_dim,
                           pos_head_dim, pos_dim, causal, dropout)
            for _ in range(num_layers)
        )
        if downsampling_factor > 1:
            self.downsample: Optional[SimpleDownsample] = SimpleDownsample(downsampling_factor)
            self.out_combiner: Optional[Bypass] = Bypass(dim)
        else:
            self.downsample = None
            self.out_combiner = None

    def _down(self, x: Tensor, lens50: Tensor) -> Tensor:
        return x if self.downsample is None else self.downsample(x, lens50)

    def _up(self, orig: Tensor, y: Tensor) -> Tensor:
        if self.out_combiner is None:
            return y
        return self.out_combiner(orig, simple_upsample(y, self.downsampling_factor, orig.size(1)))

    def forward(self, x: Tensor, lens50: Tensor, chunk50: int, left50: int) -> Tensor:
        """Full (masked) forward.

        Args:
          x: (B, T50, d) at 50 Hz.
          lens50: (B,) valid 50 Hz frames.
          chunk50: chunk in 50 Hz frames (<= 0 = full context); ds divides it.
          left50: left context in 50 Hz frames (-1 = unlimited); ds divides it.

        Returns:
          (B, T50, d) at 50 Hz.
        """
        ds = self.downsampling_factor
        y = self._down(x, lens50)
        t = y.size(1)
        lens = _ceil_div(lens50, ds)
        frame_valid = torch.arange(t, device=y.device)[None, :] < lens[:, None]  # (B, T)
        chunk = chunk50 // ds if chunk50 > 0 else -1
        left = left50 // ds if (chunk50 > 0 and left50 >= 0) else -1
        allowed = chunk_attention_mask(t, chunk, left, y.device)[None] & frame_valid[:, None, :]
        rel_index, lo, hi = relative_index(t, 0, y.device)
        pos = self.encoder_pos(lo, hi, y.device, y.dtype)
        for layer in self.layers:
            y, _ = layer(y, pos, rel_index, allowed, frame_valid, chunk, lens)
        return self._up(x, y)

    def streaming_forward(
        self,
        x: Tensor,
        valid50: Tensor,
        offset50: Tensor,
        caches: list[dict[str, Tensor]],
    ) -> tuple[Tensor, list[dict[str, Tensor]]]:
        """One chunk.

        Args:
          x: (B, C50, d) the chunk at 50 Hz (ds divides C50).
          valid50: (B,) real 50 Hz frames of the chunk (C50 except in a final chunk).
          offset50: (B,) 50 Hz frames of the stream before this chunk.
          caches: per layer, the six caches (``layer.py``) of L = L50 / ds frames.

        Returns:
          (B, C50, d) output at 50 Hz and the new caches.
        """
        ds = self.downsampling_factor
        y = self._down(x, valid50)
        b, c, _ = y.shape
        lens = _ceil_div(valid50, ds)
        frame_valid = torch.arange(c, device=y.device)[None, :] < lens[:, None]  # (B, C)
        left = caches[0]["key"].size(1)
        held = torch.clamp(torch.div(offset50, ds, rounding_mode="floor"), max=left)  # real cached frames
        cache_valid = torch.arange(left, device=y.device)[None, :] >= (left - held)[:, None]  # (B, L)
        allowed = torch.cat((cache_valid, frame_valid), dim=1)[:, None, :]  # (B, 1, L + C)
        rel_index, lo, hi = relative_index(c, left, y.device)
        pos = self.encoder_pos(lo, hi, y.device, y.dtype)
        new_caches = []
        for layer, cache in zip(self.layers, caches):
            y, new = layer(y, pos, rel_index, allowed, frame_valid, c, lens, cache)
            assert new is not None
            new_caches.append(new)
        return self._up(x, y), new_caches
