"""Run bookkeeping of an experiment directory: listing, pruning, RNG state of a resume.

Reading model files, averaging them and rebuilding their model is one floor
below, in ``asr_kd.models.checkpoint`` (decoding, export and metrics use it
without importing training).

File layout of an experiment directory (``--exp-dir``)::

    checkpoint-<b>.pt   every --save-every-n training batches (b = global batch count);
                        only the newest --keep-last-k are kept
    epoch-<e>.pt        at the end of epoch e (1-based), after validation; all kept
    pretrained.pt       the final model: average of the last --avg epoch checkpoints

Training checkpoint (``torch.save`` of a dict of tensors and plain Python
values, loadable with ``torch.load(..., weights_only=True)``): the model
file's entries (``format_version, model, model_config, feature_config,
bpe_model, bpe_sha256``; see ``asr_kd.models.checkpoint``) plus::

    optimizer        optimizer state_dict;  scheduler  WarmupDecaySchedule.state_dict()
    grad_scaler      GradScaler state_dict ({} when AMP fp16 is off)
    loss_computer    the loss computer's state_dict() ({} when it has none)
    sampler          the training sampler's state_dict() (None when not known)
    rng              list, one entry per rank: {"python", "numpy", "torch", "cuda" (current device or None)}
    epoch            int, the epoch the checkpoint was written in (1-based)
    batch_idx        int, batches of that epoch already trained on
    batch_idx_train  int, batches trained on since the start (all epochs)
    epoch_done       bool, True for epoch-<e>.pt (resume starts epoch e+1)
    bad_batches      int, consecutive non-finite batches at save time
    valid_loss       float or None (epoch checkpoints)
    args             dict, the command-line arguments (str/int/float/bool/list/None)
    run_id           str, identifies the training run that wrote the file (kept across
                     --resume; a fresh run gets a new one); pruning deletes only its own run's files
    epoch_metrics    {"frames": float, "sums": {name: float}}: the running train-loss sums of the
                     current epoch, so the epoch's loss after a resume covers the whole epoch

``pretrained.pt`` holds only the model file's entries plus ``averaged_from``.

Atomicity: every file is written with ``asr_kd.atomic.atomic_torch_save``
(a temporary file in the same directory, fsync'ed, then ``os.replace``'d
onto its name), so a crash leaves either the old complete file or none.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from asr_kd.models.checkpoint import peek_checkpoint
from asr_kd.types import PathLike

__all__ = [
    "get_rng_state",
    "set_rng_state",
    "list_checkpoints",
    "latest_checkpoint",
    "prune_checkpoints",
    "epoch_checkpoints",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1

_BATCH_RE = re.compile(r"^checkpoint-(\d+)\.pt$")
_EPOCH_RE = re.compile(r"^epoch-(\d+)\.pt$")


# ---------------------------------------------------------------- RNG state


def get_rng_state() -> dict[str, Any]:
    """RNG states of python, numpy, torch (CPU) and CUDA (current device), as weights_only-safe values."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": np_state[0],
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        # the current device only: touching every GPU would create a context on each of them
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
    }


def _to_tuple(x: Any) -> Any:
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``get_rng_state`` (the CUDA state goes to the current device, when present)."""
    random.setstate(_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


# ---------------------------------------------------------------- listing / rotation


def list_checkpoints(exp_dir: PathLike) -> tuple[list[tuple[int, Path]], list[tuple[int, Path]]]:
    """(batch checkpoints [(b, path)], epoch checkpoints [(e, path)]), each sorted ascending."""
    exp_dir = Path(exp_dir)
    batch, epoch = [], []
    if exp_dir.is_dir():
        for p in exp_dir.iterdir():
            if m := _BATCH_RE.match(p.name):
                batch.append((int(m.group(1)), p))
            elif m := _EPOCH_RE.match(p.name):
                epoch.append((int(m.group(1)), p))
    return sorted(batch), sorted(epoch)


def epoch_checkpoints(exp_dir: PathLike, last_epoch: Optional[int], avg: int) -> list[Path]:
    """Paths of ``epoch-<e>.pt`` for the ``avg`` epochs ending at ``last_epoch`` (None: newest).

    Raises FileNotFoundError naming the missing files.
    """
    _, epochs = list_checkpoints(exp_dir)
    if last_epoch is None:
        if not epochs:
            raise FileNotFoundError(f"{exp_dir}: no epoch-*.pt checkpoints")
        last_epoch = epochs[-1][0]
    if avg < 1:
        raise ValueError(f"--avg must be >= 1, got {avg}")
    wanted = [Path(exp_dir) / f"epoch-{e}.pt" for e in range(last_epoch - avg + 1, last_epoch + 1)]
    missing = [str(p) for p in wanted if not p.is_file()]
    if missing or last_epoch - avg + 1 < 1:
        raise FileNotFoundError(
            f"averaging {avg} epochs ending at {last_epoch} needs {[str(p) for p in wanted]}; "
            f"missing: {missing or 'epochs before 1'}"
        )
    return wanted


def latest_checkpoint(exp_dir: PathLike, run_id: Optional[str] = None) -> Optional[Path]:
    """The loadable checkpoint furthest into training (largest batch_idx_train; epoch ones win ties).

    Unreadable files (truncated, empty, foreign) are skipped with a warning
    naming them, so a resume falls back to the newest intact checkpoint.
    With ``run_id``, only checkpoints of that run are considered.
    """
    batch, epochs = list_checkpoints(exp_dir)
    best, best_key = None, None
    for _, p in batch + epochs:
        ck = peek_checkpoint(p)
        if ck is None or (run_id is not None and ck.get("run_id") != run_id):
            continue
        key = (int(ck.get("batch_idx_train", -1)), bool(ck.get("epoch_done", False)))
        if best_key is None or key > best_key:
            best, best_key = p, key
    return best


def prune_checkpoints(exp_dir: PathLike, keep_last_k: int, run_id: Optional[str] = None) -> list[Path]:
    """Delete all but the newest ``keep_last_k`` batch checkpoints (0: keep all); return deleted.

    With ``run_id`` only that run's checkpoints are counted and deleted: files
    of another run, of no run id (older versions) or unreadable are never touched.
    """
    if keep_last_k <= 0:
        return []
    batch, _ = list_checkpoints(exp_dir)
    if run_id is not None:
        batch = [(b, p) for b, p in batch if (ck := peek_checkpoint(p)) is not None and ck.get("run_id") == run_id]
    removed = []
    for _, p in batch[: max(0, len(batch) - keep_last_k)]:
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed
