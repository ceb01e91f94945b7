"""``--continue-from``: start a new run from another run's full training state.

``--init-from`` copies model weights only, so a run started from it restarts
the LR warm-up, the simple/pruned-loss warm-up (``--warm-step``), the
delay-penalty gate, the optimizer moments, and drops the CTC head (which lives
in the loss computer).  A stage-2 student built that way gets a second
warm-up its baseline never had.  ``--continue-from CKPT`` instead carries,
from an end-of-epoch checkpoint ``epoch-<e>.pt`` of another run:

* the model weights (same model config required) and the CTC head;
* KD projections when both runs have them with the same shapes;
* the AdamW moments of every parameter present in both runs, matched by name
  (``param_names`` in the checkpoint, ``asr_kd.train.loss_computer.optimizer_param_names``);
  parameters new in this run (e.g. a KD projection) start with empty moments;
* the LR schedule's batch and epoch counters and the global batch count,
  which drives the loss warm-up and the delay-penalty gate;
* the RNG states, so that continuing a run without changes reproduces the
  uninterrupted run bit for bit (same conditions as an exact resume).

The new run trains epochs ``e+1 .. e+--num-epochs`` and names its files
accordingly (``epoch-<e+1>.pt`` ...); its checkpoints record
``epoch_offset = e``.  Its sampler starts epoch ``e+1`` afresh from
``--seed`` (as an uninterrupted run would at an epoch boundary).
"""
from __future__ import annotations

import logging
from typing import Any

from asr_kd.train.checkpoint import set_rng_state
from asr_kd.train.loss_computer import optimizer_param_names
from asr_kd.train.trainer import Trainer

__all__ = ["carry_training_state"]

log = logging.getLogger(__name__)


def _carry_optimizer(trainer: Trainer, ckpt: dict[str, Any], where: str) -> None:
    old_names = ckpt.get("param_names")
    if not old_names:
        raise ValueError(f"--continue-from {where}: the checkpoint records no optimizer parameter names "
                         f"(written by an older version); use --init-from, or retrain its run")
    old_state = ckpt["optimizer"]["state"]
    old_index = {n: i for i, n in enumerate(old_names)}
    new_names = optimizer_param_names(trainer.optimizer, trainer.model, trainer.loss_computer)
    params = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    sd = trainer.optimizer.state_dict()
    carried, fresh = 0, []
    for j, (name, p) in enumerate(zip(new_names, params)):
        i = old_index.get(name)
        st = old_state.get(i) if i is not None else None
        if st is not None and all(not hasattr(v, "shape") or v.dim() == 0 or v.shape == p.shape
                                  for v in st.values()):
            sd["state"][j] = st
            carried += 1
        else:
            fresh.append(name)
    trainer.optimizer.load_state_dict(sd)
    log.info("--continue-from: optimizer moments carried for %d of %d parameters%s", carried, len(params),
             f"; fresh: {fresh[:5]}{' ...' if len(fresh) > 5 else ''}" if fresh else "")


def carry_training_state(trainer: Trainer, ckpt: dict[str, Any], where: str) -> int:
    """Load ``ckpt`` (an end-of-epoch checkpoint read from ``where``) into ``trainer``; return its epoch.

    The trainer then starts at epoch ``ckpt["epoch"] + 1`` with the checkpoint's
    global batch count, schedule, optimizer moments and RNG state.
    """
    if not ckpt.get("epoch_done") or "optimizer" not in ckpt or "scheduler" not in ckpt:
        raise ValueError(f"--continue-from {where}: not an end-of-epoch training checkpoint (epoch-<e>.pt); "
                         f"pretrained.pt and mid-epoch checkpoint-<b>.pt cannot be continued")
    their_args = ckpt.get("args") or {}
    theirs = their_args.get("optimizer", "adamw")  # training runs before --optimizer used AdamW
    ours = type(trainer.optimizer).__name__
    if their_args and (theirs == "scaled-adam") != (ours == "ScaledAdam"):
        raise ValueError(f"--continue-from {where}: that run used --optimizer {theirs}, this one builds {ours}; "
                         "optimizer moments cannot be carried between optimizers (use --init-from for the weights)")
    trainer.model.load_state_dict(ckpt["model"])
    trainer.loss_computer.carry_state_dict(ckpt.get("loss_computer") or {}, where)
    _carry_optimizer(trainer, ckpt, where)
    trainer.scheduler.load_state_dict(ckpt["scheduler"])
    if trainer.scaler.is_enabled() and ckpt.get("grad_scaler"):
        trainer.scaler.load_state_dict(ckpt["grad_scaler"])
    trainer.batch_idx_train = int(ckpt["batch_idx_train"])
    trainer.epoch, trainer.batch_idx = int(ckpt["epoch"]) + 1, 0
    rngs = ckpt.get("rng") or []
    if rngs:
        set_rng_state(rngs[trainer.dist.rank] if trainer.dist.rank < len(rngs) else rngs[0])
    log.info("--continue-from %s: epoch %d done, %d batches trained; this run trains epochs %d..%d",
             where, int(ckpt["epoch"]), trainer.batch_idx_train, trainer.epoch, trainer.cfg.num_epochs)
    return int(ckpt["epoch"])
