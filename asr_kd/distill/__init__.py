"""Distillation losses: stage-1 hidden-layer MSE, stage-2 output KL over the
pruned RNN-T lattice, and teacher smoothing (see the module docstrings for the
exact formulas)."""

from .delay import delay_frames
from .hidden import hidden_mse_loss
from .lead import lead_mask
from .output import KDStats, output_kd_loss, output_kd_loss_with_stats
from .smoothing import (
    DEFAULT_ALPHA_MIN,
    SMOOTHING_METHODS,
    SmoothingStats,
    smooth_teacher,
    smooth_teacher_with_stats,
)

__all__ = [
    "DEFAULT_ALPHA_MIN",
    "KDStats",
    "SMOOTHING_METHODS",
    "SmoothingStats",
    "delay_frames",
    "hidden_mse_loss",
    "lead_mask",
    "output_kd_loss",
    "output_kd_loss_with_stats",
    "smooth_teacher",
    "smooth_teacher_with_stats",
]
