"""Zipformer front end: 10 ms fbank frames -> 50 Hz (20 ms) frames, with a streaming cache.

Layout (icefall's zipformer recipe ``Conv2dSubsampling``, as of commit
36e0420c; Yao et al. 2024), tensors (B, C, time, freq):

    (B, T, F) -> (x - mean) / std per bin -> (B, 1, T, F)
      Conv2d(1, 8, 3, pad (0, 1)), SwooshR         (B, 8, T - 2, F)
      Conv2d(8, 32, 3, stride 2), SwooshR          (B, 32, (T - 3) // 2, (F - 1) // 2)
      Conv2d(32, 128, 3, stride (1, 2)), SwooshR   (B, 128, (T - 7) // 2, F')   F' = ((F - 1) // 2 - 1) // 2
      ConvNeXt(128): x + PW2(SwooshL(PW1(DW7x7(x))))   (same shape; PW = 1x1 convs 128 -> 128 r -> 128,
                                                     r = convnext_hidden_ratio, icefall's 3)
      flatten (128, F') -> Linear(128 F', d_0) -> BiasNorm -> Dropout      (B, (T - 7) // 2, d_0)

F' = 19 for 80 bins.  The 128 channels and the 7-wide ConvNeXt are fixed:
sherpa-onnx builds the front-end cache as (N, 128, 3, F') itself.

Receptive field.  The conv stack's 50 Hz frame t reads feature frames
2t .. 2t + 8; the ConvNeXt adds 3 frames of left and 3 of right context at
50 Hz, so front-end output t reads feature frames 2t - 6 .. 2t + 14.  The
right context is the front end's look-ahead: output frame t is complete
once feature frame 2t + 14 exists.  For a chunk of C frames at 50 Hz
starting at 50 Hz frame s (feature frame 2s), the last output (s + C - 1)
needs features up to 2s + 2C + 12: a window of 2C + 13 feature frames, the
next window starting 2C frames later (``WINDOW_EXTRA`` = 13 frames = 130 ms
beyond the chunk's own 2C frames; 60 ms of it is the ConvNeXt's right
context, the rest the conv stack's receptive field).

Full forward vs streaming.  The full forward zero-pads the ConvNeXt by 3
frames on both sides; streaming keeps the 3 conv-stack frames before the
window's last 3 as the cache (initially zeros = the full forward's left
padding) and uses the last 3 as right context, outputting C frames per
window of 2C + 13.  Every output frame whose receptive field lies inside the
features (t < (T - 13) // 2) is therefore identical in both; frames in the
last 3 of the conv stack (zero right context in the full forward) are never
counted as valid by the encoder (see ``encoder.py``: the encoder keeps
2 ((T - 13) // 4) of them).

Feature normalisation: global per-bin ``feature_mean`` / ``feature_std``
buffers (identity until :meth:`set_feature_stats`), part of the state_dict,
the same semantics as ``asr_kd.models.subsampling.Conv2dSubsampling``; being
global, they keep the front end causal.

Skipped from the recipe (training-time only, identity in the forward pass):
ScaleGrad, Balancers, Whiten, the ConvNeXt layer-drop; the front-end dropout
is a plain ``nn.Dropout`` with a constant rate (the recipe's Dropout3 shares
its mask over time and is scheduled 0.3 -> 0.1).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asr_kd.models.subsampling import copy_feature_stats, register_feature_stats
from asr_kd.models.zipformer.scaling import BiasNorm, swoosh_l, swoosh_r

__all__ = ["ConvNeXt", "ZipformerFrontEnd"]


class ConvNeXt(nn.Module):
    """ConvNeXt block on (B, C, T, F): ``x + PW2(SwooshL(PW1(DW(x))))``.

    DW: depthwise 7x7 (frequency zero-padded by 3; time padding is supplied
    by the caller: zeros in the full forward, the cache in streaming).
    PW1: 1x1 conv C -> 3C; PW2: 1x1 conv 3C -> C, initial weight scaled by
    0.01 so the block starts close to the identity.
    """

    #: time context on each side of the depthwise conv (kernel 7)
    CONTEXT: int = 3

    def __init__(self, channels: int, hidden_ratio: int = 3, kernel: int = 7) -> None:
        super().__init__()
        if kernel != 2 * self.CONTEXT + 1:
            raise ValueError(f"zipformer: ConvNeXt kernel must be {2 * self.CONTEXT + 1}, got {kernel}")
        self.depthwise = nn.Conv2d(channels, channels, kernel, groups=channels, padding=(0, kernel // 2))
        self.pointwise1 = nn.Conv2d(channels, hidden_ratio * channels, 1)
        self.pointwise2 = nn.Conv2d(hidden_ratio * channels, channels, 1)
        with torch.no_grad():
            self.pointwise2.weight.mul_(0.01)
            self.pointwise2.bias.uniform_(-0.001, 0.001)

    def _branch(self, padded: Tensor) -> Tensor:
        return self.pointwise2(swoosh_l(self.pointwise1(self.depthwise(padded))))

    def forward(self, x: Tensor) -> Tensor:
        """Full forward: (B, C, T, F) -> (B, C, T, F), zero time padding on both sides."""
        c = self.CONTEXT
        return x + self._branch(F.pad(x, (0, 0, c, c)))

    def streaming_forward(self, x: Tensor, cache: Tensor) -> tuple[Tensor, Tensor]:
        """One window: x (B, C, n + 3, F) with its last 3 frames as right context.

        Args:
          x: (B, C, n + 3, F) conv-stack output of the window.
          cache: (B, C, 3, F) the 3 conv-stack frames before x's first frame.

        Returns:
          out: (B, C, n, F) outputs for x's first n frames.
          new_cache: (B, C, 3, F) x's frames n - 3 .. n - 1 (the 3 before its
            right context), i.e. the left context of the next window.
        """
        c = self.CONTEXT
        padded = torch.cat((cache.to(x.dtype), x), dim=2)  # (B, C, n + 6, F)
        n = x.size(2) - c
        out = x[:, :, :n] + self._branch(padded)
        return out, padded[:, :, n : n + c]


class ZipformerFrontEnd(nn.Module):
    """Conv2d + ConvNeXt front end, 100 Hz features -> 50 Hz frames of width d_0 (layout: module docstring)."""

    #: conv-stack channels (fixed: sherpa-onnx hard-codes the cache shape)
    CHANNELS: int = 128
    #: cached conv-stack frames of the ConvNeXt (left context)
    CACHE_FRAMES: int = ConvNeXt.CONTEXT
    #: feature frames a window needs beyond twice its output frames: 2 C + 13 for C outputs
    WINDOW_EXTRA: int = 13
    #: fewest feature frames the conv stack accepts (one conv-stack frame)
    MIN_FRAMES: int = 9

    def __init__(self, num_features: int, out_dim: int, dropout: float = 0.0, convnext_hidden_ratio: int = 3) -> None:
        super().__init__()
        if num_features < 7:
            raise ValueError(f"zipformer: front end needs num_features >= 7, got {num_features}")
        self.num_features = num_features
        self.freq_out = ((num_features - 1) // 2 - 1) // 2
        self.conv1 = nn.Conv2d(1, 8, 3, padding=(0, 1))
        self.conv2 = nn.Conv2d(8, 32, 3, stride=2)
        self.conv3 = nn.Conv2d(32, self.CHANNELS, 3, stride=(1, 2))
        self.convnext = ConvNeXt(self.CHANNELS, hidden_ratio=convnext_hidden_ratio)
        self.out = nn.Linear(self.CHANNELS * self.freq_out, out_dim)
        self.out_norm = BiasNorm(out_dim)
        self.dropout = nn.Dropout(dropout)
        register_feature_stats(self, num_features)

    def set_feature_stats(self, mean: Tensor, std: Tensor) -> None:
        """Set the per-bin normalisation: mean (F,), std (F,) > 0 (floored at 1e-3)."""
        copy_feature_stats(self, mean, std, "zipformer")

    def cache_shape(self, batch_size: int) -> tuple[int, int, int, int]:
        """Shape of the streaming cache: (B, 128, 3, F'), (B, 128, 3, 19) for 80 bins."""
        return (batch_size, self.CHANNELS, self.CACHE_FRAMES, self.freq_out)

    def _conv_stack(self, features: Tensor) -> Tensor:
        """(B, T, F) -> (B, 128, (T - 7) // 2, F')."""
        if features.dim() != 3 or features.size(-1) != self.num_features:
            raise ValueError(
                f"zipformer: expected features (B, T, {self.num_features}), got {tuple(features.shape)}")
        if features.size(1) < self.MIN_FRAMES:
            raise ValueError(
                f"zipformer: the front end needs at least {self.MIN_FRAMES} feature frames, got {features.size(1)}")
        x = ((features - self.feature_mean) / self.feature_std).unsqueeze(1)
        x = swoosh_r(self.conv1(x))
        x = swoosh_r(self.conv2(x))
        return swoosh_r(self.conv3(x))

    def _project(self, x: Tensor) -> Tensor:
        """(B, 128, T', F') -> (B, T', d_0)."""
        b, c, t, f = x.shape
        x = self.out(x.permute(0, 2, 1, 3).reshape(b, t, c * f))
        return self.dropout(self.out_norm(x))

    def forward(self, features: Tensor) -> Tensor:
        """Full forward: (B, T, F) -> (B, (T - 7) // 2, d_0); only t < (T - 13) // 2 are complete."""
        return self._project(self.convnext(self._conv_stack(features)))

    def streaming_forward(self, window: Tensor, cache: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        """One window of 2C + 13 feature frames -> C frames at 50 Hz.

        Args:
          window: (B, 2C + 13, F) feature frames 2s .. 2s + 2C + 12 of the
            chunk starting at 50 Hz frame s.
          cache: (B, 128, 3, F') from the previous window (None = zeros: the
            start of a stream).

        Returns:
          out: (B, C, d_0), equal to frames s .. s + C - 1 of the full forward.
          new_cache: (B, 128, 3, F').
        """
        x = self._conv_stack(window)  # (B, 128, C + 3, F')
        if cache is None:
            cache = x.new_zeros(self.cache_shape(x.size(0)))
        elif tuple(cache.shape) != self.cache_shape(x.size(0)):
            raise ValueError(f"zipformer: front-end cache must be {self.cache_shape(x.size(0))}, "
                             f"got {tuple(cache.shape)}")
        x, new_cache = self.convnext.streaming_forward(x, cache)
        return self._project(x), new_cache
