"""The loss-computer contract: what the training loop asks of the thing that computes one step's loss.

The training loop (``asr_kd.train.trainer``) knows nothing about
transducers or distillation; it calls a :class:`LossComputer`::

    loss, info = loss_computer(model, batch, step)

* ``model``: the unwrapped model (a ``Transducer``; under DDP the loop wraps
  model and loss computer together, see ``trainer.StepModule``).
* ``batch``: a batch dict of ``asr_kd.data`` (features (B,T,80),
  feature_lens (B,), texts, cut_ids, cuts[, clean_features]); tensors may
  still be on the CPU -- the loss computer moves what it uses.
* ``step``: global training batch index (0-based), for warm-ups.
* ``loss``: 0-dim tensor to back-propagate, already normalised by the one
  loss-normalisation rule: transducer (and CTC, output-KD) terms are sums over
  the batch divided by ``info["frames"]``, the number of encoder frames of
  this batch, so every term is per encoder frame and its weight does not
  depend on batch size or utterance length; the hidden-layer MSE is a mean
  over frames and dimensions.
* ``info``: python floats for logging.  ``info["frames"]`` is required (the
  normaliser, > 0).  Every other entry is a per-frame average of this batch;
  trackers weight entries by ``frames`` when aggregating over batches and
  ranks.  Under DDP the loop rescales ``loss`` by
  ``frames * world_size / sum_ranks(frames)`` so that averaging gradients
  over ranks gives exactly sum_all / frames_all.

Besides ``__call__``, the base class states (with working defaults for a loss
computer without trainable state):

* :meth:`trainable_modules` -> ``{name: module}`` of the extra trainable
  modules (a CTC head, KD projections); the name is the stable prefix of their
  parameter names in checkpoints (``param_names``: ``ctc_head.weight``,
  ``kd_projections.0.weight``).  Frozen modules (a teacher) are never listed.
  :meth:`named_parameters` / :meth:`parameters` / :meth:`train` follow from it:
  the parameters are added to the optimiser and synchronised by DDP.
* :meth:`state_dict` / :meth:`load_state_dict` -> stored under
  ``"loss_computer"`` in training checkpoints (exact resume);
  :meth:`carry_state_dict` loads what fits of another run's state
  (``--continue-from``), logging what starts fresh.
* :attr:`needs_clean_features` -> ask the data module for ``clean_features``.

:func:`named_trainables` / :func:`optimizer_param_names` give the names under
which a checkpoint records the optimiser's parameters (``model.<n>`` and the
loss computer's names); ``--continue-from`` matches optimiser moments by them.
"""

from __future__ import annotations

import abc
from typing import Any, Iterator, Mapping

import torch
from torch import Tensor, nn

__all__ = ["LossComputer", "named_trainables", "optimizer_param_names"]


class LossComputer(abc.ABC):
    """``(model, batch, step) -> (loss, info)`` plus the hooks of the training loop (module docstring)."""

    #: ask the data module for ``batch["clean_features"]`` (the un-augmented input)
    needs_clean_features: bool = False

    @abc.abstractmethod
    def __call__(self, model: nn.Module, batch: dict[str, Any], step: int) -> tuple[Tensor, dict[str, float]]:
        """One batch's normalised loss and its per-frame info (module docstring)."""

    def trainable_modules(self) -> dict[str, nn.Module]:
        """``{stable name prefix: module}`` of the extra trainable modules, in parameter order (default: none)."""
        return {}

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """(``<prefix>.<name>``, parameter) of :meth:`trainable_modules`; the names of checkpoints' ``param_names``."""
        for prefix, module in self.trainable_modules().items():
            for n, p in module.named_parameters():
                yield f"{prefix}.{n}", p

    def parameters(self) -> Iterator[nn.Parameter]:
        """The extra trainable parameters (never a frozen teacher's)."""
        for _, p in self.named_parameters():
            yield p

    def train(self, mode: bool = True) -> None:
        """Train (True) or evaluation (False) mode of the trainable modules, with the model's."""
        for module in self.trainable_modules().values():
            module.train(mode)

    def state_dict(self) -> dict[str, Any]:
        """State stored under ``"loss_computer"`` in training checkpoints (default: none)."""
        return {}

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (exact resume)."""

    def carry_state_dict(self, sd: Mapping[str, Any], where: str) -> None:
        """Load what fits of another run's ``loss_computer`` state ``sd`` read from ``where`` (``--continue-from``).

        The default is :meth:`load_state_dict`; subclasses whose parts may be
        missing or differ in shape log what starts fresh instead of failing.
        """
        self.load_state_dict(sd)


def named_trainables(model: nn.Module, loss_computer: LossComputer) -> Iterator[tuple[str, nn.Parameter]]:
    """(name, parameter) for the model ("model.<n>") and then the loss computer's extras (its own names)."""
    for n, p in model.named_parameters():
        yield f"model.{n}", p
    yield from loss_computer.named_parameters()


def optimizer_param_names(optimizer: torch.optim.Optimizer, model: nn.Module,
                          loss_computer: LossComputer) -> list[str]:
    """Names of the optimizer's parameters in state_dict index order (flattened param_groups)."""
    by_id = {id(p): n for n, p in named_trainables(model, loss_computer)}
    return [by_id.get(id(p), f"unnamed.{i}")
            for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])]
