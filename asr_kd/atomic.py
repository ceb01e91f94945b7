"""Atomic file writes: a crash or kill never leaves a partial output.

Every writer puts the data into a temporary file in the target's directory,
flushes and fsyncs it, then ``os.replace``s it onto the target name (atomic
on POSIX within one filesystem) and fsyncs the directory so the rename itself
survives a power loss. A failed write removes its temporary file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, IO, Union

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_torch_save"]

PathLike = Union[str, Path]


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a binary temporary file, then move it onto ``path``; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    return path


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))
