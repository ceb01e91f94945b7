"""One training run per experiment directory: run ids, refusing to clobber, stale temp files.

A training run is identified by a ``run_id`` (12 hex digits) stored in every
checkpoint it writes; ``--resume`` keeps the id of the checkpoint it resumes,
a fresh run draws a new one.  Rules applied at start-up (main rank):

* a fresh run (no ``--resume``) in a directory that already holds run files
  (``checkpoint-*.pt``, ``epoch-*.pt``, ``pretrained.pt``) stops with
  :class:`ExpDirInUseError` unless ``--overwrite`` is given; with it, those
  files (and ``tensorboard/``, ``train_stats.json``) are moved, never deleted, into
  ``<exp-dir>/replaced-<UTC time>-<old run id>/`` so the new run's files
  cannot mix with the old run's;
* temporary files of interrupted atomic writes (``.<name>.tmp.<pid>``) whose
  process is gone are removed; those of a live process are left alone.
"""
from __future__ import annotations

import logging
import os
import re
import time
import uuid
from pathlib import Path
from typing import Optional

from asr_kd.models.checkpoint import peek_checkpoint
from asr_kd.types import PathLike

__all__ = ["ExpDirInUseError", "new_run_id", "run_files", "claim_fresh_exp_dir", "clean_stale_tmp"]

log = logging.getLogger(__name__)

_RUN_FILE = re.compile(r"^(checkpoint-\d+|epoch-\d+|pretrained)\.pt$")
_TMP_FILE = re.compile(r"^\..+\.tmp\.(\d+)$")


class ExpDirInUseError(RuntimeError):
    """A fresh run was asked to start in a directory holding another run's checkpoints."""


def new_run_id() -> str:
    """A fresh random run id (12 hex digits)."""
    return uuid.uuid4().hex[:12]


def run_files(exp_dir: PathLike) -> list[Path]:
    """Checkpoint files of a training run in ``exp_dir`` (sorted by name); [] if none or no directory."""
    d = Path(exp_dir)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if _RUN_FILE.match(p.name) and p.is_file())


def _old_run_id(files: list[Path]) -> str:
    for p in reversed(files):
        ck = peek_checkpoint(p)
        if ck is not None and ck.get("run_id"):
            return str(ck["run_id"])
    return "unknown"


def claim_fresh_exp_dir(exp_dir: PathLike, overwrite: bool) -> Optional[Path]:
    """Make ``exp_dir`` safe for a fresh run; returns where old files were moved (or None).

    Raises ExpDirInUseError (one line naming the directory, some of its files
    and the choices) when run files exist and ``overwrite`` is False.
    """
    exp_dir = Path(exp_dir)
    files = run_files(exp_dir)
    if not files:
        return None
    names = ", ".join(p.name for p in files[:4]) + (f" and {len(files) - 4} more" if len(files) > 4 else "")
    if not overwrite:
        raise ExpDirInUseError(
            f"--exp-dir {exp_dir} already holds another training run ({names}); pass --resume to continue it, "
            f"--overwrite to move its files aside and start afresh, or choose another --exp-dir"
        )
    dest = exp_dir / f"replaced-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{_old_run_id(files)}"
    dest.mkdir(parents=True, exist_ok=False)
    for p in files:
        p.rename(dest / p.name)
    tb = exp_dir / "tensorboard"
    if tb.is_dir():
        tb.rename(dest / "tensorboard")
    stats = exp_dir / "train_stats.json"  # asr_kd.metrics.train_stats: per-epoch means of that run
    if stats.is_file():
        stats.rename(dest / stats.name)
    log.warning("--overwrite: moved the previous run's %d file(s) (%s) to %s", len(files), names, dest)
    return dest


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale_tmp(exp_dir: PathLike) -> list[Path]:
    """Remove ``.<name>.tmp.<pid>`` files in ``exp_dir`` whose writer process no longer exists."""
    d = Path(exp_dir)
    removed: list[Path] = []
    if not d.is_dir():
        return removed
    for p in sorted(d.iterdir()):
        m = _TMP_FILE.match(p.name)
        if m and p.is_file() and not _pid_alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted write: %s", len(removed),
                 ", ".join(p.name for p in removed[:5]))
    return removed
