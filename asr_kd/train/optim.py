"""Optimiser and learning-rate schedule.

Optimiser (``OptimConfig.optimizer``, ``--optimizer``):

* ``"adamw"`` (default): AdamW (decoupled weight decay).  Weight decay
  applies to weight matrices and convolution kernels only (parameters with
  ``dim() >= 2``); biases, LayerNorm gains and other vectors are not
  decayed, since shrinking them towards zero has no regularising meaning.
  AdamW stays the optimiser of the Conformer: a conventional pre-norm
  network (LayerNorm, no learnt per-tensor scales), for which Adam with a
  warm-up is the established recipe (Transformer/Conformer papers, WeNet,
  ESPnet).
* ``"scaled-adam"``: ``asr_kd.train.scaled_adam.ScaledAdam``, the optimiser
  the Zipformer is trained with in icefall.  Its steps are relative to each
  tensor's RMS and it learns tensor scales explicitly, which suits a model
  built around learnt scales and without LayerNorm (the Zipformer); it is
  meant for that model.  It clips gradients itself (``clipping_scale`` times
  the median of recent gradient norms), so the trainer's own
  ``--max-grad-norm`` clipping defaults to off with it (``asr_kd.train.cli``).
  ``weight_decay`` is not used by it; its ``lr`` is a relative step size
  (icefall's Zipformer recipe uses 0.045, against our AdamW default of
  2e-3).  No comparison of the two optimisers has been run here.

The schedule below sets ``group["lr"]`` and works the same for both.

Schedule (``WarmupDecaySchedule``), a function of the number ``b`` of
training batches seen so far (skipped bad batches included, see
``Trainer``) and of the number ``e`` of *completed* epochs::

    lr(b, e) = lr_peak * w(b) * (1 + b / B_d) ** -0.5 * (1 + e / E_d) ** -0.5
    w(b)     = min(1, (b + 1) / W)

* ``W`` (``--warmup-batches``): linear warm-up from ``lr_peak / W``; Adam's
  second-moment estimates are unreliable during the first updates, and a
  transducer at random initialisation produces large, noisy gradients.
* ``B_d`` (``--lr-batches``): after about ``B_d`` batches the rate falls
  like ``b ** -0.5`` (the tail of the Transformer "Noam" schedule).  Unlike
  Noam, the decay time constant is a separate knob from the warm-up length.
* ``E_d`` (``--lr-epochs``): an additional decay per completed epoch, so a
  small corpus (few batches per epoch) still anneals over a run of a few
  epochs.  ``B_d, E_d -> inf`` gives a constant rate after warm-up.

``schedule="eden"`` (``--lr-schedule eden``) replaces both decay factors by
the form of icefall's Eden schedule::

    lr(b, e) = lr_peak * w(b) * ((b² + B_d²) / B_d²) ** -0.25 * ((e² + E_d²) / E_d²) ** -0.25

which is flat (within a few per cent of the peak) while ``b << B_d`` and
``e << E_d`` and falls like ``b ** -0.5 e ** -0.5`` far beyond them, whereas
the default ``(1 + b / B_d) ** -0.5`` starts to decay from the first batch
(at ``b = B_d / 2`` it is at 82%, Eden's form at 95%).  The warm-up ``w(b)``
is the same for both.

The schedule is stateless apart from its two counters, so resuming restores
it exactly (``state_dict``/``load_state_dict``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn

from asr_kd.train.scaled_adam import ScaledAdam

__all__ = ["OptimConfig", "OPTIMIZERS", "SCHEDULES", "build_optimizer", "WarmupDecaySchedule", "param_groups"]

#: decay forms of ``WarmupDecaySchedule`` (see the module docstring)
SCHEDULES = ("inverse-sqrt", "eden")
#: optimisers ``build_optimizer`` can build (see the module docstring)
OPTIMIZERS = ("adamw", "scaled-adam")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser + schedule hyper-parameters (the CLI's --lr ... flags).

    Attributes:
      optimizer: ``"adamw"`` (default) or ``"scaled-adam"``.
      lr: peak learning rate ``lr_peak``.
      weight_decay: AdamW decoupled weight decay for matrices/kernels (unused by scaled-adam).
      betas: Adam (beta1, beta2) (both optimisers).
      eps: Adam epsilon (both optimisers).
      clipping_scale: scaled-adam only: clip the gradient at this multiple of the median of
        recent gradient norms (<= 0: no clipping); unused by AdamW.
      warmup_batches: W (>= 1).
      lr_batches: B_d (> 0; ``math.inf`` disables the batch decay).
      lr_epochs: E_d (> 0; ``math.inf`` disables the epoch decay).
      schedule: decay form, ``"inverse-sqrt"`` (default) or ``"eden"``.
    """

    lr: float = 2e-3
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    warmup_batches: int = 500
    lr_batches: float = 5000.0
    lr_epochs: float = 6.0
    schedule: str = "inverse-sqrt"
    optimizer: str = "adamw"
    clipping_scale: float = 2.0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"--optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"--lr-schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.warmup_batches < 1:
            raise ValueError(f"--warmup-batches must be >= 1, got {self.warmup_batches}")
        if not (self.lr_batches > 0 and self.lr_epochs > 0):
            raise ValueError(
                f"--lr-batches and --lr-epochs must be > 0, got {self.lr_batches}, {self.lr_epochs}"
            )


def param_groups(params: Iterable[nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """Split trainable parameters into a decayed (dim >= 2) and a non-decayed group.

    Parameters with ``requires_grad=False`` are dropped; duplicates (shared
    parameters) appear once.  Empty groups are omitted.
    """
    seen: set[int] = set()
    decay, no_decay = [], []
    for p in params:
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 else no_decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if not groups:
        raise ValueError("the model has no trainable parameters to optimise")
    return groups


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimiser ``cfg.optimizer`` over ``params`` (trainable ones, each once).

    ``"adamw"``: AdamW with the two weight-decay groups of ``param_groups``.
    ``"scaled-adam"``: ScaledAdam with one group and its default
    hyper-parameters apart from ``lr``, ``betas``, ``eps`` and
    ``clipping_scale`` (``<= 0``: None, no clipping); ``weight_decay`` is
    ignored (ScaledAdam has none).
    """
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(
            param_groups(params, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps
        )
    if cfg.optimizer == "scaled-adam":
        trainable = [p for g in param_groups(params, 0.0) for p in g["params"]]
        clip = cfg.clipping_scale if cfg.clipping_scale > 0 else None
        return ScaledAdam(trainable, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, clipping_scale=clip)
    raise ValueError(f"--optimizer must be one of {OPTIMIZERS}, got {cfg.optimizer!r}")


def _inverse_sqrt_decay(n: int, scale: float) -> float:
    """``(1 + n / scale) ** -0.5``; 1 for an infinite scale."""
    return 1.0 if math.isinf(scale) else (1.0 + n / scale) ** -0.5


def _eden_decay(n: int, scale: float) -> float:
    """``((n² + scale²) / scale²) ** -0.25``; 1 for an infinite scale."""
    return 1.0 if math.isinf(scale) else (1.0 + (n / scale) ** 2) ** -0.25


class WarmupDecaySchedule:
    """Sets ``lr`` of every parameter group from (batch count, completed epochs).

    Call ``step_batch()`` after each training batch (optimiser step or
    skipped) and ``step_epoch()`` at the end of each epoch; ``lr`` is applied
    to the optimiser immediately, so the next update uses it.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> None:
        self.optimizer = optimizer
        self.cfg = cfg
        self.batch = 0
        self.epoch = 0
        self._apply()

    @staticmethod
    def lr_at(cfg: OptimConfig, batch: int, epoch: int) -> float:
        """lr(b, e) of the module docstring."""
        warm = min(1.0, (batch + 1) / cfg.warmup_batches)
        decay = _eden_decay if cfg.schedule == "eden" else _inverse_sqrt_decay
        return cfg.lr * warm * decay(batch, cfg.lr_batches) * decay(epoch, cfg.lr_epochs)

    def get_lr(self) -> float:
        return self.lr_at(self.cfg, self.batch, self.epoch)

    def _apply(self) -> None:
        lr = self.get_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step_batch(self) -> None:
        self.batch += 1
        self._apply()

    def step_epoch(self) -> None:
        self.epoch += 1
        self._apply()

    def state_dict(self) -> dict[str, int]:
        return {"batch": self.batch, "epoch": self.epoch}

    def load_state_dict(self, sd: dict[str, int]) -> None:
        self.batch = int(sd["batch"])
        self.epoch = int(sd["epoch"])
        self._apply()
