"""The one wrapper every ``python -m asr_kd.bin.<tool>`` runs its work in.

A user error -- a bad argument value, a missing or unusable file, an
experiment directory in use, a full disk, unreadable audio under
``--strict`` -- ends the tool with ONE line on
stderr, ``<tool>: error: <message>``, and exit status 2 (the status argparse
uses for command-line mistakes, so scripts test one number). The message is
also written to the log files the run opened (training's
``<exp-dir>/log/train-rank<r>.log``), never a second time to stderr. Any
other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import logging
import sys
from typing import Callable, Optional, Sequence

__all__ = ["USER_ERROR_STATUS", "user_error_types", "run_tool"]

#: exit status of a tool stopped by a user error
USER_ERROR_STATUS = 2


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception types that mean "the user gave something unusable" (not a bug)."""
    from asr_kd.atomic import DiskFullError
    from asr_kd.decode.pipeline import UnreadableAudioError
    from asr_kd.models.checkpoint import CheckpointError
    from asr_kd.train.expdir import ExpDirInUseError

    return (ValueError, FileNotFoundError, CheckpointError, ExpDirInUseError, DiskFullError, UnreadableAudioError)


def _log_to_files(tool: str, message: str) -> None:
    """Write the error record to every file handler of the root logger (not to stderr handlers)."""
    root = logging.getLogger()
    record = logging.getLogger(f"asr_kd.{tool}").makeRecord(
        f"asr_kd.{tool}", logging.ERROR, __file__, 0, "%s", (message,), None)
    for h in root.handlers:
        if isinstance(h, logging.FileHandler) and record.levelno >= h.level:
            h.handle(record)


def run_tool(tool: str, work: Callable[[Optional[Sequence[str]]], Optional[int]],
             argv: Optional[Sequence[str]] = None) -> int:
    """``work(argv)``'s status (None counts as 0); a user error prints one line and gives 2.

    ``SystemExit`` (argparse's own errors and ``--help``) passes through unchanged.
    """
    try:
        status = work(argv)
    except user_error_types() as e:
        message = str(e) or type(e).__name__
        print(f"{tool}: error: {message}", file=sys.stderr)
        _log_to_files(tool, message)
        return USER_ERROR_STATUS
    return int(status or 0)
