"""Zipformer encoder: full context (teacher) or chunk-wise (streaming student), Conformer-compatible API.

Architecture: icefall's ``egs/librispeech/ASR/zipformer`` recipe (Zipformer2,
as of commit 36e0420c) and Yao et al., ICLR 2024; our own implementation.

    features (B, T, F) at 100 Hz
      -> front end (``frontend.py``)                      (B, T50, d_0) at 50 Hz
      -> for each stack i: convert channels to d_i,       (B, T50, d_i)
         stack i at 50 / ds_i Hz (``stack.py``)
      -> combine: the last stack's output, then, walking back, the extra
         channels [d_seen : d_j] of each wider stack j    (B, T50, max d_i)
      -> SimpleDownsample(2)                              (B, T', max d_i) at 25 Hz

Units.  Chunk sizes K and left contexts L are 40 ms ENCODER frames, as for
``ConformerEncoder`` (K = 8 is 320 ms, icefall's ``--chunk-size 16``).
Internally the stacks see 2K-frame chunks and 2L-frame left contexts at
50 Hz, (2K / ds, 2L / ds) at their own rate; every factor must divide 2K
and 2L (ValueError otherwise).  Attention: a frame of chunk c (c = t // K
at 25 Hz) attends the frames of chunks <= c within L encoder frames before
its chunk's start (the Conformer's ``chunk_attention_mask``; icefall's
"left_chunks" mask is the same when K divides L).

Lengths and look-ahead.  ``output_lengths(T) = max(0, (T - 13) // 4)``: the
encoder frames whose whole receptive field lies inside the T feature frames.
Output frame n (50 Hz frames 2n, 2n + 1) reads feature frames up to 4n + 16.
A chunk of K output frames starting at output frame cK consumes feature
frames [4cK, 4cK + 4K + 13) (``chunk_input_frames(K) = 4K + 13``; icefall's
``T = decode_chunk_len + 13``) and the next one starts 4K later
(``chunk_shift_frames``): the encoder looks 13 feature frames = 130 ms
beyond the 4K frames a chunk advances (60 ms of it is the ConvNeXt's right
context), besides the rest of its own chunk (chunk-wise attention).
icefall's training length ((T - 7) // 2 + 1) // 2 also counts the last three
50 Hz frames, whose ConvNeXt right context is zero padding, and an odd last
50 Hz frame; neither can be reproduced by a streaming chunk that only knows
how many encoder frames are real, so they are not counted here (the valid
50 Hz frames are exactly 2 T').

Padding.  Frames at or beyond ``lens`` (at each rate) are masked as
attention keys, zeroed before every depthwise conv and replaced by the last
valid frame before every downsampling, so valid outputs never depend on
batch padding.  ``return_layers`` indexes STACKS: hidden[i] is stack i's
50 Hz output (after its out_combiner) averaged over frame pairs (last frame
repeated if odd), (B, T', d_i).

Streaming (causal models).  ``streaming_forward`` consumes windows of
4K + 13 feature frames and reproduces the masked full forward with the same
K and L (up to float rounding).  The state (``init_states``) is a dict of
batch-first tensors, in sherpa-onnx ``zipformer2``'s input order; with
layers numbered j = 0 .. M-1 over all stacks (stack by stack), stack i,
L_i = 2L / ds_i, H_i heads, k_i kernel:

    "layer{j}.key"          (B, L_i, H_i qhd)    keys of the last L_i frames
    "layer{j}.nonlin_attn"  (B, L_i, 3 d_i / 4)  NonlinAttention's tanh-gated input
    "layer{j}.val1"         (B, L_i, H_i vhd)    SelfAttention1 values
    "layer{j}.val2"         (B, L_i, H_i vhd)    SelfAttention2 values
    "layer{j}.conv1"        (B, d_i, k_i // 2)   Conv1 depthwise inputs
    "layer{j}.conv2"        (B, d_i, k_i // 2)   Conv2 depthwise inputs
    "embed"                 (B, 128, 3, F')      front-end ConvNeXt cache, F' = 19 for 80 bins
    "offset"                (B,) int64           40 ms encoder frames processed so far

Mapping onto sherpa-onnx's tensors: cached_key_j = key.transpose(0, 1)
(L_i, N, H qhd); cached_nonlin_attn_j = nonlin_attn.unsqueeze(0)
(1, N, L_i, 3d/4); cached_val1_j / cached_val2_j = transpose(0, 1);
cached_conv1_j / cached_conv2_j and embed_states as they are;
processed_lens = 2 * offset (50 Hz frames).  Cache slots older than the
stream's start are masked from ``offset``.  Streams at different offsets can
be stacked on dim 0.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from asr_kd.models.attention import pick_chunk_option
from asr_kd.models.conformer import EncoderOutput
from asr_kd.models.zipformer.config import ZipformerConfig, check_chunk_divisibility, check_left_context
from asr_kd.models.zipformer.frontend import ZipformerFrontEnd
from asr_kd.models.zipformer.layer import LAYER_CACHE_NAMES
from asr_kd.models.zipformer.scaling import set_batch_count
from asr_kd.models.zipformer.stack import SimpleDownsample, ZipformerStack, convert_num_channels

__all__ = ["ZipformerEncoder", "zipformer_state_shapes", "pair_mean"]

EncoderState = dict[str, Tensor]


def zipformer_state_shapes(cfg: ZipformerConfig, batch_size: int, left_context: int) -> dict[str, tuple[int, ...]]:
    """Shapes of the streaming state (layout: module docstring), without building a model."""
    if left_context < 0:
        raise ValueError(f"zipformer: streaming needs a fixed left_context >= 0 (sherpa-onnx style fixed-size "
                         f"caches), got {left_context}")
    check_left_context(cfg.downsampling_factors, left_context, "streaming")
    b = batch_size
    shapes: dict[str, tuple[int, ...]] = {}
    j = 0
    for i, ds in enumerate(cfg.downsampling_factors):
        d, h, k = cfg.encoder_dims[i], cfg.num_heads[i], cfg.cnn_kernels[i]
        lc = 2 * left_context // ds
        for _ in range(cfg.num_layers[i]):
            shapes[f"layer{j}.key"] = (b, lc, h * cfg.query_head_dim)
            shapes[f"layer{j}.nonlin_attn"] = (b, lc, 3 * d // 4)
            shapes[f"layer{j}.val1"] = (b, lc, h * cfg.value_head_dim)
            shapes[f"layer{j}.val2"] = (b, lc, h * cfg.value_head_dim)
            shapes[f"layer{j}.conv1"] = (b, d, k // 2)
            shapes[f"layer{j}.conv2"] = (b, d, k // 2)
            j += 1
    shapes["embed"] = (b, ZipformerFrontEnd.CHANNELS, ZipformerFrontEnd.CACHE_FRAMES,
                       ((cfg.num_features - 1) // 2 - 1) // 2)
    shapes["offset"] = (b,)
    return shapes


def pair_mean(x: Tensor) -> Tensor:
    """Mean of frame pairs (2n, 2n + 1), the last frame repeated for odd T: (B, T, C) -> (B, ceil(T / 2), C)."""
    if x.size(1) % 2 == 1:
        x = torch.cat((x, x[:, -1:]), dim=1)
    b, t, c = x.shape
    return x.reshape(b, t // 2, 2, c).mean(dim=2)


class ZipformerEncoder(nn.Module):
    """Zipformer encoder with ``ConformerEncoder``'s interface (module docstring)."""

    #: feature frames per encoder frame (100 Hz -> 25 Hz)
    subsampling_factor: int = 4
    #: feature frames a chunk window needs beyond 4K (``chunk_input_frames``)
    WINDOW_EXTRA: int = ZipformerFrontEnd.WINDOW_EXTRA
    #: fewest feature frames giving one encoder frame
    MIN_FRAMES: int = 17

    def __init__(self, cfg: ZipformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # named like ConformerEncoder's front end (``encoder.subsampling.set_feature_stats``)
        self.subsampling = ZipformerFrontEnd(cfg.num_features, cfg.encoder_dims[0], cfg.dropout,
                                             cfg.convnext_hidden_ratio)
        self.stacks = nn.ModuleList(
            ZipformerStack(cfg.encoder_dims[i], cfg.downsampling_factors[i], cfg.num_layers[i], cfg.num_heads[i],
                           cfg.feedforward_dims[i], cfg.cnn_kernels[i], cfg.query_head_dim, cfg.value_head_dim,
                           cfg.pos_head_dim, cfg.pos_dim, cfg.causal, cfg.dropout, cfg.pos_dropout)
            for i in range(cfg.num_stacks)
        )
        self.downsample_output = SimpleDownsample(2)

    # ------------------------------------------------------------------ properties / helpers

    @property
    def output_dim(self) -> int:
        """Width of ``out``: max(encoder_dims)."""
        return self.cfg.output_dim

    @property
    def num_layers(self) -> int:
        """Number of stacks (what ``return_layers`` indexes)."""
        return self.cfg.num_stacks

    @property
    def layers(self) -> nn.ModuleList:
        """The stacks (so ``len(encoder.layers)`` is what ``return_layers`` indexes, as for the Conformer)."""
        return self.stacks

    @staticmethod
    def output_lengths(feature_lens: Tensor) -> Tensor:
        """Encoder frames per utterance, ``max(0, (T - 13) // 4)``; (B,) int64."""
        return torch.clamp(torch.div(feature_lens - 13, 4, rounding_mode="floor"), min=0)

    @staticmethod
    def chunk_input_frames(chunk_size: int) -> int:
        """Feature frames one ``streaming_forward`` call consumes: ``4 K + 13``."""
        return 4 * chunk_size + ZipformerFrontEnd.WINDOW_EXTRA

    @staticmethod
    def chunk_shift_frames(chunk_size: int) -> int:
        """Feature frames between the starts of consecutive chunks: ``4 K``."""
        return 4 * chunk_size

    def set_feature_stats(self, mean: Tensor, std: Tensor) -> None:
        """Global per-bin feature normalisation (``ZipformerFrontEnd.set_feature_stats``)."""
        self.subsampling.set_feature_stats(mean, std)

    def set_batch_count(self, batch_count: Optional[float]) -> None:
        """Training progress read by every scheduled quantity (bypass scale minimum); None = unset."""
        set_batch_count(self, batch_count)

    def chunk_config(self, chunk_size: Optional[int] = None, left_context: Optional[int] = None) -> tuple[int, int]:
        """Resolve (K, L) in encoder frames for a full forward (``ConformerEncoder.chunk_config`` semantics).

        Non-causal: (0, -1) whatever is asked.  Causal: a given value is used;
        otherwise, in training mode with dynamic_chunk, a uniform draw from the
        config list (global torch RNG), else the list's first entry.  K <= 0
        means full context.  ValueError if a downsampling factor does not
        divide 2K or 2L.
        """
        if not self.cfg.causal:
            return 0, -1

        draw = self.training and self.cfg.dynamic_chunk
        k, lc = (pick_chunk_option(chunk_size, self.cfg.chunk_sizes, 0, draw),
                 pick_chunk_option(left_context, self.cfg.left_contexts, -1, draw))
        check_chunk_divisibility(self.cfg.downsampling_factors, k, lc, "")
        return k, lc

    def _combine(self, outputs: list[Tensor]) -> Tensor:
        """Last stack's output plus the extra channels of wider earlier stacks: (B, T50, max d)."""
        dims = self.cfg.encoder_dims
        parts = [outputs[-1]]
        seen = dims[-1]
        for i in range(len(outputs) - 2, -1, -1):
            if dims[i] > seen:
                parts.append(outputs[i][..., seen : dims[i]])
                seen = dims[i]
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]

    # ------------------------------------------------------------------ full forward

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
          features: (B, T, F) padded features, T >= 17.
          feature_lens: (B,) int64 valid feature frames.
          chunk_size / left_context: encoder frames, see ``chunk_config``.
          return_layers: stack indices (negative = from the end) whose
            outputs to return in ``hidden`` (module docstring), in this order.

        Returns:
          EncoderOutput(out (B, T', D), lens (B,), hidden), T' = (T - 13) // 4,
          D = max(encoder_dims).
        """
        if feature_lens.dim() != 1 or feature_lens.size(0) != features.size(0):
            raise ValueError(
                f"zipformer: feature_lens must be (B,)={features.size(0)}, got {tuple(feature_lens.shape)}")
        if int(feature_lens.max()) > features.size(1):
            raise ValueError(
                f"zipformer: feature_lens max {int(feature_lens.max())} exceeds padded length {features.size(1)}")
        if features.dim() == 3 and features.size(1) < self.MIN_FRAMES:
            raise ValueError(f"zipformer: need at least {self.MIN_FRAMES} feature frames, got {features.size(1)}")
        n = self.num_layers
        wanted = []
        for i in return_layers:
            if not -n <= i < n:
                raise ValueError(f"zipformer: return_layers index {i} out of range for {n} stacks")
            wanted.append(i % n)
        k, lc = self.chunk_config(chunk_size, left_context)
        chunk50 = 2 * k if k > 0 else -1
        left50 = 2 * lc if lc >= 0 else -1

        # output_lengths(T) without a tensor -> int conversion, so that ONNX export traces T as a dynamic
        # axis (T >= MIN_FRAMES = 17 makes the max(0, .) of output_lengths unnecessary)
        t_out = (features.size(1) - 13) // 4
        x = self.subsampling(features)[:, : 2 * t_out]  # (B, 2 T', d_0): complete frames only
        lens = self.output_lengths(feature_lens).to(x.device)
        lens50 = 2 * lens
        outputs: list[Tensor] = []
        for i, stack in enumerate(self.stacks):
            x = stack(convert_num_channels(x, self.cfg.encoder_dims[i]), lens50, chunk50, left50)
            outputs.append(x)
        out = self.downsample_output(self._combine(outputs), lens50)
        return EncoderOutput(out=out, lens=lens, hidden=[pair_mean(outputs[i]) for i in wanted])

    # ------------------------------------------------------------------ streaming

    def init_states(
        self,
        batch_size: int,
        left_context: int,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> EncoderState:
        """Zero streaming state for ``batch_size`` new streams (layout: module docstring); L >= 0 only."""
        dtype = dtype or torch.get_default_dtype()
        states: EncoderState = {}
        for name, shape in zipformer_state_shapes(self.cfg, batch_size, left_context).items():
            kind = torch.int64 if name == "offset" else dtype
            states[name] = torch.zeros(shape, dtype=kind, device=device)
        return states

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
          chunk_features: (B, 4K + 13, F) the chunk's whole window (it
            overlaps the previous window by 13 frames).
          states: from ``init_states(B, left_context)`` or the previous call.
          chunk_size: K in encoder frames (every factor divides 2K).
          left_context: L in encoder frames (>= 0); must match the state.
          valid_frames: real encoder frames in this chunk (int or (B,)), for
            the final, padded chunk (``output_lengths(T) - offset``); None = all K.

        Returns:
          encoder_out: (B, K, D); rows at or beyond ``valid_frames`` are padding.
          new_states: the updated state (inputs are not modified).
        """
        cfg = self.cfg
        if not cfg.causal:
            raise RuntimeError("zipformer: streaming_forward needs a causal encoder (causal=True)")
        if chunk_size <= 0:
            raise ValueError(f"zipformer: streaming chunk_size must be > 0, got {chunk_size}")
        if left_context < 0:
            raise ValueError(f"zipformer: streaming needs a fixed left_context >= 0, got {left_context}")
        check_chunk_divisibility(cfg.downsampling_factors, chunk_size, left_context, "streaming")
        b, n_in = chunk_features.shape[0], chunk_features.shape[1]
        if n_in != self.chunk_input_frames(chunk_size):
            raise ValueError(f"zipformer: a chunk of K={chunk_size} needs {self.chunk_input_frames(chunk_size)} "
                             f"feature frames, got {n_in}")
        expected = zipformer_state_shapes(cfg, b, left_context)
        for name, shape in expected.items():
            if name not in states:
                raise ValueError(f"zipformer: streaming state lacks {name!r}")
            if tuple(states[name].shape) != shape:
                raise ValueError(f"zipformer: state {name!r} has shape {tuple(states[name].shape)}, expected "
                                 f"{shape} for batch {b} and left_context={left_context}")
        offset = states["offset"]
        x, embed = self.subsampling.streaming_forward(chunk_features, states["embed"])  # (B, 2K, d_0)
        device = x.device
        c50 = 2 * chunk_size
        if valid_frames is None:
            valid50 = torch.full((b,), c50, dtype=torch.int64, device=device)
        else:
            valid = torch.as_tensor(valid_frames, device=device).reshape(-1).to(torch.int64)
            valid50 = (2 * valid).clamp(0, c50).expand(b)
        offset50 = 2 * offset.to(device)

        new_states: EncoderState = {}
        outputs: list[Tensor] = []
        j = 0
        for i, stack in enumerate(self.stacks):
            caches = []
            for _ in range(len(stack.layers)):
                caches.append({name: states[f"layer{j}.{name}"] for name in LAYER_CACHE_NAMES})
                j += 1
            x, new_caches = stack.streaming_forward(convert_num_channels(x, cfg.encoder_dims[i]), valid50,
                                                    offset50, caches)
            outputs.append(x)
            for jj, cache in zip(range(j - len(new_caches), j), new_caches):
                for name in LAYER_CACHE_NAMES:
                    new_states[f"layer{jj}.{name}"] = cache[name]
        out = self.downsample_output(self._combine(outputs), valid50)
        new_states["embed"] = embed
        new_states["offset"] = offset + chunk_size
        return out, new_states
