"""Atomic file writes: a crash or kill never leaves a partial output.

Every writer puts the data into a temporary file in the target's directory,
flushes and fsyncs it, then ``os.replace``s it onto the target name (atomic
on POSIX within one filesystem) and fsyncs the directory so the rename itself
survives a power loss. A failed write removes its temporary file; when it
failed for lack of space (``ENOSPC`` anywhere in the exception chain, as torch
wraps it), the error re-raised is ``DiskFullError`` whose one-line message
starts with "No space left on device" and names the target path.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any, Callable, IO, Union

__all__ = ["DiskFullError", "atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_torch_save"]

PathLike = Union[str, Path]


class DiskFullError(OSError):
    """A write failed because the file system is full (errno ENOSPC); ``str()`` is the message alone."""

    def __str__(self) -> str:
        return str(self.strerror)


def _is_disk_full(err: BaseException) -> bool:
    seen = set()
    e: "BaseException | None" = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        e = e.__cause__ or e.__context__
    return False


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
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if _is_disk_full(e):
            raise DiskFullError(errno.ENOSPC, f"No space left on device: cannot write {path} "
                                f"(earlier files are intact)") from e
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
