"""Leaving the lead-in out of the output KL: no teacher target before the teacher's first label.

A chunk-wise student distilled over the whole pruned lattice learns, at the
nodes that have emitted nothing yet (symbol position u = 0), the full-context
teacher's distribution in the utterance's leading silence. That teacher has
heard the first word; after smoothing its first label holds a share of the
mass at every such frame, and the student, which cannot have heard the word
yet, can only learn a prior over first words there -- one way a student comes
to show the first word before it is spoken.

The mask keeps every valid node except those with u = 0 before the teacher's
*median first-label frame*

    t1_b = min { t : sum_{t' <= t} px_grad[b, 0, t'] >= 1/2 }     (S_b >= 1)

where ``px_grad[b, 0, t]`` is the occupancy of emitting the first label at
frame t in the teacher's simple lattice (it sums to 1 over t). Utterances
without labels (S_b = 0) keep every node. The transducer loss still trains
the masked nodes; only the teacher's target is left out there.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["first_label_frames", "lead_mask"]


def first_label_frames(px_grad: Tensor, boundary: Tensor) -> Tensor:
    """(B,) int64 median frame t1_b of the first label (0 where S_b = 0).

    Args:
      px_grad: (B, S, T') symbol-arc occupancies of a simple lattice (T' = T or T + 1).
      boundary: (B, 4) int64 rows ``[0, 0, S_b, T_b]``.
    """
    batch = boundary.size(0)
    if px_grad.size(1) == 0:  # no utterance of the batch has a label
        return torch.zeros(batch, dtype=torch.int64, device=boundary.device)
    cumulative = px_grad[:, 0].detach().double().cumsum(dim=1)  # (B, T')
    reached = (cumulative >= 0.5).to(torch.int64)
    # argmax gives the first frame where half the first-label mass is reached; T' when never reached
    never = torch.full((batch,), px_grad.size(2), dtype=torch.int64, device=px_grad.device)
    t1 = torch.where(reached.any(dim=1), reached.argmax(dim=1), never).to(boundary.device)
    t1 = torch.minimum(t1, boundary[:, 3])
    return torch.where(boundary[:, 2] > 0, t1, torch.zeros_like(t1))


def lead_mask(px_grad: Tensor, ranges: Tensor, boundary: Tensor) -> Tensor:
    """(B, T, R) float32 node weights: 0 at u = 0 nodes with t < t1_b, 1 elsewhere.

    Args:
      px_grad: (B, S, T') the teacher's symbol-arc occupancies (see :func:`first_label_frames`).
      ranges: (B, T, R) int64 absolute symbol positions of the KL's nodes.
      boundary: (B, 4) int64 rows ``[0, 0, S_b, T_b]``.
    """
    t1 = first_label_frames(px_grad, boundary).to(ranges.device)
    frame = torch.arange(ranges.size(1), device=ranges.device)
    before = frame[None, :, None] < t1[:, None, None]
    return (~(before & (ranges == 0))).to(torch.float32)
