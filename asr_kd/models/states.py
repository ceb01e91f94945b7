"""Batching helpers for streaming encoder states (format: ``conformer.py``).

Every state tensor is batch-first, so streams can be split and regrouped
between chunk calls (a server decoding streams that start at different
times).  Per-stream positions come from ``offset``; attention caches of
different lengths (unlimited left context) are left-padded with zeros when
stacked -- the padding is masked because only the last ``min(offset, C)``
cache entries of a stream are ever attended to.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from asr_kd.models.conformer import EncoderState

__all__ = ["stack_states", "unstack_states"]

_KEYS = ("keys", "values", "conv", "frontend", "offset")


def unstack_states(states: EncoderState) -> list[EncoderState]:
    """Split a batched state into B states of batch size 1 (views, not copies)."""
    b = states["offset"].size(0)
    return [{k: states[k][i : i + 1] for k in _KEYS} for i in range(b)]


def stack_states(states: list[EncoderState]) -> EncoderState:
    """Concatenate states along the batch axis; caches (B, N, C, D) are left-padded to the longest C."""
    if not states:
        raise ValueError("states.py: nothing to stack")
    longest = max(s["keys"].size(2) for s in states)
    out: EncoderState = {}
    for k in _KEYS:
        parts = [s[k] for s in states]
        if k in ("keys", "values"):
            parts = [F.pad(p, (0, 0, longest - p.size(2), 0)) for p in parts]
        out[k] = torch.cat(parts, dim=0)
    return out
