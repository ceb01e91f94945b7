"""Zipformer hyper-parameters (``ZipformerConfig``) and size presets (``ZIPFORMER_SIZES``).

The architecture follows icefall's ``egs/librispeech/ASR/zipformer`` recipe
(as of commit 36e0420c; Yao et al., "Zipformer: A faster and better encoder
for automatic speech recognition", ICLR 2024).  Per-stack options are tuples
with one entry per stack; ``downsampling_factors[i]`` is stack i's frame-rate
reduction relative to the 50 Hz front-end output.

Units.  As for the Conformer (``EncoderConfig``), ``chunk_sizes`` and
``left_contexts`` count 40 ms ENCODER frames (the 25 Hz output rate).
Internally the stacks run at 50 Hz multiples, so a chunk of K encoder frames
is 2K frames at 50 Hz and (2K / ds) frames in a stack with downsampling
factor ds; the same holds for the left context.  Hence every factor must
divide 2K (K > 0) and 2L (L >= 0).  icefall's ``--chunk-size 16
--left-context-frames 128`` (50 Hz frames) is K = 8, L = 64 here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["ZipformerConfig", "ZIPFORMER_SIZES", "zipformer_config", "check_chunk_divisibility", "check_left_context"]

def _w(where: str) -> str:
    return f"{where} " if where else ""


_PER_STACK = ("num_layers", "encoder_dims", "feedforward_dims", "num_heads", "cnn_kernels")


def check_chunk_divisibility(factors: tuple[int, ...], chunk_size: int, left_context: int, where: str) -> None:
    """Raise ValueError unless every factor divides 2K (K > 0) and 2L (L >= 0).

    Args:
      factors: per-stack downsampling factors (relative to 50 Hz).
      chunk_size: K in 40 ms encoder frames; <= 0 means full context (no check).
      left_context: L in 40 ms encoder frames; -1 = unlimited (no check).
      where: prefix of the error message (which argument list was checked).
    """
    if chunk_size < -1 or left_context < -1:
        raise ValueError(f"zipformer: {_w(where)}chunk_size={chunk_size} and left_context={left_context} "
                         "must be >= -1")
    if chunk_size > 0:
        for ds in factors:
            if (2 * chunk_size) % ds != 0:
                raise ValueError(
                    f"zipformer: {_w(where)}chunk_size={chunk_size} (= {2 * chunk_size} frames at 50 Hz) must be "
                    f"divisible by every downsampling factor; factor {ds} does not divide it")
    if chunk_size > 0:
        check_left_context(factors, left_context, where)


def check_left_context(factors: tuple[int, ...], left_context: int, where: str) -> None:
    """Raise ValueError unless every factor divides 2L (L >= 0; -1 = unlimited passes)."""
    if left_context < -1:
        raise ValueError(f"zipformer: {_w(where)}left_context={left_context} must be >= -1")
    if left_context >= 0:
        for ds in factors:
            if (2 * left_context) % ds != 0:
                raise ValueError(
                    f"zipformer: {_w(where)}left_context={left_context} (= {2 * left_context} frames at 50 Hz) "
                    f"must be divisible by every downsampling factor; factor {ds} does not divide it")


@dataclass
class ZipformerConfig:
    """Zipformer encoder hyper-parameters.

    Attributes:
      num_features: F, fbank bins (80).  The front end's 128 channels and its
        7x7 ConvNeXt are fixed (sherpa-onnx hard-codes the cache shape).
      downsampling_factors: per-stack rate reduction relative to 50 Hz.
      num_layers: encoder layers per stack.
      encoder_dims: per-stack model width d_i; between stacks the channel
        dim is truncated or zero-padded.  The encoder output has
        max(encoder_dims) channels.
      feedforward_dims: per-stack F_i; the three feed-forward modules of a
        layer have hidden sizes 3F/4, F and 5F/4 (integer division).
      num_heads: per-stack attention heads H_i.
      query_head_dim / value_head_dim / pos_head_dim: per-head widths of
        queries and keys, values, and positional queries.
      pos_dim: width of the compact relative positional encoding.
      cnn_kernels: per-stack depthwise kernel (odd).
      convnext_hidden_ratio: hidden width of the front end's ConvNeXt
        pointwise convolutions, in multiples of its 128 channels (icefall: 3).
        Free for sherpa-onnx (its cache holds the ConvNeXt *input*); the
        ``cpu`` size uses 1, since at 3 the ConvNeXt alone costs more per
        second of audio than a whole 4-block 144-wide Conformer encoder.
      dropout: constant dropout rate (front-end output and feed-forward
        hidden layers).  icefall schedules it (0.3 -> 0.1 over 20k batches);
        here it is constant.
      pos_dropout: dropout on the positional-encoding table (icefall: 0.15).
      causal: False = full context (teacher); True = chunk-wise attention,
        chunk-causal convolutions and streaming support (student).
      chunk_sizes: K in 40 ms encoder frames; -1 or 0 = full context.  The
        first entry is the default outside dynamic-chunk training.
      left_contexts: L in 40 ms encoder frames (-1 = unlimited; streaming
        needs L >= 0).  The first entry is the default.
      dynamic_chunk: in training mode, draw K and L uniformly from the lists
        for every batch (global torch RNG) unless given explicitly.
    """

    num_features: int = 80
    downsampling_factors: tuple[int, ...] = (1, 2, 4, 8, 4, 2)
    num_layers: tuple[int, ...] = (2, 2, 3, 4, 3, 2)
    encoder_dims: tuple[int, ...] = (192, 256, 384, 512, 384, 256)
    feedforward_dims: tuple[int, ...] = (512, 768, 1024, 1536, 1024, 768)
    num_heads: tuple[int, ...] = (4, 4, 4, 8, 4, 4)
    query_head_dim: int = 32
    value_head_dim: int = 12
    pos_head_dim: int = 4
    pos_dim: int = 48
    cnn_kernels: tuple[int, ...] = (31, 31, 15, 15, 15, 31)
    convnext_hidden_ratio: int = 3
    dropout: float = 0.1
    pos_dropout: float = 0.15
    causal: bool = False
    chunk_sizes: tuple[int, ...] = (16,)
    left_contexts: tuple[int, ...] = (64,)
    dynamic_chunk: bool = False

    def __post_init__(self) -> None:
        # lists (JSON, from_dict) become tuples so configs compare and hash by value
        self.downsampling_factors = tuple(int(v) for v in self.downsampling_factors)
        for name in _PER_STACK:
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        self.chunk_sizes = tuple(int(c) for c in self.chunk_sizes)
        self.left_contexts = tuple(int(c) for c in self.left_contexts)
        n = len(self.downsampling_factors)
        if n < 1:
            raise ValueError("zipformer: downsampling_factors must name at least one stack")
        if any(ds < 1 for ds in self.downsampling_factors):
            raise ValueError(f"zipformer: downsampling_factors must be >= 1, got {self.downsampling_factors}")
        for name in _PER_STACK:
            value = getattr(self, name)
            if len(value) != n:
                raise ValueError(f"zipformer: {name} must have one entry per stack ({n}), got {value}")
            if any(v < 1 for v in value):
                raise ValueError(f"zipformer: {name} must be >= 1, got {value}")
        if any(k % 2 == 0 for k in self.cnn_kernels):
            raise ValueError(f"zipformer: cnn_kernels must be odd, got {self.cnn_kernels}")
        if any(d < 4 for d in self.encoder_dims):
            raise ValueError(f"zipformer: encoder_dims must be >= 4 (3d/4 wide attention), got {self.encoder_dims}")
        if any(f < 4 for f in self.feedforward_dims):
            raise ValueError(f"zipformer: feedforward_dims must be >= 4, got {self.feedforward_dims}")
        for name in ("query_head_dim", "value_head_dim", "pos_head_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"zipformer: {name} must be >= 1, got {getattr(self, name)}")
        if self.pos_dim < 2 or self.pos_dim % 2 != 0:
            raise ValueError(f"zipformer: pos_dim must be even and >= 2, got {self.pos_dim}")
        if self.convnext_hidden_ratio < 1:
            raise ValueError(f"zipformer: convnext_hidden_ratio must be >= 1, got {self.convnext_hidden_ratio}")
        if self.num_features < 7:
            raise ValueError(f"zipformer: num_features must be >= 7, got {self.num_features}")
        for name in ("dropout", "pos_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"zipformer: {name} must be in [0, 1), got {getattr(self, name)}")
        if any(c < -1 for c in self.chunk_sizes):
            raise ValueError(f"zipformer: chunk_sizes must be >= -1, got {self.chunk_sizes}")
        if any(c < -1 for c in self.left_contexts):
            raise ValueError(f"zipformer: left_contexts must be >= -1, got {self.left_contexts}")
        # every stack must see whole chunks (and whole left contexts) at its own rate
        for ds in self.downsampling_factors:
            bad_k = [k for k in self.chunk_sizes if k > 0 and (2 * k) % ds != 0]
            if bad_k:
                raise ValueError(f"zipformer: chunk_sizes {self.chunk_sizes} must be multiples of "
                                 f"max(downsampling_factors)/2: 2K={2 * bad_k[0]} is not divisible by factor {ds}")
            bad_l = [lc for lc in self.left_contexts if lc >= 0 and (2 * lc) % ds != 0]
            if bad_l:
                raise ValueError(f"zipformer: left_contexts {self.left_contexts} must be multiples of "
                                 f"max(downsampling_factors)/2: 2L={2 * bad_l[0]} is not divisible by factor {ds}")

    @property
    def num_stacks(self) -> int:
        return len(self.downsampling_factors)

    @property
    def output_dim(self) -> int:
        """Width of the combined encoder output, max(encoder_dims)."""
        return max(self.encoder_dims)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples as lists) for checkpoints / JSON."""
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ZipformerConfig":
        """Inverse of ``to_dict``; unknown keys raise ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"zipformer: unknown ZipformerConfig keys {sorted(unknown)}")
        return cls(**d)


#: Size presets (architecture only; combine with causal/chunk options via ``zipformer_config``).
#: "small" and "medium" are icefall's published LibriSpeech sizes (RESULTS.md: 23.3 M and
#: 65.5 M parameters for the whole transducer with BPE 500); "large" likewise (148.4 M).
#: "tiny" is for tests and smoke runs.
ZIPFORMER_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        num_layers=(1, 1, 1, 1, 1, 1),
        encoder_dims=(32, 32, 48, 48, 48, 32),
        feedforward_dims=(64, 64, 96, 96, 96, 64),
        num_heads=(2, 2, 2, 2, 2, 2),
        query_head_dim=8,
        value_head_dim=8,
        pos_head_dim=4,
        pos_dim=16,
        cnn_kernels=(7, 7, 5, 5, 5, 7),
    ),
    # the synth recipe's CPU size: about the parameters of the default 4-block Conformer
    # (docs/models.md), one layer per stack, a ConvNeXt of hidden ratio 1 (see above)
    "cpu": dict(
        num_layers=(1, 1, 1, 1, 1, 1),
        encoder_dims=(64, 96, 128, 160, 128, 96),
        feedforward_dims=(128, 192, 256, 320, 256, 192),
        num_heads=(4, 4, 4, 4, 4, 4),
        cnn_kernels=(15, 15, 15, 15, 15, 15),
        convnext_hidden_ratio=1,
    ),
    "small": dict(
        num_layers=(2, 2, 2, 2, 2, 2),
        encoder_dims=(192, 256, 256, 256, 256, 256),
        feedforward_dims=(512, 768, 768, 768, 768, 768),
        num_heads=(4, 4, 4, 8, 4, 4),
        cnn_kernels=(31, 31, 15, 15, 15, 31),
    ),
    "medium": dict(
        num_layers=(2, 2, 3, 4, 3, 2),
        encoder_dims=(192, 256, 384, 512, 384, 256),
        feedforward_dims=(512, 768, 1024, 1536, 1024, 768),
        num_heads=(4, 4, 4, 8, 4, 4),
        cnn_kernels=(31, 31, 15, 15, 15, 31),
    ),
    "large": dict(
        num_layers=(2, 2, 4, 5, 4, 2),
        encoder_dims=(192, 256, 512, 768, 512, 256),
        feedforward_dims=(512, 768, 1536, 2048, 1536, 768),
        num_heads=(4, 4, 4, 8, 4, 4),
        cnn_kernels=(31, 31, 15, 15, 15, 31),
    ),
}


def zipformer_config(size: str, **overrides: Any) -> ZipformerConfig:
    """``ZipformerConfig`` of a named size (``ZIPFORMER_SIZES``) with field overrides."""
    if size not in ZIPFORMER_SIZES:
        raise ValueError(f"zipformer: unknown size {size!r}; choose from {sorted(ZIPFORMER_SIZES)}")
    return ZipformerConfig(**{**ZIPFORMER_SIZES[size], **overrides})
