"""``results.json``: one row per (model, decoding, mode, chunk size, test set).

The file holds a JSON list of objects, sorted by :data:`ROW_KEY`. Required
fields (:data:`REQUIRED_FIELDS`; a latency that cannot be computed is
``null`` and the reason is logged):

    model, decoding, mode, chunk_ms, test_set, wer, first_token_latency_ms,
    first_token_latency_p90_ms, mean_symbol_delay_ms,
    mean_availability_delay_ms, rtf, num_threads

Extra fields written by ``asr_kd.bin.decode`` are listed in
docs/decoding.md, "results.json" (chunk size in feature frames, beam,
left context, shares behind the first-token latency, where the reference
times came from ...). Updating a row with the same key replaces it; the file
is rewritten atomically under an advisory lock, so several decode jobs may
share one file.

RTF (real-time factor) = decode wall time / audio duration, measured at a
stated thread count (:class:`RtfMeter`).
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Sequence, Tuple, Union

from .wer import atomic_write_text

__all__ = ["REQUIRED_FIELDS", "ROW_KEY", "update_results_json", "read_results_json", "RtfMeter"]

REQUIRED_FIELDS: Tuple[str, ...] = (
    "model", "decoding", "mode", "chunk_ms", "test_set", "wer", "first_token_latency_ms",
    "first_token_latency_p90_ms", "mean_symbol_delay_ms", "mean_availability_delay_ms", "rtf",
    "num_threads",
)

#: Fields identifying a row (``beam`` and ``left_context_ms`` may be None).
ROW_KEY: Tuple[str, ...] = ("model", "test_set", "mode", "decoding", "beam", "chunk_ms",
                            "left_context_ms")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock = path.with_name(f".{path.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        try:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        except (ImportError, OSError):  # non-POSIX: best effort
            pass
        yield


def read_results_json(path: Union[str, Path]) -> List[Dict[str, Any]]:
    """Rows of an existing ``results.json`` ([] when absent)."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        rows = json.loads(path.read_text(encoding="utf-8") or "[]")
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path} must hold a JSON list of objects")
    return rows


def _key(row: Mapping[str, Any]) -> Tuple[str, ...]:
    return tuple(json.dumps(row.get(k), sort_keys=True) for k in ROW_KEY)


def _sort_key(row: Mapping[str, Any]) -> Tuple[Any, ...]:
    out: List[Any] = []
    for k in ROW_KEY:
        v = row.get(k)
        # None first, numbers numerically, strings alphabetically.
        out.append((0, 0, "") if v is None else
                   (1, float(v), "") if isinstance(v, (int, float)) else (2, 0, str(v)))
    return tuple(out)


def update_results_json(path: Union[str, Path], rows: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Insert or replace ``rows`` (matched on :data:`ROW_KEY`); returns all rows."""
    path = Path(path)
    for r in rows:
        missing = [k for k in REQUIRED_FIELDS if k not in r]
        if missing:
            raise ValueError(f"results row lacks fields {missing}: {dict(r)}")
    with _locked(path):
        existing = read_results_json(path)
        by_key = {_key(r): dict(r) for r in existing}
        for r in rows:
            by_key[_key(r)] = dict(r)
        out = sorted(by_key.values(), key=_sort_key)
        atomic_write_text(path, json.dumps(out, indent=2, sort_keys=False) + "\n")
    return out


class RtfMeter:
    """Accumulates decode wall time (``time.perf_counter``) and audio seconds.

    Use ``with meter.timing(): ...`` around decoding work and
    :meth:`add_audio` for each utterance; ``rtf`` = wall / audio.
    """

    def __init__(self) -> None:
        self.wall_s = 0.0
        self.audio_s = 0.0

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.wall_s += time.perf_counter() - t0

    def add_audio(self, seconds: float) -> None:
        self.audio_s += float(seconds)

    @property
    def rtf(self) -> float:
        return self.wall_s / self.audio_s if self.audio_s > 0 else float("nan")
