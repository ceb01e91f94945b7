"""Conv2d front end: 10 ms feature frames -> 40 ms encoder frames (4x).

    (B, T, F) --unsqueeze--> (B, 1, T, F)
      -> Conv2d(1, C, 3x3, stride 2), ReLU        (B, C, T1, F1),  T1 = (T - 1) // 2
      -> Conv2d(C, C, 3x3, stride 2), ReLU        (B, C, T2, F2),  T2 = (T1 - 1) // 2
      -> flatten (C, F2), Linear(C F2, D), dropout (B, T2, D)

No padding in time, so

    T' = T2 = (T - 3) // 4          (for T >= 7; fewer frames give no output)

and encoder frame ``i`` sees exactly feature frames ``4 i .. 4 i + 6``
(receptive field 7 frames = 70 ms of hop, 95 ms of audio with the 25 ms
window; stride 4 = 40 ms).  Consequences for streaming:

* a chunk of ``K`` encoder frames (``c K .. c K + K - 1``) needs feature
  frames ``4 c K .. 4 c K + 4 K + 2``: it consumes ``4 K + 3`` frames and the
  next chunk starts ``4 K`` frames later, i.e. consecutive chunk windows
  overlap by ``LOOKAHEAD = 3`` frames;
* the front end looks ``3`` feature frames (30 ms) beyond the ``4 K`` frames
  a chunk advances -- its only look-ahead;
* the streaming state of the front end is the last 3 feature frames of the
  previous window (see ``ConformerEncoder.streaming_forward``).

Outputs at frames whose 7-frame window extends past an utterance's length are
padding (their index is >= ``output_lengths(lens)``).

Input normalisation: features are first mapped to ``(x - mean) / std`` per
mel bin with global statistics held as buffers (``feature_mean``,
``feature_std``; identity until :meth:`Conv2dSubsampling.set_feature_stats`
is called, which training does from the training data at a fresh start).
Why: log-mel features have a large per-bin offset (about -10 to -4 here);
through the ReLU convolutions it becomes a constant vector several times
larger than the time-varying part of the front-end output, which the
per-frame LayerNorms then squash, and the encoder learns from the audio very
slowly (measured: a teacher still at 95% WER after 550 updates). Global (not
per-utterance) statistics keep the front end causal, so streaming is
unaffected; they are part of the model's state_dict and travel with it.

Output scale: ``output_scale`` multiplies the front end's output (before
dropout).  ESPnet, WeNet and icefall's Conformer scale the subsampling
output by ``sqrt(d_model)`` (the Transformer's embedding scale), which lets
the audio part of the residual stream dominate the blocks' time-constant
contributions at initialisation; 1.0 (no scaling) is what older checkpoints
were trained with.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Conv2dSubsampling", "register_feature_stats", "copy_feature_stats"]


def register_feature_stats(module: nn.Module, num_features: int) -> None:
    """Give a front end the identity normalisation buffers ``feature_mean`` (F,) = 0 and
    ``feature_std`` (F,) = 1 (part of its state_dict, so they travel with the model)."""
    module.register_buffer("feature_mean", torch.zeros(num_features))
    module.register_buffer("feature_std", torch.ones(num_features))


@torch.no_grad()
def copy_feature_stats(module: nn.Module, mean: Tensor, std: Tensor, where: str) -> None:
    """Set ``module``'s buffers from ``register_feature_stats``: mean (F,), std (F,) floored at 1e-3;
    ValueError (prefixed ``where``) on a shape mismatch."""
    if mean.shape != module.feature_mean.shape or std.shape != module.feature_std.shape:
        raise ValueError(f"{where}: feature stats must have shape ({module.feature_mean.numel()},), "
                         f"got {tuple(mean.shape)} and {tuple(std.shape)}")
    module.feature_mean.copy_(mean)
    module.feature_std.copy_(std.clamp(min=1e-3))


class Conv2dSubsampling(nn.Module):
    """4x time subsampling with two stride-2 3x3 convolutions (no time padding)."""

    #: time stride (feature frames per encoder frame)
    SUBSAMPLING_FACTOR: int = 4
    #: feature frames one encoder frame sees (4 i .. 4 i + 6)
    RECEPTIVE_FIELD: int = 7
    #: extra feature frames a chunk consumes beyond the 4 K it advances
    LOOKAHEAD: int = RECEPTIVE_FIELD - SUBSAMPLING_FACTOR

    def __init__(self, num_features: int, d_model: int, channels: int, dropout: float = 0.0,
                 output_scale: float = 1.0) -> None:
        super().__init__()
        if not output_scale > 0:
            raise ValueError(
                f"Conformer config: frontend_scale (the front end's output_scale) must be > 0, got {output_scale}"
            )
        self.output_scale = float(output_scale)
        if num_features < 7:
            raise ValueError(f"Conformer config: num_features must be >= 7, got {num_features}")
        self.num_features = num_features
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, stride=2),
            nn.ReLU(),
        )
        freq_out = ((num_features - 1) // 2 - 1) // 2
        self.out = nn.Linear(channels * freq_out, d_model)
        self.dropout = nn.Dropout(dropout)
        register_feature_stats(self, num_features)

    def set_feature_stats(self, mean: Tensor, std: Tensor) -> None:
        """Set the per-bin normalisation: mean (F,), std (F,) > 0 (floored at 1e-3)."""
        copy_feature_stats(self, mean, std, "Conformer front end")

    @staticmethod
    def output_lengths(feature_lens: Tensor) -> Tensor:
        """Encoder frames for each utterance: ``max(0, (T - 3) // 4)``; (B,) int64."""
        return torch.clamp((feature_lens - 3) // 4, min=0)

    def forward(self, features: Tensor) -> Tensor:
        """(B, T, F) features -> (B, (T - 3) // 4, D); raises ValueError for T < 7."""
        if features.dim() != 3 or features.size(-1) != self.num_features:
            raise ValueError(
                f"Conformer encoder: features must be (B, T, {self.num_features}) (num_features), "
                f"got {tuple(features.shape)}"
            )
        if features.size(1) < self.RECEPTIVE_FIELD:
            raise ValueError(
                f"Conformer encoder: needs at least {self.RECEPTIVE_FIELD} feature frames, got {features.size(1)}"
            )
        features = (features - self.feature_mean) / self.feature_std
        x = self.conv(features.unsqueeze(1))  # (B, C, T', F2)
        b, c, t, f = x.shape
        x = self.out(x.permute(0, 2, 1, 3).reshape(b, t, c * f))
        return self.dropout(x * self.output_scale)
