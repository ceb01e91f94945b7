"""int8 copies of exported models (ONNX Runtime dynamic quantisation).

``quantize_int8(path)`` writes ``<stem>.int8.onnx`` beside ``<stem>.onnx``:
the weights of every ``MatMul`` are stored as 8-bit integers (per tensor),
activations are quantised on the fly per call (uint8, per tensor).  Only
``MatMul`` is quantised: ``ConvInteger`` kernels are missing from some ONNX
Runtime builds, and the convolutions here are small.  The metadata of the
fp32 model is copied over, so sherpa-onnx loads the int8 file the same way.

Why the weights are *unsigned* (``QUInt8``, ONNX Runtime's "U8U8" kernels)
and not the usual signed int8 ("U8S8"): on x86-64 CPUs with AVX2 but without
AVX-512 VNNI / AVX-VNNI, ONNX Runtime computes U8S8 products with
``vpmaddubsw``, which adds two uint8 x int8 products into a *saturating*
int16: ``255 * 127 * 2 = 64770 > 32767``, so whenever two neighbouring
weights and activations are both large the sum is clipped.  Whether this
happens depends on the CPU the model runs on, not on the ONNX Runtime
version.  Measured on the tiny test student's encoder (max |int8 -
fp32| / max |fp32|): 0.012 with signed weights on a VNNI CPU (onnxruntime
1.20.1, 1.24.4 and 1.32.0 identical), 0.19 in an emulation of the saturating
AVX2 kernel (the same quantisation in PyTorch with pairs clipped to int16;
without the clipping it reproduces the 0.012).  Unsigned weights avoid the
paired int16 sum on every CPU and gave 0.010 (tiny) and 0.013 (small
preset, random weights).  ``reduce_range`` (7-bit signed weights) also
avoids saturation but had a larger error (0.019).  The price: U8U8 ran
about 15% slower than U8S8 on the VNNI CPU (small preset encoder, 320 ms
chunk, 1 thread), still faster than fp32.
"""
from __future__ import annotations

from pathlib import Path


from asr_kd.export.metadata import add_metadata, read_metadata
from asr_kd.types import PathLike

__all__ = ["int8_path", "quantize_int8"]


def int8_path(path: PathLike) -> Path:
    """``dir/name.onnx`` -> ``dir/name.int8.onnx``."""
    p = Path(path)
    return p.with_name(p.stem + ".int8.onnx")


def quantize_int8(path: PathLike) -> Path:
    """Write the dynamically quantised copy of the ONNX model ``path``; return its path."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = Path(path)
    if not src.is_file():
        raise FileNotFoundError(f"ONNX model {src} does not exist")
    dst = int8_path(src)
    # QUInt8, not QInt8: see the module docstring (saturation of U8S8 on AVX2 CPUs)
    quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul"], weight_type=QuantType.QUInt8)
    meta = read_metadata(src)
    if meta:
        add_metadata(dst, meta)
    return dst
