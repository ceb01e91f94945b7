"""The two encoders behind one interface: which config builds which encoder, and what differs.

``ConformerEncoder`` (``conformer.py``, config ``EncoderConfig``) and
``ZipformerEncoder`` (``zipformer/``, config ``ZipformerConfig``) share the
public interface the rest of the package uses: ``forward`` ->
``EncoderOutput``, ``output_dim``, ``output_lengths``, ``chunk_input_frames``,
``chunk_shift_frames``, ``chunk_config``, ``init_states``,
``streaming_forward``, ``subsampling.set_feature_stats``, ``layers``,
``subsampling_factor`` and ``cfg.causal / chunk_sizes / left_contexts``.
This module holds the few things that are not in that interface:

* ``ENCODER_TYPES`` and the config class of each (``encoder_config_class``,
  ``encoder_type_of``), ``build_encoder``;
* ``hidden_dims``: the width of each ``return_layers`` index (the Conformer's
  layers all have d_model; the Zipformer's stacks have their own d_i), with
  the last index standing for the encoder output (``output_dim``), as
  distillation uses it;
* ``layer_unit``: "layers" or "stacks", for messages;
* ``default_chunk``: (K, L) outside dynamic-chunk training;
* ``min_input_frames``: the fewest feature frames giving one encoder frame
  (7 for the Conformer, 17 for the Zipformer).
"""

from __future__ import annotations

from typing import Union

import torch
from torch import nn

from asr_kd.models.conformer import ConformerEncoder, EncoderConfig
from asr_kd.models.zipformer import ZipformerConfig, ZipformerEncoder

__all__ = ["ENCODER_TYPES", "AnyEncoderConfig", "encoder_config_class", "encoder_type_of", "build_encoder",
           "hidden_dims", "layer_unit", "default_chunk", "min_input_frames"]

#: values of ``TransducerConfig.encoder_type`` and of the training flag ``--encoder``
ENCODER_TYPES: tuple[str, ...] = ("conformer", "zipformer")

AnyEncoderConfig = Union[EncoderConfig, ZipformerConfig]

_CONFIGS: dict[str, type] = {"conformer": EncoderConfig, "zipformer": ZipformerConfig}
_ENCODERS: dict[type, type] = {EncoderConfig: ConformerEncoder, ZipformerConfig: ZipformerEncoder}


def encoder_config_class(encoder_type: str) -> type:
    """``EncoderConfig`` for "conformer", ``ZipformerConfig`` for "zipformer"; ValueError otherwise."""
    if encoder_type not in _CONFIGS:
        raise ValueError(f"model config: unknown encoder_type {encoder_type!r}; choose from {list(ENCODER_TYPES)}")
    return _CONFIGS[encoder_type]


def encoder_type_of(cfg: AnyEncoderConfig) -> str:
    """The ``ENCODER_TYPES`` name of an encoder config instance."""
    for name, cls in _CONFIGS.items():
        if isinstance(cfg, cls):
            return name
    raise TypeError(f"model config: encoder must be an EncoderConfig or a ZipformerConfig, got {type(cfg).__name__}")


def build_encoder(cfg: AnyEncoderConfig) -> nn.Module:
    """A freshly initialised encoder of the config's type."""
    return _ENCODERS[_CONFIGS[encoder_type_of(cfg)]](cfg)


def hidden_dims(encoder: nn.Module) -> list[int]:
    """Width of the tensor each layer index stands for in distillation, one entry per ``encoder.layers``.

    Index i < last: ``EncoderOutput.hidden`` of ``return_layers=[i]`` (Conformer:
    d_model; Zipformer: stack i's ``encoder_dims[i]``).  The last index stands
    for the encoder output, ``output_dim`` wide.
    """
    n = len(encoder.layers)
    cfg = encoder.cfg
    if isinstance(cfg, ZipformerConfig):
        dims = [int(d) for d in cfg.encoder_dims]
    else:
        dims = [int(cfg.d_model)] * n
    dims[-1] = int(encoder.output_dim)
    return dims


def layer_unit(encoder: nn.Module) -> str:
    """What ``encoder.layers`` holds, for messages: "layers" (Conformer blocks) or "stacks" (Zipformer)."""
    return "stacks" if isinstance(encoder.cfg, ZipformerConfig) else "layers"


def default_chunk(cfg: AnyEncoderConfig) -> tuple[int, int]:
    """(K, L) in encoder frames outside dynamic-chunk training: the first entries of the config lists.

    K <= 0 means full context (also what a non-causal encoder uses), L = -1 unlimited.
    """
    k = int(cfg.chunk_sizes[0]) if cfg.chunk_sizes else 0
    lc = int(cfg.left_contexts[0]) if cfg.left_contexts else -1
    return k, lc


def min_input_frames(encoder: nn.Module) -> int:
    """Fewest feature frames T with ``encoder.output_lengths(T) >= 1``."""
    frames = 1
    while int(encoder.output_lengths(torch.tensor([frames]))[0]) < 1:
        frames += 1
        if frames > 10_000:
            raise RuntimeError(f"{type(encoder).__name__}: output_lengths never reaches 1 encoder frame")
    return frames
