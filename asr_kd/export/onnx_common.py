"""Pieces shared by the streaming and the offline export: decoder, joiner, ONNX writing.

sherpa-onnx's transducer runtime calls three graphs (k2/icefall convention):

* decoder:  ``y (N, context_size) int64 -> decoder_out (N, J)``; the last
  ``context_size`` tokens of each hypothesis (blank-padded at the start),
  through the stateless prediction network **and** the joiner's
  ``decoder_proj`` (projected once per hypothesis update, not per frame);
* joiner:   ``encoder_out (N, J), decoder_out (N, J) -> logit (N, V)``,
  i.e. ``output_linear(tanh(enc + dec))`` on already projected inputs;
* encoder:  see ``onnx_streaming.py`` (Conformer), ``onnx_zipformer.py``
  (Zipformer) / ``onnx_offline.py`` (both); its output is projected with the
  joiner's ``encoder_proj`` (J wide).

The decoder's metadata holds ``vocab_size`` and ``context_size``; the blank
must be id 0 (sherpa-onnx assumes it).

Rotary positions: the encoders are traced with ``float32_trig`` on (see
``asr_kd.models.attention.rotary_angles``): ONNX Runtime as bundled with
sherpa-onnx has no float64 Cos/Sin, so the float64 angles are reduced to
[0, 2 pi) and evaluated in float32.

Every graph is written by the TorchScript exporter (``dynamo=False``): one
self-contained ``.onnx`` file, no ``onnxscript`` needed.  Opset 17.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Iterator, Mapping, Sequence, Union

import torch
from torch import Tensor, nn

from asr_kd.export.metadata import add_metadata
from asr_kd.models.attention import RotaryMultiheadAttention
from asr_kd.types import PathLike

__all__ = [
    "OPSET",
    "OnnxDecoder",
    "OnnxJoiner",
    "export_graph",
    "export_decoder_joiner",
    "check_blank",
    "float32_trig",
]

OPSET = 17


def check_blank(model: nn.Module) -> None:
    """sherpa-onnx hard-codes blank = 0: refuse other models with a clear error."""
    if int(model.blank_id) != 0:
        raise ValueError(f"export: sherpa-onnx needs the blank at id 0, this model has blank_id={model.blank_id}")


@contextlib.contextmanager
def float32_trig(model: nn.Module) -> Iterator[None]:
    """Within the block, every rotary attention of ``model`` takes cos / sin in float32."""
    attns = [m for m in model.modules() if isinstance(m, RotaryMultiheadAttention)]
    saved = [a.float32_trig for a in attns]
    for a in attns:
        a.float32_trig = True
    try:
        yield
    finally:
        for a, v in zip(attns, saved):
            a.float32_trig = v


class OnnxDecoder(nn.Module):
    """Stateless decoder + ``decoder_proj``: ``y (N, c) int64 -> (N, J)``.

    sherpa-onnx may start a hypothesis with the context ``[-1, ..., -1, 0]``
    (-1 = "before the start"); negative ids are read as blank, which is this
    project's convention for positions before the start (blank embeds to 0).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.decoder = model.decoder
        self.decoder_proj = model.joiner.decoder_proj

    def forward(self, y: Tensor) -> Tensor:
        return self.decoder_proj(self.decoder(y.clamp(min=0), need_pad=False)[:, 0])


class OnnxJoiner(nn.Module):
    """``output_linear(tanh(enc + dec))``: ``(N, J), (N, J) -> (N, V)`` logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.output_linear = model.joiner.output_linear

    def forward(self, encoder_out: Tensor, decoder_out: Tensor) -> Tensor:
        return self.output_linear(torch.tanh(encoder_out + decoder_out))


def export_graph(
    module: nn.Module,
    args: tuple[Tensor, ...],
    path: PathLike,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    meta: Mapping[str, Union[int, str]],
) -> Path:
    """Trace ``module(*args)`` into the single-file ONNX model ``path`` and add ``meta``."""
    path = Path(path)
    module = module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # tracing warns about Python-level shape checks; the exported shapes are the documented ones
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()},
            opset_version=OPSET,
            do_constant_folding=True,
        )
    add_metadata(path, meta)
    return path


def export_decoder_joiner(model: nn.Module, out_dir: PathLike) -> tuple[Path, Path]:
    """Write ``decoder.onnx`` and ``joiner.onnx`` into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    check_blank(model)
    c = int(model.decoder.context_size)
    j = int(model.joiner.output_linear.in_features)
    dec = export_graph(
        OnnxDecoder(model),
        (torch.zeros(1, c, dtype=torch.int64),),
        out_dir / "decoder.onnx",
        ["y"],
        ["decoder_out"],
        {"y": {0: "N"}, "decoder_out": {0: "N"}},
        {"vocab_size": int(model.vocab_size), "context_size": c},
    )
    joi = export_graph(
        OnnxJoiner(model),
        (torch.zeros(1, j), torch.zeros(1, j)),
        out_dir / "joiner.onnx",
        ["encoder_out", "decoder_out"],
        ["logit"],
        {"encoder_out": {0: "N"}, "decoder_out": {0: "N"}, "logit": {0: "N"}},
        {"joiner_dim": j},
    )
    return dec, joi
