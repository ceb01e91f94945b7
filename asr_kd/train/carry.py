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
  (``param_names`` in the checkpoint); parameters new in this run (e.g. a KD
  projection) start with empty moments;
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
from typing import Any, Iterator

from torch import nn

__all__ = ["named_trainables", "optimizer_param_names", "carry_training_state"]

log = logging.getLogger(__name__)


def named_trainables(model: nn.Module, loss_computer: Any) -> Iterator[tuple[str, nn.Parameter]]:
    """(name, parameter) for the model ("model.<n>") and the loss computer's extras
    ("ctc_head.<n>", "kd_projections.<n>", other extras "extra.<i>")."""
    for n, p in model.named_parameters():
        yield f"model.{n}", p
    base = getattr(loss_computer, "base", loss_computer)
    named: dict[int, str] = {}
    ctc = getattr(base, "ctc_head", None)
    if isinstance(ctc, nn.Module):
        named.update({id(p): f"ctc_head.{n}" for n, p in ctc.named_parameters()})
    proj = getattr(loss_computer, "projections", None)
    if isinstance(proj, nn.Module):
        named.update({id(p): f"kd_projections.{n}" for n, p in proj.named_parameters()})
    fn = getattr(loss_computer, "parameters", None)
    for i, p in enumerate(fn() if callable(fn) else ()):
        yield named.get(id(p), f"extra.{i}"), p


def optimizer_param_names(optimizer: Any, model: nn.Module, loss_computer: Any) -> list[str]:
    """Names of the optimizer's parameters in state_dict index order (flattened param_groups)."""
    by_id = {id(p): n for n, p in named_trainables(model, loss_computer)}
    return [by_id.get(id(p), f"unnamed.{i}")
            for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])]


def _carry_loss_computer(loss_computer: Any, old: dict[str, Any], where: str) -> None:
    base = getattr(loss_computer, "base", loss_computer)
    old_base = old.get("base", old) if isinstance(old, dict) else {}
    ctc = getattr(base, "ctc_head", None)
    if isinstance(ctc, nn.Module):
        if old_base.get("ctc_head"):
            ctc.load_state_dict(old_base["ctc_head"])
            log.info("--continue-from: CTC head carried from %s", where)
        else:
            log.warning("--continue-from: %s has no CTC head; this run's starts fresh", where)
    proj = getattr(loss_computer, "projections", None)
    if isinstance(proj, nn.Module) and old.get("projections"):
        try:
            proj.load_state_dict(old["projections"])
            log.info("--continue-from: KD projections carried from %s", where)
        except RuntimeError:
            log.warning("--continue-from: KD projections of %s do not fit this run's; they start fresh", where)


def _carry_optimizer(trainer: Any, ckpt: dict[str, Any], where: str) -> None:
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


def carry_training_state(trainer: Any, ckpt: dict[str, Any], where: str) -> int:
    """Load ``ckpt`` (an end-of-epoch checkpoint read from ``where``) into ``trainer``; return its epoch.

    The trainer then starts at epoch ``ckpt["epoch"] + 1`` with the checkpoint's
    global batch count, schedule, optimizer moments and RNG state.
    """
    from asr_kd.train.checkpoint import set_rng_state

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
    _carry_loss_computer(trainer.loss_computer, ckpt.get("loss_computer") or {}, where)
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
