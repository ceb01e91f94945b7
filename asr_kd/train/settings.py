"""Training settings recorded in checkpoints, and the checks ``--resume`` applies to them.

Every checkpoint stores the command-line arguments (``args``).  A resume
compares them with the new command line:

* settings in :data:`SAFE_TO_CHANGE` may differ (they do not change what is
  learned: paths of the run itself, logging, workers, checkpoint cadence,
  device choice, the number of epochs when raised); differences are logged;
* any other difference (learning rate, loss weights, distillation settings,
  data, seed, ...) stops the resume with one line listing every difference,
  unless ``--allow-changed-settings`` is given (then each is logged as a warning);
* a ``--num-epochs`` below the epoch the checkpoint was written in is refused:
  training would stop at once and ``pretrained.pt`` would be rebuilt from
  epochs older than the ones already trained.

Settings present on only one side (flags added by a newer version) are not compared.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

__all__ = ["SAFE_TO_CHANGE", "settings_differences", "check_resume_settings"]

log = logging.getLogger(__name__)

SAFE_TO_CHANGE = frozenset({
    "exp_dir", "resume", "overwrite", "allow_changed_settings", "continue_from", "init_from",
    "num_workers", "log_interval", "progress", "tensorboard", "save_every_n", "keep_last_k", "avg",
    "device", "find_unused_parameters", "max_bad_batches", "num_epochs",
})


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def settings_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(unsafe, safe) differences between two ``args`` dicts, each as "--flag OLD -> NEW" strings."""
    unsafe, safe = [], []
    for k in sorted(set(old) & set(new)):
        a, b = old[k], new[k]
        if isinstance(a, tuple):
            a = list(a)
        if isinstance(b, tuple):
            b = list(b)
        if a == b:
            continue
        (safe if k in SAFE_TO_CHANGE else unsafe).append(f"{_flag(k)} {a!r} -> {b!r}")
    return unsafe, safe


def check_resume_settings(ckpt: Mapping[str, Any], new_args: Mapping[str, Any], path: str,
                          allow_changed: bool = False) -> None:
    """Raise ValueError (one line) if resuming ``ckpt`` (read from ``path``) under ``new_args`` is unsafe.

    ``new_args`` is ``sanitize_args(args)`` of the new command line.
    """
    done = int(ckpt.get("epoch", 0)) - (0 if ckpt.get("epoch_done") else 1)
    in_epoch = int(ckpt.get("epoch", 0))
    last = int(new_args.get("num_epochs", 0)) + int(ckpt.get("epoch_offset", 0) or 0)
    if last < in_epoch:
        raise ValueError(
            f"--resume: {path} was written in epoch {in_epoch} ({done} epoch(s) complete) but --num-epochs asks "
            f"to stop at epoch {last}; pass --num-epochs >= {in_epoch} (nothing was changed in the exp dir)"
        )
    old_args = ckpt.get("args") or {}
    if not old_args:
        log.warning("--resume: %s records no training settings; they cannot be checked", path)
        return
    unsafe, safe = settings_differences(old_args, new_args)
    if safe:
        log.info("--resume: settings changed since %s (allowed): %s", path, "; ".join(safe))
    if unsafe and not allow_changed:
        raise ValueError(
            f"--resume: {path} was trained with other settings: {'; '.join(unsafe)}; rerun with the original "
            f"flags, start a new run in another --exp-dir, or pass --allow-changed-settings to continue anyway"
        )
    if unsafe:
        log.warning("--resume with changed settings (--allow-changed-settings): %s", "; ".join(unsafe))
