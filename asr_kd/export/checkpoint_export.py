"""One export entry point: a checkpoint in, the sherpa-onnx files of its kind out.

The kind comes from the checkpoint: a chunk-wise (causal) student becomes a
streaming model for ``sherpa_onnx.OnlineRecognizer.from_transducer`` (online
model type ``conformer`` or ``zipformer2``, from the encoder type); a
full-context teacher becomes an offline model for
``sherpa_onnx.OfflineRecognizer.from_transducer``. Written into ``out_dir``:
``encoder.onnx``, ``decoder.onnx``, ``joiner.onnx``, ``tokens.txt``,
``export.json`` (what was exported, with which chunk and left context) and,
with ``int8``, ``*.int8.onnx`` copies. ``python -m asr_kd.bin.export_onnx``
is its command line.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch

from asr_kd.atomic import atomic_write_text
from asr_kd.export.metadata import write_tokens
from asr_kd.export.onnx_offline import export_offline
from asr_kd.export.onnx_streaming import export_streaming
from asr_kd.export.onnx_zipformer import export_zipformer_streaming, required_multiple
from asr_kd.export.quantize import quantize_int8
from asr_kd.models.checkpoint import checkpoint_bpe_model, load_model
from asr_kd.models.units import FRAME_MS, ms_to_frames
from asr_kd.types import PathLike

__all__ = ["export_checkpoint"]


def _streaming_chunk(cfg: Any, checkpoint: Path, encoder_type: str, chunk_ms: Optional[int],
                     left_context_ms: Optional[int]) -> tuple[int, int]:
    """(chunk K, left context L) in encoder frames for a streaming export; one-line errors name the option."""
    # the Zipformer's stacks need K and L divisible by their downsampling (160 ms for factors up to 8)
    step_ms = FRAME_MS * (required_multiple(cfg) if encoder_type == "zipformer" else 1)
    k = ms_to_frames(chunk_ms, "--chunk-ms") if chunk_ms is not None else (
        cfg.chunk_sizes[0] if cfg.chunk_sizes else 0)
    if k <= 0:
        raise ValueError(f"{checkpoint}: the model has no default chunk size; pass --chunk-ms")
    if left_context_ms is not None:
        if left_context_ms == -1:
            raise ValueError("--left-context-ms -1 (unlimited) cannot be exported: sherpa-onnx needs fixed-size caches")
        lc = ms_to_frames(left_context_ms, "--left-context-ms")
    else:
        lc = cfg.left_contexts[0] if cfg.left_contexts else -1
        if lc < 0:
            raise ValueError(f"{checkpoint}: the student was trained with unlimited left context, "
                             f"which cannot be exported; pass --left-context-ms (a multiple of {step_ms})")
    return k, lc


def export_checkpoint(checkpoint: PathLike, out_dir: PathLike, bpe_model: Optional[PathLike] = None,
                      chunk_ms: Optional[int] = None, left_context_ms: Optional[int] = None,
                      int8: bool = False) -> dict[str, Any]:
    """Export ``checkpoint`` into ``out_dir``; returns the summary also written as ``export.json``.

    Args:
      checkpoint: a training, epoch or averaged checkpoint.
      out_dir: created if missing.
      bpe_model: sentencepiece model for tokens.txt (None: the one the checkpoint records).
      chunk_ms, left_context_ms: streaming students only; multiples of 40 ms (Zipformer: of
        its downsampling step, 160 ms for factors up to 8); None: the model's first training
        chunk and left context. Unlimited left context (-1) cannot be exported.
      int8: also write dynamically quantised copies.
    """
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    torch.set_num_threads(1)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"--checkpoint {checkpoint}: file not found")
    bpe = Path(bpe_model) if bpe_model is not None else checkpoint_bpe_model(checkpoint)
    if bpe is None:
        raise ValueError(f"--bpe-model not given and {checkpoint} records no BPE model")
    if not bpe.is_file():
        raise FileNotFoundError(f"--bpe-model {bpe}: file not found")
    model = load_model(checkpoint)
    encoder_type = model.config.encoder_type
    cfg = model.encoder.cfg
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"checkpoint": str(checkpoint), "bpe_model": str(bpe), "encoder_type": encoder_type}
    if cfg.causal:
        k, lc = _streaming_chunk(cfg, checkpoint, encoder_type, chunk_ms, left_context_ms)
        export = export_zipformer_streaming if encoder_type == "zipformer" else export_streaming
        paths = export(model, out_dir, k, lc)
        summary.update(kind="streaming", chunk_ms=k * FRAME_MS, left_context_ms=lc * FRAME_MS)
    else:
        if chunk_ms is not None or left_context_ms is not None:
            raise ValueError("--chunk-ms / --left-context-ms apply to streaming exports only "
                             f"({checkpoint} is exported offline)")
        paths = export_offline(model, out_dir)
        summary.update(kind="offline")
    write_tokens(bpe, out_dir / "tokens.txt", int(model.vocab_size))
    files = [p.name for p in paths.values()] + ["tokens.txt"]
    if int8:
        files += [quantize_int8(p).name for p in paths.values()]
    summary["files"] = files
    atomic_write_text(out_dir / "export.json", json.dumps(summary, indent=1) + "\n")
    return summary
