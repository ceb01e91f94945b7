"""Zipformer export for sherpa-onnx: the streaming student as an online ``zipformer2`` model, and the
metadata of the full-context teacher's offline export.

Sources of the contract (read, not copied; summarised in our own words):
icefall @ 36e0420c ``egs/librispeech/ASR/zipformer/export-onnx-streaming.py``
(``OnnxEncoder``, ``export_encoder_model_onnx``) for what the graphs hold,
and sherpa-onnx @ 634265c9 ``sherpa-onnx/csrc/online-zipformer2-transducer-model.cc``,
``online-transducer-model.cc``, ``online-recognizer-transducer-impl.h`` and
``online-transducer-greedy-search-decoder.cc`` for what the runtime reads
and feeds.  The offline model types come from sherpa-onnx's
``offline-recognizer-impl.cc`` (a public copy, commit not pinned: it accepts
"conformer", "zipformer" and "zipformer2" for an offline transducer), and
were checked by running sherpa-onnx 2.0.1 (``tests/test_export_zipformer.py``).

Streaming encoder (chunk K and left context L in 40 ms encoder frames; M
layers over all stacks, numbered j = 0 .. M-1 stack by stack; stack i has
factor ds_i, width d_i, H_i heads, kernel k_i and L_i = 2L / ds_i cached
frames at its own rate).  Inputs, in this order (sherpa-onnx passes them by
position, output 0 is ``encoder_out`` and outputs 1.. are the next states in
the same order; the names are ours):

    x                        (N, 4K + 13, F)         float  feature window of the chunk
    for j = 0 .. M-1:
      cached_key_j           (L_i, N, H_i qhd)       float  keys of the last L_i frames
      cached_nonlin_attn_j   (1, N, L_i, 3 d_i / 4)  float  NonlinAttention's gated input
      cached_val1_j          (L_i, N, H_i vhd)       float  SelfAttention1 values
      cached_val2_j          (L_i, N, H_i vhd)       float  SelfAttention2 values
      cached_conv1_j         (N, d_i, k_i // 2)      float  Conv1 depthwise inputs
      cached_conv2_j         (N, d_i, k_i // 2)      float  Conv2 depthwise inputs
    embed_states             (N, 128, 3, F')         float  front-end ConvNeXt cache, F' = 19 for 80 bins
    processed_lens           (N,)                    int64  50 Hz frames before this chunk (= 2K c)

Outputs: ``encoder_out`` (N, K, J), already through the joiner's
``encoder_proj`` (J = joiner width), then ``new_<name>`` for every state
above (``new_processed_lens = processed_lens + 2K``).  The batch axis is 1
for the four attention caches and 0 for everything else (sherpa-onnx stacks
streams that way).  The global feature normalisation of the front end is
inside the graph (sherpa-onnx feeds raw fbank).

sherpa-onnx builds a new stream's states itself, as zeros of the shapes the
metadata implies, with ``processed_lens = 0``: our ``init_states`` (zeros,
``offset = 0``) mean the same, an empty history whose cache slots are all
masked (the masking follows from ``processed_lens``).  The runtime feeds
``T = 4K + 13`` feature frames per call and advances by
``decode_chunk_len = 4K`` (windows overlap by 13 frames = 130 ms of
look-ahead, see ``asr_kd/models/zipformer/encoder.py``); a chunk runs once
MORE than T frames from its start exist.

Encoder metadata (all values strings; per-stack lists comma-joined without
spaces, one entry per stack):

    model_type = "zipformer2"        decode_chunk_len = 4K        T = 4K + 13
    num_encoder_layers, encoder_dims, cnn_module_kernels, num_heads   per stack
    left_context_len = 2L / ds_i     per stack
    query_head_dims, value_head_dims  per stack (our config has one value: repeated)

plus descriptive keys sherpa-onnx ignores (``chunk_size_encoder_frames``,
``left_context_encoder_frames``, ``feature_dim``, ``downsampling_factors``,
``producer``, ``comment``).  The decoder and joiner are those of every export
(``onnx_common.py``): ``y (N, context_size) int64 -> decoder_out (N, J)``
with ``decoder_proj`` inside and negative ids (sherpa-onnx's initial context
``[-1, ..., -1, 0]``) read as blank, i.e. a zero embedding, which is what our
``Decoder`` gives the positions before the start; metadata ``vocab_size`` and
``context_size``; joiner ``(encoder_out (N, J), decoder_out (N, J)) -> logit
(N, V)``.

One ONNX call equals one ``ZipformerEncoder.streaming_forward`` call on the
same window (plus ``encoder_proj``) with the states mapped as in
``encoder.py``'s docstring (key/val1/val2 transposed, nonlin_attn with a
leading axis, offset = processed_lens / 2); ``tests/test_export_zipformer.py``
checks it chunk by chunk, states included.

Limits (refused with a ValueError): unlimited left context (L = -1: the
caches would grow) and L = 0; K and L must make every stack see whole frames,
i.e. ds_i divides 2K and 2L (``required_multiple``: 4 encoder frames =
160 ms for factors up to 8).

Offline (full-context teacher): ``onnx_offline.export_offline`` writes the
encoder ``x (N, T, F), x_lens (N,) -> encoder_out (N, T', J),
encoder_out_lens (N,)`` with ``T' = (T - 13) // 4``, and takes its metadata
from :func:`offline_metadata` here: ``model_type = "zipformer2"``, one of
the types sherpa-onnx's offline recogniser accepts for a transducer.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Union

import torch
from torch import Tensor, nn

from asr_kd.export.onnx_common import check_blank, export_decoder_joiner, export_graph
from asr_kd.models.zipformer import ZipformerConfig, ZipformerEncoder
from asr_kd.models.zipformer.layer import LAYER_CACHE_NAMES
from asr_kd.types import PathLike

__all__ = [
    "OnnxZipformerStreamingEncoder",
    "required_multiple",
    "state_names",
    "to_sherpa_states",
    "from_sherpa_states",
    "streaming_metadata",
    "offline_metadata",
    "export_zipformer_streaming",
]


#: caches whose batch axis is 1 in sherpa-onnx's layout (the rest have it at 0)
_ATTENTION_CACHES = ("key", "nonlin_attn", "val1", "val2")


def required_multiple(cfg: ZipformerConfig) -> int:
    """Smallest m (encoder frames) such that K and L must be multiples of m: every ds_i divides 2m."""
    return math.lcm(*(ds // math.gcd(ds, 2) for ds in cfg.downsampling_factors))


def _join(values: tuple[int, ...]) -> str:
    return ",".join(str(int(v)) for v in values)


def _layer_count(cfg: ZipformerConfig) -> int:
    return sum(cfg.num_layers)


def state_names(cfg: ZipformerConfig) -> list[str]:
    """sherpa-onnx input names of the states, in order: ``cached_<kind>_<j>``..., embed_states, processed_lens."""
    names = [f"cached_{kind}_{j}" for j in range(_layer_count(cfg)) for kind in LAYER_CACHE_NAMES]
    return names + ["embed_states", "processed_lens"]


def to_sherpa_states(states: dict[str, Tensor], cfg: ZipformerConfig) -> list[Tensor]:
    """Our batch-first streaming state (``ZipformerEncoder.init_states``) -> sherpa-onnx's tensors, in order."""
    out = []
    for j in range(_layer_count(cfg)):
        for kind in LAYER_CACHE_NAMES:
            v = states[f"layer{j}.{kind}"]
            if kind == "nonlin_attn":
                v = v.unsqueeze(0)  # (B, L, h) -> (1, B, L, h)
            elif kind in _ATTENTION_CACHES:
                v = v.transpose(0, 1)  # (B, L, c) -> (L, B, c)
            out.append(v)
    out.append(states["embed"])
    out.append(2 * states["offset"])  # 40 ms encoder frames -> 50 Hz frames
    return out


def from_sherpa_states(flat: list[Tensor], cfg: ZipformerConfig) -> dict[str, Tensor]:
    """Inverse of :func:`to_sherpa_states` (``processed_lens`` is even: a multiple of 2K)."""
    expected = 6 * _layer_count(cfg) + 2
    if len(flat) != expected:
        raise ValueError(f"export: expected {expected} state tensors, got {len(flat)}")
    states: dict[str, Tensor] = {}
    it = iter(flat)
    for j in range(_layer_count(cfg)):
        for kind in LAYER_CACHE_NAMES:
            v = next(it)
            if kind == "nonlin_attn":
                v = v.squeeze(0)
            elif kind in _ATTENTION_CACHES:
                v = v.transpose(0, 1)
            states[f"layer{j}.{kind}"] = v
    states["embed"] = next(it)
    states["offset"] = torch.div(next(it), 2, rounding_mode="floor")
    return states


class OnnxZipformerStreamingEncoder(nn.Module):
    """One chunk through ``streaming_forward`` + ``encoder_proj``, states in sherpa-onnx's layout.

    Nothing is reimplemented: the states are re-laid out and passed to
    ``ZipformerEncoder.streaming_forward``, whose chunk path has no
    value-dependent Python control flow (it traces to one fixed-chunk graph).

    Args:
      model: a transducer with a causal Zipformer encoder.
      chunk_size: K > 0 encoder frames, a multiple of ``required_multiple``.
      left_context: L > 0 encoder frames, a multiple of ``required_multiple``.
    """

    def __init__(self, model: nn.Module, chunk_size: int, left_context: int) -> None:
        super().__init__()
        enc = model.encoder
        if not isinstance(enc, ZipformerEncoder):
            raise ValueError(f"export: expected a Zipformer encoder, got {type(enc).__name__}")
        cfg = enc.cfg
        if not cfg.causal:
            raise ValueError("export: streaming export needs a causal (chunk-wise) encoder; "
                             "this model is full-context (it is exported offline)")
        m = required_multiple(cfg)
        if chunk_size <= 0 or chunk_size % m:
            raise ValueError(f"export: --chunk-ms must be a multiple of {40 * m} ms for this Zipformer (every "
                             f"stack's downsampling factor, up to {max(cfg.downsampling_factors)}, must divide the "
                             f"chunk at 50 Hz), got {40 * chunk_size} ms")
        if left_context < 0:
            raise ValueError("export: a student with unlimited left context (L = -1) cannot be exported: "
                             "sherpa-onnx needs fixed-size caches; pass --left-context-ms (a multiple of "
                             f"{40 * m})")
        if left_context == 0 or left_context % m:
            raise ValueError(f"export: --left-context-ms must be a positive multiple of {40 * m} ms for this "
                             f"Zipformer, got {40 * left_context} ms")
        self.encoder = enc
        self.encoder_proj = model.joiner.encoder_proj
        self.chunk_size = int(chunk_size)
        self.left_context = int(left_context)

    @property
    def cfg(self) -> ZipformerConfig:
        return self.encoder.cfg

    def forward(self, x: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        """Encode one chunk.

        Args:
          x: (N, 4K + 13, F) feature window.
          states: the 6 M + 2 tensors of the module docstring, in order.

        Returns:
          encoder_out (N, K, J), then the new states (same shapes, same order).
        """
        ours = from_sherpa_states(list(states), self.cfg)
        out, new = self.encoder.streaming_forward(x, ours, self.chunk_size, self.left_context)
        return (self.encoder_proj(out), *to_sherpa_states(new, self.cfg))

    def init_states(self, batch_size: int) -> list[Tensor]:
        """Zero states of ``batch_size`` new streams in sherpa-onnx's layout (what sherpa-onnx builds)."""
        return to_sherpa_states(self.encoder.init_states(batch_size, self.left_context), self.cfg)


def streaming_metadata(wrapper: OnnxZipformerStreamingEncoder) -> dict[str, Union[int, str]]:
    """Encoder metadata sherpa-onnx's ``zipformer2`` online model reads (plus descriptive extras)."""
    cfg = wrapper.cfg
    enc = wrapper.encoder
    k, lc = wrapper.chunk_size, wrapper.left_context
    n = cfg.num_stacks
    return {
        "model_type": "zipformer2",
        "decode_chunk_len": enc.chunk_shift_frames(k),
        "T": enc.chunk_input_frames(k),
        "num_encoder_layers": _join(cfg.num_layers),
        "encoder_dims": _join(cfg.encoder_dims),
        "cnn_module_kernels": _join(cfg.cnn_kernels),
        "left_context_len": _join(tuple(2 * lc // ds for ds in cfg.downsampling_factors)),
        "query_head_dims": _join((cfg.query_head_dim,) * n),
        "value_head_dims": _join((cfg.value_head_dim,) * n),
        "num_heads": _join(cfg.num_heads),
        "chunk_size_encoder_frames": k,
        "left_context_encoder_frames": lc,
        "downsampling_factors": _join(cfg.downsampling_factors),
        "feature_dim": cfg.num_features,
        "producer": "asr_kd.export",
        "comment": "streaming zipformer2; processed_lens in 50 Hz frames",
    }


def offline_metadata(cfg: ZipformerConfig) -> dict[str, Union[int, str]]:
    """Encoder metadata of the offline (full-context) export; sherpa-onnx reads ``model_type`` only."""
    return {
        "model_type": "zipformer2",
        "num_encoder_layers": _join(cfg.num_layers),
        "encoder_dims": _join(cfg.encoder_dims),
        "downsampling_factors": _join(cfg.downsampling_factors),
        "feature_dim": cfg.num_features,
        "causal": int(cfg.causal),
        "producer": "asr_kd.export",
    }


def export_zipformer_streaming(model: nn.Module, out_dir: PathLike, chunk_size: int,
                               left_context: int) -> dict[str, Path]:
    """Write ``encoder.onnx`` (module docstring), ``decoder.onnx``, ``joiner.onnx`` into ``out_dir``.

    Args:
      model: a transducer with a causal Zipformer encoder.
      out_dir: existing directory.
      chunk_size / left_context: K and L in encoder frames (``OnnxZipformerStreamingEncoder``).

    Returns:
      {"encoder": path, "decoder": path, "joiner": path}.
    """
    check_blank(model)
    model = model.eval()
    out_dir = Path(out_dir)
    wrapper = OnnxZipformerStreamingEncoder(model, chunk_size, left_context).eval()
    cfg = wrapper.cfg
    x = torch.zeros(1, wrapper.encoder.chunk_input_frames(chunk_size), cfg.num_features)
    states = wrapper.init_states(1)
    names = state_names(cfg)
    axes: dict[str, dict[int, str]] = {"x": {0: "N"}, "encoder_out": {0: "N"}}
    for name in names:
        kind = name[len("cached_"):].rsplit("_", 1)[0] if name.startswith("cached_") else ""
        axis = 1 if kind in _ATTENTION_CACHES else 0
        axes[name] = {axis: "N"}
        axes[f"new_{name}"] = {axis: "N"}
    encoder = export_graph(
        wrapper,
        (x, *states),
        out_dir / "encoder.onnx",
        ["x", *names],
        ["encoder_out", *(f"new_{n}" for n in names)],
        axes,
        streaming_metadata(wrapper),
    )
    decoder, joiner = export_decoder_joiner(model, out_dir)
    return {"encoder": encoder, "decoder": decoder, "joiner": joiner}
