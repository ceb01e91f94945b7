"""Transducer models (Conformer or Zipformer encoder): full-context teacher, chunk-wise streaming student.

Public API::

    from asr_kd.models import (EncoderConfig, ConformerEncoder, EncoderOutput, Decoder, Joiner,
                               ZipformerConfig, ZipformerEncoder, ENCODER_TYPES, build_encoder,
                               TransducerConfig, Transducer, TransducerOutput, build_transducer,
                               chunk_attention_mask, PRESETS, preset_config, zipformer_preset_config,
                               stack_states, unstack_states)

Model files (read, peek, average, ``load_model``, the recorded BPE model) are in
``asr_kd.models.checkpoint``; time units (40 ms encoder frames) in ``asr_kd.models.units``.
"""

from asr_kd.models.attention import chunk_attention_mask
from asr_kd.models.conformer import ConformerEncoder, EncoderConfig, EncoderOutput, EncoderState
from asr_kd.models.decoder import Decoder
from asr_kd.models.encoders import ENCODER_TYPES, build_encoder
from asr_kd.models.joiner import Joiner
from asr_kd.models.states import stack_states, unstack_states
from asr_kd.models.presets import (DECODER_DIMS, PRESETS, STUDENT_CHUNK, ZIPFORMER_DECODER_DIMS,
                                   ZIPFORMER_STUDENT_CHUNK, preset_config, preset_names, zipformer_preset_config)
from asr_kd.models.transducer import (
    Transducer,
    TransducerConfig,
    TransducerOutput,
    build_transducer,
    node_occupancy,
)
from asr_kd.models.zipformer import ZIPFORMER_SIZES, ZipformerConfig, ZipformerEncoder

__all__ = [
    "chunk_attention_mask",
    "ConformerEncoder",
    "EncoderConfig",
    "EncoderOutput",
    "EncoderState",
    "Decoder",
    "Joiner",
    "Transducer",
    "TransducerConfig",
    "TransducerOutput",
    "build_transducer",
    "node_occupancy",
    "PRESETS",
    "DECODER_DIMS",
    "STUDENT_CHUNK",
    "preset_config",
    "preset_names",
    "zipformer_preset_config",
    "ZIPFORMER_DECODER_DIMS",
    "ZIPFORMER_STUDENT_CHUNK",
    "ZIPFORMER_SIZES",
    "ZipformerConfig",
    "ZipformerEncoder",
    "ENCODER_TYPES",
    "build_encoder",
    "stack_states",
    "unstack_states",
]
