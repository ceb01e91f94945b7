"""Leaving the lead-in out of the output KL: no teacher target at nodes that have emitted nothing.

A full-context teacher has heard the whole utterance at every frame, and it
uses that at the start: on the synth task the default teacher, at symbol
position u = 0 (nothing emitted yet), gives the first label most of the
probability already in the leading silence (0.96 at frames 0-6 of a dev
utterance whose first word starts at frame 12, blank only from frame 7), and
its simple lattice puts the first label at frame 0 in all 7 utterances of a
dev batch. Distilled node by node, a chunk-wise student is taught to emit the
first label before it can have heard it: it learns a prior over first words
and shows the first word before it is spoken (the "anticipated" share of the
latency metrics). A teacher delay does not help: the delayed leading frames
repeat the teacher's frame 0.

No frame of the teacher marks where the lead-in ends (it already "emits" at
frame 0), so the mask leaves out every node at u = 0 of an utterance with
labels (S_b >= 1):

    w_node[b, t, r] = 0  if ranges[b, t, r] == 0 and S_b >= 1,   1 otherwise

The student's transducer loss still trains those nodes (the streaming
baseline, trained by that loss alone, shows no first word before it is
spoken); the KL keeps every node from the first label on.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["lead_mask"]


def lead_mask(ranges: Tensor, boundary: Tensor) -> Tensor:
    """(B, T, R) float32 node weights: 0 at the u = 0 nodes of utterances with labels, 1 elsewhere.

    Args:
      ranges: (B, T, R) int64 absolute symbol positions of the KL's nodes.
      boundary: (B, 4) int64 rows ``[0, 0, S_b, T_b]``.
    """
    has_labels = boundary[:, 2].to(ranges.device) > 0
    return (~((ranges == 0) & has_labels[:, None, None])).to(torch.float32)
