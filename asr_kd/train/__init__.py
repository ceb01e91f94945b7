"""Training: loop, loss computers, optimiser/schedule, run bookkeeping (checkpoints, resume), DDP.

Model files (reading, averaging, ``load_model``) are in ``asr_kd.models.checkpoint``.

Public API::

    from asr_kd.train import (LossComputer, TransducerLossComputer, LossSettings, build_loss_computer,
                              Trainer, TrainerConfig, OptimConfig, WarmupDecaySchedule,
                              build_optimizer, TrainingSettings)

Entry point: ``python -m asr_kd.bin.train`` (flags and ``settings_from_args`` in
``asr_kd.train.cli``, the run in ``asr_kd.train.run.run_training(settings)``).

Import arrows inside the package (one way; ``tests/test_import_graph.py`` checks
there is no circle and that no loss computer imports the command line)::

    cli -> settings -> loss_factory -> kd -> kd_config, losses -> loss_computer
    run -> settings, loss_factory, carry -> trainer -> loss_computer, tracking, optim, checkpoint
"""

from asr_kd.train.loss_computer import LossComputer
from asr_kd.train.loss_factory import LossSettings, build_loss_computer
from asr_kd.train.losses import TransducerLossComputer, TransducerLossConfig, loss_scales
from asr_kd.train.optim import OptimConfig, WarmupDecaySchedule, build_optimizer
from asr_kd.train.settings import TrainingSettings
from asr_kd.train.trainer import BadBatchError, Trainer, TrainerConfig

__all__ = [
    "LossComputer",
    "LossSettings",
    "TransducerLossComputer",
    "TransducerLossConfig",
    "build_loss_computer",
    "loss_scales",
    "OptimConfig",
    "WarmupDecaySchedule",
    "build_optimizer",
    "TrainingSettings",
    "BadBatchError",
    "Trainer",
    "TrainerConfig",
]
