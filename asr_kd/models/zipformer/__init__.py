"""Zipformer encoder (icefall's ``egs/librispeech/ASR/zipformer`` recipe, as of commit 36e0420c;
Yao et al., ICLR 2024), our own implementation with ``ConformerEncoder``'s interface.

Modules: ``config`` (ZipformerConfig, ZIPFORMER_SIZES), ``scaling`` (SwooshR/L, BiasNorm,
ScheduledFloat, Bypass), ``frontend`` (Conv2d + ConvNeXt to 50 Hz), ``attention`` (relative
positions, shared attention weights, SelfAttention, NonlinAttention), ``convolution``
(chunk-causal depthwise conv), ``layer`` (the encoder layer), ``stack`` (down/upsampled stacks),
``encoder`` (ZipformerEncoder; units, lengths, look-ahead and the streaming state layout are
described there).
"""

from asr_kd.models.zipformer.config import ZIPFORMER_SIZES, ZipformerConfig, zipformer_config
from asr_kd.models.zipformer.encoder import ZipformerEncoder, zipformer_state_shapes

__all__ = ["ZipformerConfig", "ZIPFORMER_SIZES", "zipformer_config", "ZipformerEncoder", "zipformer_state_shapes"]
