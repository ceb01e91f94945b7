"""Offline (whole-utterance) export for sherpa-onnx's ``OfflineRecognizer``.

sherpa-onnx's offline transducer runtime calls

    encoder:  x (N, T, F) float, x_lens (N,) int64
              -> encoder_out (N, T', J), encoder_out_lens (N,) int64

with ``T' = encoder.output_lengths(T)`` (Conformer ``(T - 3) // 4``,
Zipformer ``(T - 13) // 4``) and ``J`` the joiner width (the joiner's
``encoder_proj`` is applied inside the graph), plus the same decoder and
joiner graphs as the streaming model (``onnx_common.py``).  T is a dynamic
axis: the graph is traced once and runs at any length the encoder accepts
(Conformer T >= 7, Zipformer T >= 17).  Batches are
padded with ln(1e-10) by sherpa-onnx, the value our data loader pads with;
the encoder masks frames at or beyond ``x_lens`` in any case.

The encoder's metadata says ``model_type = "conformer"`` (Conformer) or
``"zipformer2"`` (Zipformer, ``onnx_zipformer.offline_metadata``): without
an explicit model type (e.g. ``sherpa-onnx-offline`` on the command line)
sherpa-onnx chooses its offline transducer runtime from it; both select
the same transducer runtime, which reads no other encoder metadata.

The full-context teacher is exported this way.  A chunk-wise student can be
too: its encoder then runs its masked full-utterance forward with the
chunk size and left context it is configured with (the first entries of
its config), i.e. our ``offline`` decoding mode.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import torch
from torch import Tensor, nn

from asr_kd.export.onnx_common import check_blank, export_decoder_joiner, export_graph, float32_trig
from asr_kd.export.onnx_zipformer import offline_metadata as zipformer_offline_metadata
from asr_kd.models.encoders import AnyEncoderConfig
from asr_kd.models.zipformer import ZipformerConfig
from asr_kd.types import PathLike

__all__ = ["OnnxOfflineEncoder", "offline_metadata", "export_offline"]


class OnnxOfflineEncoder(nn.Module):
    """Whole-utterance encoder followed by ``encoder_proj``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.encoder_proj = model.joiner.encoder_proj

    def forward(self, x: Tensor, x_lens: Tensor) -> tuple[Tensor, Tensor]:
        """x (N, T, F), x_lens (N,) int64 -> encoder_out (N, T', J), encoder_out_lens (N,)."""
        out = self.encoder(x, x_lens)
        return self.encoder_proj(out.out), out.lens


def offline_metadata(cfg: AnyEncoderConfig) -> dict[str, Union[int, str]]:
    """Encoder metadata of the offline export for a Conformer (``EncoderConfig``) or Zipformer config."""
    if isinstance(cfg, ZipformerConfig):
        return zipformer_offline_metadata(cfg)
    return {
        # sherpa-onnx's offline command-line tool picks its transducer runtime from this
        "model_type": "conformer",
        "encoder_dim": cfg.d_model,
        "num_encoder_layers": cfg.num_layers,
        "feature_dim": cfg.num_features,
        "causal": int(cfg.causal),
        "producer": "asr_kd.export",
    }


def export_offline(model: nn.Module, out_dir: PathLike) -> dict[str, Path]:
    """Write ``encoder.onnx``, ``decoder.onnx``, ``joiner.onnx`` for offline decoding.

    Args:
      model: a transducer (a full-context teacher, or any student).
      out_dir: existing directory.

    Returns:
      {"encoder": path, "decoder": path, "joiner": path}.
    """
    check_blank(model)
    model = model.eval()
    out_dir = Path(out_dir)
    cfg = model.encoder.cfg
    t = 4 * 25 + 3  # any length the encoder accepts traces the same graph; T is dynamic
    x = torch.zeros(1, t, cfg.num_features)
    x_lens = torch.tensor([t], dtype=torch.int64)
    with float32_trig(model):
        encoder = export_graph(
            OnnxOfflineEncoder(model),
            (x, x_lens),
            out_dir / "encoder.onnx",
            ["x", "x_lens"],
            ["encoder_out", "encoder_out_lens"],
            {
                "x": {0: "N", 1: "T"},
                "x_lens": {0: "N"},
                "encoder_out": {0: "N", 1: "T_out"},
                "encoder_out_lens": {0: "N"},
            },
            offline_metadata(cfg),
        )
    decoder, joiner = export_decoder_joiner(model, out_dir)
    return {"encoder": encoder, "decoder": decoder, "joiner": joiner}
