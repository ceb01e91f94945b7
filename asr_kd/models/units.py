"""Time units of the models: 10 ms feature frames, 40 ms encoder frames (4x subsampling).

Chunk sizes and left contexts are given in milliseconds on every command
line and stored in encoder frames inside model configs; this module is the
one conversion between the two.
"""
from __future__ import annotations

__all__ = ["FEATURE_MS", "FRAME_MS", "ms_to_frames"]

#: one feature frame (fbank frame shift) in ms
FEATURE_MS = 10

#: one encoder frame in ms: the front ends of both encoders subsample 10 ms features 4x
FRAME_MS = 40


def ms_to_frames(ms: int, what: str, allow_unlimited: bool = False, allow_zero: bool = False) -> int:
    """``ms`` (a positive multiple of ``FRAME_MS``; -1 = unlimited, 0 = none when allowed) -> encoder frames.

    ``what`` names the option or setting in the one-line ValueError raised otherwise.
    """
    if allow_unlimited and ms == -1:
        return -1
    if allow_zero and ms == 0:
        return 0
    if ms <= 0 or ms % FRAME_MS:
        raise ValueError(f"{what} must be {'0 or ' if allow_zero else ''}a positive multiple of {FRAME_MS} ms"
                         f"{' or -1' if allow_unlimited else ''}, got {ms}")
    return ms // FRAME_MS
