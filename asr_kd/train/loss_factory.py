"""The one place that builds a training run's loss computer from typed settings.

``build_loss_computer(settings, model, tokenizer)`` returns a
``TransducerLossComputer`` (``asr_kd.train.losses``) and, when
``settings.kd`` is set, wraps it in a ``KDLossComputer``
(``asr_kd.train.kd``), which loads and checks the teacher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from torch import nn

from asr_kd.train.kd import build_kd_loss_computer
from asr_kd.train.kd_config import KDConfig
from asr_kd.train.loss_computer import LossComputer
from asr_kd.train.losses import TransducerLossComputer, TransducerLossConfig

__all__ = ["LossSettings", "build_loss_computer"]


@dataclass(frozen=True)
class LossSettings:
    """What one training step optimises.

    Attributes:
      transducer: the transducer-loss options (--prune-range ... --delay-penalty).
      ctc_scale: weight of the auxiliary CTC loss (--ctc-scale; 0: off, no CTC head).
      kd: the distillation options (--kd-stage ...), or None for plain transducer training.
    """

    transducer: TransducerLossConfig = TransducerLossConfig()
    ctc_scale: float = 0.0
    kd: Optional[KDConfig] = None

    def __post_init__(self) -> None:
        if not self.ctc_scale >= 0:
            raise ValueError(f"--ctc-scale must be >= 0, got {self.ctc_scale}")


def build_loss_computer(settings: LossSettings, model: nn.Module, tokenizer: Any, *, bpe_model: str = "",
                        on_the_fly_feats: bool = False) -> LossComputer:
    """The loss computer of ``settings`` for ``model`` (already on its training device).

    Args:
      settings: LossSettings.
      model: the student (a ``Transducer``): the CTC head is sized from its encoder and vocabulary.
      tokenizer: has ``encode(texts) -> token ids`` (``asr_kd.data.tokenizer.Tokenizer``).
      bpe_model: the --bpe-model file (with distillation: the teacher must share it).
      on_the_fly_feats: --on-the-fly-feats (with distillation: checked against a --teacher-cache).
    """
    ctc_head = None
    if settings.ctc_scale > 0:
        device = next(model.parameters()).device
        ctc_head = nn.Linear(model.encoder.output_dim, model.vocab_size).to(device)
    base = TransducerLossComputer(tokenizer.encode, settings.transducer, ctc_head=ctc_head,
                                  ctc_scale=settings.ctc_scale, blank_id=model.blank_id)
    if settings.kd is None:
        return base
    if not bpe_model:
        raise ValueError("--kd-stage needs the student's --bpe-model to check the teacher's tokenizer")
    return build_kd_loss_computer(settings.kd, model, base, bpe_model=bpe_model, on_the_fly_feats=on_the_fly_feats)
