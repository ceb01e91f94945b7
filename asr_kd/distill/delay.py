"""Delaying the teacher's encoder frames: targets a streaming student can reach in time.

A full-context teacher decides at encoder frame t with the whole utterance in
view; its lattice puts each label where the evidence is, or a little before
(its mean symbol delay on the synth task is about -50 ms). A chunk-wise
student with chunks of C frames sees at frame t only up to its chunk's end,
(C - 1) / 2 frames of future on average. Distilled frame by frame, the student
is asked to emit labels before it can have heard them, and the only way to
follow is to guess from the label context: the first word is shown before it
is spoken, and errors rise at small chunks.

Delaying the teacher by d frames pairs student frame t with teacher frame
t - d, so a target the teacher gives at frame t - d reaches the student when
it has heard d more frames:

    h'_T[b, t] = h_T[b, t - d]   for d <= t < T_b
    h'_T[b, t] = h_T[b, 0]       for 0 <= t < d      (the first frame: leading silence)

Frame counts do not change (the teacher's last d frames drop out; utterances
end in silence, where the teacher predicts blank). Everything computed from
the teacher's encoder output -- its simple lattice (pruning ranges, coverage),
its joiner on the pruned nodes, the hidden-layer targets -- uses h'_T.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["delay_frames"]


def delay_frames(x: Tensor, frames: int) -> Tensor:
    """``x`` (B, T, ...) delayed by ``frames`` >= 0 along dim 1: out[:, t] = x[:, max(t - frames, 0)].

    Valid lengths are unchanged; frames past an utterance's length stay padding
    (they read only earlier frames). ``frames == 0`` returns ``x`` itself.
    """
    if frames < 0:
        raise ValueError(f"delay_frames: frames must be >= 0, got {frames}")
    if frames == 0 or x.size(1) == 0:
        return x
    d = min(frames, x.size(1))
    head = x[:, :1].expand(-1, d, *x.shape[2:])
    return torch.cat((head, x[:, : x.size(1) - d]), dim=1)
