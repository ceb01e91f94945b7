"""int8 copies of exported models (ONNX Runtime dynamic quantisation).

``quantize_int8(path)`` writes ``<stem>.int8.onnx`` beside ``<stem>.onnx``:
the weights of every ``MatMul`` are stored as int8 (per-tensor, symmetric),
activations are quantised on the fly per call.  Only ``MatMul`` is
quantised: ``ConvInteger`` kernels are missing from some ONNX Runtime builds,
and the convolutions here are small.  The metadata of the fp32 model is
copied over, so sherpa-onnx loads the int8 file the same way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

from asr_kd.export.metadata import add_metadata, read_metadata

__all__ = ["int8_path", "quantize_int8"]

PathLike = Union[str, Path]


def int8_path(path: PathLike) -> Path:
    """``dir/name.onnx`` -> ``dir/name.int8.onnx``."""
    p = Path(path)
    return p.with_name(p.stem + ".int8.onnx")


def quantize_int8(path: PathLike) -> Path:
    """Write the dynamically quantised copy of the ONNX model ``path``; return its path."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = Path(path)
    if not src.is_file():
        raise FileNotFoundError(f"quantize.py: {src} does not exist")
    dst = int8_path(src)
    quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8)
    meta = read_metadata(src)
    if meta:
        add_metadata(dst, meta)
    return dst
