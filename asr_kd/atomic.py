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
from typing import Any, Callable, IO

from asr_kd.types import PathLike

__all__ = ["DiskFullError", "atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_torch_save",
           "temp_path_for", "move_into_place", "atomic_write_file"]


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


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (some file systems refuse fsync on directories)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _raise_write_error(e: BaseException, path: Path) -> None:
    if _is_disk_full(e):
        raise DiskFullError(errno.ENOSPC, f"No space left on device: cannot write {path} "
                            f"(earlier files are intact)") from e
    raise e


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
        _raise_write_error(e, path)
    _fsync_dir(path.parent)
    return path


def temp_path_for(path: PathLike) -> Path:
    """A temporary name beside ``path`` that ENDS like it (``.tmp.<pid>.cuts_train.jsonl.gz``).

    For writers that choose the format from the file name (lhotse's
    ``to_file``, soundfile): they must see the target's suffixes.
    """
    path = Path(path)
    return path.with_name(f".tmp.{os.getpid()}.{path.name}")


def move_into_place(tmp: PathLike, path: PathLike) -> Path:
    """fsync the finished file ``tmp``, rename it onto ``path`` and make the rename durable."""
    tmp, path = Path(tmp), Path(path)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def atomic_write_file(path: PathLike, write_to: Callable[[Path], None]) -> Path:
    """``write_to(tmp)`` creates the file at ``temp_path_for(path)``; it is then moved onto ``path``.

    A failure removes the temporary file (``DiskFullError`` for a full disk), so
    ``path`` is either its old complete self or the new complete file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        write_to(tmp)
        move_into_place(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        _raise_write_error(e, path)
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
