"""Batching helpers for streaming encoder states (formats: ``conformer.py``, ``zipformer/encoder.py``).

A state is a dict of batch-first tensors with an int64 ``offset`` (B,) (encoder
frames processed per stream), so streams can be split and regrouped between
chunk calls (a server decoding streams that start at different times); these
helpers work for any such dict (the Conformer's ``keys/values/conv/frontend/
offset``, the Zipformer's ``layer{j}.key`` ... ``embed/offset``).  Positions
come from each stream's ``offset``, so streams at different offsets stack.

Only the Conformer's attention caches ``keys`` and ``values`` (B, N, C, D)
can differ in size between streams (unlimited left context: C grows by K
per call); they are left-padded with zeros to the longest C when stacked --
the padding is masked because only the last ``min(offset, C)`` cache entries
of a stream are ever attended to.  Every other tensor (all of the
Zipformer's, whose caches have a fixed size) must have the same shape
beyond dim 0 in every state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from asr_kd.models.conformer import EncoderState

__all__ = ["stack_states", "unstack_states"]

#: cache tensors (B, N, C, D) of the Conformer whose C may differ between streams
_GROWING = ("keys", "values")


def unstack_states(states: EncoderState) -> list[EncoderState]:
    """Split a batched state into B states of batch size 1 (views, not copies)."""
    b = states["offset"].size(0)
    return [{k: v[i : i + 1] for k, v in states.items()} for i in range(b)]


def stack_states(states: list[EncoderState]) -> EncoderState:
    """Concatenate states along the batch axis (ValueError if their keys or shapes disagree).

    The Conformer's ``keys``/``values`` (B, N, C, D) are left-padded to the longest C.
    """
    if not states:
        raise ValueError("cannot stack streaming states: none given")
    names = list(states[0])
    for i, s in enumerate(states[1:], start=1):
        if set(s) != set(names):
            raise ValueError(f"cannot stack streaming states: state {i} has keys {sorted(s)}, "
                             f"state 0 has {sorted(names)}")
    out: EncoderState = {}
    for k in names:
        parts = [s[k] for s in states]
        if k in _GROWING:
            longest = max(p.size(2) for p in parts)
            parts = [F.pad(p, (0, 0, longest - p.size(2), 0)) for p in parts]
        else:
            shapes = {tuple(p.shape[1:]) for p in parts}
            if len(shapes) > 1:
                raise ValueError(f"cannot stack streaming states: state tensor {k!r} has different shapes "
                                 f"across streams: {sorted(shapes)} (beyond the batch axis)")
        out[k] = torch.cat(parts, dim=0)
    return out
