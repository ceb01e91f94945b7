"""Type aliases shared by the whole package."""

from __future__ import annotations

from pathlib import Path
from typing import Union

__all__ = ["PathLike"]

#: a file-system path as the public functions accept it
PathLike = Union[str, Path]
