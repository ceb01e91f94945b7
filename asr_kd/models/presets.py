"""Model presets: a full-context teacher and a chunk-wise student per size.

``PRESETS[name] = (teacher EncoderConfig kwargs, student EncoderConfig kwargs)``.
Teacher and student of a preset have the same architecture and size; they
differ only in ``causal`` and the chunk settings, so the comparison isolates
streaming (and the hidden-layer MSE needs no projection).  ``DECODER_DIMS``
holds the decoder/joiner widths; ``preset_config`` assembles a
``TransducerConfig``.

Student chunk default (all presets): K = 16 encoder frames = 640 ms = 64
feature frames of 10 ms (a streaming call consumes 64 + 3 = 67 feature
frames: 30 ms front-end look-ahead), left context L = 64 encoder frames =
2.56 s = 256 feature frames; fixed-chunk training (``dynamic_chunk=False``).
For dynamic chunk training set e.g. ``chunk_sizes=(16, 8, 32)``,
``left_contexts=(64, 32, -1)``, ``dynamic_chunk=True`` (first entries are the
evaluation default).

Parameter counts depend on the vocabulary size V (table and command in
docs/models.md). Encoders: tiny 0.14 M, small 3.11 M, full 19.0 M, large
74.1 M. Totals at the V of the recipe presets: tiny 0.16 M (V = 60, micro),
0.17 M (V = 100, tiny), small 3.45 M (V = 256), full 20.3 M (V = 500),
large 75.7 M (V = 500); at V = 500 tiny has 0.28 M and small 3.67 M.
"""

from __future__ import annotations

from typing import Any

from asr_kd.models.conformer import EncoderConfig
from asr_kd.models.transducer import TransducerConfig

__all__ = ["PRESETS", "DECODER_DIMS", "STUDENT_CHUNK", "preset_config"]

#: default student chunk (encoder frames) and left context (encoder frames)
STUDENT_CHUNK: dict[str, int] = {"chunk_size": 16, "left_context": 64}

_ARCH: dict[str, dict[str, Any]] = {
    # tests and smoke runs
    "tiny": dict(d_model=64, num_layers=2, num_heads=4, ff_dim=128, conv_kernel=7, subsampling_channels=8),
    # default: teacher and student each trainable on 2 CPU cores in minutes on a few hours of audio
    "small": dict(d_model=144, num_layers=6, num_heads=4, ff_dim=576, conv_kernel=15, subsampling_channels=64),
    # bigger models for real corpora / GPUs
    "full": dict(d_model=256, num_layers=12, num_heads=4, ff_dim=1024, conv_kernel=31, subsampling_channels=128),
    # the size of icefall's streaming conformer for LibriSpeech (75.7 M parameters with BPE 500)
    "large": dict(d_model=512, num_layers=12, num_heads=8, ff_dim=2048, conv_kernel=31, subsampling_channels=128),
}

DECODER_DIMS: dict[str, dict[str, int]] = {
    "tiny": dict(decoder_dim=64, joiner_dim=64),
    "small": dict(decoder_dim=256, joiner_dim=256),
    "full": dict(decoder_dim=512, joiner_dim=512),
    "large": dict(decoder_dim=512, joiner_dim=512),
}


def _pair(arch: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    teacher = dict(arch, dropout=0.1, causal=False, dynamic_chunk=False)
    student = dict(
        arch,
        dropout=0.1,
        causal=True,
        chunk_sizes=(STUDENT_CHUNK["chunk_size"],),
        left_contexts=(STUDENT_CHUNK["left_context"],),
        dynamic_chunk=False,
    )
    return teacher, student


PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {name: _pair(a) for name, a in _ARCH.items()}


def preset_config(name: str, role: str, vocab_size: int, **encoder_overrides: Any) -> TransducerConfig:
    """TransducerConfig for preset ``name`` and ``role`` ("teacher" | "student").

    ``encoder_overrides`` replace EncoderConfig fields (e.g. chunk_sizes=(8,)).
    """
    if name not in PRESETS:
        raise ValueError(f"presets.py: unknown preset {name!r}; choose from {sorted(PRESETS)}")
    if role not in ("teacher", "student"):
        raise ValueError(f"presets.py: role must be 'teacher' or 'student', got {role!r}")
    kwargs = dict(PRESETS[name][0 if role == "teacher" else 1])
    kwargs.update(encoder_overrides)
    return TransducerConfig(encoder=EncoderConfig(**kwargs), vocab_size=vocab_size, **DECODER_DIMS[name])
