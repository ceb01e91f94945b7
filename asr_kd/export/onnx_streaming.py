"""Streaming encoder export in the form of sherpa-onnx's ``conformer`` online model.

Contract (sherpa-onnx ``OnlineRecognizer``, online model type ``conformer``):
the runtime reads the encoder metadata

    model_type = "conformer"      num_encoder_layers = N_l    encoder_dim = D
    T = 4K + 3                    decode_chunk_len = 4K       pad_length = 3
    left_context = 2L             cnn_module_kernel = k

(K chunk size and L left context in 40 ms encoder frames; T and
decode_chunk_len in 10 ms feature frames), zero-fills two caches per stream,
and on every call feeds

    x                (N, T, F)            float  feature frames [4Kc, 4Kc + T) of chunk c
    cached_kv        (N_l, 2L, N, D)      float  attention cache
    cached_conv      (N_l, k - 1, N, D)   float  convolution cache
    processed_frames (N,)                 int64  feature frames before this chunk (= 4Kc)

and receives ``encoder_out (N, K, J)`` (already ``encoder_proj``-ected) and
the two updated caches.  It advances by ``decode_chunk_len`` (windows overlap
by 3 frames, the front end's look-ahead) and only stacks caches of several
streams along axis 2.

Mapping onto ``ConformerEncoder.streaming_forward``:

* ``cached_kv[:, :L]`` are the rotated keys and ``cached_kv[:, L:]`` the
  values of the last L frames of every layer (packed along the left-context
  axis, hence ``left_context = 2L``), i.e. the state's ``keys`` / ``values``
  with the batch axis moved to position 2;
* ``cached_conv`` is the state's ``conv`` (B, N_l, D, k-1) reordered to
  (N_l, k-1, B, D);
* ``offset`` (encoder frames) = ``processed_frames // 4``, which sets the
  rotary positions and masks the cache slots older than the stream;
* the front end needs no state: the window already holds the 3 overlapping
  frames.

So one ONNX call equals one ``streaming_forward`` call on the same window
(followed by ``encoder_proj``), to float rounding; ``tests/test_export_onnx.py``
checks it chunk by chunk.  Unlimited left context (L = -1: a growing cache)
cannot be expressed with fixed-size caches and is refused.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import torch
from torch import Tensor, nn

from asr_kd.export.onnx_common import check_blank, export_decoder_joiner, export_graph, float32_trig
from asr_kd.types import PathLike

__all__ = ["OnnxStreamingEncoder", "streaming_metadata", "export_streaming"]


class OnnxStreamingEncoder(nn.Module):
    """One streaming chunk with sherpa-onnx's cache layout (see the module docstring).

    Args:
      model: a transducer with a causal (chunk-wise) encoder.
      chunk_size: K > 0, encoder frames per call.
      left_context: L > 0, cached encoder frames per layer.
    """

    def __init__(self, model: nn.Module, chunk_size: int, left_context: int) -> None:
        super().__init__()
        enc = model.encoder
        if not enc.cfg.causal:
            raise ValueError("export: streaming export needs a causal (chunk-wise) encoder; "
                             "this model is full-context (it is exported offline)")
        if chunk_size <= 0:
            raise ValueError(f"export: chunk size must be > 0 encoder frames, got {chunk_size}")
        if left_context < 0:
            raise ValueError("export: a student with unlimited left context (L = -1) cannot be exported: "
                             "sherpa-onnx needs fixed-size caches; pass --left-context-ms (a multiple of 40)")
        if left_context == 0:
            raise ValueError("export: left context 0 is not supported (empty attention cache); "
                             "pass --left-context-ms >= 40")
        self.encoder = enc
        self.encoder_proj = model.joiner.encoder_proj
        self.chunk_size = int(chunk_size)
        self.left_context = int(left_context)
        self.subsampling_factor = int(enc.subsampling_factor)

    def forward(
        self, x: Tensor, cached_kv: Tensor, cached_conv: Tensor, processed_frames: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Encode one chunk.

        Args:
          x: (N, 4K+3, F) feature window of the chunk.
          cached_kv: (N_l, 2L, N, D) keys (first L) and values (last L).
          cached_conv: (N_l, k-1, N, D) depthwise-convolution inputs.
          processed_frames: (N,) int64 feature frames consumed before this chunk.

        Returns:
          encoder_out (N, K, J), new cached_kv, new cached_conv (same shapes).
        """
        lc = self.left_context
        states = {
            "keys": cached_kv[:, :lc].permute(2, 0, 1, 3),  # (N, N_l, L, D)
            "values": cached_kv[:, lc:].permute(2, 0, 1, 3),
            "conv": cached_conv.permute(2, 0, 3, 1),  # (N, N_l, D, k-1)
            "frontend": x[:, :0],  # unused: the window is complete
            "offset": torch.div(processed_frames, self.subsampling_factor, rounding_mode="floor"),
        }
        out, new = self.encoder.streaming_forward(x, states, self.chunk_size, lc)
        new_kv = torch.cat((new["keys"], new["values"]), dim=2).permute(1, 2, 0, 3)
        new_conv = new["conv"].permute(1, 3, 0, 2)
        return self.encoder_proj(out), new_kv, new_conv

    def init_caches(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """Zero caches for ``batch_size`` new streams: (N_l, 2L, B, D), (N_l, k-1, B, D)."""
        cfg = self.encoder.cfg
        kv = torch.zeros(cfg.num_layers, 2 * self.left_context, batch_size, cfg.d_model)
        conv = torch.zeros(cfg.num_layers, cfg.conv_kernel - 1, batch_size, cfg.d_model)
        return kv, conv


def streaming_metadata(wrapper: OnnxStreamingEncoder) -> dict[str, Union[int, str]]:
    """Encoder metadata sherpa-onnx's ``conformer`` online model reads (plus descriptive extras)."""
    enc = wrapper.encoder
    cfg = enc.cfg
    k, lc = wrapper.chunk_size, wrapper.left_context
    return {
        "model_type": "conformer",
        "num_encoder_layers": cfg.num_layers,
        "T": enc.chunk_input_frames(k),
        "decode_chunk_len": enc.chunk_shift_frames(k),
        "left_context": 2 * lc,
        "encoder_dim": cfg.d_model,
        "pad_length": enc.chunk_input_frames(k) - enc.chunk_shift_frames(k),
        "cnn_module_kernel": cfg.conv_kernel,
        "chunk_size_encoder_frames": k,
        "left_context_encoder_frames": lc,
        "feature_dim": cfg.num_features,
        "producer": "asr_kd.export",
        "comment": "attention cache packs rotated keys then values along axis 1 (L each)",
    }


def export_streaming(model: nn.Module, out_dir: PathLike, chunk_size: int, left_context: int) -> dict[str, Path]:
    """Write ``encoder.onnx``, ``decoder.onnx``, ``joiner.onnx`` of a streaming student.

    Args:
      model: transducer with a causal encoder (put in eval mode here).
      out_dir: existing directory.
      chunk_size / left_context: K and L in encoder frames (L > 0).

    Returns:
      {"encoder": path, "decoder": path, "joiner": path}.
    """
    check_blank(model)
    model = model.eval()
    out_dir = Path(out_dir)
    wrapper = OnnxStreamingEncoder(model, chunk_size, left_context).eval()
    enc = model.encoder
    x = torch.zeros(1, enc.chunk_input_frames(chunk_size), enc.cfg.num_features)
    kv, conv = wrapper.init_caches(1)
    frames = torch.zeros(1, dtype=torch.int64)
    with float32_trig(model):
        encoder = export_graph(
            wrapper,
            (x, kv, conv, frames),
            out_dir / "encoder.onnx",
            ["x", "cached_kv", "cached_conv", "processed_frames"],
            ["encoder_out", "new_cached_kv", "new_cached_conv"],
            {
                "x": {0: "N"},
                "cached_kv": {2: "N"},
                "cached_conv": {2: "N"},
                "processed_frames": {0: "N"},
                "encoder_out": {0: "N"},
                "new_cached_kv": {2: "N"},
                "new_cached_conv": {2: "N"},
            },
            streaming_metadata(wrapper),
        )
    decoder, joiner = export_decoder_joiner(model, out_dir)
    return {"encoder": encoder, "decoder": decoder, "joiner": joiner}
