"""Backend selection for :mod:`asr_kd.rnnt`.

Two backends implement the same API:

* ``"k2"`` -- the compiled k2 library (``k2.rnnt_loss_simple`` etc.), used when
  ``import k2`` succeeds *and* the environment variable ``ASR_KD_RNNT_BACKEND``
  is not ``torch``;
* ``"torch"`` -- this package's own implementation (PyTorch plus a numba kernel
  for the recursion on CPU), used otherwise.

The environment variable is read on every call, so it can be changed at run
time (tests do).  The outcome of ``import k2`` is cached after the first try.

The recursion inside the torch backend has its own switch,
``ASR_KD_RNNT_RECURSION`` = ``auto`` (default: numba on CPU when importable,
the vectorised anti-diagonal torch code otherwise and on every other device),
``numba`` or ``torch``.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Optional

BACKEND_ENV = "ASR_KD_RNNT_BACKEND"
RECURSION_ENV = "ASR_KD_RNNT_RECURSION"

_UNSET = object()
_k2_cache: object = _UNSET


def _import_k2() -> Optional[ModuleType]:
    """Import k2 once; ``None`` when it is not importable (any exception)."""
    global _k2_cache
    if _k2_cache is _UNSET:
        try:
            _k2_cache = importlib.import_module("k2")
        except Exception:  # ImportError, or a broken build raising OSError etc.
            _k2_cache = None
    return _k2_cache  # type: ignore[return-value]


def reset_backend_cache() -> None:
    """Forget the cached ``import k2`` outcome (for tests and notebooks)."""
    global _k2_cache
    _k2_cache = _UNSET


def k2_or_none() -> Optional[ModuleType]:
    """The k2 module when it should be used, else ``None``."""
    if os.environ.get(BACKEND_ENV, "").strip().lower() == "torch":
        return None
    return _import_k2()


def rnnt_backend() -> str:
    """Name of the backend the next call will use: ``"k2"`` or ``"torch"``."""
    return "k2" if k2_or_none() is not None else "torch"


def recursion_impl_request() -> str:
    """The requested recursion implementation: ``auto``, ``numba`` or ``torch``."""
    value = os.environ.get(RECURSION_ENV, "auto").strip().lower() or "auto"
    if value not in ("auto", "numba", "torch"):
        raise ValueError(
            f"{RECURSION_ENV}={value!r}: expected one of 'auto', 'numba', 'torch'"
        )
    return value
