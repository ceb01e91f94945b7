"""Training: loop, loss computers, optimiser/schedule, checkpoints, DDP.

Public API::

    from asr_kd.train import (LossComputer, TransducerLossComputer, build_loss_computer,
                              Trainer, TrainerConfig, OptimConfig, WarmupDecaySchedule,
                              build_optimizer, load_model, average_checkpoints)

Entry point: ``python -m asr_kd.bin.train`` (see ``asr_kd.train.args``).
"""

from asr_kd.train.checkpoint import average_checkpoints, load_checkpoint, load_model
from asr_kd.train.losses import (
    LossComputer,
    TransducerLossComputer,
    TransducerLossConfig,
    build_loss_computer,
    loss_scales,
)
from asr_kd.train.optim import OptimConfig, WarmupDecaySchedule, build_optimizer
from asr_kd.train.trainer import BadBatchError, Trainer, TrainerConfig

__all__ = [
    "average_checkpoints",
    "load_checkpoint",
    "load_model",
    "LossComputer",
    "TransducerLossComputer",
    "TransducerLossConfig",
    "build_loss_computer",
    "loss_scales",
    "OptimConfig",
    "WarmupDecaySchedule",
    "build_optimizer",
    "BadBatchError",
    "Trainer",
    "TrainerConfig",
]
