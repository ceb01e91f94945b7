"""Conformer encoder: full context (teacher) or chunk-wise (streaming student).

Units.  Features are 10 ms frames; the encoder runs at 40 ms frames (4x
subsampling).  Chunk sizes and left contexts are given in *encoder* frames:
``K`` encoder frames = ``40 K`` ms = ``4 K`` feature frames; e.g. the student
default K = 16 is 640 ms = 64 feature frames, left context 64 encoder frames =
2.56 s = 256 feature frames.  A streaming call consumes ``4 K + 3`` feature
frames (3 frames = 30 ms of front-end look-ahead) and advances ``4 K``.

Chunk-wise attention (``attention.chunk_attention_mask``): encoder frame t in
chunk c = t // K attends frames [c K - L, (c + 1) K) (L = left context,
-1 = unlimited), intersected with the utterance.  With ``causal=True`` the
depthwise convolutions are causal too, so nothing beyond a frame's chunk
(plus the 3-frame front-end look-ahead) influences it.

Streaming (``streaming_forward``) processes one chunk at a time and reproduces
the masked full-utterance forward with the same K and L exactly (up to
float rounding), because:
  * the front end sees the same 4K+3 feature frames (state: the last 3);
  * rotary keys are cached per layer at their absolute frame index
    (state: the last L rotated keys and values of each layer);
  * the causal depthwise conv reads its last k-1 inputs from the state;
  * a frame counter (state ``offset``) gives absolute positions.

Streaming state (``init_states``): a dict of batch-first tensors

    "keys"     (B, N, C, D)  rotated attention keys of the last C frames, per layer
    "values"   (B, N, C, D)  attention values of the last C frames, per layer
    "conv"     (B, N, D, k-1) depthwise-conv inputs of the last k-1 frames, per layer
    "frontend" (B, 3, F)     the last 3 feature frames of the previous window
    "offset"   (B,) int64    encoder frames processed so far (chunk starts)

N = num_layers; C = L for L >= 0 (fixed size; entries older than the
stream are masked using ``offset``), and for L = -1 the cache grows by K
frames per call (starting at C = 0).

Padding.  In the full forward, frames at or beyond ``lens`` are masked as
attention keys and zeroed before the convolutions, so valid outputs never
depend on batch padding.  In streaming, pad the final window to ``4 K + 3``
frames (any values) and pass ``valid_frames`` = the number of real encoder
frames in that chunk (``output_lengths(T) - offset``); the padded frames are
then masked exactly as in the full forward.  Without ``valid_frames`` every
frame of the chunk counts as real.  Streams in one batch may be at different
offsets (positions and cache masks are per stream; see ``states.py`` to
regroup streams).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from asr_kd.models.attention import chunk_attention_mask, pick_chunk_option
from asr_kd.models.blocks import ConformerBlock
from asr_kd.models.subsampling import Conv2dSubsampling

__all__ = ["EncoderConfig", "EncoderOutput", "ConformerEncoder", "EncoderState"]

EncoderState = dict[str, Tensor]


@dataclass
class EncoderConfig:
    """Conformer encoder hyper-parameters.

    Attributes:
      num_features: F, feature dimension (80 fbank bins).
      d_model: D, model dimension.
      num_layers: number of Conformer blocks.
      num_heads: attention heads (D / heads must be even: rotary pairs).
      ff_dim: feed-forward hidden size.
      conv_kernel: depthwise convolution kernel (odd unless causal).
      dropout: dropout everywhere (front end, FF, attention, conv).
      causal: False = full context (teacher); True = chunk-wise attention and
        causal convolutions (streaming student).
      chunk_sizes: chunk sizes K in ENCODER frames (40 ms each); -1 or 0
        means full context (with causal convolutions).  The first entry is the
        default outside dynamic-chunk training.
      left_contexts: left contexts L in encoder frames (-1 = unlimited); the
        first entry is the default.
      dynamic_chunk: in training mode, draw K and L uniformly from the lists
        for every batch (global torch RNG) unless given explicitly.
      subsampling_channels: channels of the Conv2d front end.
      frontend_scale: multiplier of the front end's output (see
        ``subsampling.py``): 1.0, or ``sqrt(d_model)`` as in ESPnet/WeNet/icefall.
      rotary_base: base of the rotary frequencies.
    """

    num_features: int = 80
    d_model: int = 144
    num_layers: int = 6
    num_heads: int = 4
    ff_dim: int = 576
    conv_kernel: int = 15
    dropout: float = 0.1
    causal: bool = False
    chunk_sizes: tuple[int, ...] = (16,)
    left_contexts: tuple[int, ...] = (64,)
    dynamic_chunk: bool = False
    subsampling_channels: int = 64
    rotary_base: float = 10000.0
    frontend_scale: float = 1.0

    def __post_init__(self) -> None:
        self.chunk_sizes = tuple(int(c) for c in self.chunk_sizes)
        self.left_contexts = tuple(int(c) for c in self.left_contexts)
        if any(c < -1 for c in self.chunk_sizes):
            raise ValueError(f"Conformer config: chunk_sizes must be >= -1, got {self.chunk_sizes}")
        if any(c < -1 for c in self.left_contexts):
            raise ValueError(f"Conformer config: left_contexts must be >= -1, got {self.left_contexts}")
        if self.d_model % self.num_heads != 0 or (self.d_model // self.num_heads) % 2 != 0:
            raise ValueError(
                f"Conformer config: d_model={self.d_model} / num_heads={self.num_heads} must be an even integer"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples as lists) for checkpoints / JSON."""
        d = dataclasses.asdict(self)
        d["chunk_sizes"] = list(self.chunk_sizes)
        d["left_contexts"] = list(self.left_contexts)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EncoderConfig":
        """Inverse of ``to_dict``; unknown keys raise ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"Conformer config: unknown EncoderConfig keys {sorted(unknown)}")
        return cls(**d)


@dataclass
class EncoderOutput:
    """out (B, T', D); lens (B,) int64; hidden[i] (B, T', D) = output of layer return_layers[i].

    Blocks are pre-norm, so ``hidden[i]`` is the unnormalised residual stream after
    that block; ``out`` is ``final_norm`` of the last block's output.
    """

    out: Tensor
    lens: Tensor
    hidden: list[Tensor] = field(default_factory=list)


class ConformerEncoder(nn.Module):
    """Conv2d subsampling (4x) followed by ``num_layers`` Conformer blocks."""

    subsampling_factor: int = Conv2dSubsampling.SUBSAMPLING_FACTOR

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.subsampling = Conv2dSubsampling(cfg.num_features, cfg.d_model, cfg.subsampling_channels, cfg.dropout,
                                             cfg.frontend_scale)
        self.layers = nn.ModuleList(
            ConformerBlock(
                cfg.d_model, cfg.num_heads, cfg.ff_dim, cfg.conv_kernel, cfg.causal, cfg.dropout, cfg.rotary_base
            )
            for _ in range(cfg.num_layers)
        )
        # pre-norm blocks leave the residual stream unnormalised: one LayerNorm at the end
        self.final_norm = nn.LayerNorm(cfg.d_model)

    @property
    def output_dim(self) -> int:
        return self.cfg.d_model

    @staticmethod
    def output_lengths(feature_lens: Tensor) -> Tensor:
        """Encoder frames per utterance, ``max(0, (T - 3) // 4)``."""
        return Conv2dSubsampling.output_lengths(feature_lens)

    @staticmethod
    def chunk_input_frames(chunk_size: int) -> int:
        """Feature frames one ``streaming_forward`` call consumes: ``4 K + 3``."""
        return Conv2dSubsampling.SUBSAMPLING_FACTOR * chunk_size + Conv2dSubsampling.LOOKAHEAD

    @staticmethod
    def chunk_shift_frames(chunk_size: int) -> int:
        """Feature frames between the starts of consecutive chunks: ``4 K``."""
        return Conv2dSubsampling.SUBSAMPLING_FACTOR * chunk_size

    def chunk_config(self, chunk_size: Optional[int] = None, left_context: Optional[int] = None) -> tuple[int, int]:
        """Resolve (K, L) for a full forward.

        Non-causal: (0, -1), i.e. full context, whatever is asked.  Causal: a
        given value is used; otherwise, in training mode with dynamic_chunk, a
        uniform draw from the config list (global torch RNG), else the list's
        first entry (empty list: full context).  K <= 0 means full context.
        """
        if not self.cfg.causal:
            return 0, -1

        draw = self.training and self.cfg.dynamic_chunk
        return (pick_chunk_option(chunk_size, self.cfg.chunk_sizes, 0, draw),
                pick_chunk_option(left_context, self.cfg.left_contexts, -1, draw))

    def forward(
        self,
        features: Tensor,
        feature_lens: Tensor,
        chunk_size: Optional[int] = None,
        left_context: Optional[int] = None,
        return_layers: Sequence[int] = (),
    ) -> EncoderOutput:
        """Full-utterance forward (masked chunk-wise in causal mode).

        Args:
          features: (B, T, F) padded features.
          feature_lens: (B,) int64 valid feature frames.
          chunk_size / left_context: encoder frames, see ``chunk_config``.
          return_layers: 0-based layer indices (negative = from the end)
            whose outputs to return in ``hidden``, in this order.

        Returns:
          EncoderOutput(out (B, T', D), lens (B,), hidden), T' = (T - 3) // 4.
        """
        if feature_lens.dim() != 1 or feature_lens.size(0) != features.size(0):
            raise ValueError(
                f"Conformer encoder: feature_lens must be (B,)={features.size(0)}, got {tuple(feature_lens.shape)}"
            )
        if int(feature_lens.max()) > features.size(1):
            raise ValueError(
                f"Conformer encoder: feature_lens max {int(feature_lens.max())} exceeds padded length "
                f"{features.size(1)}"
            )
        n = len(self.layers)
        wanted = []
        for i in return_layers:
            if not -n <= i < n:
                raise ValueError(f"Conformer encoder: return_layers index {i} out of range for {n} layers")
            wanted.append(i % n)

        x = self.subsampling(features)
        lens = self.output_lengths(feature_lens).to(x.device)
        b, t, _ = x.shape
        k, lc = self.chunk_config(chunk_size, left_context)
        frame = torch.arange(t, device=x.device)
        frame_valid = frame[None, :] < lens[:, None]  # (B, T')
        allowed = chunk_attention_mask(t, k, lc, x.device)[None] & frame_valid[:, None, :]  # (B, T', T')
        positions = frame[None, :].expand(b, t)
        outputs: dict[int, Tensor] = {}
        for i, layer in enumerate(self.layers):
            x, _, _, _ = layer(x, positions, allowed, frame_valid)
            if i in wanted:
                outputs[i] = x
        return EncoderOutput(out=self.final_norm(x), lens=lens, hidden=[outputs[i] for i in wanted])

    # ------------------------------------------------------------------ streaming

    def init_states(
        self,
        batch_size: int,
        left_context: int,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> EncoderState:
        """Zero streaming state for ``batch_size`` new streams (format: module docstring)."""
        if left_context < -1:
            raise ValueError(f"Conformer encoder: left_context must be >= -1, got {left_context}")
        dtype = dtype or torch.get_default_dtype()
        cfg = self.cfg
        c = max(left_context, 0)
        n, d = cfg.num_layers, cfg.d_model
        return {
            "keys": torch.zeros(batch_size, n, c, d, device=device, dtype=dtype),
            "values": torch.zeros(batch_size, n, c, d, device=device, dtype=dtype),
            "conv": torch.zeros(batch_size, n, d, cfg.conv_kernel - 1, device=device, dtype=dtype),
            "frontend": torch.zeros(
                batch_size, Conv2dSubsampling.LOOKAHEAD, cfg.num_features, device=device, dtype=dtype
            ),
            "offset": torch.zeros(batch_size, dtype=torch.int64, device=device),
        }

    def streaming_forward(
        self,
        chunk_features: Tensor,
        states: EncoderState,
        chunk_size: int,
        left_context: int,
        valid_frames: Optional[Union[int, Tensor]] = None,
    ) -> tuple[Tensor, EncoderState]:
        """Encode one chunk of K encoder frames (causal models only).

        Args:
          chunk_features: (B, 4K+3, F) the whole window of this chunk (it
            overlaps the previous window by 3 frames), or (B, 4K, F) only the
            new frames (not on a stream's first call): the 3 frames kept in
            ``states["frontend"]`` are prepended.
          states: from ``init_states(B, left_context)`` or the previous call.
          chunk_size: K in encoder frames.
          left_context: L in encoder frames (-1 = unlimited); must match the
            cache size given to ``init_states``.
          valid_frames: real encoder frames in this chunk (int or (B,)), for
            the final, padded chunk; None = all K.

        Returns:
          encoder_out: (B, K, D); rows at or beyond ``valid_frames`` are padding.
          new_states: the updated state (inputs are not modified).
        """
        if not self.cfg.causal:
            raise RuntimeError("Conformer encoder: streaming needs a causal encoder (Conformer config causal=True)")
        if chunk_size <= 0:
            raise ValueError(f"Conformer encoder: streaming chunk_size must be > 0, got {chunk_size}")
        offset = states["offset"]
        b, n_in, _ = chunk_features.shape
        if n_in == self.chunk_input_frames(chunk_size):
            window = chunk_features
        elif n_in == self.chunk_shift_frames(chunk_size):
            if bool((offset == 0).any()):
                raise ValueError(
                    f"Conformer encoder: a stream's first chunk needs {self.chunk_input_frames(chunk_size)} "
                    f"feature frames, got {n_in}"
                )
            window = torch.cat((states["frontend"].to(chunk_features.dtype), chunk_features), dim=1)
        else:
            raise ValueError(
                f"Conformer encoder: chunk of K={chunk_size} needs {self.chunk_input_frames(chunk_size)} "
                f"(or {self.chunk_shift_frames(chunk_size)} new) feature frames, got {n_in}"
            )
        keys, values, conv = states["keys"], states["values"], states["conv"]
        cache = keys.size(2)
        if left_context >= 0 and cache != left_context:
            raise ValueError(
                f"Conformer streaming state: holds {cache} left-context frames but left_context={left_context}"
            )
        x = self.subsampling(window)  # (B, K, D)
        device = x.device
        k = chunk_size
        positions = offset[:, None] + torch.arange(k, device=device)[None, :]
        if valid_frames is None:
            chunk_valid = torch.ones(b, k, dtype=torch.bool, device=device)
        else:
            valid = torch.as_tensor(valid_frames, device=device).reshape(-1)
            chunk_valid = torch.arange(k, device=device)[None, :] < valid[:, None]
            chunk_valid = chunk_valid.expand(b, k)
        held = torch.clamp(offset, max=cache)
        cache_valid = torch.arange(cache, device=device)[None, :] >= (cache - held)[:, None]  # (B, C)
        allowed = torch.cat((cache_valid, chunk_valid), dim=1)[:, None, :]  # (B, 1, C + K)

        new_keys, new_values, new_conv = [], [], []
        for i, layer in enumerate(self.layers):
            x, k_i, v_i, conv_i = layer(
                x, positions, allowed, chunk_valid, keys[:, i], values[:, i], conv[:, i]
            )
            k_all = torch.cat((keys[:, i], k_i), dim=1)
            v_all = torch.cat((values[:, i], v_i), dim=1)
            if left_context >= 0:
                k_all = k_all[:, k_all.size(1) - left_context :]
                v_all = v_all[:, v_all.size(1) - left_context :]
            new_keys.append(k_all)
            new_values.append(v_all)
            new_conv.append(conv_i)
        new_states: EncoderState = {
            "keys": torch.stack(new_keys, dim=1),
            "values": torch.stack(new_values, dim=1),
            "conv": torch.stack(new_conv, dim=1),
            "frontend": window[:, window.size(1) - Conv2dSubsampling.LOOKAHEAD :],
            "offset": offset + k,
        }
        return self.final_norm(x), new_states
