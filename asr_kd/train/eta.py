"""Time left in the epoch and in the run, from the audio trained per second so far.

The rate is the audio of the batches trained since this process started the
epoch, divided by the wall time since then: ``rate = a / t``. With ``A`` the
audio of one epoch on this rank, ``d`` the audio already trained in the epoch
(batches trained before a resume are counted at the mean batch audio seen
since) and ``n`` full epochs still to come after this one:

    ETA(epoch) = (A - d) / rate
    ETA(run)   = ETA(epoch) + n A / rate

Validation passes are not counted. No estimate is made in the first
``min_elapsed_s`` seconds (start-up, warm caches) or when ``A`` is unknown.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

__all__ = ["EtaMeter", "format_duration"]


@dataclass
class EtaMeter:
    """Audio-rate ETA of one rank's epoch and run (see the module docstring)."""

    epoch_audio_s: float  # A; 0 or less: unknown, no estimate
    min_elapsed_s: float = 60.0
    _t0: float = field(default=0.0, repr=False)
    _audio: float = field(default=0.0, repr=False)
    _batches: int = field(default=0, repr=False)
    _batches_before: int = field(default=0, repr=False)

    def start_epoch(self, batches_before: int = 0, now: Optional[float] = None) -> None:
        """A new pass begins; ``batches_before`` batches of this epoch were trained before a resume."""
        self._t0 = time.monotonic() if now is None else now
        self._audio, self._batches, self._batches_before = 0.0, 0, batches_before

    def update(self, batch_audio_s: float) -> None:
        self._audio += batch_audio_s
        self._batches += 1

    def estimate(self, epochs_after: int, now: Optional[float] = None) -> Optional[tuple[float, float]]:
        """(seconds left in this epoch, seconds left in the run), or None when there is no estimate yet."""
        elapsed = (time.monotonic() if now is None else now) - self._t0
        if self.epoch_audio_s <= 0 or self._batches == 0 or self._audio <= 0 or elapsed < self.min_elapsed_s:
            return None
        rate = self._audio / elapsed
        done = self._audio + self._batches_before * self._audio / self._batches
        epoch_left = max(0.0, self.epoch_audio_s - done) / rate
        return epoch_left, epoch_left + max(0, epochs_after) * self.epoch_audio_s / rate


def format_duration(seconds: float) -> str:
    """3725 -> '1h02m', 192 -> '3m12s', 42 -> '42s'."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
