"""Frame-weighted loss tracking and the tensorboard writer.

``MetricsTracker`` aggregates the ``info`` dicts of loss computers: every
entry except ``frames`` is a per-frame average over one batch, so the
aggregate over batches (and ranks) is

    value = sum_i frames_i * value_i / sum_i frames_i.

``reduce()`` all-reduces the sums across DDP ranks (every rank must call it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Union

import torch

from asr_kd.train.distributed import all_gather_objects, all_reduce_sum

__all__ = ["MetricsTracker", "TensorBoardLogger"]

log = logging.getLogger(__name__)


class MetricsTracker:
    """Frame-weighted running averages of per-frame metrics."""

    def __init__(self) -> None:
        self.frames = 0.0
        self.sums: dict[str, float] = {}

    def update(self, info: dict[str, float]) -> None:
        frames = float(info["frames"])
        self.frames += frames
        for k, v in info.items():
            if k != "frames":
                self.sums[k] = self.sums.get(k, 0.0) + frames * float(v)

    def state_dict(self) -> dict[str, Any]:
        """{"frames": float, "sums": {name: float}} (plain values, checkpoint-safe)."""
        return {"frames": float(self.frames), "sums": dict(self.sums)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "MetricsTracker":
        """Inverse of :meth:`state_dict`."""
        out = cls()
        out.frames = float(state.get("frames", 0.0))
        out.sums = {str(k): float(v) for k, v in (state.get("sums") or {}).items()}
        return out

    def averages(self) -> dict[str, float]:
        if self.frames <= 0:
            return {}
        return {k: v / self.frames for k, v in self.sums.items()}

    def reduce(self, device: Union[str, torch.device] = "cpu") -> "MetricsTracker":
        """A new tracker holding the sums over all ranks (collective: every rank must call it).

        Keys are the union over ranks (a rank without batches contributes zeros).
        """
        keys = sorted(set().union(*[set(k) for k in all_gather_objects(sorted(self.sums))]))
        t = torch.tensor([self.frames] + [self.sums.get(k, 0.0) for k in keys], dtype=torch.float64, device=device)
        all_reduce_sum(t)
        out = MetricsTracker()
        out.frames = float(t[0])
        out.sums = {k: float(v) for k, v in zip(keys, t[1:].tolist())}
        return out

    def __str__(self) -> str:
        avg = self.averages()
        return ", ".join(f"{k}={v:.4g}" for k, v in avg.items()) + f" (frames={self.frames:.0f})"


class TensorBoardLogger:
    """``SummaryWriter`` on the main rank; a no-op elsewhere or when tensorboard is missing."""

    def __init__(self, log_dir: Optional[Union[str, Path]], enabled: bool = True) -> None:
        self.writer: Any = None
        if log_dir is None or not enabled:
            return
        try:  # local: tensorboard is an optional package
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # GPU images may lack the tensorboard package
            log.warning("tensorboard is not available (%s): no tensorboard logs", e)
            return
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
