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

Zipformer (``encoder_type="zipformer"``, ``zipformer_preset_config``): the
sizes of ``ZIPFORMER_SIZES`` (tiny, small, medium, large: icefall's
LibriSpeech architectures, tiny for tests), decoder/joiner widths in
``ZIPFORMER_DECODER_DIMS`` (icefall's 512 / 512 for small, medium and large;
tiny 64 / 64).  Teacher: ``causal=False``.  Student: ``causal=True`` with
``ZIPFORMER_STUDENT_CHUNK``: K = 8 encoder frames = 320 ms (icefall's
``--chunk-size 16`` at 50 Hz), L = 64 encoder frames = 2.56 s (icefall's
``--left-context-frames 128``), fixed chunk; a streaming call consumes
4K + 13 = 45 feature frames.  Both are multiples of 4 encoder frames, as the
stacks' downsampling factors (up to 8 at 50 Hz) require.  Dropout 0.1.
Parameter counts: docs/models.md.
"""

from __future__ import annotations

from typing import Any

from asr_kd.models.conformer import EncoderConfig
from asr_kd.models.encoders import ENCODER_TYPES
from asr_kd.models.transducer import TransducerConfig
from asr_kd.models.zipformer import ZIPFORMER_SIZES, zipformer_config

__all__ = ["PRESETS", "DECODER_DIMS", "STUDENT_CHUNK", "preset_config", "preset_names", "ZIPFORMER_DECODER_DIMS",
           "ZIPFORMER_STUDENT_CHUNK", "zipformer_preset_config"]

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


#: Zipformer student chunk (encoder frames): 320 ms chunks, 2.56 s of left context
ZIPFORMER_STUDENT_CHUNK: dict[str, int] = {"chunk_size": 8, "left_context": 64}

ZIPFORMER_DECODER_DIMS: dict[str, dict[str, int]] = {
    "tiny": dict(decoder_dim=64, joiner_dim=64),
    "cpu": dict(decoder_dim=256, joiner_dim=256),  # as the Conformer's small
    "small": dict(decoder_dim=512, joiner_dim=512),
    "medium": dict(decoder_dim=512, joiner_dim=512),
    "large": dict(decoder_dim=512, joiner_dim=512),
}


def preset_names(encoder_type: str = "conformer") -> list[str]:
    """The preset names of an encoder type, sorted."""
    if encoder_type not in ENCODER_TYPES:
        raise ValueError(f"--encoder {encoder_type!r} is unknown; choose from {list(ENCODER_TYPES)}")
    return sorted(PRESETS if encoder_type == "conformer" else ZIPFORMER_SIZES)


def _check_role(role: str) -> None:
    if role not in ("teacher", "student"):
        raise ValueError(f"model preset role must be 'teacher' or 'student', got {role!r}")


def zipformer_preset_config(size: str, role: str, vocab_size: int, **encoder_overrides: Any) -> TransducerConfig:
    """Zipformer TransducerConfig of ``ZIPFORMER_SIZES[size]`` for ``role`` ("teacher" | "student").

    Teacher: ``causal=False``; student: ``causal=True`` with ``ZIPFORMER_STUDENT_CHUNK``
    (module docstring).  ``encoder_overrides`` replace ZipformerConfig fields.
    """
    if size not in ZIPFORMER_SIZES:
        raise ValueError(f"--model-size: unknown zipformer size {size!r}; choose from {preset_names('zipformer')}")
    _check_role(role)
    kwargs: dict[str, Any] = dict(dropout=0.1, causal=role == "student", dynamic_chunk=False)
    if role == "student":
        kwargs.update(chunk_sizes=(ZIPFORMER_STUDENT_CHUNK["chunk_size"],),
                      left_contexts=(ZIPFORMER_STUDENT_CHUNK["left_context"],))
    kwargs.update(encoder_overrides)
    return TransducerConfig(encoder=zipformer_config(size, **kwargs), vocab_size=vocab_size,
                            encoder_type="zipformer", **ZIPFORMER_DECODER_DIMS[size])


def preset_config(name: str, role: str, vocab_size: int, encoder_type: str = "conformer",
                  **encoder_overrides: Any) -> TransducerConfig:
    """TransducerConfig for preset ``name`` and ``role`` ("teacher" | "student").

    ``encoder_type`` "conformer" (``PRESETS``) or "zipformer" (``ZIPFORMER_SIZES``,
    see ``zipformer_preset_config``).  ``encoder_overrides`` replace fields of
    the encoder config (e.g. chunk_sizes=(8,)).
    """
    if encoder_type == "zipformer":
        return zipformer_preset_config(name, role, vocab_size, **encoder_overrides)
    if encoder_type != "conformer":
        raise ValueError(f"--encoder {encoder_type!r} is unknown; choose from {list(ENCODER_TYPES)}")
    if name not in PRESETS:
        raise ValueError(f"--model-size: unknown Conformer size {name!r}; choose from {sorted(PRESETS)}")
    _check_role(role)
    kwargs = dict(PRESETS[name][0 if role == "teacher" else 1])
    kwargs.update(encoder_overrides)
    return TransducerConfig(encoder=EncoderConfig(**kwargs), vocab_size=vocab_size, **DECODER_DIMS[name])
